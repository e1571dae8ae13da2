"""Secret hygiene and bad input: the key never leaks anywhere, and invalid input never reaches the service."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from _secrets import encoded_forms, files_under, secret_leaks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from doitong_nb import _contract as contract
from doitong_nb._core.errors import InvalidRequestError, WebhookVerificationError
from doitong_nb._core.request import MAX_SEED, GenerationRequest
from doitong_nb._runtime.client import Flux
from doitong_nb._runtime.webhooks import WebhookReceiver
from doitong_nb._wire.webhooks import verify_signature
from doitong_sandbox import Sandbox

SECRET = "sk-test-SECRET-4f1c9a7e2b6d8053"
PROMPT = "A futuristic city with flying cars and neon lights"

# --- secret hygiene in a real kernel ------------------------------------------------------------

_CELLS = [
    # every log line of httpx, httpcore and doitong_nb at DEBUG, to a file, to the notebook and to the
    # kernel process's own stderr (a terminal or a server log in real use)
    "import logging, sys\n"
    "_h = logging.FileHandler({log!r})\n"
    "_e = logging.StreamHandler(sys.__stderr__)\n"
    "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, force=True)\n"
    "for _name in ('', 'httpx', 'httpcore', 'doitong_nb'):\n"
    "    logging.getLogger(_name).setLevel(logging.DEBUG)\n"
    "    logging.getLogger(_name).addHandler(_h)\n"
    "    logging.getLogger(_name).addHandler(_e)",
    "%load_ext doitong_nb",
    f"%%flux --size 256x256 --seed 1 -o img\n{PROMPT}",
    "img, img.metadata, img.request",
    f"%%flux --size 1000x1000\n{PROMPT}",
    "%flux_account",
    f"%flux {PROMPT} --dry-run --size 512x512",
    f"%flux {PROMPT} --dry-run --size 512x512 --transport rest",
    "from doitong_nb import Flux\nf = Flux()\nprint(repr(f), f.settings)\nf",
    f"%%flux --size 4096x4096\n{PROMPT}",
    f"f.generate({PROMPT!r}, size='4096x4096')",  # raises: a real traceback in the notebook
    "%flux_history",
]


def test_the_key_search_finds_every_encoding_of_the_key_inside_other_text() -> None:
    """The search below is only as good as its forms: each must be found when embedded in a larger blob."""
    for name, form in encoded_forms(SECRET).items():
        assert secret_leaks(SECRET, {"blob": b"prefix\x00" + form + b"\x00suffix"}) != [], name
    for shift in range(3):  # base64 of a longer value (a Basic header, a data: URL) holds the key at any offset
        blob = base64.b64encode(b"u" * shift + f"user:{SECRET}".encode())
        assert secret_leaks(SECRET, {"basic": b"Authorization: Basic " + blob}) != [], shift
    assert secret_leaks(SECRET, {"clean": b"sk-test-SECRET-4f1c9a7e2b6d805 Bearer sk-test"}) == []


@pytest.mark.timeout(180)
def test_api_key_appears_nowhere_a_notebook_session_leaves_a_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbclient import NotebookClient

    out, log, stderr = tmp_path / "out", tmp_path / "debug.log", tmp_path / "kernel-stderr.txt"
    history_file = tmp_path / "history.sqlite"  # IPython's history database, as a user's Jupyter keeps it
    cost = contract.credit_cost(256, 256)
    with Sandbox(credits=cost + 5, speed=1000, api_key=SECRET) as box:  # enough for one small image only
        assert box.api_key == SECRET
        monkeypatch.setenv("DOITONG_API_KEY", SECRET)
        monkeypatch.setenv("DOITONG_BASE_URL", box.base_url)
        monkeypatch.setenv("DOITONG_OUTPUT_DIR", str(out))
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(src.format(log=str(log)) if "{log" in src else src) for src in _CELLS]
        client = NotebookClient(
            nb,
            kernel_name="python3",
            timeout=120,
            allow_errors=True,
            resources={"metadata": {"path": str(tmp_path)}},
            ipython_hist_file=str(history_file),  # nbclient's default keeps it in memory
        )
        with open(stderr, "wb") as kernel_stderr:
            client.execute(stderr=kernel_stderr)
        saved = tmp_path / "session.ipynb"
        nbformat.write(nb, saved)
        stats = box.stats()["total"]
        cdn_requests, api_requests = box.cdn_requests, box.api_request_log

    text = saved.read_text(encoding="utf-8")
    # the notebook really exercised what it claims: an image, a bad size, an account, a refusal, a traceback
    assert stats["jobs_created"] == 1 and stats["submissions"] == 3  # two refused for credits
    assert stats["account_requests"] >= 1 and cdn_requests
    assert "width 1000 is not a multiple of 16" in text
    assert "needs 50 credits" in text and "InsufficientCreditsError" in text
    assert "api_key=<set>" in text and "nothing was sent" in text
    assert b"HTTP Request: POST" in log.read_bytes()  # httpx really logged the API calls
    assert b"HTTP Request: POST" in stderr.read_bytes()  # the kernel process's stderr was captured
    with sqlite3.connect(history_file) as history:
        sources = [row[0] for row in history.execute("SELECT source_raw FROM history")]
    assert any("%%flux" in source for source in sources)  # the history database was written, and is searched
    places = {
        **files_under(tmp_path),  # the notebook, the debug log, the outputs, the journal, stderr, history
        **{f"history: {source}": source for source in sources},
        **{f"CDN request {i}": json.dumps(request) for i, request in enumerate(cdn_requests)},
        **{f"API request {i}": json.dumps(request) for i, request in enumerate(api_requests)},
    }
    assert secret_leaks(SECRET, places) == []
    assert len(list(out.glob("*.json"))) == 1 and (out / "journal.sqlite").exists()


def test_api_key_is_never_sent_to_the_cdn_nor_in_webhooks(tmp_path: Path) -> None:
    with Sandbox(speed=1000, api_key=SECRET) as box, WebhookReceiver(box.webhook_secret) as receiver:
        with Flux(api_key=SECRET, base_url=box.base_url, output_dir=tmp_path / "out") as flux:
            results = flux.batch(
                [f"{PROMPT} {i}" for i in range(3)],
                size="256x256",
                seed=2,
                progress=False,
                webhook_url=receiver.url,
                receiver=receiver,
            )
        assert len(results.images) == 3
        box.wait_for_webhooks()  # the last delivery's answer is logged
        cdn, hooks, api = box.cdn_requests, box.webhook_log, box.api_request_log
    assert len(cdn) >= 3 and len([e for e in hooks if e["status"] == 200]) == 3
    assert secret_leaks(SECRET, [(f"CDN request {request[':path']}", json.dumps(request)) for request in cdn]) == []
    assert not any("authorization" in (k.lower() for k in headers) for headers in cdn)
    deliveries = [(f"webhook {e['url']}", e["url"] + json.dumps(e["headers"]) + e["body"]) for e in hooks]
    assert secret_leaks(SECRET, deliveries) == []
    assert all(entry["has_auth"] for entry in api if entry["path"] in ("/graphql",))


# --- bad input to GenerationRequest.build ------------------------------------------------------------

_VALID_SIDES = st.integers(contract.MIN_SIDE // 16, contract.MAX_SIDE // 16).map(lambda n: n * 16)
_BAD_SIDES = st.one_of(
    st.integers(max_value=contract.MIN_SIDE - 1),
    st.integers(min_value=contract.MAX_SIDE + 1),
    st.integers(contract.MIN_SIDE, contract.MAX_SIDE).filter(lambda n: n % 16),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=8),
    st.none().map(lambda _: [256]),
)
_BAD_SEEDS = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=MAX_SEED + 1),
    st.floats(),
    st.booleans(),
    st.text(max_size=8),
)
_BAD_PROMPTS = st.one_of(
    st.text(alphabet=" \t\n\r\u00a0\u2003", max_size=20),
    st.integers(min_value=contract.MAX_PROMPT_CHARS + 1, max_value=contract.MAX_PROMPT_CHARS * 3).map(
        lambda n: "x" * n
    ),
    st.integers(),
    st.none(),
    st.binary(min_size=1, max_size=10),
)


def _not_in(choices: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=20), st.integers(), st.none().map(lambda _: 1.5)).filter(
        lambda v: v not in choices
    )


def _bad_aspect() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=12).filter(lambda s: ":" not in s),
        st.tuples(st.integers(max_value=0), st.integers(1, 30)).map(lambda t: f"{t[0]}:{t[1]}"),
        st.sampled_from(["16:", ":9", "a:b", "16:9:1", "0:0", "-16:9", "1e3:1"]),
    )


# (field the error must name, the keyword arguments that make it invalid)
BAD_INPUT = st.one_of(
    _BAD_SIDES.map(lambda v: ("width", {"width": v, "height": 1024})),
    _BAD_SIDES.map(lambda v: ("height", {"width": 1024, "height": v})),
    _BAD_SEEDS.map(lambda v: ("seed", {"seed": v})),
    _BAD_PROMPTS.map(lambda v: ("prompt", {"prompt": v})),
    _not_in(contract.VERSIONS).map(lambda v: ("version", {"version": v})),
    _not_in(contract.OUTPUT_FORMATS).map(lambda v: ("output_format", {"output_format": v})),
    _not_in(contract.QUALITIES).filter(lambda v: v is not None).map(lambda v: ("quality", {"quality": v})),
    _bad_aspect().map(lambda v: ("aspect_ratio", {"aspect_ratio": v})),
    st.text(max_size=20).filter(lambda s: not _size_ok(s)).map(lambda v: ("size", {"size": v})),
    st.integers().filter(lambda v: v not in range(7)).map(lambda v: ("safety_tolerance", {"safety_tolerance": v})),
    st.sampled_from(["ftp://x", "file:///etc/passwd", "not a url", "http://"]).map(
        lambda v: ("webhook_url", {"webhook_url": v})
    ),
    st.sampled_from(["nope", "steps", "api_key"]).map(lambda v: (v, {v: 1})),
)


def _size_ok(text: str) -> bool:
    try:
        GenerationRequest.build(PROMPT, size=text)
    except InvalidRequestError:
        return False
    return True


def _build(kwargs: dict[str, Any]) -> GenerationRequest:
    kwargs = dict(kwargs)
    return GenerationRequest.build(kwargs.pop("prompt", PROMPT), **kwargs)


@settings(max_examples=400, deadline=None)
@given(BAD_INPUT)
def test_invalid_input_raises_an_error_naming_the_field(case: tuple[str, dict[str, Any]]) -> None:
    name, kwargs = case
    with pytest.raises(InvalidRequestError) as caught:
        _build(kwargs)
    error = caught.value
    assert error.field == name
    words = {name, name.replace("_", " "), "size" if name in ("width", "height") else name}
    assert any(w in str(error) for w in words), (name, str(error))


@settings(max_examples=300, deadline=None)
@given(
    width=_VALID_SIDES,
    height=_VALID_SIDES,
    seed=st.one_of(st.none(), st.integers(0, MAX_SEED)),
    prompt=st.text(min_size=1, max_size=300).filter(str.strip),
    version=st.sampled_from(contract.VERSIONS),
    output_format=st.sampled_from(contract.OUTPUT_FORMATS),
)
def test_valid_input_always_builds_a_request_with_a_stable_key(**kwargs: Any) -> None:
    request = _build(kwargs)
    assert (request.width, request.height) == (kwargs["width"], kwargs["height"])
    assert request.key() == _build(kwargs).key()
    assert request.estimated_credits == contract.credit_cost(kwargs["width"], kwargs["height"])


@pytest.fixture(scope="module")
def shared_box() -> Iterator[Sandbox]:
    with Sandbox(speed=1000) as box:
        yield box


@pytest.fixture(scope="module")
def shared_flux(shared_box: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flux]:
    with Flux(api_key=shared_box.api_key, base_url=shared_box.base_url, output_dir=_out(tmp_path_factory)) as flux:
        yield flux


@settings(max_examples=50, deadline=None)
@given(case=BAD_INPUT)
def test_invalid_input_sends_no_request_to_the_service(
    shared_box: Sandbox, shared_flux: Flux, case: tuple[str, dict[str, Any]]
) -> None:
    _, kwargs = case
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt", PROMPT)
    before = shared_box.stats()["total"]["api_requests"]
    with pytest.raises(InvalidRequestError):
        shared_flux.generate(prompt, **kwargs)
    with pytest.raises(InvalidRequestError):
        shared_flux.submit(prompt, **kwargs)
    with pytest.raises(InvalidRequestError):
        shared_flux.batch([prompt], progress=False, **kwargs)
    assert shared_box.stats()["total"]["api_requests"] == before


_OUT: list[Path] = []


def _out(factory: pytest.TempPathFactory) -> Path:
    if not _OUT:
        _OUT.append(factory.mktemp("bad-input"))
    return _OUT[0]


# --- bad magic lines ------------------------------------------------------------------------------


_TOKEN = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\"'\\"), min_size=1, max_size=12
).filter(lambda s: s.strip() and not s.startswith("-"))
_BAD_OPTION = st.one_of(
    st.tuples(st.just("--size"), st.one_of(_TOKEN, st.sampled_from(["1000x1000", "0x0", "99999x16", "16x16"]))),
    st.tuples(st.just("--aspect"), st.one_of(_TOKEN.filter(lambda s: ":" not in s), st.just("0:9"))),
    st.tuples(st.just("--seed"), st.one_of(_TOKEN, st.sampled_from(["-1", "2147483648", "1e9", "99999999999"]))),
    st.tuples(st.just("--version"), _TOKEN.filter(lambda s: s not in contract.VERSIONS)),
    st.tuples(st.just("--quality"), _TOKEN.filter(lambda s: s not in contract.QUALITIES)),
    st.tuples(st.just("--format"), _TOKEN.filter(lambda s: s not in contract.OUTPUT_FORMATS)),
    st.tuples(st.just("-n"), st.one_of(_TOKEN, st.sampled_from(["0", "-3", "65", "1000000"]))),
    st.tuples(st.just("--transport"), _TOKEN.filter(lambda s: s not in ("graphql", "rest"))),
    st.tuples(st.just("--timeout"), st.sampled_from(["0", "-1", "-inf", "abc", "1s"])),
    st.tuples(st.just("--webhook"), st.sampled_from(["ftp://x", "file:///etc/passwd", "nope"])),
)


def _quote(value: str) -> str:
    return f'"{value}"'  # values hold no quotes or backslashes (see _TOKEN)


def _bad_magic_outcome(ip: InteractiveShell, line: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The one line of the UsageError a bad option raises (argparse's own usage errors give 'usage');
    fails on a traceback, on any other exception, or when the cell does not fail at all."""
    capsys.readouterr()
    with pytest.raises(UsageError) as caught:
        ip.run_cell_magic("flux", line, PROMPT)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    text = str(caught.value)
    assert "\n" not in text, text
    return text if text.strip() else "usage"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=_BAD_OPTION)
def test_bad_magic_option_is_one_clear_line_and_sends_nothing(
    shared_box: Sandbox,
    tmp_path_factory: pytest.TempPathFactory,
    shell_for,
    capsys: pytest.CaptureFixture[str],
    option: tuple[str, str],
) -> None:
    ip = shell_for(shared_box, _out(tmp_path_factory))
    before = shared_box.stats()["total"]["api_requests"]
    name, value = option
    extra = "" if name in ("--size", "--aspect") else " --size 256x256"
    _bad_magic_outcome(ip, f"{name} {_quote(value)}{extra}", capsys)
    assert shared_box.stats()["total"]["api_requests"] == before


def test_seed_overflowing_with_a_count_is_one_line_and_sends_nothing(
    shared_box: Sandbox, tmp_path: Path, shell_for, capsys: pytest.CaptureFixture[str]
) -> None:
    ip = shell_for(shared_box, tmp_path / "out")
    before = shared_box.stats()["total"]["api_requests"]
    line = _bad_magic_outcome(ip, f"--seed {MAX_SEED} -n 3 --size 256x256", capsys)
    assert "seed" in line
    assert shared_box.stats()["total"]["api_requests"] == before


def test_nan_timeout_is_refused_before_sending(
    shared_box: Sandbox, tmp_path: Path, shell_for, capsys: pytest.CaptureFixture[str]
) -> None:
    ip = shell_for(shared_box, tmp_path / "out")
    before = shared_box.stats()["total"]["api_requests"]
    line = _bad_magic_outcome(ip, "--timeout nan --size 256x256 --seed 77", capsys)
    assert "timeout" in line
    assert shared_box.stats()["total"]["api_requests"] == before


def test_unbalanced_quote_in_the_magic_line_is_a_usage_error_not_a_traceback(
    shared_box: Sandbox, tmp_path: Path, shell_for, capsys: pytest.CaptureFixture[str]
) -> None:
    ip = shell_for(shared_box, tmp_path / "out")
    before = shared_box.stats()["total"]["api_requests"]
    _bad_magic_outcome(ip, '--size "256x256', capsys)
    assert shared_box.stats()["total"]["api_requests"] == before


# --- webhooks (what tests/test_webhooks.py does not cover yet) -------------------------------------

WH_SECRET = "whsec_security_test"
WH_BODY = json.dumps({"id": "job_wh", "status": "completed", "url": "http://127.0.0.1/outputs/job_wh.jpg"}).encode()


def _post_hook(receiver: WebhookReceiver, body: bytes, headers: dict[str, str], path: str | None = None) -> int:
    url = receiver.url if path is None else receiver.url.replace(receiver.path, path)
    return httpx.post(url, content=body, headers=headers, trust_env=False).status_code


def _signed_headers(body: bytes, stamp: str | None, secret: str = WH_SECRET) -> dict[str, str]:
    headers = {contract.HEADER_SIGNATURE: contract.webhook_signature(secret, body, stamp)}
    if stamp is not None:
        headers[contract.HEADER_TIMESTAMP] = stamp
    return headers


def test_strict_receiver_refuses_a_call_without_a_timestamp_and_records_nothing() -> None:
    with WebhookReceiver(WH_SECRET, strict=True) as receiver:
        assert _post_hook(receiver, WH_BODY, _signed_headers(WH_BODY, None)) == 401
        assert receiver.get("job_wh") is None and receiver.rejected == 1


def test_receiver_refuses_a_correctly_signed_but_stale_or_future_call() -> None:
    with WebhookReceiver(WH_SECRET, strict=True) as receiver:
        for stamp in (str(int(time.time()) - 3600), str(int(time.time()) + 3600)):
            assert _post_hook(receiver, WH_BODY, _signed_headers(WH_BODY, stamp)) == 401
        assert receiver.events == {} and receiver.rejected == 2


def test_receiver_refuses_tampered_body_and_wrong_secret_over_http() -> None:
    stamp = str(int(time.time()))
    with WebhookReceiver(WH_SECRET) as receiver:
        tampered = WH_BODY.replace(b"completed", b"failed")
        assert _post_hook(receiver, tampered, _signed_headers(WH_BODY, stamp)) == 401
        assert _post_hook(receiver, WH_BODY, _signed_headers(WH_BODY, stamp, secret="whsec_other")) == 401
        assert receiver.events == {}


def test_receiver_refuses_oversized_unsigned_idless_and_misrouted_calls() -> None:
    stamp = str(int(time.time()))
    with WebhookReceiver(WH_SECRET) as receiver:
        big = b'{"id": "job_big", "pad": "' + b"x" * (1 << 20) + b'"}'
        assert _post_hook(receiver, big, _signed_headers(big, stamp)) == 413
        assert _post_hook(receiver, WH_BODY, {contract.HEADER_TIMESTAMP: stamp}) == 401
        no_id = b'{"status": "completed"}'
        assert _post_hook(receiver, no_id, _signed_headers(no_id, stamp)) == 401
        assert _post_hook(receiver, WH_BODY, _signed_headers(WH_BODY, stamp), path="/elsewhere") == 404
        assert receiver.events == {}


def test_non_finite_timestamp_is_refused() -> None:
    with pytest.raises(WebhookVerificationError):
        verify_signature(WH_BODY, contract.webhook_signature(WH_SECRET, WH_BODY, "nan"), WH_SECRET, timestamp="nan")


def test_redelivered_webhooks_of_a_batch_job_are_handled_once(tmp_path: Path) -> None:
    with Sandbox(speed=1000) as box, WebhookReceiver(box.webhook_secret) as receiver:
        with Flux(api_key=box.api_key, base_url=box.base_url, output_dir=tmp_path / "out") as flux:
            results = flux.batch(
                [PROMPT], size="256x256", seed=4, progress=False, webhook_url=receiver.url, receiver=receiver
            )
            [img] = results.images
            delivered = next(e for e in box.webhook_log if e["status"] == 200 and e["job_id"] == img.job_id)
            body, headers = delivered["body"].encode(), dict(delivered["headers"])
            # the very same delivery again is a replay; a re-signed retry of it is a duplicate, kept once
            assert _post_hook(receiver, body, headers) == 409
            later = str(int(headers[contract.HEADER_TIMESTAMP]) + 1)
            assert _post_hook(receiver, body, _signed_headers(body, later, box.webhook_secret)) == 200
            assert receiver.duplicates == 1 and list(receiver.events) == [img.job_id]
            again = flux.batch([PROMPT], size="256x256", seed=4, progress=False)
        stats = box.stats()["total"]
    assert again[0].replayed and again[0].path == img.path
    assert stats["jobs_created"] == 1
    assert [p.name for p in (tmp_path / "out").glob("*.json")] == [f"{img.job_id}.json"]
