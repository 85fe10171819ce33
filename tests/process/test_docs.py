"""The documentation's ``python`` blocks run, each in a fresh interpreter.

The conventions the pages follow are in ``tests/support/docs_pages.py``; the
checks that need no process are in ``tests/unit/test_docs_pages.py``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.collector import CollectorProcess
from support.docs_pages import ALL_BLOCKS, PYTHON, RUNNABLE, Block, block_ids

SNIPPET_TIMEOUT_S = 60.0
API_KEY = "docs-snippet-key-5b1e9d"
CLOSED_PORT_PROXY = "http://127.0.0.1:9"


def _with_names(code: str, host: str) -> str:
    """The block with API_KEY and TRUBRICS_HOST defined (after ``__future__`` imports)."""
    lines = code.splitlines()
    at = max(
        (i + 1 for i, line in enumerate(lines) if line.startswith("from __future__")), default=0
    )
    names = f"API_KEY, TRUBRICS_HOST = {API_KEY!r}, {host!r}  # added by the docs tests"
    return "\n".join([*lines[:at], names, *lines[at:]]) + "\n"


def _write_workspace(block: Block, host: str, directory: Path) -> list[str]:
    """Write the page's file blocks; return the command that runs ``block``."""
    for other in ALL_BLOCKS:
        if other.page == block.page and other.lang in PYTHON and other.title:
            (directory / other.title).write_text(_with_names(other.code, host), encoding="utf-8")
    if block.title:
        module = Path(block.title).stem
        run = f"import runpy; runpy.run_path({block.title!r}, run_name={module!r})"
        return [sys.executable, "-c", run]
    (directory / "snippet.py").write_text(_with_names(block.code, host), encoding="utf-8")
    return [sys.executable, "snippet.py"]


def _snippet_env(host: str) -> dict[str, str]:
    env = {**os.environ, "TRUBRICS_API_KEY": API_KEY, "TRUBRICS_HOST": host}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = CLOSED_PORT_PROXY  # any request to a real host fails locally
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _run_python(block: Block, collector: CollectorProcess, directory: Path) -> None:
    if "Trubrics(" in block.code:
        assert "TRUBRICS_HOST" in block.code or "disabled=True" in block.code, (
            f"{block.where}: a client made in an example must use host=TRUBRICS_HOST"
        )
    compile(block.code, f"{block.page}:{block.line}", "exec")
    command = _write_workspace(block, collector.url, directory)
    try:
        proc = subprocess.run(
            command,
            cwd=directory,
            env=_snippet_env(collector.url),
            capture_output=True,
            text=True,
            timeout=SNIPPET_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{block.where}: still running after {exc.timeout} s") from None
    output = f"{block.where} (one line added at the top)\nstdout:\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, f"exit status {proc.returncode}: {output}"
    assert "Traceback" not in proc.stderr, output
    assert API_KEY not in proc.stdout + proc.stderr, f"the API key was printed: {output}"
    if block.expected_output is not None:
        assert proc.stdout.strip() == block.expected_output.strip(), f"output differs: {output}"
    if _tracks_when_run(block.code):
        collector.wait_for_events(1, timeout=60)


def _tracks_when_run(code: str) -> bool:
    """Whether running the block tracks an event: a call outside any function, or a main."""
    tree = ast.parse(code)
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("track", "track_llm")
    ]
    if not calls or "disabled=True" in code:
        return False
    if '__name__ == "__main__"' in code:
        return True
    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    deferred = {id(n) for f in ast.walk(tree) if isinstance(f, functions) for n in ast.walk(f)}
    return any(id(call) not in deferred for call in calls)


@pytest.mark.parametrize("block", RUNNABLE, ids=block_ids(RUNNABLE))
def test_python_block(block: Block, collector: CollectorProcess, tmp_path: Path) -> None:
    workspace = tmp_path / "example"
    workspace.mkdir()
    _run_python(block, collector, workspace)
