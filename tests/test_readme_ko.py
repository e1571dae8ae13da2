"""README.ko.md keeps in step with README.md (issue 21): the same sections in the same order, the same code blocks,
the same tables with the same identifiers, and the guarantees with the same test commands in the same order.

Headings are compared by level and position, never by text (the Korean says them in Korean); a code block's
comments (after `#`) may be Korean, its commands may not differ by a byte.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EN = ROOT / "README.md"
KO = ROOT / "README.ko.md"

_FENCE = re.compile(r"^```")
_HEADING = re.compile(r"^(#{2,3}) \S")
_COMMENT = re.compile(r"(^|\s)#.*$")
_CODE_SPAN = re.compile(r"`([^`]+)`")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_LINK = re.compile(r"\]\(#([^)]+)\)")


def _parse(text: str) -> dict[str, list]:
    """Headings (level, text), code blocks (fence line, body lines), tables (row lines), in order of appearance."""
    headings: list[tuple[int, str]] = []
    blocks: list[tuple[str, list[str]]] = []
    tables: list[list[str]] = []
    fence: tuple[str, list[str]] | None = None
    table: list[str] | None = None
    for line in text.splitlines():
        if fence is not None:
            if _FENCE.match(line):
                blocks.append(fence)
                fence = None
            else:
                fence[1].append(line)
            continue
        if line.startswith("|"):
            if table is None:
                table = []
                tables.append(table)
            table.append(line)
            continue
        table = None
        if _FENCE.match(line):
            fence = (line, [])
        elif m := _HEADING.match(line):
            headings.append((len(m.group(1)), line[len(m.group(1)) + 1 :].strip()))
    assert fence is None, "a code block is never closed"
    return {"headings": headings, "blocks": blocks, "tables": tables}


def _cells(row: str) -> list[str]:
    return [c.strip() for c in _CELL_SPLIT.split(row.strip().strip("|"))]


def _without_comment(line: str) -> str:
    """The line up to and including its comment's `#`: what follows it may be in any language."""
    return _COMMENT.sub(lambda m: m.group(1) + "#", line)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (Hangul kept), spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _section(parsed_text: str, index: int) -> str:
    """The text of the index-th `##` section (from its heading to the next `##`)."""
    parts = re.split(r"^## ", parsed_text, flags=re.M)
    return parts[index + 1]


@pytest.fixture(scope="module")
def en() -> dict[str, list]:
    return _parse(EN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ko() -> dict[str, list]:
    return _parse(KO.read_text(encoding="utf-8"))


def test_the_same_sections_in_the_same_order(en: dict, ko: dict) -> None:
    en_levels = [level for level, _ in en["headings"]]
    ko_levels = [level for level, _ in ko["headings"]]
    assert Counter(ko_levels) == Counter(en_levels), "README.ko.md has not as many ## / ### sections as README.md"
    assert ko_levels == en_levels, "README.ko.md's ## / ### sections are not in README.md's order"


def test_the_same_code_blocks_byte_for_byte_but_their_comments(en: dict, ko: dict) -> None:
    assert len(ko["blocks"]) == len(en["blocks"])
    for n, ((en_fence, en_body), (ko_fence, ko_body)) in enumerate(zip(en["blocks"], ko["blocks"], strict=True), 1):
        assert ko_fence == en_fence, f"code block {n}: fence {ko_fence!r} != {en_fence!r}"
        assert [_without_comment(x) for x in ko_body] == [_without_comment(x) for x in en_body], f"code block {n}"


def test_every_table_has_as_many_rows(en: dict, ko: dict) -> None:
    assert [len(t) for t in ko["tables"]] == [len(t) for t in en["tables"]]


def test_every_table_row_names_the_same_identifiers(en: dict, ko: dict) -> None:
    """Options, settings, commands and file names stay as they are: each row's backticked spans are README.md's."""
    for n, (en_table, ko_table) in enumerate(zip(en["tables"], ko["tables"], strict=False), 1):
        for en_row, ko_row in zip(en_table, ko_table, strict=False):  # counts: test_every_table_has_as_many_rows
            assert Counter(_CODE_SPAN.findall(ko_row)) == Counter(_CODE_SPAN.findall(en_row)), (
                f"table {n}: {ko_row!r} does not name what {en_row!r} names"
            )


def test_the_guarantees_with_the_same_commands_in_the_same_order() -> None:
    en_text, ko_text = EN.read_text(encoding="utf-8"), KO.read_text(encoding="utf-8")
    titles = re.findall(r"^## (.*)$", en_text, flags=re.M)
    index = next(i for i, title in enumerate(titles) if title.startswith("What is guaranteed"))

    def commands(section: str) -> list[str]:
        rows = [_cells(line) for line in section.splitlines() if line.startswith("|")][2:]  # header, rule
        return [row[1] for row in rows]

    en_commands = commands(_section(en_text, index))
    assert len(en_commands) >= 11 and all(c.startswith("`pytest ") for c in en_commands)
    assert commands(_section(ko_text, index)) == en_commands


def test_the_two_readmes_link_to_each_other() -> None:
    assert "](README.ko.md)" in "\n".join(EN.read_text(encoding="utf-8").splitlines()[:6])
    assert "](README.md)" in "\n".join(KO.read_text(encoding="utf-8").splitlines()[:6])


def test_every_link_to_a_section_of_the_korean_readme_finds_it(ko: dict) -> None:
    anchors = {_slug(text) for _, text in ko["headings"]}
    missing = [a for a in _LINK.findall(KO.read_text(encoding="utf-8")) if a not in anchors]
    assert missing == []
