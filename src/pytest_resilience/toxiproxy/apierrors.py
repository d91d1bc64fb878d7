"""The error answers of the Toxiproxy v2 HTTP API, with Shopify's messages and statuses.

Clients (toxiproxy-python among them) dispatch on the status code alone, and people read the
message in logs, so both are kept as the Go server words them: ``{"error": ..., "status": N}``.
"""

from __future__ import annotations

from typing import final


@final
class ApiError(Exception):
    """An answer the HTTP API turns into ``{"error": message, "status": status}``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def detail(self, detail: str) -> ApiError:
        """The same error with the offending field or value appended, as Go's joinError does."""
        return ApiError(f"{self.message}: {detail}", self.status)

    def to_json(self) -> dict[str, object]:
        return {"error": self.message, "status": self.status}


BAD_REQUEST_BODY = ApiError("bad request body", 400)
MISSING_FIELD = ApiError("missing required field", 400)
PROXY_NOT_FOUND = ApiError("proxy not found", 404)
PROXY_EXISTS = ApiError("proxy already exists", 409)
INVALID_STREAM = ApiError("stream was invalid, can be either upstream or downstream", 400)
INVALID_TOXIC_TYPE = ApiError("invalid toxic type", 400)
TOXIC_EXISTS = ApiError("toxic already exists", 409)
TOXIC_NOT_FOUND = ApiError("toxic not found", 404)
