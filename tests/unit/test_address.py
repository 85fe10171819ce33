"""Where a pipeline's socket lives: a private directory, checked; the start lock."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from trubrics_mp import _address
from trubrics_mp._address import PipelineDirError


def test_the_runtime_dir_is_chosen_in_order_and_made_private(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    chosen = tmp_path / "chosen"
    both = {"TRUBRICS_MP_RUNTIME_DIR": str(chosen), "XDG_RUNTIME_DIR": str(xdg)}
    assert _address.runtime_dir(both) == str(chosen)
    assert _address.runtime_dir({"XDG_RUNTIME_DIR": str(xdg)}) == str(xdg / "trubrics-mp")
    for made in (chosen, xdg / "trubrics-mp"):
        assert made.stat().st_mode & 0o777 == 0o700
    fallback = _address.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path / "missing")})
    assert fallback.endswith(f"trubrics-mp-{os.getuid()}")


@pytest.mark.parametrize("problem", ["mode", "symlink", "owner", "file"])
def test_a_directory_others_could_use_is_refused_saying_what_to_fix(
    tmp_path: Path, problem: str
) -> None:
    target = tmp_path / "dir"
    target.mkdir(mode=0o700)
    path = target
    if problem == "mode":
        target.chmod(0o755)
    elif problem == "symlink":
        path = tmp_path / "link"
        path.symlink_to(target)
    elif problem == "owner":
        if os.getuid() != 0:
            pytest.skip("only root can give a directory to another user")  # CI runs as root
        os.chown(target, 65534, 65534)
    else:
        target.rmdir()
        target.write_text("")
    with pytest.raises(PipelineDirError, match="TRUBRICS_MP_RUNTIME_DIR") as caught:
        _address.runtime_dir({"TRUBRICS_MP_RUNTIME_DIR": str(path)})
    assert str(path) in str(caught.value)


def test_a_socket_path_too_long_for_the_kernel_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PipelineDirError, match="longer than 107 bytes"):
        _address.socket_path(str(tmp_path / ("d" * 120)), "default", "0" * 16)
    assert _address.socket_path("/run/x", "default", "0123456789abcdef") == (
        "/run/x/default-0123456789ab.sock"
    )


def test_pipeline_names_are_checked() -> None:
    assert _address.check_pipeline_name("app-1.web_2") == "app-1.web_2"
    for bad in ["", "-x", "a/b", "x" * 65, 3]:
        with pytest.raises(ValueError, match="pipeline must be"):
            _address.check_pipeline_name(bad)


def test_the_start_lock_is_held_by_one_and_counts_generations(tmp_path: Path) -> None:
    sock = str(tmp_path / "p.sock")
    with _address.start_lock(sock) as first:
        assert first is not None
        with _address.start_lock(sock) as second:
            assert second is None  # another starter is at it: do not wait
        assert [_address.next_generation(first) for _ in range(3)] == [0, 1, 2]
    with _address.start_lock(sock) as again:
        assert again is not None and _address.next_generation(again) == 3


def test_a_leaving_flusher_removes_its_socket_only_if_it_is_still_its_own(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "p.sock")
    old = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old.bind(path)
    old_inode = os.stat(path).st_ino
    os.unlink(path)  # a new flusher replaced it
    new = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    new.bind(path)
    try:
        _address.remove_if_ours(path, old_inode)
        assert os.path.exists(path)
        _address.remove_if_ours(path, os.stat(path).st_ino)
        assert not os.path.exists(path)
    finally:
        old.close()
        new.close()
