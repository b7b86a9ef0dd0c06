"""The lean HTTP/1.1 client: replies split across packets, chunked bodies, keep-alive and closed peers."""

from __future__ import annotations

import asyncio

import pytest

from loadtests.httpclient import HttpConnection, HttpError, build_request

REPLIES = [
    # Content-Length body, sent in three pieces.
    [b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 5\r\nX-A: b\r\n\r\nhel", b"lo"],
    # Chunked body with an extension and a trailer.
    [b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n",
     b"2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n"],
]


async def _serve_and_call() -> list[tuple[int, bytes, dict[str, str]]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for pieces in REPLIES:
            await reader.readuntil(b"\r\n\r\n")
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = await HttpConnection.open("127.0.0.1", port)
    got = []
    try:
        for _ in REPLIES:
            reply = await conn.request(build_request("GET", "h", "/"))
            got.append((reply.status, reply.body, reply.headers))
        with pytest.raises(HttpError):
            await conn.request(build_request("GET", "h", "/"))  # the server has closed by now
    finally:
        conn.close()
        server.close()
        await server.wait_closed()
    return got


def test_replies_in_pieces_and_chunked_bodies_on_one_connection() -> None:
    got = asyncio.run(_serve_and_call())
    assert [(s, b) for s, b, _ in got] == [(200, b"hello"), (201, b"abcde")]
    assert got[0][2]["x-a"] == "b"


def test_build_request_sets_content_length() -> None:
    raw = build_request("POST", "h:1", "/p", {"A": "b"}, b"xyz")
    head, body = raw.split(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /p HTTP/1.1"
    assert b"Content-Length: 3" in head and body == b"xyz"


def test_connecting_to_a_closed_port_is_an_http_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HttpError, match="cannot connect"):
        asyncio.run(HttpConnection.open("127.0.0.1", port))
