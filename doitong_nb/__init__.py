"""doitong-nb: Doitong's Flux Ultra image API from Jupyter and Python, with an offline sandbox.

Heavy modules (httpx, Pillow, the sandbox) load on first use, so `%load_ext doitong_nb` is quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import (
    AuthenticationError,
    BudgetExceededError,
    DoitongError,
    DownloadError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    JobTimeoutError,
    MissingResultError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StorageError,
    StoreIntegrityError,
    UnknownStatusError,
    UnsafeResponseError,
    WebhookVerificationError,
)

if TYPE_CHECKING:
    from ._batch import BatchResult, BatchStats
    from ._client import AsyncFlux, Flux
    from ._display import gallery
    from ._export import export_ro_crate
    from ._panel_widget import panel
    from ._request import GenerationRequest
    from ._result import ImageResult, Job
    from ._store import read_embedded_provenance as read_provenance
    from ._verify import Verification, verify
    from ._webhooks import WebhookReceiver, verify_signature
    from ._wire import Account
    from .sandbox import Sandbox

__version__ = "0.1.0"

_LAZY = {  # name -> "module" or "module:attribute": loaded on first use, so `%load_ext doitong_nb` stays quick
    "Account": "_wire",
    "AsyncFlux": "_client",
    "BatchResult": "_batch",
    "BatchStats": "_batch",
    "Flux": "_client",
    "GenerationRequest": "_request",
    "ImageResult": "_result",
    "Job": "_result",
    "Sandbox": "sandbox",
    "Verification": "_verify",
    "WebhookReceiver": "_webhooks",
    "export_ro_crate": "_export",
    "gallery": "_display",
    "panel": "_panel_widget",
    "read_provenance": "_store:read_embedded_provenance",
    "verify": "_verify",
    "verify_signature": "_webhooks",
}


def _publish(value: Any) -> None:
    """Public names say `doitong_nb.X` in reprs and tracebacks, not the private module they live in."""
    if getattr(value, "__module__", "").startswith(f"{__name__}._"):
        value.__module__ = __name__


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        module, _, attribute = _LAZY[name].partition(":")
        value = getattr(import_module(f".{module}", __name__), attribute or name)
        _publish(value)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext doitong_nb`: register %%flux, %flux and friends."""
    from ._magics import register

    register(ipython)


__all__ = [
    "Account",
    "AsyncFlux",
    "AuthenticationError",
    "BatchResult",
    "BatchStats",
    "BudgetExceededError",
    "DoitongError",
    "DownloadError",
    "Flux",
    "GenerationFailedError",
    "GenerationRequest",
    "ImageResult",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "Job",
    "JobTimeoutError",
    "MissingResultError",
    "NetworkError",
    "NotFoundError",
    "RateLimitError",
    "Sandbox",
    "ServerError",
    "StorageError",
    "StoreIntegrityError",
    "UnknownStatusError",
    "UnsafeResponseError",
    "Verification",
    "WebhookReceiver",
    "WebhookVerificationError",
    "export_ro_crate",
    "gallery",
    "load_ipython_extension",
    "panel",
    "read_provenance",
    "verify",
    "verify_signature",
]

for _name in __all__:
    if _name not in _LAZY:
        _publish(globals()[_name])
