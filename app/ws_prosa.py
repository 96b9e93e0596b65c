"""``GET /v2/speech/stt`` — the Prosa streaming STT protocol (shared/API.md §5).

Prosa's streaming API (https://docs2.prosa.ai/speech/stt/streaming/asyncapi/, examples at
https://docs2.prosa.ai/speech/stt/streaming/getting_started/):

1. the key in the ``x-api-key`` header, or, "if passing the api-key as HTTP header is not
   feasible", as the first message ``{"token": "..."}``;
2. a configuration message ``{"model", "label"?, "include_partial"?, "include_filler"?,
   "audio"?: {"format", "channels"?, "sample_rate"?}}`` — ``audio`` is optional, "the format
   of the audio is generally detected automatically";
3. audio as binary frames, "the audio header is expected to only be present in the first
   chunk", and "an empty byte is expected at the end of audio stream";
4. the server answers ``{"type": "created", "id"}`` when ready, then ``{"type": "partial",
   "transcript"}`` (only with ``include_partial``) and ``{"type": "result", "transcript",
   "time_start", "time_end"}``.

Prosa's own model names (``stt-general-online``...) select the gateway's default model; a
``provider.model`` id selects that model. ``language`` in the configuration is an extension
(default ``en``). Errors are sent as ``{"type": "error", "code", "message"}`` before the close
with the code of API.md §1.5.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from adapters import base as ab
from app.audio import Resampler
from app.credentials import key_from_request
from app.errors import GatewayError, to_gateway_error
from app.gateway import Gateway
from app.params import SessionRequest, parse_session_params
from app.session import Session, SessionCreated, SessionEnded, SessionError, open_session

logger = logging.getLogger(__name__)


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _bad(field: str, why: str) -> GatewayError:
    return GatewayError(4400, f"invalid configuration {field}: {why}", code="invalid_parameter")


def parse_config(config: Any, default_model: str) -> tuple[SessionRequest, dict[str, Any]]:
    """A Prosa configuration message -> our session request and the audio description."""
    if not isinstance(config, dict):
        raise _bad("message", "expected a JSON object with model, label, include_partial")
    model = config.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "expected a string")
    # Prosa's model names (stt-general-online...) mean "the default engine" here.
    model_id = model.strip() if model and "." in model else default_model
    partial = config.get("include_partial", False)
    if not isinstance(partial, bool):
        raise _bad("include_partial", "expected true or false")
    audio = config.get("audio") or {}
    if not isinstance(audio, dict):
        raise _bad("audio", "expected an object {format, channels, sample_rate}")
    fmt = audio.get("format")
    rate = audio.get("sample_rate", 16000)
    channels = audio.get("channels", 1)
    if fmt is not None and not isinstance(fmt, str):
        raise _bad("audio.format", "expected a string such as wav, mp3, ogg or pcm")
    if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
        raise _bad("audio.sample_rate", "expected an integer 8000-48000")
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 8:
        raise _bad("audio.channels", "expected an integer 1-8")
    params = {"model": [model_id], "output_format": ["json"],
              "interim_results": [str(partial).lower()], "sample_rate": [str(rate)]}
    if isinstance(config.get("language"), str):
        params["language"] = [config["language"]]
    request = parse_session_params(params, default_model=default_model)
    return request, {"format": (fmt or "").lower(), "sample_rate": rate, "channels": channels}


# ------------------------------------------------------------------------ audio decoding

SNIFF_BYTES = 12
WAV_MAX_HEADER = 64 * 1024
PIPE_LIMIT = 1024 * 1024  # encoded bytes buffered ahead of the decoder thread
# Magic numbers of the containers a first chunk may start with -> PyAV demuxer name.
CONTAINER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"ID3", "mp3"), (b"OggS", "ogg"), (b"fLaC", "flac"), (b"\x1aE\xdf\xa3", "matroska"))
# Declared `audio.format` values whose streams may lack a magic number.
DECLARED_CONTAINERS = {"mp3": "mp3", "aac": "aac", "ogg": "ogg", "opus": "ogg",
                       "flac": "flac", "webm": "matroska"}
Sink = Callable[[bytes], Coroutine[Any, Any, None]]


def sniff(head: bytes, declared: str) -> str:
    """``"wav"``, a PyAV demuxer name, or ``"raw"`` (headerless s16le PCM)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    for magic, fmt in CONTAINER_MAGIC:
        if head.startswith(magic):
            return fmt
    # An MPEG frame sync (0xFFE) is also what negative PCM samples look like: trust it only
    # when the client said mp3.
    if declared in DECLARED_CONTAINERS:
        return DECLARED_CONTAINERS[declared]
    return "raw"


@dataclass(frozen=True, slots=True)
class WavFormat:
    tag: int  # 1 = PCM, 3 = float, 0xFFFE = extensible (sub-format in `subtag`)
    channels: int
    rate: int
    bits: int
    data_offset: int
    data_size: int | None  # None = unknown (streamed WAV with a 0 or 0xFFFFFFFF size)

    @property
    def is_pcm16(self) -> bool:
        return self.tag == 1 and self.bits == 16


def parse_wav_header(buf: bytes) -> WavFormat | None:
    """The format and data offset of a WAV stream, or None while the header is incomplete."""
    pos, fmt = 12, None
    while pos + 8 <= len(buf):
        chunk, size = buf[pos:pos + 4], int.from_bytes(buf[pos + 4:pos + 8], "little")
        if chunk == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk before its fmt chunk")
            tag, channels, rate, bits = fmt
            return WavFormat(tag, channels, rate, bits, pos + 8,
                             None if size in (0, 0xFFFFFFFF) else size)
        if pos + 8 + size > len(buf):
            return None
        if chunk == b"fmt ":
            body = buf[pos + 8:pos + 8 + size]
            if len(body) < 16:
                raise ValueError("WAV fmt chunk too short")
            tag = int.from_bytes(body[0:2], "little")
            if tag == 0xFFFE and len(body) >= 26:
                tag = int.from_bytes(body[24:26], "little")  # WAVE_FORMAT_EXTENSIBLE sub-format
            fmt = (tag, int.from_bytes(body[2:4], "little"), int.from_bytes(body[4:8], "little"),
                   int.from_bytes(body[14:16], "little"))
        pos += 8 + size + (size & 1)
    return None


class _PcmPath:
    """Interleaved s16le at `in_rate` -> mono s16le at `out_rate`."""

    def __init__(self, in_rate: int, out_rate: int, channels: int,
                 limit: int | None = None) -> None:
        self.channels = channels
        self.resampler = Resampler(in_rate, out_rate)
        self.remaining = limit
        self.carry = b""

    def process(self, data: bytes, last: bool = False) -> bytes:
        if self.remaining is not None:
            data = data[:self.remaining]
            self.remaining -= len(data)
        data = self.carry + data
        frame = 2 * self.channels
        cut = len(data) - len(data) % frame
        data, self.carry = data[:cut], data[cut:]
        if self.channels > 1 and data:
            samples = np.frombuffer(data, dtype="<i2").reshape(-1, self.channels)
            data = samples.mean(axis=1).astype("<i2").tobytes()
        return self.resampler.process(data, last=last)


class _BlockingPipe:
    """Bytes from the event loop to PyAV's decoder thread; `read` blocks until data or EOF."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._cv = threading.Condition()
        self._eof = False

    def write(self, data: bytes) -> None:
        with self._cv:
            self._buf += data
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def abort(self) -> None:
        with self._cv:
            self._eof = True
            self._buf.clear()
            self._cv.notify_all()

    def read(self, size: int = -1) -> bytes:
        with self._cv:
            while not self._buf and not self._eof:
                self._cv.wait()
            size = len(self._buf) if size < 0 else size
            out = bytes(self._buf[:size])
            del self._buf[:size]
            self._cv.notify_all()
            return out

    def wait_below(self, limit: int) -> None:
        with self._cv:
            while len(self._buf) > limit and not self._eof:
                self._cv.wait()

    def __len__(self) -> int:
        return len(self._buf)


class _ContainerPath:
    """A compressed stream decoded by PyAV in a worker thread, fed through a blocking pipe."""

    def __init__(self, fmt: str, rate: int, sink: Sink) -> None:
        self.fmt = fmt
        self.rate = rate
        self.sink = sink
        self.pipe = _BlockingPipe()
        self.loop = asyncio.get_running_loop()
        self.aborted = False
        self._delivery: concurrent.futures.Future[None] | None = None
        self.done = self.loop.run_in_executor(None, self._decode)

    async def feed(self, data: bytes) -> None:
        if self.done.done():
            await self.done  # raises the decoding error, if that is why it stopped
            return
        self.pipe.write(data)
        if len(self.pipe) > PIPE_LIMIT:  # backpressure: wait for the decoder to catch up
            await asyncio.to_thread(self.pipe.wait_below, PIPE_LIMIT)

    async def end(self) -> None:
        self.pipe.close()
        await self.done

    def abort(self) -> None:
        self.aborted = True
        self.pipe.abort()
        if self._delivery is not None:
            self._delivery.cancel()

    def _decode(self) -> None:
        import av

        try:
            # A named format and a small probe: decoding starts with the first frames instead
            # of waiting for megabytes of probe data.
            with av.open(self.pipe, mode="r", format=self.fmt,
                         options={"probesize": "4096", "analyzeduration": "0"}) as container:
                if not container.streams.audio:
                    raise ValueError("no audio stream")
                resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
                for frame in container.decode(container.streams.audio[0]):
                    for out in resampler.resample(frame):
                        self._deliver(out.to_ndarray().astype("<i2", copy=False).tobytes())
                for out in resampler.resample(None):
                    self._deliver(out.to_ndarray().astype("<i2", copy=False).tobytes())
        except av.FFmpegError as exc:
            if not self.aborted:
                raise ValueError(f"cannot decode {self.fmt} audio: {exc}") from exc

    def _deliver(self, pcm: bytes) -> None:
        if self.aborted:
            raise concurrent.futures.CancelledError()
        self._delivery = asyncio.run_coroutine_threadsafe(self.sink(pcm), self.loop)
        self._delivery.result()


class StreamDecoder:
    """The client's audio stream -> s16le mono PCM at `rate`, handed to `sink` in order.

    The stream is raw PCM (s16le, `channels` interleaved, at `rate`), or a WAV/MP3/OGG/FLAC/
    WebM stream whose header is in the first chunk. WAV PCM is parsed here; compressed
    formats are decoded as a stream by PyAV in a worker thread.
    """

    def __init__(self, sink: Sink, rate: int, *, declared_format: str = "",
                 channels: int = 1) -> None:
        self.sink = sink
        self.rate = rate
        self.declared = declared_format
        self.channels = channels
        self._head = b""  # first bytes, until the format is known
        self._path: _PcmPath | _ContainerPath | None = None

    async def feed(self, data: bytes) -> None:
        if self._path is None:
            self._head += data
            if not self._choose(final=False):
                return
            data, self._head = self._head, b""
        await self._push(data)

    async def end(self) -> None:
        if self._path is None:
            self._choose(final=True)
            data, self._head = self._head, b""
            await self._push(data)
        try:
            if isinstance(self._path, _ContainerPath):
                await self._path.end()
            elif self._path is not None:
                await self._push(b"", last=True)
        except ValueError as exc:
            raise GatewayError(4400, f"invalid audio: {exc}", code="invalid_audio") from None

    async def aclose(self) -> None:
        if isinstance(self._path, _ContainerPath):
            self._path.abort()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._path.done), 5)

    def _choose(self, final: bool) -> bool:
        """Pick the decoding path once enough of the first bytes are here."""
        if len(self._head) < SNIFF_BYTES and not final:
            return False
        kind = sniff(self._head, self.declared)
        if kind == "wav":
            try:
                wav = parse_wav_header(self._head)
            except ValueError as exc:
                raise GatewayError(4400, f"invalid audio: {exc}", code="invalid_audio") from None
            if wav is None:
                if len(self._head) > WAV_MAX_HEADER or final:
                    raise GatewayError(4400, "invalid audio: WAV header without a data chunk",
                                       code="invalid_audio")
                return False
            if wav.is_pcm16 and 1 <= wav.channels <= 8 and wav.rate > 0:
                self._head = self._head[wav.data_offset:]
                self._path = _PcmPath(wav.rate, self.rate, wav.channels, wav.data_size)
                return True  # float, 24-bit, mu-law... WAV: PyAV decodes it below
        if kind == "raw":
            self._path = _PcmPath(self.rate, self.rate, self.channels)
        else:
            self._path = _ContainerPath(kind, self.rate, self.sink)
        return True

    async def _push(self, data: bytes, last: bool = False) -> None:
        if isinstance(self._path, _ContainerPath):
            if data:
                try:
                    await self._path.feed(data)
                except ValueError as exc:
                    raise GatewayError(4400, f"invalid audio: {exc}",
                                       code="invalid_audio") from None
        elif self._path is not None:
            pcm = self._path.process(data, last=last)
            if pcm:
                await self.sink(pcm)

class ProsaConnection:
    def __init__(self, websocket: WebSocket, gateway: Gateway) -> None:
        self.ws = websocket
        self.gateway = gateway
        self._closed = False
        self._send_lock = asyncio.Lock()

    async def serve(self) -> None:
        await self.ws.accept()
        try:
            secret = key_from_request(self.ws.headers, self.ws.query_params)
            if secret is None:
                first = await self._receive_json("token")
                token = first.get("token") if isinstance(first, dict) else None
                if not isinstance(token, str) or not token:
                    raise GatewayError(4401, 'missing API key: send the x-api-key header or '
                                             '{"token": "..."} as the first message',
                                       code="missing_key")
                secret = token
            client = self.ws.client.host if self.ws.client else None
            principal = await self.gateway.authenticate(secret, client)
            config = await self._receive_json("configuration")
            if isinstance(config, dict) and set(config) == {"token"}:
                config = await self._receive_json("configuration")  # token sent as well
            request, audio = parse_config(config, self.gateway.settings.default_model)
            label = config.get("label") if isinstance(config, dict) else None
            async with open_session(self.gateway, request, principal,
                                    origin=self.ws.headers.get("origin")) as session:
                await self._run(session, audio, label)
        except WebSocketDisconnect:
            return
        except Exception as exc:  # every failure ends as an error message and a close code
            await self._fail(to_gateway_error(exc))

    async def _receive_json(self, what: str) -> Any:
        timeout = self.gateway.settings.auth_timeout
        try:
            async with asyncio.timeout(timeout):
                message = await self.ws.receive()
        except TimeoutError:
            raise GatewayError(4408, f"no {what} message within {timeout:g} s") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        if text is None:
            code = 4401 if what == "token" else 4400
            raise GatewayError(code, f"audio before the {what} message")
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise GatewayError(4400, f"invalid JSON in the {what} message: {exc.msg}",
                               code="invalid_message") from None

    async def _run(self, session: Session, audio: dict[str, Any], label: Any) -> None:
        decoder = StreamDecoder(session.send_audio, session.request.options.sample_rate,
                                declared_format=audio["format"], channels=audio["channels"])
        reader = asyncio.create_task(self._read(session, decoder), name=f"{session.id}:prosa")
        writer = asyncio.create_task(self._write(session, label), name=f"{session.id}:out")
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done and reader.exception() is not None:
                exc = reader.exception()
                if not isinstance(exc, WebSocketDisconnect):
                    await self._fail(to_gateway_error(exc))  # type: ignore[arg-type]
            elif reader in done and session._input_closed:
                await writer  # end of audio: deliver the remaining results, then close
        finally:
            for task in (reader, writer):
                task.cancel()
            for task in (reader, writer):
                with contextlib.suppress(BaseException):
                    await task
            await decoder.aclose()

    async def _read(self, session: Session, decoder: StreamDecoder) -> None:
        max_bytes = self.gateway.settings.max_frame_bytes
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                session.touch()  # text after the configuration: nothing defined; stay alive
                continue
            if len(data) > max_bytes:
                raise GatewayError(1009, f"frame of {len(data)} bytes is over {max_bytes} bytes")
            if not data:  # "an empty byte is expected at the end of audio stream"
                await decoder.end()
                await session.close_stream()
                return
            session.touch()
            await decoder.feed(data)

    async def _write(self, session: Session, label: Any) -> None:
        async for event in session.events():
            if isinstance(event, SessionCreated):
                created: dict[str, Any] = {"type": "created", "id": event.session_id,
                                           "model": event.model}
                if label is not None:
                    created["label"] = label
                await self._send(_dumps(created))
            elif isinstance(event, ab.Transcript):
                await self._send(_dumps({
                    "type": "result" if event.is_final else "partial",
                    "transcript": event.text, "time_start": event.start,
                    "time_end": event.end}))
            elif isinstance(event, SessionError):
                await self._fail(event.error)
            elif isinstance(event, SessionEnded):
                await self._close(1000, "session ended")

    async def _fail(self, error: GatewayError) -> None:
        if error.close_code >= 4000 or error.close_code == 1011:
            logger.info("prosa: closing %s: %s", error.close_code, error.message)
        self.gateway.metrics.session_error(error.close_code)
        await self._send(_dumps({"type": "error", **error.to_json(),
                                 "close_code": error.close_code}))
        await self._close(error.close_code, error.reason)

    async def _send(self, frame: str) -> None:
        if self._closed or self.ws.application_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.ws.send_text(frame)

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.ws.close(code, reason)


async def prosa_websocket(websocket: WebSocket) -> None:
    await ProsaConnection(websocket, websocket.app.state.gateway).serve()


routes = [WebSocketRoute("/v2/speech/stt", prosa_websocket)]
