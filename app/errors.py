"""The one table that maps every failure to a close code (shared/API.md §1.5).

Adapters raise `ProviderError` subclasses, ``auth`` raises `AccessDenied`; front-ends only ever
see `GatewayError`, made here by `to_gateway_error`. Any other exception is a bug (adapters let
unknown exceptions through unmapped): 1011, logged with its traceback, never retryable.
"""

from __future__ import annotations

import logging

from adapters import base as ab
from auth.base import AccessDenied

logger = logging.getLogger(__name__)

# close code -> (machine code for error events, HTTP status for REST front-ends)
CLOSE_CODES: dict[int, tuple[str, int]] = {
    1000: ("ok", 200),
    1009: ("message_too_big", 413),
    1011: ("internal_error", 500),
    1012: ("server_restarting", 503),
    4400: ("invalid_request", 400),
    4401: ("unauthorized", 401),
    4402: ("quota_exceeded", 402),
    4403: ("forbidden", 403),
    4404: ("model_not_found", 404),
    4408: ("timeout", 408),
    4413: ("session_too_long", 413),
    4429: ("rate_limited", 429),
    4502: ("upstream_error", 502),
    4503: ("unavailable", 503),
    4504: ("upstream_timeout", 504),
}

# ProviderError subclass -> close code. Order matters only for documentation: lookup walks the MRO.
PROVIDER_CLOSE_CODES: dict[type[ab.ProviderError], int] = {
    ab.ModelNotFound: 4404,
    ab.ProviderNotConfigured: 4503,
    ab.ProviderUnavailable: 4503,
    ab.ProviderAuthError: 4502,
    ab.ProviderRateLimited: 4429,
    ab.ProviderTimeout: 4504,
    ab.ProviderConnectionLost: 4502,  # for every provider, WebSocket or REST
    ab.ProviderProtocolError: 4502,
    ab.ProviderBadRequest: 4400,
    ab.ProviderError: 4502,
}


class GatewayError(Exception):
    """A failure with the close code to end the session with."""

    def __init__(self, close_code: int, message: str, *, code: str | None = None,
                 retry_after: float | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.message = message
        self.code = code or CLOSE_CODES.get(close_code, ("error", 500))[0]
        self.retry_after = retry_after
        self.retryable = retryable

    @property
    def http_status(self) -> int:
        return CLOSE_CODES.get(self.close_code, ("error", 500))[1]

    @property
    def reason(self) -> str:
        """The close reason: at most 123 bytes of UTF-8 (RFC 6455 §5.5)."""
        return truncate_reason(self.message)

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


def truncate_reason(text: str, limit: int = 123) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def close_code_for(error: ab.ProviderError) -> int:
    for cls in type(error).__mro__:
        if cls in PROVIDER_CLOSE_CODES:
            return PROVIDER_CLOSE_CODES[cls]
    return 4502


def to_gateway_error(exc: BaseException) -> GatewayError:
    """Map any exception to a `GatewayError`; unknown ones are internal errors (1011)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, AccessDenied):
        return GatewayError(exc.close_code, exc.reason, code=exc.code,
                            retry_after=exc.retry_after)
    if isinstance(exc, ab.ProviderError):
        code = close_code_for(exc)
        return GatewayError(code, str(exc), retry_after=exc.retry_after,
                            retryable=exc.retryable)
    logger.error("internal error", exc_info=exc)
    return GatewayError(1011, f"internal error: {type(exc).__name__}")
