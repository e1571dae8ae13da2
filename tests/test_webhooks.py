"""verify_signature and WebhookReceiver: what is accepted, what is refused, and why."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from doitong_nb import _contract as contract
from doitong_nb._core.errors import WebhookVerificationError
from doitong_nb._core.steps import Flow, WaitFor
from doitong_nb._runtime.client import AsyncFlux
from doitong_nb._runtime.webhooks import WebhookReceiver
from doitong_nb._wire.webhooks import verify_signature

SECRET = "whsec_test"
BODY = json.dumps({"id": "job_abc", "status": "completed", "url": "http://127.0.0.1/outputs/job_abc.jpg"}).encode()
NOW = 1_700_000_000.0


def signed(body: bytes = BODY, secret: str = SECRET, timestamp: str | None = str(int(NOW))) -> str:
    return contract.webhook_signature(secret, body, timestamp)


def test_a_good_signature_with_a_timestamp_passes() -> None:
    verify_signature(BODY, signed(), SECRET, timestamp=str(int(NOW)), now=NOW)


def test_a_good_signature_over_the_body_alone_passes_unless_strict() -> None:
    verify_signature(BODY, signed(timestamp=None), SECRET)
    with pytest.raises(WebhookVerificationError, match="strict"):
        verify_signature(BODY, signed(timestamp=None), SECRET, strict=True)


def test_a_tampered_body_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify_signature(BODY.replace(b"completed", b"failed"), signed(), SECRET, timestamp=str(int(NOW)), now=NOW)


def test_a_signature_made_with_another_secret_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="another secret"):
        verify_signature(BODY, signed(secret="whsec_other"), SECRET, timestamp=str(int(NOW)), now=NOW)


def test_a_stale_timestamp_is_refused_and_one_within_tolerance_passes() -> None:
    stamp = str(int(NOW) - 301)
    with pytest.raises(WebhookVerificationError, match="300 s allowed"):
        verify_signature(BODY, signed(timestamp=stamp), SECRET, timestamp=stamp, now=NOW)
    verify_signature(BODY, signed(timestamp=stamp), SECRET, timestamp=stamp, now=NOW, tolerance=400)


def test_a_missing_or_garbled_signature_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="no X-Doitong-Signature"):
        verify_signature(BODY, None, SECRET)
    with pytest.raises(WebhookVerificationError):
        verify_signature(BODY, "sha256=Ω", SECRET)


def post(receiver: WebhookReceiver, body: bytes, signature: str, timestamp: str) -> int:
    headers = {contract.HEADER_SIGNATURE: signature, contract.HEADER_TIMESTAMP: timestamp}
    # plain HTTP on loopback: verify=False spares loading the CA bundle for every call
    return httpx.post(receiver.url, content=body, headers=headers, trust_env=False, verify=False).status_code


def test_the_receiver_records_a_verified_event_once_and_refuses_replays_and_forgeries() -> None:
    stamp = str(int(time.time()))
    with WebhookReceiver(SECRET) as receiver:
        assert receiver.get("job_abc") is None
        assert post(receiver, BODY, signed(timestamp=stamp), stamp) == 200
        assert receiver.get("job_abc")["status"] == "completed"
        assert post(receiver, BODY, signed(timestamp=stamp), stamp) == 409  # the very same call again: a replay
        later = str(int(stamp) + 1)
        assert post(receiver, BODY, signed(timestamp=later), later) == 200  # a retried delivery: kept once
        assert receiver.duplicates == 1
        forged = BODY.replace(b"job_abc", b"job_xyz")
        assert post(receiver, forged, signed(timestamp=stamp), stamp) == 401
        assert receiver.get("job_xyz") is None
        assert receiver.rejected == 2
        assert list(receiver.events) == ["job_abc"]


def test_the_receiver_is_reachable_at_its_url_only_while_started() -> None:
    receiver = WebhookReceiver(SECRET).start()
    url = receiver.url
    assert receiver.reachable()
    receiver.stop()
    assert not receiver.reachable(url, timeout=0.5)


def test_a_waiter_wakes_when_its_jobs_call_comes_and_one_that_stopped_waiting_is_left_be() -> None:
    receiver = WebhookReceiver(SECRET)  # `receive` is what the server calls: no socket needed here
    stamp = str(int(time.time()))
    waiting, gave_up = receiver.future("job_abc"), receiver.future("job_abc")
    gave_up.cancel()  # the engine's wait timed out: it reads the status instead
    assert not waiting.done()
    assert receiver.receive(BODY, signed(timestamp=stamp), stamp) == 200
    assert waiting.result(timeout=0)["status"] == "completed" and gave_up.cancelled()
    assert receiver.future("job_abc").result(timeout=0) == waiting.result()  # it came already: resolved at once
    assert not receiver.future("job_xyz").done()


def test_a_sender_keeps_one_connection_for_many_calls_and_a_stopped_receiver_closes_it() -> None:
    """A kept-open connection spares each webhook a connect and a new thread on its way to the waiting flow; once
    stopped, the receiver takes no call over a connection opened before."""
    receiver = WebhookReceiver(SECRET).start()
    where = urlsplit(receiver.url)
    connection = http.client.HTTPConnection("127.0.0.1", where.port, timeout=10)

    def call(job_id: str) -> int:
        body, stamp = BODY.replace(b"job_abc", job_id.encode()), str(int(time.time()))
        headers = {contract.HEADER_SIGNATURE: signed(body, timestamp=stamp), contract.HEADER_TIMESTAMP: stamp}
        connection.request("POST", where.path, body, headers)
        response = connection.getresponse()
        response.read()
        return response.status

    try:
        assert call("job_1") == 200
        first = connection.sock
        assert first is not None and call("job_2") == 200
        assert connection.sock is first  # the same socket: the receiver kept the connection open
        receiver.stop()
        with pytest.raises((OSError, http.client.HTTPException)):
            call("job_3")
        assert receiver.get("job_3") is None and sorted(receiver.events) == ["job_1", "job_2"]
    finally:
        connection.close()
        receiver.stop()


def test_a_call_the_receiver_refuses_unread_closes_its_connection() -> None:
    """A body left unread (a wrong path) would be taken for the next call's start: that connection is closed."""
    with WebhookReceiver(SECRET) as receiver:
        connection = http.client.HTTPConnection("127.0.0.1", urlsplit(receiver.url).port, timeout=10)
        try:
            connection.request("POST", "/elsewhere", b'{"id": "job_abc"}')
            response = connection.getresponse()
            response.read()
            assert response.status == 404 and response.getheader("Connection") == "close"
            assert connection.sock is None  # http.client closed it, as the answer said
        finally:
            connection.close()


def test_the_driver_wakes_a_waiting_flow_from_the_receivers_thread_and_gives_up_at_the_deadline(tmp_path: Path) -> None:
    """The webhook resolves its future on the receiver's thread while the flow waits on the loop: the flow gets the
    payload; a wait whose deadline passes gets None and cancels its future, so the receiver leaves it be."""
    receiver = WebhookReceiver(SECRET)
    stamp = str(int(time.time()))
    futures = {}
    waiting = threading.Event()

    def waits(job_id: str, seconds: float) -> Flow[object]:
        futures[job_id] = receiver.future(job_id)
        waiting.set()
        return (yield WaitFor(futures[job_id], seconds))

    async def main() -> tuple[object, object]:
        async with AsyncFlux(api_key="sbx_test", base_url="http://127.0.0.1:9", output_dir=tmp_path) as flux:
            came = asyncio.create_task(flux.run(waits("job_abc", 60)))
            assert await asyncio.to_thread(waiting.wait, 30)  # the flow asked for its webhook: deliver it now
            delivery = threading.Thread(target=receiver.receive, args=(BODY, signed(timestamp=stamp), stamp))
            delivery.start()
            payload = await came
            delivery.join()
            return payload, await flux.run(waits("job_xyz", 0))

    payload, nothing = asyncio.run(main())
    assert payload == json.loads(BODY) and nothing is None
    assert futures["job_xyz"].cancelled() and not futures["job_abc"].cancelled()
