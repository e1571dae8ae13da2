"""doitong-nb: Doitong's Flux Ultra image API from Jupyter and Python, with an offline sandbox.

Heavy modules (httpx, Pillow, the sandbox) load on first use, so `%load_ext doitong_nb` is quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from doitong_nb._core.errors import (
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
    SchemaMismatchError,
    ServerError,
    StorageError,
    StoreIntegrityError,
    UnclearSubmissionError,
    UnknownStatusError,
    UnsafeResponseError,
    WebhookVerificationError,
)
from doitong_nb._version import __version__ as __version__

if TYPE_CHECKING:
    from doitong_nb._core.request import GenerationRequest
    from doitong_nb._core.result import ImageResult, Job
    from doitong_nb._notebook.display import gallery
    from doitong_nb._notebook.panel import panel
    from doitong_nb._runtime.batch import BatchResult, BatchStats
    from doitong_nb._runtime.client import AsyncFlux, Flux
    from doitong_nb._runtime.webhooks import WebhookReceiver
    from doitong_nb._store.provenance import read_embedded_provenance as read_provenance
    from doitong_nb._tools.export import export_ro_crate
    from doitong_nb._tools.verify import Verification, verify
    from doitong_nb._wire import Account
    from doitong_nb._wire.webhooks import verify_signature
    from doitong_nb.sandbox import Sandbox


_LAZY = {  # name -> "module" or "module:attribute": loaded on first use, so `%load_ext doitong_nb` stays quick
    "Account": "_wire.base",
    "AsyncFlux": "_runtime.client",
    "BatchResult": "_runtime.batch",
    "BatchStats": "_runtime.batch",
    "Flux": "_runtime.client",
    "GenerationRequest": "_core.request",
    "ImageResult": "_core.result",
    "Job": "_core.result",
    "Sandbox": "sandbox",
    "Verification": "_tools.verify",
    "WebhookReceiver": "_runtime.webhooks",
    "export_ro_crate": "_tools.export",
    "gallery": "_notebook.display",
    "panel": "_notebook.panel",
    "read_provenance": "_store.provenance:read_embedded_provenance",
    "verify": "_tools.verify",
    "verify_signature": "_wire.webhooks",
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


def __dir__() -> list[str]:
    """The public names (lazy ones included) and the module's dunders, not its helpers: httpx's way."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext doitong_nb`: register %%flux, %flux and friends, and prepare the first cell off its path."""
    from doitong_nb._notebook.background import prepare_first_cell
    from doitong_nb._notebook.magics import register

    register(ipython)
    prepare_first_cell(ipython)


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
    "SchemaMismatchError",
    "ServerError",
    "StorageError",
    "StoreIntegrityError",
    "UnclearSubmissionError",
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

for _eager in __all__:
    if _eager not in _LAZY:
        _publish(globals()[_eager])
del _eager
