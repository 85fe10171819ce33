"""The documentation's code runs, and its tables say what the code does.

Conventions for the pages (``docs/**/*.md`` and ``README.md``):

- Every fenced ``python`` block is run in a fresh interpreter, in a private
  directory, against the real local collector:

  - an untitled block runs as ``__main__`` (``python snippet.py``);
  - a block with ``title="name.py"`` is a file of the example (a
    ``gunicorn.conf.py``, a Celery ``tasks.py``...): it is written under that
    name beside every other block of the same page, and run by importing it
    (``runpy.run_path`` under its module name), so that code guarded by
    ``if __name__ == "__main__"`` does not run, as when a server loads it.

  The names ``API_KEY`` and ``TRUBRICS_HOST`` are defined by one line added at
  the top (after any ``from __future__`` import); the environment variables
  ``TRUBRICS_API_KEY`` and ``TRUBRICS_HOST`` hold the same values. A block must
  exit with status 0 within a minute, print no traceback and never print the
  API key; a block that tracks events must get at least one stored.
- A block that creates a client must pass ``TRUBRICS_HOST`` (or
  ``disabled=True``): no example may reach the real API. As a second guard the
  proxies point to a closed local port.
- A ``text`` block introduced by a line ``prints:`` right after a ``python``
  block must equal that block's standard output.
- ``ini``, ``yaml`` and ``json`` blocks are parsed.
- ``<!-- skip-snippet: reason -->`` on the line before a fence: the block is not
  run (a ``python`` block is still compiled). At most ``MAX_SKIPPED`` in all.

A failure names the page and the line of the block's opening fence.
"""

from __future__ import annotations

import ast
import configparser
import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from support.collector import CollectorProcess

from trubrics_mp import Trubrics

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MAX_SKIPPED = 4
SNIPPET_TIMEOUT_S = 60.0
API_KEY = "docs-snippet-key-5b1e9d"
CLOSED_PORT_PROXY = "http://127.0.0.1:9"
PYTHON = {"python", "py", "python3"}
PARSED = {"ini", "yaml", "yml", "json"}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
SKIP = re.compile(r"^\s*<!--\s*skip-snippet:(?P<reason>.*?)-->\s*$")


@dataclasses.dataclass
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    end_line: int  # of the closing fence, 1-based
    lang: str
    title: Optional[str]
    code: str
    skip_reason: Optional[str] = None
    expected_output: Optional[str] = None

    @property
    def where(self) -> str:
        return f"{self.page}, block at line {self.line}"


def _pages() -> list[Path]:
    pages = sorted(DOCS.rglob("*.md"))
    readme = ROOT / "README.md"
    return [*pages, readme] if readme.exists() else pages


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def _dedent(lines: list[str], indent: str) -> str:
    return "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in lines)


def _skip_reason(lines: list[str], fence_index: int) -> Optional[str]:
    for previous in reversed(lines[:fence_index]):
        if previous.strip():
            match = SKIP.match(previous)
            if match is None:
                return None
            return match.group("reason").strip() or "(no reason)"
    return None


def parse_page(path: Path) -> list[Block]:
    """Every fenced block of a page, indented ones (admonitions, lists) included."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(ROOT).as_posix()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not _closes(lines[end], match.group("fence")):
            end += 1
        info = match.group("info").strip()
        title = TITLE.search(info)
        block = Block(
            page=page,
            line=index + 1,
            end_line=end + 1,
            lang=(info.split() or [""])[0].lower(),
            title=title.group("title") if title else None,
            code=_dedent(lines[index + 1 : end], match.group("indent")),
            skip_reason=_skip_reason(lines, index),
        )
        _attach_output(blocks, block, lines[blocks[-1].end_line : index] if blocks else [])
        blocks.append(block)
        index = end + 1
    return blocks


def _attach_output(blocks: list[Block], block: Block, between: list[str]) -> None:
    """A ``text`` block after ``prints:`` is the previous python block's output."""
    if not blocks or blocks[-1].lang not in PYTHON or block.lang != "text":
        return
    said = [line.strip() for line in between if line.strip()]
    if said[-1:] == ["prints:"]:
        blocks[-1].expected_output = block.code


ALL_BLOCKS = [block for page in _pages() for block in parse_page(page)]
CHECKED = [b for b in ALL_BLOCKS if (b.lang in PYTHON or b.lang in PARSED) and not b.skip_reason]


# -- running python blocks --------------------------------------------------------------
def _with_names(code: str, host: str) -> str:
    """The block with API_KEY and TRUBRICS_HOST defined (after ``__future__`` imports)."""
    lines = code.splitlines()
    at = max(
        (i + 1 for i, line in enumerate(lines) if line.startswith("from __future__")), default=0
    )
    names = f"API_KEY, TRUBRICS_HOST = {API_KEY!r}, {host!r}  # added by tests/process/test_docs.py"
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


def _parse(block: Block) -> None:
    if block.lang == "json":
        json.loads(block.code)
    elif block.lang in ("yaml", "yml"):
        yaml.safe_load(block.code)
    else:
        parser = configparser.ConfigParser(strict=False, interpolation=None, allow_no_value=True)
        parser.read_string(block.code, source=block.where)


@pytest.mark.parametrize("block", CHECKED, ids=[f"{b.page}:{b.line}" for b in CHECKED])
def test_code_block(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if block.lang in PARSED:
        try:
            _parse(block)
        except Exception as exc:
            raise AssertionError(f"{block.where}: not valid {block.lang}: {exc}") from None
        return
    workspace = tmp_path / "example"
    workspace.mkdir()
    _run_python(block, request.getfixturevalue("collector"), workspace)


def test_the_docs_have_code_to_check() -> None:
    runnable = [b for b in CHECKED if b.lang in PYTHON]
    pages = {b.page for b in runnable}
    assert len(runnable) >= 8 and "docs/getting-started.md" in pages, sorted(pages)


def test_few_blocks_are_skipped_and_each_says_why() -> None:
    skipped = [b for b in ALL_BLOCKS if b.skip_reason]
    assert len(skipped) <= MAX_SKIPPED, [b.where for b in skipped]
    for block in skipped:
        assert block.skip_reason != "(no reason)", f"{block.where}: skip-snippet needs a reason"
        if block.lang in PYTHON:
            compile(block.code, block.where, "exec")


# -- pages and nav ------------------------------------------------------------------------
def _nav_files(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [name for item in node for name in _nav_files(item)]
    if isinstance(node, dict):
        return [name for value in node.values() for name in _nav_files(value)]
    return []


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = set(_nav_files(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - in_nav == set(), "pages missing from the nav of mkdocs.yml"
    assert in_nav - pages == set(), "nav entries without a page"


def test_every_test_the_docs_cite_exists() -> None:
    defined: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        defined.update(re.findall(r"^\s*def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
    missing = []
    for page in _pages():
        for name in re.findall(r"`(test_\w+)`", page.read_text(encoding="utf-8")):
            if name not in defined:
                missing.append(f"{page.relative_to(ROOT)}: {name}")
    assert missing == [], "the docs cite tests that do not exist"


# -- the configuration page ---------------------------------------------------------------
ROW = re.compile(
    r"^\| `(?P<name>\w+)` \| `(?P<type>[\w.]+)` \| (?P<default>.+?) \| (?P<bounds>.+?) \|$"
)
BOUNDS = re.compile(r"^`(?P<low>[\d.]+) (?P<op><|≤) [ns] ≤ (?P<high>[\d.]+)`$")


def _config_rows() -> dict[str, dict[str, str]]:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group("name")] = match.groupdict()
    return rows


def _accepted(name: str, value: Any) -> bool:
    try:
        Trubrics(api_key="k", disabled=True, **{name: value})
    except ValueError:
        return False
    return True


def test_the_configuration_table_lists_every_parameter_with_its_default() -> None:
    rows = _config_rows()
    parameters = dict(inspect.signature(Trubrics).parameters)
    assert sorted(rows) == sorted(parameters)
    effective = repr(Trubrics(api_key="k", disabled=True))
    for name, row in rows.items():
        documented, actual = row["default"], parameters[name].default
        if actual is inspect.Parameter.empty:
            assert documented == "required", name
        elif actual is None and documented != "`None`":  # resolved inside the client
            assert f"flush_at={ast.literal_eval(documented.strip('`'))}," in effective, name
        else:
            assert ast.literal_eval(documented.strip("`")) == actual, name


def test_the_configuration_bounds_are_the_ones_enforced() -> None:
    checked = 0
    for name, row in _config_rows().items():
        match = BOUNDS.match(row["bounds"])
        if match is None:
            continue
        integer = row["type"] == "int"
        number = int if integer else float
        low, high = number(match.group("low")), number(match.group("high"))
        step = 1 if integer else 0.5
        if match.group("op") == "≤":
            assert _accepted(name, low) and not _accepted(name, low - step), name
        else:
            assert not _accepted(name, low) and _accepted(name, low + step), name
        assert _accepted(name, high) and not _accepted(name, high + step), name
        checked += 1
    assert checked == 9
