"""trubrics-mp: a fork-safe Trubrics client for multi-process servers.

Every process of an application hands its events to one shared queue, read
by one flusher process that batches them and posts them to the Trubrics
ingestion API. See ``trubrics_mp._flusher`` for a diagram.
"""

from ._client import Trubrics
from ._spawn import FlusherStartError
from ._stats import Stats

__version__ = "0.1.0"
__all__ = ["FlusherStartError", "Stats", "Trubrics", "__version__"]
