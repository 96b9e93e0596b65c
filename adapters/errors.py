"""The error tree of the adapter contract: the only exceptions that may leave ``adapters/``.

``app/errors.py`` maps each to a close code (and HTTP status); `map_transport_exception` is the
one place a transport or SDK exception becomes one of them.
"""

from __future__ import annotations


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
    """Upstream did not answer within a bounded wait (4504)."""


class ProviderProtocolError(ProviderError):
    """Upstream failed, closed with an error, or sent something we cannot use (4502)."""


class ProviderBadRequest(ProviderError):
    """Upstream rejected a parameter the client chose (4400)."""


def map_transport_exception(exc: BaseException, provider: str) -> ProviderError:
    """Map common transport exceptions (websockets, httpx, OS, timeouts) to the error tree."""
    name = type(exc).__name__
    module = type(exc).__module__
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(f"timed out ({name})", provider=provider, retryable=True)
    if isinstance(exc, ConnectionRefusedError | ConnectionResetError | OSError):
        return ProviderUnavailable(f"cannot reach upstream: {exc}", provider=provider,
                                   retryable=True)
    if module.startswith("httpx"):
        if "Timeout" in name:
            return ProviderTimeout(f"timed out ({name})", provider=provider, retryable=True)
        if "Connect" in name:
            return ProviderUnavailable(f"cannot reach upstream: {exc}", provider=provider,
                                       retryable=True)
    return ProviderProtocolError(f"{name}: {exc}", provider=provider, retryable=True)
