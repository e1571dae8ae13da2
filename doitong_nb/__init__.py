"""doitong-nb: Doitong's Flux Ultra image API from Jupyter and Python, with an offline sandbox.

Heavy modules (httpx, Pillow, the sandbox) load on first use, so `%load_ext doitong_nb` is quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
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
    from .batch import BatchResult, BatchStats
    from .client import AsyncFlux, Flux
    from .display import gallery
    from .panel_widget import panel
    from .request import GenerationRequest
    from .result import ImageResult, Job
    from .sandbox import Sandbox
    from .store import read_embedded_provenance as read_provenance
    from .transport import Account
    from .webhooks import WebhookReceiver, verify_signature

__version__ = "0.1.0"

_LAZY = {  # name -> (module, attribute): loaded on first use, so `%load_ext doitong_nb` stays quick
    "Account": "transport",
    "BatchResult": "batch",
    "BatchStats": "batch",
    "gallery": "display",
    "read_provenance": "store:read_embedded_provenance",
    "verify_signature": "webhooks",
    "WebhookReceiver": "webhooks",
    "Flux": "client",
    "AsyncFlux": "client",
    "GenerationRequest": "request",
    "ImageResult": "result",
    "Job": "result",
    "panel": "panel_widget",
    "Sandbox": "sandbox",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        module, _, attribute = _LAZY[name].partition(":")
        return getattr(import_module(f".{module}", __name__), attribute or name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext doitong_nb`: register %%flux, %flux and friends."""
    from .magics import register

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
    "WebhookReceiver",
    "WebhookVerificationError",
    "gallery",
    "load_ipython_extension",
    "panel",
    "read_provenance",
    "verify_signature",
]
