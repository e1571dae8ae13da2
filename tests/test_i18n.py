"""Issue 21: one language setting, gettext catalogs kept complete, and Korean faces with no English sentence of ours.

The catalog test reads the code as `make messages` does (Babel's extractor, plus every literal `_("...")` call, so
a call the extractor misses is caught too) and fails on a message missing from the Korean catalog, untranslated,
fuzzy, with other placeholders, or compiled into a stale .mo. The face tests render the result card, the panel,
`%flux_account` and the history in Korean and look for English words outside identifiers.
"""

from __future__ import annotations

import ast
import contextlib
import gettext
import html
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from doitong_nb import _contract as contract
from doitong_nb._core import i18n

if TYPE_CHECKING:
    from doitong_sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
KO_PO = i18n.LOCALE_DIR / "ko" / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
_LITERAL_CALL = re.compile(r"""\b(?:N_|_)\(\s*(?P<q>["'])(?P<text>(?:(?!(?P=q)).)+)(?P=q)\s*\)""")
_PLACEHOLDER = re.compile(r"\{(\w*)[^{}]*\}")


@pytest.fixture(autouse=True)
def english_after() -> Iterator[None]:
    """Each test leaves the process's language as it found it: English, the default."""
    yield
    i18n.use(i18n.ENGLISH)


# --- the catalog ----------------------------------------------------------------------------------------------------


def _messages(files: list[Path]) -> dict[str, str]:
    """Every message the files mark for translation (msgid -> file): Babel's reading, and each literal call."""
    from babel.messages.extract import extract_from_file

    found: dict[str, str] = {}
    for path in files:
        for _line, message, _comments, _context in extract_from_file("python", str(path)):
            for text in message if isinstance(message, tuple) else (message,):
                found.setdefault(text, path.name)
        for match in _LITERAL_CALL.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(ast.literal_eval(match["q"] + match["text"] + match["q"]), path.name)
    return found


def catalog_problems(files: list[Path], po: Path = KO_PO) -> list[str]:
    """What keeps `files` from showing in the catalog's language: each message missing, untranslated, fuzzy or with
    other placeholders; and a .mo that is not the .po compiled."""
    from babel.messages.pofile import read_po

    with po.open("rb") as handle:
        catalog = read_po(handle)
    translated = {}
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        for msgid in ids:
            translated[msgid] = (strings, message.fuzzy)
    problems = []
    for msgid, where in _messages(files).items():
        if msgid not in translated:
            problems.append(f"{where}: {msgid!r} is not in {po.name} (run `make messages`)")
            continue
        strings, fuzzy = translated[msgid]
        if fuzzy or not all(strings):
            problems.append(f"{where}: {msgid!r} is {'fuzzy' if fuzzy else 'untranslated'}")
        elif any(sorted(_PLACEHOLDER.findall(s)) != sorted(_PLACEHOLDER.findall(msgid)) for s in strings):
            problems.append(f"{where}: {msgid!r} is translated with other placeholders")
    with po.with_suffix(".mo").open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    for message in catalog:
        usable = message.id and not message.fuzzy and isinstance(message.id, str) and message.string
        if usable and compiled.gettext(message.id) != message.string:
            problems.append(f"{po.with_suffix('.mo').name} is stale for {message.id!r} (run `make messages`)")
    return problems


TRANSLATED = [
    ROOT / "doitong_nb" / "_core" / "result.py",
    ROOT / "doitong_nb" / "_notebook" / "display.py",
    ROOT / "doitong_nb" / "_notebook" / "background.py",
    ROOT / "doitong_nb" / "_notebook" / "panel.py",
    ROOT / "doitong_nb" / "_tools" / "doctor.py",
    ROOT / "doitong_nb" / "_tools" / "cli.py",
    ROOT / "doitong_nb" / "_tools" / "quote.py",
    ROOT / "doitong_nb" / "_notebook" / "magics.py",
    ROOT / "doitong_nb" / "_runtime" / "grid.py",
    ROOT / "doitong_nb" / "_runtime" / "batch.py",
    ROOT / "doitong_nb" / "_engine" / "engine.py",
    ROOT / "doitong_nb" / "_core" / "request.py",
    ROOT / "doitong_nb" / "_core" / "settings.py",
    ROOT / "doitong_nb" / "_core" / "errors.py",
    ROOT / "doitong_nb" / "_wire" / "replies.py",
    ROOT / "doitong_nb" / "_runtime" / "sandbox.py",
    ROOT / "doitong_nb" / "_tools" / "verify.py",
    ROOT / "doitong_nb" / "_tools" / "export.py",
    ROOT / "doitong_nb" / "_core" / "arguments.py",
    ROOT / "doitong_nb" / "_runtime" / "config_file.py",
    ROOT / "doitong_nb" / "_notebook" / "login.py",
    ROOT / "doitong_nb" / "_runtime" / "login.py",
    ROOT / "doitong_nb" / "_wire" / "__init__.py",
    ROOT / "doitong_nb" / "_wire" / "base.py",
    ROOT / "doitong_nb" / "_wire" / "graphql.py",
    ROOT / "doitong_nb" / "_wire" / "webhooks.py",
    ROOT / "doitong_nb" / "_runtime" / "client.py",
    ROOT / "doitong_nb" / "_runtime" / "webhooks.py",
    ROOT / "doitong_nb" / "_runtime" / "pinned.py",
    ROOT / "doitong_nb" / "_store" / "journal.py",
    ROOT / "doitong_nb" / "_store" / "lockfile.py",
    ROOT / "doitong_nb" / "_store" / "provenance.py",
    ROOT / "doitong_nb" / "_store" / "remote.py",
    ROOT / "doitong_nb" / "_store" / "store.py",
]


def test_every_message_of_the_translated_faces_is_in_the_korean_catalog_translated_and_compiled() -> None:
    assert catalog_problems(TRANSLATED) == []


def test_the_argparse_words_we_translate_are_the_ones_this_pythons_argparse_says() -> None:
    """A Python that rewords one of argparse's messages would show it in English: then ARGPARSE_MESSAGES (and the
    catalog) needs the new words. Python 3.10's heading "optional arguments" became "options" in 3.11, and 3.10 does
    not translate the "argument X:" before an error (arguments.py writes it for every version)."""
    import argparse

    from doitong_nb._core.arguments import ARGPARSE_MESSAGES

    source = Path(argparse.__file__).read_text(encoding="utf-8")
    said = {ast.literal_eval(m["q"] + m["text"] + m["q"]) for m in _LITERAL_CALL.finditer(source)}
    assert set(ARGPARSE_MESSAGES) - said <= {"optional arguments", "options", "argument %(argument_name)s: %(message)s"}
    assert {"usage: ", "the following arguments are required: %s", "unrecognized arguments: %s"} <= said


def test_the_korean_catalog_keeps_its_one_plural_form() -> None:
    """`pybabel update --omit-header` drops the header, and with it Korean's one plural form: the compiled catalog
    would then look for a second form, which Korean messages do not have."""
    compiled = gettext.GNUTranslations(KO_PO.with_suffix(".mo").open("rb"))
    assert compiled.info().get("plural-forms") == "nplurals=1; plural=0;"
    assert compiled.ngettext("{n} credit", "{n} credits", 30) == "{n} 크레딧"


def test_the_catalog_test_fails_on_a_new_message_that_is_not_translated(tmp_path: Path) -> None:
    face = tmp_path / "face.py"
    face.write_text('from doitong_nb._core.i18n import _\n\nLABEL = _("A brand new label nobody translated")\n')
    assert catalog_problems([face]) == [
        "face.py: 'A brand new label nobody translated' is not in doitong_nb.po (run `make messages`)"
    ]


def test_the_wheel_ships_the_compiled_catalogs() -> None:
    """setuptools copies only what package-data names: the .mo, next to its .po."""
    text = (ROOT / "pyproject.toml").read_text()
    assert '"doitong_nb" = ["locale/*/LC_MESSAGES/*.mo"]' in text
    assert sorted(p.name for p in i18n.LOCALE_DIR.glob("*/LC_MESSAGES/*.mo")) == ["doitong_nb.mo"]


def test_numbers_units_and_plurals_follow_the_language() -> None:
    from doitong_nb._core.result import credits_text
    from doitong_nb._notebook.display import _seconds, status_text

    assert (credits_text(1), credits_text(30), _seconds(75), status_text("3 status reads")) == (
        "1 credit",
        "30 credits",
        "1 min 15 s",
        "3 status reads",
    )
    i18n.use("ko")
    assert (credits_text(1), credits_text(30), _seconds(75), status_text("3 status reads")) == (
        "1 크레딧",
        "30 크레딧",
        "1분 15초",
        "상태 조회 3회",
    )
    assert status_text("upscaling") == "upscaling"  # a service's own word, as it wrote it


# --- the faces in Korean --------------------------------------------------------------------------------------------

# Names that stay as written in any language: products, formats, and option values (identifiers).
_NAMES = {
    "Flux",
    "Ultra",
    "Doitong",
    "RAW",
    "JPEG",
    "PNG",
    "UHD",
    "HTTP",
    "URL",
    "API",
    "TLS",
    "CDN",
    "GraphQL",
    "REST",
}
_NAMES |= {*contract.PLANS, *contract.QUALITIES, *contract.OUTPUT_FORMATS, *contract.TRANSPORTS}
# The service's words (statuses, a field, a header, encodings, a method), command placeholders, Jupyter's "Run All",
# the language setting's values.
_NAMES |= {*contract.PENDING_STATUSES, *contract.FINAL_STATUSES, "creditCost", "Date", "hex", "base64", "GET"}
_NAMES |= {"KEY", "ID", "NAME", "VALUE", "DIR", "ZIP", "Run", "All", *i18n.LANGUAGES}
_IDENTIFIER = re.compile(
    r"<code.*?</code>"  # code: commands, calls
    r"|\S*[_%/\\.:=@#<>()\[\]{}0-9-]\S*"  # options, job ids, paths, hosts, sizes, versions, numbers
)


def english_words(text: str) -> list[str]:
    """The English words of `text` (HTML or plain) outside identifiers: tags are dropped but their titles, alt texts
    and placeholders kept, as a user sees them; code (`<code>`, or `backticks` in plain text) and a word with a
    digit, _, -, %, a dot or a slash are identifiers."""
    shown = re.sub(r"<(style|script)\b.*?</\1>", " ", text, flags=re.S)
    attributes = re.findall(r'\b(?:title|alt|placeholder)="([^"]*)"', shown)
    shown = re.sub(r"<code.*?</code>|`[^`\n]+`", " ", shown, flags=re.S)
    shown = re.sub(r"<[^>]+>", " ", shown)
    shown = html.unescape(" ".join([shown, *attributes]))
    shown = _IDENTIFIER.sub(" ", shown)
    return [w for w in re.findall(r"[A-Za-z]{2,}", shown) if w not in _NAMES]


def test_the_checker_finds_an_english_sentence_and_passes_identifiers() -> None:
    assert english_words('<span title="open full resolution">시드 7</span>') == ["open", "full", "resolution"]
    assert (
        english_words("작업 job_abc12 · 1024×1024 · flux-pro-1.1-ultra · <code>%flux_history --rerun ID</code>") == []
    )
    assert english_words("`--save-to keyring|file`로 고릅니다, or not") == ["or", "not"]


PROMPT = "새벽녘 현무암 절벽 위의 등대"


def _no_language_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """No locale variable and no DOITONG_LANG: the language is the default unless the test sets one."""
    for name in (*i18n.LOCALE_VARIABLES, "DOITONG_LANG"):
        monkeypatch.delenv(name, raising=False)


def _korean_shell(shell_for: Any, sandbox: Sandbox, out: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> Any:
    """A shell whose language is Korean by `%config Flux.language` or, with no config, by the process locale."""
    _no_language_set(monkeypatch)
    if how == "locale":
        monkeypatch.setenv("LANG", "ko_KR.UTF-8")
    shell = shell_for(sandbox, out)
    if how == "config":
        shell.run_line_magic("config", 'Flux.language = "ko"')
    return shell


def _panel_texts(panel: Any) -> list[str]:
    """Everything the panel's widgets show: labels, tooltips, placeholders, option labels and HTML."""
    import ipywidgets as widgets

    texts, stack = [], [panel.widget]
    while stack:
        widget = stack.pop()
        stack.extend(getattr(widget, "children", ()))
        for name in ("description", "tooltip", "placeholder"):
            texts.append(getattr(widget, name, None) or "")
        if isinstance(widget, widgets.HTML) and "<style>" not in widget.value:
            texts.append(widget.value)
        if isinstance(widget, widgets.Dropdown):
            texts.extend(widget._options_labels)
    texts.append(repr(panel.widget))
    return texts


@pytest.mark.parametrize("how", ["config", "locale"])
def test_a_korean_user_sees_no_english_sentence_of_ours(
    how: str, sandbox: Sandbox, tmp_path: Path, shell_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from doitong_nb._notebook.display import result_bundle
    from doitong_nb._notebook.panel import FluxPanel

    shell = _korean_shell(shell_for, sandbox, tmp_path / "out", monkeypatch, how)
    shell.run_cell_magic("flux", "--size 256x256 --seed 3 -o img", PROMPT)
    shell.run_cell_magic("flux", "--size 256x256 --seed 3 -o again", PROMPT)  # a replay's card
    seen = {"card": result_bundle([shell.user_ns["img"]], 256), "replay": result_bundle([shell.user_ns["again"]], 256)}
    seen["grid"] = result_bundle([shell.user_ns["img"], shell.user_ns["again"]], 256, session_credits=10, balance=990)
    account = shell.run_line_magic("flux_account", "")
    seen["account"] = {"text/plain": repr(account), "text/html": account._repr_html_()}
    history = shell.run_line_magic("flux_history", "")
    seen["history"] = history._repr_mimebundle_()[0]
    seen["panel"] = {"widgets": "\n".join(_panel_texts(FluxPanel(lambda: _client(shell))))}
    english = {face: english_words("\n".join(bundle.values())) for face, bundle in seen.items()}
    assert english == {face: [] for face in seen}
    assert "시드 3" in seen["card"]["text/html"] and "재사용" in seen["replay"]["text/html"]


def _client(shell: Any) -> Any:
    from doitong_nb._notebook import session

    assert session.current is not None
    return session.current.client


def test_english_stays_the_default(
    sandbox: Sandbox, tmp_path: Path, shell_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_language_set(monkeypatch)
    shell = shell_for(sandbox, tmp_path / "out")
    shell.run_cell_magic("flux", "--size 256x256 --seed 3 -o img", "A lighthouse")
    assert i18n.current() == "en" and "seed 3" in shell.user_ns["img"]._repr_mimebundle_()[0]["text/html"]


def test_a_change_of_language_reaches_the_next_cell(
    sandbox: Sandbox, tmp_path: Path, shell_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = _korean_shell(shell_for, sandbox, tmp_path / "out", monkeypatch, "config")
    shell.run_cell("x = 1")
    assert i18n.current() == "ko"
    shell.run_line_magic("config", 'Flux.language = "en"')
    shell.run_cell("x = 2")
    assert i18n.current() == "en"
    monkeypatch.setenv("DOITONG_LANG", "ko")  # as %env does, with no config: the environment is read again
    shell.run_line_magic("config", "Flux.language = None")
    shell.run_cell("x = 3")
    assert i18n.current() == "ko"


# --- refusals and doctor in Korean ---------------------------------------------------------------------------------


def _refusal(shell: Any, line: str) -> str:
    """The one line a refused cell shows (nothing was sent, so a UsageError)."""
    from IPython.core.error import UsageError

    with pytest.raises(UsageError) as refused:
        shell.run_cell_magic("flux", line, PROMPT)
    return str(refused.value)


@pytest.mark.parametrize("how", ["config", "locale"])
def test_a_korean_user_sees_refusals_and_doctor_without_an_english_sentence_of_ours(
    how: str,
    sandbox: Sandbox,
    tmp_path: Path,
    shell_for: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shell = _korean_shell(shell_for, sandbox, tmp_path / "out", monkeypatch, how)
    shell.run_cell_magic("flux", "--size 256x256 --seed 3", PROMPT)  # a job for doctor to read again
    seen = {"size": _refusal(shell, "--size 5000x5000"), "step": _refusal(shell, "--size 1000x1024")}
    shell.run_line_magic("config", "Flux.max_credits = 1")
    seen["budget"] = _refusal(shell, "--size 1024x1024 -n 2")
    capsys.readouterr()
    shell.run_line_magic("flux_doctor", "")
    seen["doctor"] = capsys.readouterr().out
    assert {face: english_words(text) for face, text in seen.items()} == {face: [] for face in seen}
    assert "너비 5000" in seen["size"] and "992 또는 1008" in seen["step"] and "max_credits" in seen["budget"]
    assert "정상 연결" in seen["doctor"] and "실패 0" in seen["doctor"]


@pytest.mark.parametrize("variable", ["LANG", "DOITONG_LANG"])
def test_the_doctor_command_speaks_korean_by_the_locale_or_doitong_lang(
    variable: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in (*i18n.LOCALE_VARIABLES, "DOITONG_LANG")}
    env.update({variable: "ko_KR.UTF-8", "DOITONG_API_KEY": sandbox.api_key, "PYTHONPATH": str(ROOT)})
    argv = [sys.executable, "-m", "doitong_nb._tools.cli", "doctor", "--base-url", sandbox.base_url]
    done = subprocess.run([*argv, "--output-dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and english_words(done.stdout) == [], done.stdout + done.stderr
    helped = subprocess.run([*argv[:-3], "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert "크레딧을 쓰지 않습니다" in helped.stdout, helped.stdout


def test_the_refusals_and_doctor_stay_english_by_default(
    sandbox: Sandbox,
    tmp_path: Path,
    shell_for: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _no_language_set(monkeypatch)
    shell = shell_for(sandbox, tmp_path / "out")
    assert "width 5000 is out of range; use 256 to 4096 pixels" in _refusal(shell, "--size 5000x5000")
    shell.run_line_magic("config", "Flux.max_credits = 1")
    assert "of its 1-credit budget, 1 left: raise max_credits" in _refusal(shell, "--size 1024x1024")
    capsys.readouterr()
    shell.run_line_magic("flux_doctor", "")
    assert "ok   reachable" in capsys.readouterr().out


def test_a_magics_argparse_errors_follow_the_language(
    sandbox: Sandbox, tmp_path: Path, shell_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = _korean_shell(shell_for, sandbox, tmp_path / "out", monkeypatch, "config")
    shell.run_cell("x = 1")
    said = {"choice": _refusal(shell, "--quality 4k"), "value": _refusal(shell, "--seed")}
    assert {face: english_words(text) for face, text in said.items()} == {face: [] for face in said}
    assert "잘못된 선택: '4k'" in said["choice"] and "인수 하나가 필요합니다" in said["value"]
    shell.run_line_magic("config", 'Flux.language = "en"')
    shell.run_cell("x = 2")
    assert "invalid choice: '4k'" in _refusal(shell, "--quality 4k")


def test_a_magics_help_follows_the_language(
    sandbox: Sandbox, tmp_path: Path, shell_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from doitong_nb._notebook.magics import Flux

    shell = _korean_shell(shell_for, sandbox, tmp_path / "out", monkeypatch, "config")
    shell.run_cell("x = 1")
    assert "재현 가능한 이미지를 위한 시드" in Flux.flux.__doc__ and "옵션:" in Flux.flux.__doc__
    logins = [shell.find_line_magic(name).__doc__ for name in ("flux_login", "flux_logout")]
    assert [english_words(doc) for doc in logins] == [[], []] and "보이지 않는 프롬프트" in logins[0]
    shell.run_line_magic("config", 'Flux.language = "en"')
    shell.run_cell("x = 2")
    assert "seed for a reproducible image" in Flux.flux.__doc__
    assert shell.find_line_magic("flux_login").__doc__.startswith("Ask for the API key with a hidden prompt")


# --- the command line, login and the settings' helps in Korean ----------------------------------------------------


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What `doitong-nb ARGV` prints (stdout and stderr: argparse's help, usage and errors included)."""
    from doitong_nb._tools.cli import main

    capsys.readouterr()
    with contextlib.suppress(SystemExit):  # --help, and argparse's errors
        main(argv)
    seen = capsys.readouterr()
    return seen.out + seen.err


def _cli_identifiers() -> set[str]:
    """Words the command line shows as identifiers in any language: its commands and the settings file's names."""
    from doitong_nb._runtime import config_file
    from doitong_nb._tools.cli import parser

    commands = next(a for a in parser()._actions if a.choices and isinstance(a.choices, dict)).choices
    return {*commands, *config_file.FILE_SETTINGS}


def _korean_cli(how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line in Korean by the settings file (`doitong-nb config language ko`) or, with none, by the
    process locale; a config directory of the test's own either way."""
    for name in (*i18n.LOCALE_VARIABLES, "DOITONG_LANG", "DOITONG_OUTPUT_DIR", "DOITONG_LOCK_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    if how == "file":
        _cli(["config", "language", "ko"], capsys)
    else:
        monkeypatch.setenv("LANG", "ko_KR.UTF-8")


def _paper(sandbox: Sandbox, folder: Path) -> tuple[Path, list[Any]]:
    """A notebook showing two images, flux_outputs/ and its lock file beside it (as test_verify_export's paper)."""
    from test_verify_export import notebook_showing

    from doitong_nb._runtime.client import Flux

    folder.mkdir()
    with Flux(api_key=sandbox.api_key, base_url=sandbox.base_url, output_dir=folder / "flux_outputs") as flux:
        results = flux.batch([PROMPT, PROMPT + " 2"], size="256x256", seed=5, progress=False).images
    return notebook_showing(folder / "paper.ipynb", results), results


@pytest.mark.parametrize("how", ["file", "locale"])
def test_the_command_line_speaks_korean_with_no_english_sentence_of_ours(
    how: str, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _korean_cli(how, tmp_path, monkeypatch, capsys)
    notebook, results = _paper(sandbox, tmp_path / "paper")
    crate = tmp_path / "crate.zip"
    seen = {
        "verify": _cli(["verify", str(notebook)], capsys),
        "export": _cli(["export", str(notebook), "--ro-crate", str(crate)], capsys),
    }
    results[0].path.write_bytes(b"retouched")
    seen["verify failed"] = _cli(["verify", str(notebook)], capsys)
    seen["export refused"] = _cli(["export", str(notebook), "--ro-crate", str(tmp_path / "again.zip")], capsys)
    for command in ([], ["verify"], ["export"], ["config"]):
        seen[f"{' '.join(command)} --help"] = _cli([*command, "--help"], capsys)
    seen["required"] = _cli(["export"], capsys)
    seen["choice"] = _cli(["doctor", "--transport", "http2"], capsys)
    seen["unrecognized"] = _cli(["verify", "--strict"], capsys)
    seen["config"] = _cli(["config"], capsys)
    known = _cli_identifiers()
    english = {face: [w for w in english_words(text) if w not in known] for face, text in seen.items()}
    assert english == {face: [] for face in seen}
    assert "이미지 2장: 정상 2 - 모두 확인됨" in seen["verify"] and "변경됨" in seen["verify failed"]
    assert crate.exists() and "사용법: doitong-nb" in seen[" --help"] and "다음 인수가 필요합니다" in seen["required"]
    assert "잘못된 선택: 'http2'" in seen["choice"] and "알 수 없는 인수: --strict" in seen["unrecognized"]


def test_the_command_line_stays_english_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_language_set(monkeypatch)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    helped = _cli(["--help"], capsys)
    assert helped.startswith("usage: doitong-nb") and "show this help message and exit" in helped
    assert "the following arguments are required: NOTEBOOK.ipynb, --ro-crate" in _cli(["export"], capsys)
    assert "language of messages, labels and help" in _cli(["config"], capsys)


def _logged_in_and_out(shell: Any, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> dict[str, str]:
    """Everything %flux_login and %flux_logout say: the hidden prompt, a login kept and one saved, a wrong line, a
    logout with the key in the environment and one without; and the warning for a key written in a cell."""
    import getpass

    from IPython.core.error import UsageError

    from doitong_nb._notebook.login import warning_for
    from doitong_nb._runtime import login

    monkeypatch.setattr(login, "_keyring", lambda: None)  # the 0600 file, never the machine's keyring
    prompts: list[str] = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": prompts.append(prompt) or sandbox.api_key)
    seen = {}
    for line in ("", "--save-to file"):
        capsys.readouterr()
        shell.run_line_magic("flux_login", line)
        seen[f"login {line}"] = capsys.readouterr().out
    for magic in ("flux_login", "flux_logout"):
        with pytest.raises(UsageError) as refused:
            shell.run_line_magic(magic, "--forever")
        seen[f"{magic} usage"] = str(refused.value)
    shell.run_line_magic("flux_logout", "")
    seen["logout"] = capsys.readouterr().out
    monkeypatch.delenv("DOITONG_API_KEY")
    shell.run_line_magic("flux_logout", "")
    seen["logout, no key left"] = capsys.readouterr().out
    seen["prompt"] = prompts[0]
    seen["warning"] = warning_for('import os\nos.environ["DOITONG_API_KEY"] = "dtk_live_0123456789abcdefLEAK"') or ""
    return seen


@pytest.mark.parametrize("how", ["config", "locale"])
def test_login_and_the_settings_helps_speak_korean_with_no_english_sentence_of_ours(
    how: str,
    sandbox: Sandbox,
    tmp_path: Path,
    shell_for: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    shell = _korean_shell(shell_for, sandbox, tmp_path / "out", monkeypatch, how)
    shell.run_cell("x = 1")
    seen = _logged_in_and_out(shell, sandbox, monkeypatch, capsys)
    assert {face: english_words(text) for face, text in seen.items()} == {face: [] for face in seen}
    assert sandbox.api_key not in "".join(seen.values())
    assert "로그인했습니다" in seen["login "] and "로그아웃했습니다" in seen["logout"] and "2행" in seen["warning"]
    shell.run_line_magic("config", "Flux")
    helps = " ".join(capsys.readouterr().out.split())  # as traitlets wraps it
    assert "통신 프로토콜: graphql 또는 rest (설정하지 않으면 설정 파일, 다음으로 DOITONG_TRANSPORT" in helps
    assert "세션 예산" in helps and "session budget" not in helps


def test_the_key_literal_warning_speaks_the_language_set_in_the_cell_before(
    sandbox: Sandbox,
    tmp_path: Path,
    shell_for: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The warning is said before the cell runs, by a hook that must come after the one that follows the language."""
    shell = _korean_shell(shell_for, sandbox, tmp_path / "out", monkeypatch, "config")
    capsys.readouterr()
    shell.run_cell(
        "if False:  # never runs: the warning reads the source\n"
        '    os.environ["DOITONG_API_KEY"] = "dtk_live_0123456789abcdefLEAK"'
    )
    warned = capsys.readouterr().err
    assert "이 셀은 API 키를 노트북에 적습니다(2행:" in warned and "LEAK" not in warned


def test_login_and_the_settings_helps_stay_english_by_default(
    sandbox: Sandbox,
    tmp_path: Path,
    shell_for: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _no_language_set(monkeypatch)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    shell = shell_for(sandbox, tmp_path / "out")
    shell.run_cell("x = 1")
    seen = _logged_in_and_out(shell, sandbox, monkeypatch, capsys)
    assert seen["login "].startswith("Logged in: the key is kept in this kernel only")
    assert seen["logout"].startswith("Logged out: forgot this kernel's key; deleted the saved key from ")
    assert "rotate the key" in seen["warning"] and seen["prompt"].startswith("Doitong API key (hidden")
    shell.run_line_magic("config", "Flux")
    helps = " ".join(capsys.readouterr().out.split())  # as traitlets wraps it
    assert "wire protocol: graphql or rest (unset: the settings file, then DOITONG_TRANSPORT" in helps


# --- the engine's, transports' and store's errors in Korean --------------------------------------------------------


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _provoked(box: Sandbox, out: Path) -> dict[str, Any]:
    """One error of each translated class, provoked against the real sandbox `box` (faults, a wrong key, a closed
    port, a file where the folder should be, an edited image), plus the URL policy and the webhook check, which
    judge without a server. Keyed by name: (the error, the code it must keep)."""
    import time

    from doitong_nb._core.errors import DoitongError
    from doitong_nb._engine.engine import check_output_url
    from doitong_nb._runtime.client import Flux
    from doitong_nb._wire import make_transport
    from doitong_nb._wire.webhooks import verify_signature
    from doitong_sandbox import Faults

    def caught(call: Any) -> DoitongError:
        with pytest.raises(DoitongError) as raised:
            call()
        return raised.value

    seen: dict[str, Any] = {}
    with Flux(api_key=box.api_key, base_url=box.base_url, output_dir=out) as flux:
        box.faults = Faults(rate_limit_429=20)  # more 429s than the client's attempts: the retries run out
        seen["rate limit"] = (caught(flux.account), contract.RATE_LIMITED)
        box.faults = Faults(error_5xx=20)
        seen["server error"] = (caught(flux.account), contract.INTERNAL)
        box.faults = Faults(fail_job=1)
        seen["generation failed"] = (caught(lambda: flux.generate(PROMPT, size="256x256", seed=1)), "GENERATION_FAILED")
        box.faults = Faults(truncate_cdn=20)  # every download cut short, past the client's download attempts
        seen["download"] = (caught(lambda: flux.generate(PROMPT, size="256x256", seed=2)), "DOWNLOAD")
        box.faults = Faults()
        seen["not found"] = (caught(lambda: flux.status("job_nobody_made")), contract.NOT_FOUND)
        seen["not pending"] = (caught(lambda: flux.resume("job_nobody_made")), contract.NOT_FOUND)
        image = flux.generate(PROMPT, size="256x256", seed=3)
        image.path.write_bytes(image.path.read_bytes()[:-1] + b"\0")  # edited since it was generated
        seen["integrity"] = (caught(lambda: flux.generate(PROMPT, size="256x256", seed=3)), "STORE_INTEGRITY")
    with Flux(api_key="dtk_not_a_key_of_this_service", base_url=box.base_url, output_dir=out) as stranger:
        seen["authentication"] = (caught(stranger.account), contract.UNAUTHENTICATED)
    with Flux(api_key=box.api_key, base_url=f"http://127.0.0.1:{_closed_port()}", output_dir=out) as lost:
        seen["network"] = (caught(lost.account), "NETWORK")
    (out.parent / "a-file").write_text("not a folder")
    with Flux(api_key=box.api_key, base_url=box.base_url, output_dir=out.parent / "a-file" / "out") as misplaced:
        seen["storage"] = (caught(lambda: misplaced.generate(PROMPT, size="256x256", seed=4)), "STORAGE")
    seen["unsafe URL"] = (caught(lambda: check_output_url("http://203.0.113.9/x.png", box.base_url)), "UNSAFE_RESPONSE")
    signed = lambda: verify_signature(b"{}", "sha256=" + "0" * 64, "secret", timestamp=str(time.time()))  # noqa: E731
    seen["webhook"] = (caught(signed), "WEBHOOK_SIGNATURE")
    seen["transport"] = (caught(lambda: make_transport("soap")), contract.BAD_USER_INPUT)
    return seen


def _schema_mismatch(out: Path) -> tuple[Any, list[str]]:
    """The SchemaMismatchError of a service that reads jobs otherwise and answers no introspection, and what the
    service itself said on the way (graphql-core's English, shown as it wrote it)."""
    import httpx

    from doitong_nb._core.errors import SchemaMismatchError
    from doitong_nb._runtime.client import Flux
    from doitong_nb._wire.discovery import INTROSPECTION
    from doitong_nb._wire.graphql import JOB_QUERY
    from doitong_sandbox import Sandbox

    with Sandbox(speed=1000, dialect="no-introspection") as box:
        with Flux(api_key=box.api_key, base_url=box.base_url, output_dir=out) as flux:
            with pytest.raises(SchemaMismatchError) as raised:
                flux.status("job_abc")
        said = []
        for query in (JOB_QUERY, INTROSPECTION):
            body = {"query": query, "variables": {"id": "job_abc"}}
            answer = httpx.post(
                f"{box.base_url}/graphql", json=body, headers={"Authorization": f"Bearer {box.api_key}"}
            )
            said.append(answer.json()["errors"][0]["message"])
    return raised.value, said


@pytest.mark.parametrize("how", ["config", "locale"])
def test_a_korean_user_sees_the_engines_errors_without_an_english_sentence_of_ours(
    how: str, tmp_path: Path, shell_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service that speaks Korean (its own words are shown beside ours), and one whose words are English: every
    error's message is Korean but for identifiers and the service's words, and its class and code are the same."""
    from doitong_sandbox import Sandbox

    with Sandbox(speed=1000, dialect="korean-errors") as box:
        shell = _korean_shell(shell_for, box, tmp_path / "shell", monkeypatch, how)
        shell.run_cell("x = 1")  # the language is taken up as a cell runs
        assert i18n.current() == "ko"
        seen = _provoked(box, tmp_path / "out")
        key = box.api_key
    mismatch, said = _schema_mismatch(tmp_path / "schema")
    text = {name: str(error) for name, (error, _code) in seen.items()}
    text["schema mismatch"] = str(mismatch)
    for words in said:
        assert words in text["schema mismatch"]  # the service's own words, as it wrote them
        text["schema mismatch"] = text["schema mismatch"].replace(words, " ")
    assert {name: english_words(message) for name, message in text.items()} == {name: [] for name in text}
    assert {name: error.code for name, (error, _code) in seen.items()} == {
        name: code for name, (_e, code) in seen.items()
    }
    assert mismatch.code == "SCHEMA_MISMATCH" and all(key not in message for message in text.values())
    assert "요청이 너무 많습니다" in text["rate limit"]  # the Korean service's words beside ours
    assert "요청 한도에 도달했습니다" in text["rate limit"] and "API 키가 거부되었습니다" in text["authentication"]
    assert "이미지를 내려받지 못했습니다" in text["download"] and "%flux_resume" in text["download"]
    assert "아무것도 보내지 않았고 과금되지 않았습니다" in text["storage"] and "시드" in text["generation failed"]


def test_the_engines_errors_stay_english_by_default(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_language_set(monkeypatch)
    seen = {name: str(error) for name, (error, _code) in _provoked(sandbox, tmp_path / "out").items()}
    mismatch, _said = _schema_mismatch(tmp_path / "schema")
    assert i18n.current() == "en"
    assert seen["rate limit"].startswith("rate limit reached") and "the API key was refused" in seen["authentication"]
    assert "the service had an internal error (HTTP 5" in seen["server error"]
    assert "its credits are refunded: try again" in seen["generation failed"]
    assert "is done, but its image could not be downloaded" in seen["download"]
    assert (
        seen["not found"].startswith("not found: ") and "is not among this client's pending jobs" in seen["not pending"]
    )
    assert "was modified since it was generated (sha256 mismatch)" in seen["integrity"]
    assert "cannot connect to 127.0.0.1:" in seen["network"] and "nothing was sent or charged" in seen["storage"]
    assert seen["unsafe URL"].startswith("refusing output URL on host '203.0.113.9'")
    assert seen["webhook"].startswith("the signature does not match the body")
    assert "transport 'soap' is not supported" in seen["transport"]
    assert "does not answer introspection" in str(mismatch) and "Flux.status_query" in str(mismatch)


def test_an_unclear_submission_in_flux_jobs_reads_in_the_user_s_language() -> None:
    """The journal keeps the reason in English (data, the same for every reader); `%flux_jobs` shows it translated."""
    from doitong_nb._runtime.client import PendingJob

    job = PendingJob(None, "등대", "1024x1024", 7, "2026-12-03T10:00:00+00:00", "submitting", "idem_1", None)
    unclear = replace(job, note="answer unclear: may be charged")
    assert "(no job id: answer unclear: may be charged; `%flux_resume idem_1 --resend`)" in str(unclear)
    i18n.use("ko")
    for pending in (job, unclear):
        assert english_words(str(pending)) == [] and "`%flux_resume idem_1 --resend`" in str(pending), str(pending)
    assert "과금되었을 수 있음" in str(unclear) and "보관된 응답 없음" in str(job)
