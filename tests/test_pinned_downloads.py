"""Output downloads connect only to allowed addresses: a public name resolving to a private one is refused, and
the connection goes to the address that was checked (no DNS rebinding between the check and the connect)."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from doitong_nb._core.errors import UnsafeResponseError
from doitong_nb._core.request import GenerationRequest
from doitong_nb._runtime.client import Flux
from doitong_nb._runtime.pinned import PinnedTransport
from doitong_sandbox import Sandbox


def resolver(table: dict[str, list[str]]):
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def fetch(transport: PinnedTransport, url: str) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
            return await client.get(url)

    with ThreadPoolExecutor(1) as thread:  # a loop of its own, whatever a notebook runner left in this thread
        return thread.submit(asyncio.run, go()).result()


@pytest.mark.parametrize("address", ["10.1.2.3", "169.254.169.254", "127.0.0.1", "192.168.0.7", "fd00::1", "::1"])
def test_a_public_name_resolving_to_a_private_address_is_refused(address: str) -> None:
    seen: list[httpx.Request] = []
    inner = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200))
    pinned = PinnedTransport("https://api.doitong.com", inner, resolver({"cdn.example.net": [address]}))
    with pytest.raises(UnsafeResponseError, match=rf"cdn\.example\.net.*resolves to {re.escape(address)}"):
        fetch(pinned, "https://cdn.example.net/job_1.jpg")
    assert seen == []  # nothing was sent


def test_the_connection_goes_to_the_checked_address_with_the_name_kept_for_host_and_tls() -> None:
    seen: list[httpx.Request] = []
    inner = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200, content=b"img"))
    pinned = PinnedTransport("https://api.doitong.com", inner, resolver({"cdn.example.net": ["93.184.215.14"]}))
    assert fetch(pinned, "https://cdn.example.net/b/job_1.jpg?sig=1").content == b"img"
    (sent,) = seen
    assert sent.url.host == "93.184.215.14" and sent.url.path == "/b/job_1.jpg" and sent.url.query == b"sig=1"
    assert sent.headers["Host"] == "cdn.example.net" and sent.extensions["sni_hostname"] == "cdn.example.net"


def test_a_redirect_to_a_private_address_is_refused() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data"})

    table = {"cdn.example.net": ["93.184.215.14"]}
    pinned = PinnedTransport("https://api.doitong.com", httpx.MockTransport(answer), resolver(table))
    with pytest.raises(UnsafeResponseError, match=r"169\.254\.169\.254"):
        fetch(pinned, "https://cdn.example.net/job_1.jpg")


def test_loopback_only_for_a_loopback_api_and_private_only_for_the_apis_own_host() -> None:
    ok = httpx.MockTransport(lambda r: httpx.Response(200))
    table = {"localhost": ["127.0.0.1"], "api.corp": ["10.0.0.5"], "other.corp": ["10.0.0.6"]}
    assert fetch(PinnedTransport("http://127.0.0.1:8787", ok, resolver(table)), "http://localhost/a.jpg").is_success
    assert fetch(PinnedTransport("https://api.corp", ok, resolver(table)), "https://api.corp/a.jpg").is_success
    with pytest.raises(UnsafeResponseError):
        fetch(PinnedTransport("https://api.corp", ok, resolver(table)), "https://other.corp/a.jpg")


def test_a_real_download_from_the_sandbox_goes_through_the_pinned_transport(tmp_path: Path) -> None:
    """The signed-urls dialect serves outputs on `localhost` (another name than the API's 127.0.0.1): resolved,
    allowed for a loopback API, connected to by address, and the image arrives."""
    with Sandbox(speed=1000, dialect="signed-urls") as box:
        with Flux(api_key=box.api_key, base_url=box.base_url, output_dir=tmp_path / "out") as flux:
            assert isinstance(flux._async._cdn._transport, PinnedTransport)
            img = flux.generate(GenerationRequest.build("A lighthouse", size="256x256", seed=1))
            assert img.path.exists() and img.job_id
