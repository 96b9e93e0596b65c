"""No transport or SDK exception escapes ``adapters/``: every fault the fakes can inject, and
refused connections, DNS failures and timeouts, end as the right `ProviderError` subclass
carrying the provider's code (which the gateway puts in the close reason)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.base import (
    AdapterContext,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    StreamOptions,
)
from tests.adapters.test_stream_events import ScriptedStream
from tests.fakes.driver import error_of, run
from tests.fakes.providers import CLOUD, KEYS, adapter_class, stream_through, upstream
from tests.servers import free_port
from tests.speech import pcm

FIVE_SECONDS = pcm("beckett.wav")[: 5 * 32000]

# (provider, fault, error class, provider code or None to skip the code check)
FAULTS: list[tuple[str, str, type[ProviderError], object]] = [
    ("deepgram", "rate_limit", ProviderRateLimited, 429),
    ("deepgram", "server_error", ProviderUnavailable, 503),
    ("deepgram", "drop", ProviderTimeout, "NET-0000"),
    ("deepgram", "data_error", ProviderProtocolError, "DATA-0000"),
    ("deepgram", "malformed", ProviderProtocolError, "malformed"),
    ("deepgram", "stall", ProviderTimeout, None),
    ("assemblyai", "too_many", ProviderRateLimited, 3009),
    ("assemblyai", "server_error", ProviderUnavailable, 3005),
    ("assemblyai", "malformed", ProviderProtocolError, "malformed"),
    ("assemblyai", "stall", ProviderTimeout, None),
    ("openai", "rate_limit", ProviderRateLimited, 429),
    ("openai", "server_error", ProviderUnavailable, "server_error"),
    ("openai", "malformed", ProviderProtocolError, "malformed"),
    ("openai", "stall", ProviderTimeout, None),
    ("gladia", "rate_limit", ProviderRateLimited, 429),
    ("gladia", "server_error", ProviderUnavailable, 1011),
    ("gladia", "malformed", ProviderProtocolError, "malformed"),
    ("gladia", "stall", ProviderTimeout, None),
    ("gladia", "no_url", ProviderProtocolError, None),
    ("groq", "rate_limit", ProviderRateLimited, 429),
    ("groq", "server_error", ProviderUnavailable, 500),
    ("groq", "malformed", ProviderProtocolError, "malformed"),
    ("groq", "stall", ProviderTimeout, None),
]


async def _stream_through(provider: str, fault: str, **kw: object) -> ProviderError:
    return await stream_through(provider, fault, connect_timeout=3, **kw)


@pytest.mark.parametrize(("provider", "fault", "kind", "code"), FAULTS,
                         ids=[f"{p}-{f}" for p, f, _, _ in FAULTS])
async def test_injected_faults_map_to_the_error_tree(provider: str, fault: str,
                                                     kind: type[ProviderError],
                                                     code: object) -> None:
    error = await _stream_through(provider, fault)
    assert type(error) is kind, repr(error)
    assert error.provider == provider
    if code is not None:
        assert error.code == code
    if kind is ProviderRateLimited:
        assert error.retryable and error.retry_after is not None or provider == "assemblyai"


async def test_openai_whisper_1_rest_faults_are_mapped() -> None:
    error = await _stream_through("openai", "rate_limit", model="whisper-1")
    assert isinstance(error, ProviderRateLimited) and error.retry_after == 3.0


@pytest.mark.parametrize("provider", list(CLOUD))
async def test_wrong_credentials_are_auth_errors(provider: str) -> None:
    async with upstream(provider, api_key="not-the-key") as up:
        stream = up.adapter.open_stream(up.model, StreamOptions(sample_rate=up.rate))
        with pytest.raises(ProviderAuthError):
            await stream.start()
        await stream.aclose()


async def _dead_port_url(provider: str, port: int, host: str = "127.0.0.1") -> str:
    scheme = "ws" if provider in ("deepgram", "assemblyai", "soniox") else "http"
    suffix = {"openai": "/v1", "groq": "/openai/v1"}.get(provider, "")
    return f"{scheme}://{host}:{port}{suffix}"


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts TCP connections and never answers: handshakes and requests time out."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("provider", list(CLOUD))
@pytest.mark.parametrize("where", ["refused", "dns", "silent"])
async def test_transport_failures_are_mapped(provider: str, where: str,
                                             silent_server: int) -> None:
    if where == "refused":
        base = await _dead_port_url(provider, free_port())
    elif where == "dns":
        base = await _dead_port_url(provider, 443, host="no-such-host.invalid")
    else:
        base = await _dead_port_url(provider, silent_server)
    context = AdapterContext(api_key=KEYS[provider], base_url=base, connect_timeout=1.0,
                             flush_timeout=1.0)
    adapter = adapter_class(provider)(context)
    model, rate = CLOUD[provider]
    stream = adapter.open_stream(model, StreamOptions(sample_rate=rate))
    try:
        with pytest.raises(ProviderError) as err:
            async with asyncio.timeout(10):
                await stream.start()
    finally:
        await stream.aclose()
        await adapter.aclose()
    expected = {"refused": (ProviderUnavailable,), "dns": (ProviderUnavailable, ProviderTimeout),
                "silent": (ProviderTimeout,)}[where]
    assert isinstance(err.value, expected), repr(err.value)
    assert err.value.retryable


async def test_http_statuses_map_like_the_gateway_table() -> None:
    from adapters._ws import http_status_error

    cases = {400: ProviderBadRequest, 401: ProviderAuthError, 402: ProviderAuthError,
             403: ProviderAuthError, 404: ProviderBadRequest, 408: ProviderTimeout,
             422: ProviderBadRequest, 429: ProviderRateLimited, 500: ProviderUnavailable,
             502: ProviderUnavailable, 503: ProviderUnavailable, 504: ProviderTimeout}
    for status, kind in cases.items():
        error = http_status_error("x", status, "detail")
        assert type(error) is kind and error.code == status


async def test_close_codes_of_each_provider() -> None:
    from adapters import assemblyai, deepgram, gladia

    assert isinstance(deepgram.close_error(1011, "NET-0001 no audio"), ProviderTimeout)
    assert isinstance(deepgram.close_error(1008, "DATA-0000 bad audio"), ProviderProtocolError)
    assert deepgram.close_error(1000, "") is None
    for code, kind in {1008: ProviderAuthError, 3005: ProviderUnavailable,
                       3006: ProviderProtocolError, 3007: ProviderProtocolError,
                       3008: ProviderTimeout, 3009: ProviderRateLimited}.items():
        error = assemblyai.close_error(code, "x")
        assert type(error) is kind and error.code == code
    assert isinstance(gladia.close_error(4401, "bad token"), ProviderAuthError)
    assert isinstance(gladia.close_error(4400, "bad"), ProviderBadRequest)
    assert isinstance(gladia.close_error(1011, "boom"), ProviderUnavailable)


# ------------------------------------------------------------- the mapping is total and typed


def _instances() -> list[tuple[BaseException, type[ProviderError]]]:
    """One instance of every exception type in the transport table, and what it must become."""
    import socket
    import ssl

    import httpx
    from websockets.exceptions import (
        ConnectionClosedError,
        InvalidHandshake,
        InvalidURI,
        ProtocolError,
    )

    from adapters.base import ProviderConnectionLost

    request = httpx.Request("POST", "https://upstream.invalid/x")
    response = httpx.Response(429, request=request, json={"error": {"message": "slow down"}})
    return [
        (ConnectionClosedError(None, None), ProviderConnectionLost),
        (InvalidURI("nope", "bad"), ProviderProtocolError),
        (InvalidHandshake("bad"), ProviderProtocolError),
        (ProtocolError("bad frame"), ProviderProtocolError),
        (httpx.ConnectTimeout("t", request=request), ProviderTimeout),
        (httpx.ReadTimeout("t", request=request), ProviderTimeout),
        (httpx.WriteTimeout("t", request=request), ProviderTimeout),
        (httpx.PoolTimeout("t", request=request), ProviderTimeout),
        (httpx.ConnectError("c", request=request), ProviderUnavailable),
        (httpx.ProxyError("p", request=request), ProviderUnavailable),
        (httpx.RemoteProtocolError("peer closed", request=request), ProviderConnectionLost),
        (httpx.ReadError("r", request=request), ProviderConnectionLost),
        (httpx.WriteError("w", request=request), ProviderConnectionLost),
        (httpx.CloseError("c", request=request), ProviderConnectionLost),
        (httpx.UnsupportedProtocol("ftp", request=request), ProviderProtocolError),
        (httpx.InvalidURL("bad"), ProviderProtocolError),
        (httpx.HTTPStatusError("429", request=request, response=response), ProviderRateLimited),
        (httpx.DecodingError("gzip", request=request), ProviderProtocolError),
        (httpx.TooManyRedirects("loop", request=request), ProviderProtocolError),
        (httpx.LocalProtocolError("l", request=request), ProviderUnavailable),
        (TimeoutError(), ProviderTimeout),
        (ConnectionRefusedError(), ProviderUnavailable),
        (socket.gaierror(-2, "Name or service not known"), ProviderUnavailable),
        (ssl.SSLError("bad cert"), ProviderUnavailable),
        (ConnectionResetError(), ProviderConnectionLost),
        (ConnectionAbortedError(), ProviderConnectionLost),
        (BrokenPipeError(), ProviderConnectionLost),
        (EOFError(), ProviderConnectionLost),
        (OSError("no route"), ProviderUnavailable),
    ]


def test_every_row_of_the_transport_table_is_covered_and_mapped_by_type() -> None:
    from adapters.errors import TRANSPORT_ERRORS, map_transport_exception
    from app.errors import to_gateway_error

    cases = _instances()
    covered = {kind for kind, _ in TRANSPORT_ERRORS}
    assert covered <= {type(exc) for exc, _ in cases} | {
        base for exc, _ in cases for base in type(exc).__mro__}
    for exc, expected in cases:
        error = map_transport_exception(exc, "x")
        assert type(error) is expected, (exc, error)
        assert error is not None and error.provider == "x"
        gateway = to_gateway_error(error)
        assert gateway.close_code in (4429, 4502, 4503, 4504), (exc, gateway.close_code)
        assert "{" not in gateway.message  # the provider's text, never raw JSON
    rate_limited = map_transport_exception(cases[16][0], "x")
    assert rate_limited is not None and "slow down" in str(rate_limited)


@pytest.mark.parametrize("bug", [KeyError("text"), AttributeError("x"), RuntimeError("y"),
                                 ZeroDivisionError()])
async def test_an_unknown_exception_is_a_bug_not_a_provider_error(
        bug: Exception, caplog: pytest.LogCaptureFixture) -> None:
    """Not mapped, not retryable, never a reason to fall back: it propagates unchanged from
    the adapter (logged with its traceback) and the gateway closes 1011."""
    from adapters.errors import map_transport_exception
    from app.errors import to_gateway_error

    assert map_transport_exception(bug, "x") is None
    stream = ScriptedStream("m", StreamOptions(sample_rate=16000))

    async def broken() -> None:
        raise bug

    with pytest.raises(type(bug)):
        await stream._guard(broken())
    assert any(r.exc_info and r.exc_info[1] is bug for r in caplog.records)
    # Raised in a background task, it ends the stream and comes out of events() unchanged.
    stream._spawn(broken(), "worker")
    await error_of(stream, type(bug), within=5)
    await stream.aclose()
    gateway = to_gateway_error(bug)
    assert gateway.close_code == 1011 and not gateway.retryable


def test_provider_messages_not_raw_json() -> None:
    from adapters.errors import http_status_error, provider_message

    openai = '{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}'
    gladia = ('{"statusCode": 400, "message": "Bad Request", "validation_errors": '
              '["property diarization should not exist"]}')
    assert provider_message(openai) == "Incorrect API key provided"
    assert provider_message(gladia) == "Bad Request: property diarization should not exist"
    assert provider_message('{"statusCode": 401, "message": "Invalid or missing API key"}') \
        == "Invalid or missing API key"
    assert provider_message("<html>\n bad gateway </html>") == "<html> bad gateway </html>"
    error = http_status_error("openai", 401, provider_message(openai))
    assert str(error) == "openai upstream answered HTTP 401: Incorrect API key provided [401]"


@pytest.mark.parametrize("model", ["groq", "whisper-1"])
async def test_segmented_upload_drop_is_connection_lost_4502(model: str) -> None:
    from adapters.base import ProviderConnectionLost
    from app.errors import to_gateway_error

    provider, kw = ("groq", {}) if model == "groq" else ("openai", {"model": "whisper-1"})
    error = await _stream_through(provider, "drop", **kw)
    assert isinstance(error, ProviderConnectionLost) and error.retryable
    assert to_gateway_error(error).close_code == 4502


@pytest.mark.parametrize("fault", ["stall", "server_error", "drop"])
async def test_a_dead_uploader_never_strands_the_sender(fault: str) -> None:
    """The uploader dies on a stalled (timed out), failing or dropped upload while the client
    keeps sending as fast as allowed: the full upload queue must not hold the sender, which
    gets the uploader's error in bounded time."""
    async with upstream("groq", fault=fault, flush_timeout=1.0) as up:
        stream = up.adapter.open_stream(up.model, StreamOptions())
        audio = pcm("beckett.wav") * 4  # 24 utterances: far more than the queue holds
        with pytest.raises(ProviderError) as err:
            await run(stream, audio, within=20)
        assert not stream._tasks
    expected = {"stall": ProviderTimeout, "server_error": ProviderUnavailable,
                "drop": ProviderProtocolError}[fault]
    assert isinstance(err.value, expected), repr(err.value)
