"""Issue 12: keys never in a notebook. %flux_login / %flux_logout, the lookup order, and the key-literal warning."""

from __future__ import annotations

import getpass
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from doitong_nb._core import env
from doitong_nb._core.errors import AuthenticationError, DoitongError
from doitong_nb._notebook import login as login_magics
from doitong_nb._runtime import login
from doitong_nb._runtime import settings as runtime_settings
from doitong_sandbox import Sandbox

KEY = "dtk_live_0123456789abcdefLEAK"


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """No login left over, no real keyring, and a config directory of the test's own."""
    monkeypatch.setattr(login, "_login_key", None)
    monkeypatch.setattr(login, "_keyring", lambda: None)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(env.ENV_API_KEY, raising=False)
    monkeypatch.delenv(env.ENV_BASE_URL, raising=False)
    yield


# --- the warning --------------------------------------------------------------------------------------

LEAKS = {
    "%env": f"%env {env.ENV_API_KEY}={KEY}",
    "os.environ": f'import os\nos.environ["{env.ENV_API_KEY}"] = "{KEY}"',
    "Flux(api_key=)": f'from doitong_nb import Flux\nflux = Flux(api_key="{KEY}")',
}


@pytest.mark.parametrize("form", sorted(LEAKS))
def test_each_key_literal_form_is_named_by_line_and_the_key_never_shown(form: str) -> None:
    message = login_magics.warning_for(LEAKS[form])
    assert message is not None
    assert KEY not in message and KEY[:12] not in message
    assert "%flux_login" in message and "rotate the key" in message
    assert "line 1" in message if form == "%env" else "line 2" in message


@pytest.mark.parametrize(
    "source",
    [
        f'key = os.environ.get("{env.ENV_API_KEY}")',
        f'os.environ["{env.ENV_API_KEY}"] = getpass.getpass()',
        f'os.environ["{env.ENV_API_KEY}"] = os.environ.get("OTHER_KEY_VARIABLE_NAME", "")',
        f"%env {env.ENV_API_KEY}=$secret_from_a_variable",
        f"%env {env.ENV_API_KEY}",  # a read
        "flux = Flux(api_key=my_key_from_a_vault)",
        'flux = Flux(api_key="...")',  # a placeholder in documentation
        f'if os.environ["{env.ENV_API_KEY}"] == "dtk_live_0123456789abcdef": pass',
    ],
)
def test_reads_getpass_and_placeholders_are_not_leaks(source: str) -> None:
    assert login_magics.key_literals(source) == []


def test_other_setters_are_caught_too() -> None:
    assert login_magics.key_literals(f'os.environ.setdefault("{env.ENV_API_KEY}", "{KEY}")')
    assert login_magics.key_literals(f'os.environ.update({env.ENV_API_KEY}="{KEY}")')


def test_the_warning_fires_before_the_cell_and_the_cell_still_runs(
    shell_for, sandbox: Sandbox, tmp_path: Path, capsys
) -> None:
    ip = shell_for(sandbox, tmp_path / "out")
    for form, source in LEAKS.items():
        if form == "Flux(api_key=)":
            source = f'api_key="{KEY}"\nran = "{form}"'  # a Flux() here would reach for a service that is not there
        else:
            source += f'\nran = "{form}"'
        ip.run_cell(source)
        err = capsys.readouterr().err
        assert "writes an API key into the notebook" in err, form
        assert KEY not in err
        assert ip.user_ns["ran"] == form
        os.environ.pop(env.ENV_API_KEY, None)


# --- login, logout and the lookup order ---------------------------------------------------------------------------


def test_lookup_order_is_argument_then_login_then_environment_then_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://api.example.test"
    monkeypatch.setattr(login, "saved", lambda: "saved_key_0123456789")
    assert runtime_settings.resolve(base_url=url).api_key == "saved_key_0123456789"
    monkeypatch.setenv(env.ENV_API_KEY, "env_key_0123456789")
    assert runtime_settings.resolve(base_url=url).api_key == "env_key_0123456789"
    login.login("  login_key_0123456789\n")
    assert runtime_settings.resolve(base_url=url).api_key == "login_key_0123456789"
    assert runtime_settings.resolve(base_url=url, api_key="arg_key_0123456789").api_key == "arg_key_0123456789"
    login.logout()
    assert runtime_settings.resolve(base_url=url).api_key == "env_key_0123456789"


def test_a_login_key_is_checked_and_scrubbed_like_any_key() -> None:
    with pytest.raises(AuthenticationError, match="position 5"):
        login.login("dtk_\x00secret_key_value")
    login.login(KEY)
    assert KEY not in str(DoitongError(f"the server said {KEY}"))


def test_flux_login_asks_hidden_keeps_it_in_the_kernel_and_logout_forgets(
    shell_for, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    ip = shell_for(sandbox, tmp_path / "out")
    monkeypatch.delenv(env.ENV_API_KEY)  # from here the login is the only key the magics could see
    prompts = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": prompts.append(prompt) or sandbox.api_key + "\n")
    ip.run_line_magic("flux_login", "")
    assert prompts and "hidden" in prompts[0]
    assert login.current() == sandbox.api_key
    out = capsys.readouterr().out
    assert sandbox.api_key not in out and "this kernel only" in out
    magics = ip.magics_manager.registry["Flux"]
    assert magics.client.settings.api_key == sandbox.api_key  # the fingerprint saw the login
    assert sandbox.api_key not in repr(magics.client) + repr(magics.client.settings)
    assert not login.key_file().exists()
    ip.run_line_magic("flux_logout", "")
    assert login.current() is None and "forgot this kernel's key" in capsys.readouterr().out


def test_flux_login_save_writes_a_0600_file_and_logout_deletes_it(
    shell_for, sandbox: Sandbox, tmp_path: Path, monkeypatch, capsys
) -> None:
    ip = shell_for(sandbox, tmp_path / "out")
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": KEY)
    ip.run_line_magic("flux_login", "--save")
    path = login.key_file()
    assert path.is_relative_to(tmp_path / "config")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert login.saved() == KEY
    assert KEY not in capsys.readouterr().out
    ip.run_line_magic("flux_logout", "")
    assert not path.exists() and login.saved() is None


def test_a_key_file_others_can_read_is_refused(capsys) -> None:
    path = login.save(KEY, "file")
    os.chmod(path, 0o644)
    assert login.saved() is None
    err = capsys.readouterr().err
    assert "chmod 600" in err and KEY not in err


def test_flux_login_save_to_keyring_uses_the_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    store: dict[tuple[str, str], str] = {}

    class FakeKeyring:
        set_password = staticmethod(lambda s, u, p: store.__setitem__((s, u), p))
        get_password = staticmethod(lambda s, u: store.get((s, u)))
        delete_password = staticmethod(lambda s, u: store.pop((s, u)))

    monkeypatch.setattr(login, "_keyring", lambda: FakeKeyring)
    assert login.save(KEY, "keyring") == "the OS keyring"
    assert login.saved() == KEY and not login.key_file().exists()
    assert login.forget_saved() == ["the OS keyring"] and login.saved() is None


def test_save_to_keyring_without_one_says_how_to_get_it() -> None:
    with pytest.raises(AuthenticationError, match=r"doitong-nb\[keyring\]"):
        login.save(KEY, "keyring")


def test_an_empty_entry_changes_nothing(shell_for, sandbox: Sandbox, tmp_path: Path, monkeypatch) -> None:
    from IPython.core.error import UsageError

    ip = shell_for(sandbox, tmp_path / "out")
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": "  ")
    with pytest.raises(UsageError, match="no key was entered"):
        ip.run_line_magic("flux_login", "")
    assert login.current() is None
