"""Every setting comes from one order: explicit argument > `%config Flux.*` > login (the key) > environment > default.

The resolution is pure (no server): each source, and each pair of neighbours, is tested on `resolve` itself.
Then every face reads it: `%%flux` honours the environment and `%config`, a cell's option wins over both, the panel
starts from the same settings, and `-n` is paced by the plan like `--each` (a failing cell stopping papermill:
test_papermill).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from doitong_nb._core import env
from doitong_nb._core.errors import AuthenticationError, InvalidRequestError
from doitong_nb._core.i18n import LOCALE_VARIABLES
from doitong_nb._core.settings import CONFIGURABLE, ENVIRONMENT, OPTIONS, checked
from doitong_nb._runtime import config_file, login
from doitong_nb._runtime import settings as runtime_settings
from doitong_nb._runtime.sandbox import connect
from doitong_nb._runtime.settings import resolve

if TYPE_CHECKING:
    from doitong_sandbox import Sandbox

PROMPT = "A lighthouse on a basalt cliff at dawn"
KEY = "sk-settings-0123456789"
URL = "https://api.example.test"
README = Path(__file__).resolve().parents[1] / "README.md"

# Two values of every option, the first never its default: the lower source gets one, the higher the other.
SAMPLES: dict[str, tuple[Any, Any]] = {
    "transport": ("rest", "graphql"),
    "output_dir": ("there", "elsewhere"),
    "timeout": (30.0, 45.0),
    "lock_file": ("team.lock.jsonl", "other.lock.jsonl"),
    "replay": (False, True),
    "max_credits": (200, 300),
    "on_missing": ("regenerate", "error"),
    "plan": ("starter", "free"),
    "status_query": ("getJob(jobId)", "generation(id)"),
    "statuses": ("upscaling=processing", "DELIVERED=completed"),
    "mutation": ("generateImage", "generate"),
    "webhook_secret": ("whsec_one", "whsec_two"),
    "size": ("2048x2048", "512x512"),
    "preview_px": (512, 256),
    "background": (True, False),
    "language": ("ko", "en"),
    "sandbox_speed": (1.0, 2.0),
    "sandbox_plan": ("free", "starter"),
    "sandbox_credits": (50, 60),
}
# A value each option refuses (blank is not among them: a blank value is unset).
BAD: dict[str, Any] = {
    "transport": "soap",
    "output_dir": 42,
    "timeout": "nan",
    "lock_file": 42,
    "replay": "yes",
    "max_credits": -1,
    "on_missing": "ignore",
    "plan": "gold",
    "status_query": "get job",
    "statuses": "upscaling=almost",
    "mutation": "generate image",
    "webhook_secret": 42,
    "size": "1000x1024",
    "preview_px": 5,
    "background": "no",
    "language": "fr",
    "sandbox_speed": 0,
    "sandbox_plan": "gold",
    "sandbox_credits": -5,
}
WITH_ENV = [name for name, option in OPTIONS.items() if option.env]


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DOITONG_* variable, locale, login, keyring or saved key from outside the test."""
    for name in (*ENVIRONMENT, *LOCALE_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(login, "_login_key", None)
    monkeypatch.setattr(login, "_keyring", lambda: None)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def used(settings: runtime_settings.Settings, name: str) -> Any:
    """The option as the settings hold it, comparable with `checked` (the output folder is kept as a Path)."""
    value = getattr(settings, name)
    return str(value) if name == "output_dir" else value


def given(settings_value: Any) -> str:
    """A value as the environment gives it: text."""
    return str(settings_value)


# --- each source, and its neighbour below -------------------------------------------------------------------------


def test_with_nothing_set_every_option_is_its_default_and_the_settings_name_the_sandbox() -> None:
    settings = resolve()
    assert {name: used(settings, name) for name in OPTIONS} == {
        name: option.default for name, option in OPTIONS.items()
    }
    assert settings.sandbox and settings.api_key == "" and settings.base_url == ""  # connect() starts it


@pytest.mark.parametrize("name", WITH_ENV)
def test_the_environment_wins_over_the_default(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value = SAMPLES[name][0]
    monkeypatch.setenv(OPTIONS[name].env, given(value))
    assert used(resolve(), name) == checked(name, value) != OPTIONS[name].default


@pytest.mark.parametrize("name", CONFIGURABLE)
def test_config_wins_over_the_environment_and_the_default(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    high, low = SAMPLES[name]
    if OPTIONS[name].env:
        monkeypatch.setenv(OPTIONS[name].env, given(low))
    assert used(resolve({name: high}), name) == checked(name, high)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_an_explicit_argument_wins_over_config_and_the_environment(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    high, low = SAMPLES[name]
    if OPTIONS[name].env:
        monkeypatch.setenv(OPTIONS[name].env, given(low))
    configured = {name: low} if name in CONFIGURABLE else {}
    assert used(resolve(configured, **{name: high}), name) == checked(name, high)


def test_the_key_comes_from_the_argument_then_the_login_then_the_environment_then_the_saved_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(login, "saved", lambda: "saved_key_0123456789")
    assert resolve(base_url=URL).api_key == "saved_key_0123456789"
    monkeypatch.setenv(env.ENV_API_KEY, "env_key_0123456789")
    assert resolve(base_url=URL).api_key == "env_key_0123456789"
    login.login("login_key_0123456789")
    assert resolve(base_url=URL).api_key == "login_key_0123456789"
    assert resolve(base_url=URL, api_key=KEY).api_key == KEY


def test_the_base_url_comes_from_the_argument_then_the_environment_then_the_production_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve(api_key=KEY).base_url == "https://api.doitong.com"
    monkeypatch.setenv(env.ENV_BASE_URL, "https://env.example.test/")
    assert resolve(api_key=KEY).base_url == "https://env.example.test"
    assert resolve(api_key=KEY, base_url=URL).base_url == URL
    assert not resolve(api_key=KEY).sandbox


def test_a_base_url_without_a_key_is_refused_saying_where_a_key_goes() -> None:
    with pytest.raises(AuthenticationError, match="set DOITONG_API_KEY, run %flux_login, or pass api_key="):
        resolve(base_url=URL)


def test_the_language_comes_from_the_environment_then_the_locale_then_english(monkeypatch: pytest.MonkeyPatch) -> None:
    """The locale sits between DOITONG_LANG and the default; one without a catalog is English, never an error."""
    monkeypatch.setenv("LANG", "fr_FR.UTF-8")
    assert resolve().language == "en"
    monkeypatch.setenv("LANG", "ko_KR.UTF-8")
    assert resolve().language == "ko"
    monkeypatch.setenv("LANGUAGE", "fr:ko")  # gettext's list: the first language with a catalog
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    assert resolve().language == "ko"
    monkeypatch.setenv(env.ENV_LANG, "en")
    assert resolve().language == "en"
    assert resolve({"language": "ko_KR"}).language == "ko"
    with pytest.raises(InvalidRequestError, match=r"^DOITONG_LANG: language 'fr' is unknown; use one of: en, ko$"):
        monkeypatch.setenv(env.ENV_LANG, "fr")
        resolve()


def test_a_blank_value_is_unset_in_every_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.ENV_TRANSPORT, "  ")
    assert resolve({"transport": ""}, transport=None).transport == "graphql"
    monkeypatch.setenv(env.ENV_TRANSPORT, "rest")
    assert resolve({"plan": ""}, transport="").transport == "rest"


# --- the settings file ---------------------------------------------------------------------------------------------


def _settings_file(text: str) -> Path:
    """The user's settings file (in the test's own config directory) with `text`."""
    path = config_file.settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", config_file.FILE_SETTINGS)
def test_the_settings_file_wins_over_the_environment_and_config_over_the_file(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    high, low = SAMPLES[name]
    monkeypatch.setenv(OPTIONS[name].env, given(low))
    _settings_file(f"[settings]\n{name} = {given(high)}\n")
    assert used(resolve(), name) == checked(name, high) != checked(name, low)
    if name in CONFIGURABLE:
        assert used(resolve({name: low}), name) == checked(name, low)


def test_the_language_comes_from_explicit_then_config_then_the_file_then_doitong_lang_then_the_locale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's order, each source set to the other language than the one below it, then taken away."""
    monkeypatch.setenv("LANG", "ko_KR.UTF-8")
    monkeypatch.setenv(env.ENV_LANG, "en")
    path = _settings_file("[settings]\nlanguage = ko\n")
    assert runtime_settings.value_of("language", "en", "ko") == "en"
    assert runtime_settings.value_of("language", None, "en") == "en"
    assert runtime_settings.value_of("language") == "ko"  # the file over DOITONG_LANG=en
    path.unlink()
    assert runtime_settings.value_of("language") == "en"  # DOITONG_LANG over LANG=ko
    monkeypatch.delenv(env.ENV_LANG)
    assert runtime_settings.value_of("language") == "ko"
    monkeypatch.delenv("LANG")
    assert runtime_settings.value_of("language") == "en"


@pytest.mark.parametrize(
    ("text", "read"),
    [(None, {}), ("", {}), ("[settings]\n", {}), ("# nothing set yet\n[settings]\nlanguage =\n", {"language": ""})],
)
def test_an_absent_or_empty_settings_file_sets_nothing(text: str | None, read: dict[str, str]) -> None:
    if text is not None:
        _settings_file(text)
    assert config_file.read() == read
    assert resolve().language == "en" and resolve().timeout == OPTIONS["timeout"].default


def test_a_bad_value_in_the_settings_file_is_refused_naming_the_file() -> None:
    path = _settings_file("[settings]\ntimeout = soon\n")
    with pytest.raises(InvalidRequestError) as caught:
        resolve()
    assert str(caught.value) == f"{path}: timeout 'soon' must be a positive number of seconds"
    assert caught.value.field == "timeout"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[settings]\nlangauge = ko\n", "langauge cannot be set in this file (`doitong-nb config langauge --unset`"),
        ("[settings]\napi_key = sk-in-a-file-0123456789\n", "api_key cannot be set in this file"),
        ("[flux]\nlanguage = ko\n", "section [flux] is unknown; settings go under [settings]"),
        ("language = ko\n", "is not a settings file (File contains no section headers."),
    ],
)
def test_a_settings_file_the_package_cannot_read_is_refused_naming_the_file(text: str, said: str) -> None:
    path = _settings_file(text)
    with pytest.raises(InvalidRequestError) as caught:
        resolve()
    assert str(caught.value).startswith(str(path)) and said in str(caught.value)
    assert "sk-in-a-file" not in str(caught.value)


def test_a_change_of_the_settings_file_is_part_of_what_the_faces_watch() -> None:
    before = runtime_settings.fingerprint()
    _settings_file("[settings]\nlanguage = ko\n")
    assert runtime_settings.fingerprint() != before


def test_doitong_nb_config_sets_shows_lists_and_unsets_a_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from doitong_nb._tools.cli import main

    path = config_file.settings_file()
    assert main(["config", "timeout", "120"]) == 0
    assert capsys.readouterr().out == f"set timeout = 120 in {path}\n" and resolve().timeout == 120.0
    assert main(["config", "timeout"]) == 0 and capsys.readouterr().out == "120\n"
    assert main(["config"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == f"settings file: {path}" and "timeout = 120" in listed and "language (unset)" in listed
    assert "    language of messages, labels and help: en or ko" in listed[listed.index("language (unset)") + 1]
    assert main(["config", "timeout", "soon"]) == 2
    assert capsys.readouterr().out == f"FAIL {path}: timeout 'soon' must be a positive number of seconds\n"
    assert main(["config", "timeout", "--unset"]) == 0 and path.read_text(encoding="utf-8") == "[settings]\n\n"
    assert main(["config", "timeout"]) == 1 and capsys.readouterr().out.endswith("timeout (unset)\n")
    assert main(["config", "tmeout"]) == 2
    assert capsys.readouterr().out.startswith(f"FAIL tmeout cannot be set in {path}; it takes: transport, output_dir")


@pytest.mark.parametrize("name", ["api_key", "webhook_secret"])
def test_a_secret_is_never_written_to_the_settings_file(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from doitong_nb._tools.cli import main

    assert main(["config", name, KEY]) == 2
    out = capsys.readouterr().out
    assert out == f"FAIL {name} is never written to a file: run %flux_login --save to keep a key\n"
    assert KEY not in out and not config_file.settings_file().exists()


def test_a_name_the_file_cannot_hold_is_removed_by_the_command_the_error_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from doitong_nb._tools.cli import main

    _settings_file("[settings]\ntimeout = 90\napi_key = sk-in-a-file-0123456789\n")
    assert main(["prices"]) == 2 and "`doitong-nb config api_key --unset` removes it" in capsys.readouterr().out
    assert main(["config", "api_key", "--unset"]) == 0 and main(["prices"]) == 0
    assert config_file.read() == {"timeout": "90"} and "sk-in-a-file" not in capsys.readouterr().out


def test_a_language_the_file_cannot_give_fails_every_command_but_the_one_that_sets_it_right(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from doitong_nb._tools.cli import main

    path = _settings_file("[settings]\nlanguage = fr\n")
    assert main(["prices"]) == 2
    assert capsys.readouterr().out == f"FAIL {path}: language 'fr' is unknown; use one of: en, ko\n"
    assert main(["config", "language", "en"]) == 0 and main(["prices"]) == 0


# --- checks ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_option_refuses_a_bad_value_before_any_request(name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        resolve(**{name: BAD[name]})
    assert caught.value.field == name and "\n" not in str(caught.value)


def test_a_bad_value_names_the_source_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidRequestError, match=r"^timeout -1 must be a positive number of seconds$"):
        resolve(timeout=-1)
    with pytest.raises(InvalidRequestError, match=r"^%config Flux\.timeout: timeout -1 must be a positive number"):
        resolve({"timeout": -1})
    monkeypatch.setenv(env.ENV_TIMEOUT, "abc")
    with pytest.raises(InvalidRequestError, match=r"^DOITONG_TIMEOUT: timeout 'abc' must be a positive number"):
        resolve()
    monkeypatch.setenv(env.ENV_TIMEOUT, "30")
    monkeypatch.setenv(env.ENV_PLAN, "gold")
    with pytest.raises(InvalidRequestError, match=r"^DOITONG_PLAN: plan 'gold' is unknown; use one of: free, "):
        resolve()


def test_an_unknown_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="tmeout"):
        resolve(tmeout=3)


def test_every_configurable_option_is_a_trait_that_starts_unset_and_is_checked_as_it_is_set() -> None:
    from traitlets import TraitError

    from doitong_nb._notebook.magics import Flux as FluxMagics

    magics = FluxMagics(shell=None)
    assert set(FluxMagics.class_traits(config=True)) == set(CONFIGURABLE)
    assert {name: getattr(magics, name) for name in CONFIGURABLE} == dict.fromkeys(CONFIGURABLE)
    with pytest.raises(TraitError, match=r"^%config Flux\.size: width 1000 is not a multiple of 16; try 992 or 1008$"):
        magics.size = "1000x1024"
    magics.size = "2048X2048"
    assert magics.size == "2048x2048"  # kept as it is used


def test_a_running_client_takes_live_options_while_a_change_of_service_needs_a_new_client() -> None:
    base = resolve(api_key=KEY, base_url=URL)
    for live in ("replay", "max_credits", "timeout", "size", "preview_px", "background", "on_missing"):
        assert resolve(api_key=KEY, base_url=URL, **{live: SAMPLES[live][0]}).service() == base.service(), live
    for other in ("transport", "output_dir", "plan", "status_query", "mutation", "lock_file"):
        assert resolve(api_key=KEY, base_url=URL, **{other: SAMPLES[other][0]}).service() != base.service(), other
    assert resolve(api_key="sk-another-0123456789", base_url=URL).service() != base.service()


def test_settings_that_name_a_service_connect_to_it_without_a_sandbox() -> None:
    settings = resolve(api_key=KEY, base_url=URL)
    assert connect(settings) is settings


def test_the_readme_lists_every_setting() -> None:
    text = README.read_text()
    table = text[text.index("## Settings") :].split("\n## ", 1)[0]
    assert "> `%config Flux.*` > the login (the key only) > the settings file > the environment > the default" in table
    missing = [name for name in ENVIRONMENT if f"`{name}`" not in table]
    missing += [f"Flux.{name}" for name in CONFIGURABLE if f"| `{name}` |" not in table]
    assert missing == []


# --- every face reads them ------------------------------------------------------------------------------------------


@pytest.fixture
def ip(sandbox: Sandbox, tmp_path: Path, shell_for) -> Iterator[InteractiveShell]:
    yield shell_for(sandbox, tmp_path / "out")


def _submitted_paths(box: Sandbox) -> set[str]:
    return {e["path"] for e in box.api_request_log if e["method"] == "POST" or e["path"].startswith("/v1/")}


def test_the_cell_magic_honours_doitong_transport_from_the_environment(
    ip: InteractiveShell, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOITONG_TRANSPORT", "rest")
    ip.run_cell_magic("flux", "--size 256x256 --seed 1", PROMPT)
    assert "/v1/text_to_image" in _submitted_paths(sandbox) and "/graphql" not in _submitted_paths(sandbox)


def test_config_wins_over_the_environment(ip: InteractiveShell, sandbox: Sandbox, monkeypatch) -> None:
    monkeypatch.setenv("DOITONG_TRANSPORT", "rest")
    ip.run_line_magic("config", "Flux.transport = 'graphql'")
    ip.run_cell_magic("flux", "--size 256x256 --seed 2", PROMPT)
    assert "/graphql" in _submitted_paths(sandbox) and "/v1/text_to_image" not in _submitted_paths(sandbox)


def test_a_cell_option_wins_over_config(ip: InteractiveShell, sandbox: Sandbox) -> None:
    ip.run_line_magic("config", "Flux.transport = 'rest'")
    ip.run_line_magic("config", "Flux.size = '512x512'")
    ip.run_cell_magic("flux", "--transport graphql --size 256x256 --seed 4 -o img", PROMPT)
    assert "/graphql" in _submitted_paths(sandbox) and "/v1/text_to_image" not in _submitted_paths(sandbox)
    assert (ip.user_ns["img"].width, ip.user_ns["img"].height) == (256, 256)


def test_a_budget_from_the_environment_refuses_the_cell_before_sending(
    ip: InteractiveShell, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, failed_cell
) -> None:
    monkeypatch.setenv("DOITONG_MAX_CREDITS", "5")
    assert "raise max_credits" in failed_cell(ip, "--size 256x256 --seed 5", PROMPT)
    assert not _submitted_paths(sandbox)


@pytest.mark.parametrize("magic", ["flux_jobs", "flux_account", "flux_panel", "flux_doctor"])
def test_a_bad_environment_value_is_one_line_in_every_line_magic(
    ip: InteractiveShell, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, magic: str
) -> None:
    from IPython.core.error import UsageError

    monkeypatch.setenv("DOITONG_TIMEOUT", "abc")
    with pytest.raises(UsageError, match=r"^DOITONG_TIMEOUT: timeout 'abc' must be a positive number"):
        ip.run_line_magic(magic, "")
    assert not _submitted_paths(sandbox)


def test_a_bad_config_value_is_said_in_one_line_and_fails_every_cell_until_set_right(
    ip: InteractiveShell, sandbox: Sandbox, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24: IPython only logged the refusal ("ERROR:root:") and Run All went on with the value before."""
    from IPython.core.error import UsageError

    ip.run_line_magic("config", "Flux.timeout = 60")
    ip.run_line_magic("config", "Flux.timeout = -1")
    message = "%config Flux.timeout: timeout -1.0 must be a positive number of seconds"
    assert capsys.readouterr().err == f"{message}; every %flux cell fails until it is set right\n"
    assert not caplog.records
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        ip.run_cell_magic("flux", "--size 256x256", "a paper boat")
    assert sandbox.stats()["total"]["api_requests"] == 0
    ip.run_line_magic("config", "Flux.timeout = 30")
    ip.run_cell_magic("flux", "--size 256x256", "a paper boat")
    assert sandbox.stats()["total"]["submissions"] == 1


def test_a_live_change_reaches_the_running_client_and_a_change_of_service_builds_a_new_one(
    ip: InteractiveShell,
) -> None:
    magics = ip.magics_manager.registry["Flux"]
    client = magics.client
    ip.run_line_magic("config", "Flux.max_credits = 50")
    assert magics.client is client and client.settings.max_credits == 50
    ip.run_line_magic("config", "Flux.transport = 'rest'")
    assert magics.client is not client and magics.client.settings.transport == "rest"


def test_an_output_folder_set_in_the_environment_is_seen_at_the_next_cell(
    ip: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ip.run_cell_magic("flux", "--size 256x256 --seed 3 -o first", PROMPT)
    monkeypatch.setenv("DOITONG_OUTPUT_DIR", str(tmp_path / "elsewhere"))
    ip.run_cell_magic("flux", "--size 256x256 --seed 3 -o second", PROMPT)
    assert ip.user_ns["first"].path.parent == tmp_path / "out"
    assert ip.user_ns["second"].path.parent == tmp_path / "elsewhere"


def test_the_panel_starts_from_config(ip: InteractiveShell) -> None:
    from doitong_nb._notebook.panel import FluxPanel

    ip.run_line_magic("config", "Flux.size = '2048x2048'")
    ip.run_line_magic("config", "Flux.max_credits = 120")
    panel = FluxPanel()
    assert (panel.size.value, panel.budget.value) == ("2048x2048", "120")  # the transport: the client's own


def test_the_panel_starts_from_the_environment_under_config(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    from doitong_nb._notebook.panel import FluxPanel

    monkeypatch.setenv("DOITONG_MAX_CREDITS", "70")
    ip.run_line_magic("config", "Flux.size = '1536x1024'")
    panel = FluxPanel()
    assert panel.budget.value == "70"
    assert (panel.size.value, panel.custom_size.value) == ("", "1536x1024")  # "Custom…"


def test_count_on_the_free_plan_is_paced_by_the_plan_and_delivers_every_image(tmp_path: Path, shell_for) -> None:
    """`-n 12` on the free plan (one job at a time) gave 9 images and 3 'too many jobs' errors (issue 10)."""
    from doitong_sandbox import Sandbox

    with Sandbox(plan="free", credits=1000, speed=1000) as box:
        ip = shell_for(box, tmp_path / "out")
        ip.run_cell_magic("flux", "-n 12 --size 256x256 -o grid", PROMPT)
        total = box.stats()["total"]
    grid = ip.user_ns["grid"]
    assert len(grid) == 12 and all(hasattr(r, "path") for r in grid)
    assert total["rate_limited"] == 0 and total["jobs_created"] == 12
