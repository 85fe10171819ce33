"""The documentation's pages: parsed blocks, skips, the nav, cited tests, the settings table.

The conventions the pages follow are in ``tests/support/docs_pages.py``; the
``python`` blocks are run by ``tests/process/test_docs.py``.
"""

from __future__ import annotations

import ast
import configparser
import inspect
import json
import re
from typing import Any

import pytest
import yaml
from support.docs_pages import (
    ALL_BLOCKS,
    DOCS,
    MAX_SKIPPED,
    PARSED_BLOCKS,
    PYTHON,
    ROOT,
    RUNNABLE,
    Block,
    block_ids,
    pages,
)

from trubrics_mp import Trubrics


def _parse(block: Block) -> None:
    if block.lang == "json":
        json.loads(block.code)
    elif block.lang in ("yaml", "yml"):
        yaml.safe_load(block.code)
    else:
        parser = configparser.ConfigParser(strict=False, interpolation=None, allow_no_value=True)
        parser.read_string(block.code, source=block.where)


@pytest.mark.parametrize("block", PARSED_BLOCKS, ids=block_ids(PARSED_BLOCKS))
def test_parsed_block(block: Block) -> None:
    try:
        _parse(block)
    except Exception as exc:
        raise AssertionError(f"{block.where}: not valid {block.lang}: {exc}") from None


def test_the_docs_have_code_to_check() -> None:
    checked = {b.page for b in RUNNABLE}
    assert len(RUNNABLE) >= 8 and "docs/getting-started.md" in checked, sorted(checked)


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
    for page in pages():
        for name in re.findall(r"`(test_\w+)`", page.read_text(encoding="utf-8")):
            if name not in defined:
                missing.append(f"{page.relative_to(ROOT)}: {name}")
    assert missing == [], "the docs cite tests that do not exist"


# -- the configuration page ---------------------------------------------------------------
ROW = re.compile(
    r"^\| `(?P<name>\w+)` \| `(?P<type>[\w.]+)` \| (?P<default>.+?) \| (?P<bounds>.+?) \|$"
)
BOUNDS = re.compile(
    r"^`(?P<low>[\d.]+) (?P<op><|≤) [ns] ≤ (?P<high>[\d.]+)`"
    r"(?:, (?P<side>below|above) (?P<edge>[\d.]+): (?P=edge), with a warning)?$"
)
CLAMPED_ATTRIBUTE = {"flush_at": "flush_batch_size"}


def _clamped_to(name: str, value: Any) -> Any:
    client = Trubrics(api_key="k", disabled=True, **{name: value})
    return getattr(client, CLAMPED_ATTRIBUTE.get(name, name))


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
        side, edge = match.group("side"), match.group("edge")
        if side == "above":  # beyond the edge: accepted, clamped to it (as 1.8.5 does)
            assert _clamped_to(name, high + step) == number(edge) == high, name
        else:
            assert _accepted(name, high) and not _accepted(name, high + step), name
        if side == "below":
            assert _clamped_to(name, low) == number(edge), name
        checked += 1
    assert checked == 12
