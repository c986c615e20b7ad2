"""The one error type of the HTTP API and its OpenAI-style JSON body.

OpenAI answers every failed request with ``{"error": {"message", "type", "param", "code"}}``;
clients (the ``openai`` package included) read ``message`` from there.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """A refused request: ``status`` is the HTTP status, ``message`` names the problem."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """``{"error": {...}}`` as OpenAI writes it."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
