"""The README's "What is guaranteed" table names a command for each promise; each must select the tests it names.

A `-k` expression that matches nothing in one of its files silently drops that file's tests from the
guarantee (issue 16: `-k "unsafe or hostile"` once selected nothing in tests/test_reliability.py).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SECTION = re.compile(r"^## What is guaranteed.*?\n(.*?)(?=^## )", re.S | re.M)
_COMMAND = re.compile(r"`(pytest [^`]+)`\s*\|\s*$")


def guarantee_commands() -> list[str]:
    """The `pytest ...` command of every row of the table, in order."""
    section = _SECTION.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert section, "README.md has no 'What is guaranteed' section"
    return [m.group(1) for line in section.group(1).splitlines() if (m := _COMMAND.search(line))]


def collected(args: list[str]) -> list[str]:
    """The node ids `pytest --collect-only` selects with `args`, run from the repository root."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode in (0, 5), proc.stdout[-3000:] + proc.stderr[-3000:]  # 5: nothing selected
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_the_table_lists_every_guarantee() -> None:
    assert len(guarantee_commands()) >= 11


@pytest.mark.timeout(600)
@pytest.mark.parametrize("command", guarantee_commands())
def test_each_guarantee_command_selects_tests_in_every_path_it_names(command: str) -> None:
    args = shlex.split(command)[1:]
    paths = [a.rstrip("/") for a in args if not a.startswith("-") and (ROOT / a).exists()]
    assert paths, f"{command!r} names no test file or folder"
    selected = collected(args)
    missing = [
        p for p in paths if not any(node.startswith(p + ("::" if p.endswith(".py") else "/")) for node in selected)
    ]
    assert not missing, f"{command!r} selects no test in {missing}"
