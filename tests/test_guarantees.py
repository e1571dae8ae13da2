"""The README's "What is guaranteed" table names a command for each promise; each must select the tests it names.

A `-k` expression that matches nothing in one of its files silently drops that file's tests from the
guarantee (issue 16: `-k "unsafe or hostile"` once selected nothing in tests/test_reliability.py).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SECTION = re.compile(r"^## What is guaranteed.*?\n(.*?)(?=^## )", re.S | re.M)
_COMMAND = re.compile(r"`(pytest [^`]+)`\s*\|\s*$")

# One process collects for every command in turn (pytest.main each time, the test modules imported once): one
# process per command took 3.5 s each, 27 of them.
_COLLECT_EACH = textwrap.dedent("""
    import contextlib, io, json, shlex, sys
    import pytest

    class Selected:
        ids = []
        def pytest_collection_finish(self, session):
            self.ids = [item.nodeid for item in session.items]

    answers = {}
    for command in json.loads(sys.argv[1]):
        selected, output = Selected(), io.StringIO()
        with contextlib.redirect_stdout(output):
            code = pytest.main(
                ["--collect-only", "-q", "-p", "no:cacheprovider", *shlex.split(command)[1:]], plugins=[selected]
            )
        answers[command] = {"code": int(code), "ids": selected.ids, "output": output.getvalue()[-3000:]}
    print(json.dumps(answers))
""")


def guarantee_commands() -> list[str]:
    """The `pytest ...` command of every row of the table, in order."""
    section = _SECTION.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert section, "README.md has no 'What is guaranteed' section"
    return [m.group(1) for line in section.group(1).splitlines() if (m := _COMMAND.search(line))]


@pytest.fixture(scope="module")
def collected() -> dict[str, list[str]]:
    """Command -> the node ids `pytest --collect-only` selects with its arguments, run from the repository root."""
    proc = subprocess.run(
        [sys.executable, "-c", _COLLECT_EACH, json.dumps(guarantee_commands())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    answers = json.loads(proc.stdout.splitlines()[-1])
    failed = {command: a["output"] for command, a in answers.items() if a["code"] not in (0, 5)}  # 5: none selected
    assert not failed, failed
    return {command: answer["ids"] for command, answer in answers.items()}


def test_the_table_lists_every_guarantee() -> None:
    assert len(guarantee_commands()) >= 11


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize("command", guarantee_commands())
def test_each_guarantee_command_selects_tests_in_every_path_it_names(
    command: str, collected: dict[str, list[str]]
) -> None:
    args = shlex.split(command)[1:]
    paths = [a.rstrip("/") for a in args if not a.startswith("-") and (ROOT / a).exists()]
    assert paths, f"{command!r} names no test file or folder"
    selected = collected[command]
    missing = [
        p for p in paths if not any(node.startswith(p + ("::" if p.endswith(".py") else "/")) for node in selected)
    ]
    assert not missing, f"{command!r} selects no test in {missing}"
