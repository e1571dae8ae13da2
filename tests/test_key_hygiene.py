"""The key as users paste it: surrounding whitespace is stripped, a character no header can carry is refused
before any request, and no error on any failure path (DNS, refused, TLS, dropped, 5xx, download) holds it."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

import pytest

from doitong_nb import AuthenticationError, DoitongError
from doitong_nb._notebook.display import error_text
from doitong_nb._runtime.client import Flux
from doitong_sandbox import Faults, Sandbox

SECRET = "sk-test/SECRET+4f1c=9a7e2b6d8053"  # '/', '+' and '=' make its base64 and percent forms differ
PROMPT = "a lighthouse at dusk"


def leaked_forms(secret: str) -> list[str]:
    """Every form a key takes when a library quotes it: raw, escaped, base64 (alone and as a bearer token,
    standard and URL-safe), percent-encoded."""
    forms = {secret, repr(secret)[1:-1], repr(secret.encode())[2:-1], quote(secret, safe="")}
    for plain in (secret.strip(), f"Bearer {secret}"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.add(encode(plain.encode()).decode().rstrip("="))
    return sorted(forms)


def assert_no_key(texts: list[str], secret: str = SECRET) -> None:
    found = [(form, text) for text in texts for form in leaked_forms(secret) if form in text]
    assert found == [], found


@pytest.mark.parametrize("pasted", [SECRET + "\n", f"  {SECRET}\r\n", f"\t{SECRET} "])
def test_a_key_pasted_with_surrounding_whitespace_is_stripped_and_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pasted: str
) -> None:
    with Sandbox(speed=1000, api_key=SECRET) as box:
        monkeypatch.setenv("DOITONG_API_KEY", pasted)  # as a .env line ends
        with Flux(base_url=box.base_url, output_dir=tmp_path / "out") as flux:
            img = flux.generate(PROMPT, size="256x256", seed=1)
    assert img.path.exists()


@pytest.mark.parametrize("bad", [SECRET[:10] + "\n" + SECRET[10:], SECRET[:5] + "\x07" + SECRET[5:], SECRET + "é"])
def test_a_key_with_a_character_no_header_can_carry_is_refused_before_any_request(tmp_path: Path, bad: str) -> None:
    with Sandbox(speed=1000) as box:
        with pytest.raises(AuthenticationError) as caught:
            Flux(api_key=bad, base_url=box.base_url, output_dir=tmp_path / "out")
        assert box.api_request_log == []
    message = str(caught.value)
    assert "position" in message and "DOITONG_API_KEY" in message
    assert_no_key([message, repr(caught.value)], bad)
    assert_no_key([message], bad.replace("\n", "").replace("\x07", "").replace("é", ""))


def _errors_under_faults(tmp_path: Path) -> list[DoitongError]:
    """One error from each failure path, every one with the key in play."""
    errors: list[DoitongError] = []

    def attempt(base_url: str, box: Sandbox | None = None, faults: Faults | None = None) -> None:
        with Flux(api_key=SECRET, base_url=base_url, output_dir=tmp_path / f"out{len(errors)}", timeout=3) as flux:
            try:
                flux.account()  # first contact: refused at once when the address is wrong
                if box is not None and faults is not None:
                    box.faults = faults  # from now on, every answer fails this way
                flux.generate(PROMPT, size="256x256", seed=len(errors))
            except DoitongError as exc:
                errors.append(exc)
                return
        raise AssertionError(f"no error against {base_url} with {faults}")

    attempt("https://api.doitong.invalid")  # DNS
    attempt("http://127.0.0.1:9")  # refused
    for faults in (None, Faults(drop=100), Faults(error_5xx=100), Faults(truncate_cdn=100)):
        with Sandbox(speed=1000, api_key=SECRET) as box:
            if faults is None:
                attempt(box.base_url.replace("http://", "https://"))  # TLS spoken to a plain-HTTP port
            else:
                attempt(box.base_url, box, faults)
    return errors


def test_no_error_on_any_failure_path_holds_the_key(tmp_path: Path) -> None:
    errors = _errors_under_faults(tmp_path)
    kinds = {type(e).__name__ for e in errors}
    assert len(errors) == 6 and {"NetworkError", "DownloadError"} <= kinds, errors
    assert_no_key([text for e in errors for text in (str(e), repr(e), error_text(e), e.message)])
