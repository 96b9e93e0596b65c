"""A TCP proxy in front of a provider fake, to break the network between adapter and fake.

`stall_after(n)`: once `n` bytes went upstream on a connection, the proxy stops forwarding
and stops reading in both directions, like a dead link whose packets vanish: no answers, no
pongs, and the sender's buffers fill up. `drop()`: resets every connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.stall_after_bytes: int | None = None
        self.stalled_at: float | None = None  # time.monotonic() of the stall
        self.stalled = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def stall_after(self, nbytes: int) -> None:
        self.stall_after_bytes = nbytes

    def stall(self) -> None:
        if not self.stalled.is_set():
            self.stalled_at = time.monotonic()
            self.stalled.set()

    def drop(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(Exception):
                sock = transport.get_extra_info("socket")
                if sock is not None:  # RST, not FIN: the connection is lost, not closed
                    import socket
                    import struct

                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            transport.abort()

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        sent = [0]
        loop = asyncio.get_running_loop()
        for src, dst, upstream in ((reader, up_writer, True), (up_reader, writer, False)):
            task = loop.create_task(self._pump(src, dst, upstream, sent))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    upstream: bool, sent: list[int]) -> None:
        try:
            while not self.stalled.is_set():
                read = asyncio.ensure_future(src.read(65536))
                stalled = asyncio.ensure_future(self.stalled.wait())
                await asyncio.wait({read, stalled}, return_when=asyncio.FIRST_COMPLETED)
                stalled.cancel()
                if not read.done():
                    read.cancel()
                    break
                data = read.result()
                if not data:
                    dst.write_eof() if dst.can_write_eof() else dst.close()
                    return
                if upstream:
                    sent[0] += len(data)
                    if self.stall_after_bytes is not None and sent[0] > self.stall_after_bytes:
                        self.stall()
                        break
                dst.write(data)
                await dst.drain()
            await asyncio.Event().wait()  # stalled: hold everything until the proxy stops
        except (ConnectionError, OSError):
            dst.transport.abort()
