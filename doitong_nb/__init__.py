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
    UnsafeResponseError,
)

if TYPE_CHECKING:
    from .client import AsyncFlux, Flux
    from .panel_widget import panel
    from .request import GenerationRequest
    from .result import ImageResult, Job
    from .sandbox import Sandbox

__version__ = "0.1.0"

_LAZY = {
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

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext doitong_nb`: register %%flux, %flux and friends."""
    from .magics import register

    register(ipython)


__all__ = [
    "AsyncFlux",
    "AuthenticationError",
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
    "UnsafeResponseError",
    "load_ipython_extension",
    "panel",
]
