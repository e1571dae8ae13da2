"""The one exception the sandbox raises for a documented error, and its wire form."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered as `{"errors": [{"message", "extensions": {"code", ...}}]}` with `status`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extensions = {"code": code, **{k: v for k, v in extensions.items() if v is not None}}

    def formatted(self) -> dict[str, Any]:
        """One entry of the `errors` list."""
        return {"message": self.message, "extensions": self.extensions}

    def body(self) -> dict[str, Any]:
        """The whole response body."""
        return {"errors": [self.formatted()]}
