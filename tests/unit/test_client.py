"""The client's constructor arguments, checked before any process starts."""

from __future__ import annotations

import pytest


def test_a_logger_that_is_not_a_logger_is_refused() -> None:
    from trubrics_mp import Trubrics

    with pytest.raises(TypeError, match="logger must be a logging.Logger"):
        Trubrics("k", logger="my-logger")  # type: ignore[arg-type]
