"""Output downloads connect only to the addresses the output URL policy allows, DNS-rebinding safe.

`engine.check_output_url` judges an output URL by its name; a public name can still resolve to a private
address (an attacker's DNS, or a rebinding between a check and the connection). So the CDN client's transport
resolves each request's host once (every redirect hop is a request), refuses it unless every address is allowed,
and connects to that very address: the URL's host is replaced by the address, the Host header keeps the name,
and TLS verifies the certificate against the name (httpcore's `sni_hostname`).

Allowed: public addresses; loopback only when the API itself is on loopback (a sandbox); a private address only
for the API's own host (a service on the intranet). The same policy as `check_output_url`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx

from doitong_nb._core.errors import UnsafeResponseError, system_reason
from doitong_nb._core.i18n import _

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the system resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


class PinnedTransport(httpx.AsyncBaseTransport):
    """Wraps the CDN client's transport: resolve, check every address, connect to the first that answers."""

    def __init__(self, base_url: str, inner: httpx.AsyncBaseTransport, resolver: Resolver = resolve) -> None:
        self._api_host = (urlsplit(base_url).hostname or "").lower()
        api = _address(self._api_host)
        self._api_loopback = self._api_host == "localhost" or (api is not None and api.is_loopback)
        self._inner = inner
        self._resolve = resolver

    def _allowed(self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if address.is_loopback:
            return self._api_loopback
        if not address.is_global or address.is_multicast:
            return host == self._api_host
        return True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host.lower()
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        literal = _address(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self._resolve(host, port)
            except OSError as exc:
                raise httpx.ConnectError(
                    _("{host} does not resolve ({reason})").format(host=host, reason=system_reason(exc)),
                    request=request,
                ) from exc
        refused = [a for a in addresses if not self._allowed(host, ipaddress.ip_address(a))]
        if refused or not addresses:
            said = _("refusing output URL on host {host!r}: it resolves to {addresses}, not a public address")
            raise UnsafeResponseError(said.format(host=host, addresses=", ".join(refused) or _("nothing")))
        if literal is not None:
            return await self._inner.handle_async_request(request)
        error: httpx.ConnectError | None = None
        for address in addresses:  # as a connect would: the next address when one refuses
            pinned = httpx.Request(
                request.method,
                request.url.copy_with(host=address),
                headers=request.headers,  # the Host header still names `host`
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host},
            )
            try:
                return await self._inner.handle_async_request(pinned)
            except httpx.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def aclose(self) -> None:
        await self._inner.aclose()
