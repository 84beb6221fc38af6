"""The server's HTTP protocol: every connection leaves small answers at once (TCP_NODELAY)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from serving.app import NoDelayHTTPProtocol


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


def _nodelay_of_served_connection(http: Any) -> int:
    """TCP_NODELAY of the server's side of a kept-alive connection, on a listening socket
    bound as ``uvicorn --workers N`` binds it (no protocol named: asyncio leaves Nagle on)."""

    async def main() -> int:
        config = uvicorn.Config(_hello, http=http, lifespan="off", log_config=None)
        server = uvicorn.Server(config)
        listening = socket.socket(socket.AF_INET)
        listening.bind(("127.0.0.1", 0))
        assert listening.proto == 0
        serving = asyncio.create_task(server.serve(sockets=[listening]))
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection(*listening.getsockname())
            for _ in range(2):  # kept alive: the second request rides the same connection
                writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                assert await reader.readexactly(2) == b"ok"
            (connection,) = server.server_state.connections
            sock = connection.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            flag = int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            return flag
        finally:
            server.should_exit = True
            await serving
            listening.close()

    return asyncio.run(main())


def test_every_connection_sends_without_waiting_for_acknowledgements() -> None:
    assert _nodelay_of_served_connection(NoDelayHTTPProtocol) != 0


def test_the_stock_protocol_leaves_nagle_on_for_worker_sockets() -> None:
    # why the protocol above exists: with a socket bound as uvicorn binds it for its worker
    # processes, asyncio does not set TCP_NODELAY, and each kept-alive answer written as head
    # then body waited ~40 ms for the client's delayed acknowledgement
    assert _nodelay_of_served_connection("h11") == 0
