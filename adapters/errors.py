"""The error tree of the adapter contract: the only exceptions an adapter maps failures to.

``app/errors.py`` maps each to a close code (and HTTP status). `map_transport_exception` is the
one place a transport exception (websockets, httpx, OS, timeouts) becomes one of them, through
one table matched by type (`TRANSPORT_ERRORS`). An exception that is in no row is not a
provider failure but a bug: it is not mapped (`map_transport_exception` returns None), the
adapter logs it and lets it propagate, and the gateway closes 1011 (internal, not retryable,
never a reason to fall back).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
from collections.abc import Callable

import httpx
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidURI,
    ProtocolError,
)


class ProviderError(Exception):
    """Base of every error an adapter raises. Mapped to a close code in ``app/errors.py``."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        code: str | int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after

    def __str__(self) -> str:
        # "deepgram is not configured", not "deepgram deepgram is not configured"
        named = self.provider and not self.message.startswith(self.provider)
        where = f"{self.provider} " if named else ""
        code = f" [{self.code}]" if self.code is not None else ""
        return f"{where}{self.message}{code}"


class ModelNotFound(ProviderError):
    """The provider or model does not exist (4404)."""


class ProviderNotConfigured(ProviderError):
    """No credentials or model files for this provider on this gateway (4503)."""


class ProviderUnavailable(ProviderError):
    """Upstream unreachable or overloaded (4503); usually retryable."""


class ProviderAuthError(ProviderError):
    """Upstream rejected the gateway's credentials (4502)."""


class ProviderRateLimited(ProviderError):
    """Upstream said 429 / too many sessions (4429)."""


class ProviderTimeout(ProviderError):
    """Upstream did not answer within a bounded wait, or stopped answering (4504)."""


class ProviderProtocolError(ProviderError):
    """Upstream failed, closed with an error, or sent something we cannot use (4502)."""


class ProviderConnectionLost(ProviderProtocolError):
    """An open upstream connection dropped without a close frame (4502, retryable), for
    WebSocket and REST providers alike."""


class ProviderBadRequest(ProviderError):
    """Upstream rejected a parameter the client chose (4400)."""


# ------------------------------------------------------------------------ the mapping table

_SECRETS = re.compile(r"(?i)((?:token|key|secret|authorization|bearer)[\"'=:\s]+)[\w.~+/-]{6,}")


def redact(text: str, *secrets: str | None) -> str:
    """`text` with credentials removed: the given secrets and anything shaped like one
    (``token=...``, ``"key": "..."``, ``Bearer ...``), e.g. Gladia's session URL."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRETS.sub(r"\1***", text)


Mapper = Callable[[BaseException, str], ProviderError]


def _timeout(exc: BaseException, provider: str) -> ProviderError:
    return ProviderTimeout(f"timed out ({type(exc).__name__})", provider=provider,
                           retryable=True)


def _unreachable(exc: BaseException, provider: str) -> ProviderError:
    return ProviderUnavailable(f"cannot reach upstream ({type(exc).__name__}: {redact(str(exc))})",
                               provider=provider, retryable=True)


def _lost(exc: BaseException, provider: str) -> ProviderError:
    return ProviderConnectionLost(f"upstream connection lost ({type(exc).__name__})",
                                  provider=provider, retryable=True)


def _bad_url(exc: BaseException, provider: str) -> ProviderError:
    return ProviderProtocolError(f"bad upstream URL: {redact(str(exc))}", provider=provider)


def _protocol(exc: BaseException, provider: str) -> ProviderError:
    return ProviderProtocolError(f"upstream broke the protocol ({type(exc).__name__})",
                                 provider=provider, retryable=True)


def _http_status(exc: BaseException, provider: str) -> ProviderError:
    assert isinstance(exc, httpx.HTTPStatusError)
    response = exc.response
    return http_status_error(provider, response.status_code, provider_message(response.text),
                             retry_after=parse_retry_after(response.headers.get("retry-after")))


# First match wins (isinstance), so subclasses come before their bases.
TRANSPORT_ERRORS: tuple[tuple[type[BaseException], Mapper], ...] = (
    # websockets
    (ConnectionClosed, _lost),
    (InvalidURI, _bad_url),
    (InvalidHandshake, _protocol),
    (ProtocolError, _protocol),
    # httpx (its own tree; `TimeoutException` covers connect/read/write/pool timeouts)
    (httpx.TimeoutException, _timeout),
    (httpx.ConnectError, _unreachable),
    (httpx.ProxyError, _unreachable),
    (httpx.RemoteProtocolError, _lost),
    (httpx.ReadError, _lost),
    (httpx.WriteError, _lost),
    (httpx.CloseError, _lost),
    (httpx.UnsupportedProtocol, _bad_url),
    (httpx.InvalidURL, _bad_url),
    (httpx.HTTPStatusError, _http_status),
    (httpx.DecodingError, _protocol),
    (httpx.TooManyRedirects, _protocol),
    (httpx.TransportError, _unreachable),
    # the standard library
    (TimeoutError, _timeout),
    (ConnectionRefusedError, _unreachable),
    (socket.gaierror, _unreachable),
    (ssl.SSLError, _unreachable),
    (ConnectionResetError, _lost),
    (ConnectionAbortedError, _lost),
    (BrokenPipeError, _lost),
    (EOFError, _lost),
    (OSError, _unreachable),
)


def map_transport_exception(exc: BaseException, provider: str) -> ProviderError | None:
    """The `ProviderError` a transport exception means, or None when `exc` is in no row of
    `TRANSPORT_ERRORS` (then it is a bug, not a provider failure)."""
    if isinstance(exc, ProviderError):
        return exc
    for kind, mapper in TRANSPORT_ERRORS:
        if isinstance(exc, kind):
            return mapper(exc, provider)
    return None


# --------------------------------------------------------------------- HTTP answers to errors


def http_status_error(
    provider: str,
    status: int,
    detail: str = "",
    *,
    code: str | int | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """Map an upstream HTTP status (handshake or REST) to the error tree; `detail` is the
    provider's message text (see `provider_message`)."""
    code = code if code is not None else status
    message = f"upstream answered HTTP {status}" + (f": {detail[:80]}" if detail else "")
    kw: dict[str, object] = {"provider": provider, "code": code}
    if status in (401, 402, 403):
        return ProviderAuthError(message, **kw)  # type: ignore[arg-type]
    if status == 429:
        return ProviderRateLimited(message, retryable=True, retry_after=retry_after,
                                   **kw)  # type: ignore[arg-type]
    if status in (408, 504):
        return ProviderTimeout(message, retryable=True, **kw)  # type: ignore[arg-type]
    if 400 <= status < 500:
        return ProviderBadRequest(message, **kw)  # type: ignore[arg-type]
    if status >= 500:
        return ProviderUnavailable(message, retryable=True, **kw)  # type: ignore[arg-type]
    return ProviderProtocolError(message, **kw)  # type: ignore[arg-type]


def parse_retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def provider_message(body: str) -> str:
    """The human message inside a provider's error body, not its raw JSON.

    OpenAI/Groq: ``{"error": {"message": ...}}``; Gladia: ``{"message": ...,
    "validation_errors": [...]}``; AssemblyAI/Deepgram: ``{"error": "..."}`` or
    ``{"err_msg": ...}``. Anything else: the text itself, whitespace collapsed.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return re.sub(r"\s+", " ", body).strip()
    if not isinstance(data, dict):
        return re.sub(r"\s+", " ", body).strip()
    error = data.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    parts: list[str] = []
    for key in ("message", "err_msg", "description", "detail", "error"):
        value = data.get(key)
        if isinstance(value, str) and value:
            parts.append(value)
            break
    errors = data.get("validation_errors")
    if isinstance(errors, list) and errors:
        parts.append("; ".join(str(e) for e in errors[:3]))
    return ": ".join(parts) if parts else re.sub(r"\s+", " ", body).strip()
