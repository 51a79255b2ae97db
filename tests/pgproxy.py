"""A TCP proxy in front of PostgreSQL that can hold back one kind of session's incoming bytes.

Sessions whose startup message names `application_name` (plain TCP: the proxy's URL disables TLS)
are *marked*. `hold()` stops passing what the server sends to marked sessions until `release()`:
notifications committed meanwhile reach such a session late, in order, exactly as when its
client is slow to read them. `cut()` closes the marked sessions' client side (a lost connection).
Every other session passes untouched.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

_SNIFF = 4096  # bytes of a session's first client messages searched for the marker


class HoldingProxy:
    def __init__(self, url: str, application_name: str) -> None:
        parts = urlsplit(url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._url = parts
        self._marker = application_name.encode() + b"\x00"
        self._released = asyncio.Event()
        self._released.set()
        self._marked: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        user = self._url.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
        query = "&".join(q for q in (self._url.query, "sslmode=disable") if q)
        self.url = urlunsplit(self._url._replace(netloc=netloc, query=query))

    async def close(self) -> None:
        self.release()
        self.cut()
        if self._server is not None:
            self._server.close()

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def cut(self) -> None:
        for writer in list(self._marked):
            writer.transport.abort()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        marked = [False]
        pumps = [
            asyncio.create_task(self._upstream(reader, up_writer, writer, marked)),
            asyncio.create_task(self._downstream(up_reader, writer, marked)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._marked.discard(writer)
            for pump in pumps:
                pump.cancel()
            for w in (writer, up_writer):
                w.transport.abort()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _upstream(self, reader, up_writer, writer, marked: list[bool]) -> None:
        seen = b""
        while data := await reader.read(65536):
            if not marked[0] and len(seen) < _SNIFF:
                seen += data
                if self._marker in seen:
                    marked[0] = True
                    self._marked.add(writer)
            if up_writer.transport.is_closing():  # the server side is gone: end the session
                return
            up_writer.write(data)
            await up_writer.drain()

    async def _downstream(self, up_reader, writer, marked: list[bool]) -> None:
        while data := await up_reader.read(65536):
            if marked[0]:
                await self._released.wait()
            if writer.transport.is_closing():
                return
            writer.write(data)
            await writer.drain()
