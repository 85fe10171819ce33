"""The documentation's pages and their fenced blocks, as the docs tests read them.

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

``tests/process/test_docs.py`` runs the ``python`` blocks; ``tests/unit/test_docs_pages.py``
checks the rest (parsed blocks, skips, the nav, cited tests, the configuration table).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MAX_SKIPPED = 4
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


def pages() -> list[Path]:
    found = sorted(DOCS.rglob("*.md"))
    readme = ROOT / "README.md"
    return [*found, readme] if readme.exists() else found


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


ALL_BLOCKS = [block for page in pages() for block in parse_page(page)]
RUNNABLE = [b for b in ALL_BLOCKS if b.lang in PYTHON and not b.skip_reason]
PARSED_BLOCKS = [b for b in ALL_BLOCKS if b.lang in PARSED and not b.skip_reason]


def block_ids(blocks: list[Block]) -> list[str]:
    return [f"{b.page}:{b.line}" for b in blocks]
