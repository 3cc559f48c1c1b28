"""Hostile upstreams for the tests: servers on loopback that answer as an attacker would."""

import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.conftest import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MIB = 1 << 20


def gzip_bomb(inflated: int = 1 << 30) -> bytes:
    """A valid gzip body of about 1 MB per GB that inflates to `inflated` zero bytes.

    Built from one flushed deflate block repeated (a full flush makes each block's bytes the
    same), so it costs a fraction of a second instead of compressing a gigabyte.
    """
    chunk = b"\0" * MIB
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(inflated // MIB):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, inflated & 0xFFFFFFFF)
    return header + first + block * (inflated // MIB - 1) + deflate.flush() + trailer


def many_items(count: int = 1_000_000) -> bytes:
    """A JSON array of `count` small objects: 34 bytes each, 34 MB for a million."""
    items = (f'{{"id":{i:08d},"name":"agent-{i % 10**6:06d}"}}' for i in range(count))
    return ("[" + ",".join(items) + "]").encode()


@dataclass
class Seen:
    """One request a hostile server received."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """A loopback HTTP server with routes set by the test; it records every request."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    port: int = 0
    _runner: web.AppRunner | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def json(self, path: str, body: object, **headers: str) -> None:
        async def answer(_: web.Request) -> web.Response:
            return web.json_response(body, headers=headers)

        self.route("GET", path, answer)

    def redirect(self, method: str, path: str, status: int, location: str) -> None:
        async def answer(_: web.Request) -> web.Response:
            return web.Response(status=status, headers={"Location": location})

        self.route(method, path, answer)

    async def start(self) -> "Server":
        async def dispatch(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.seen.append(Seen(request.path_qs, dict(request.headers), body))
            handler = self.routes.get((request.method, request.path))
            if handler is None:
                return web.Response(status=404)
            return await handler(request)

        app = web.Application(client_max_size=4 * MIB)
        app.router.add_route("*", "/{tail:.*}", dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
