"""The native gRPC engine (H2GrpcServer) on a free port in its own thread, serving a small test service
whose handlers report what they saw (started, cancelled, ended) to the test thread through queues.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import ssl
import threading
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import Future
from typing import Any

import grpc

from gateway import eventloop
from gateway.protocol.h2.calls import BIDI, SERVER_STREAM, UNARY, Context, Method
from gateway.protocol.h2.server import H2GrpcServer
from gateway.protocol.pb import grpc_service_pb2 as pb

SERVICE = "test.Echo"
INFER, SLOW, ABORT, FAIL, SET_CODE, INSPECT, CHAT, COUNT, LAGGING_CHAT = (
    f"/{SERVICE}/{name}" for name in ("Infer", "Slow", "Abort", "Fail", "SetCode", "Inspect", "Chat", "Count",
                                      "LaggingChat"))
WAIT_S = 10.0  # how long the test thread waits for anything the server should do


def request(request_id: str = "", payload: bytes = b"", **params: int | float | str) -> pb.ModelInferRequest:
    """A ModelInferRequest with one raw input and typed parameters (int, float or str)."""
    msg = pb.ModelInferRequest(model_name="echo", id=request_id)
    if payload:
        msg.raw_input_contents.append(payload)
    for key, value in params.items():
        if isinstance(value, str):
            msg.parameters[key].string_param = value
        elif isinstance(value, float):
            msg.parameters[key].double_param = value
        else:
            msg.parameters[key].int64_param = value
    return msg


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes that do not repeat, so a reordered or duplicated chunk shows."""
    return random.Random(size * 7919 + seed).randbytes(size)


def _echo(msg: pb.ModelInferRequest) -> pb.ModelInferResponse:
    return pb.ModelInferResponse(model_name=msg.model_name, id=msg.id, raw_output_contents=msg.raw_input_contents)


def _param(msg: pb.ModelInferRequest, key: str) -> int | None:
    return msg.parameters[key].int64_param if key in msg.parameters else None


class EchoService:
    """The handler table of the tests; `gate` holds the slow handlers until the test sets it."""

    def __init__(self) -> None:
        self.started: queue.Queue[str] = queue.Queue()
        self.cancelled: queue.Queue[str] = queue.Queue()
        self.ended: queue.Queue[str] = queue.Queue()
        self.gate = threading.Event()

    def methods(self) -> dict[str, Method]:
        parse, dump = pb.ModelInferRequest.FromString, pb.ModelInferResponse.SerializeToString
        table: dict[str, tuple[str, Any]] = {
            INFER: (UNARY, self.infer), SLOW: (UNARY, self.slow), ABORT: (UNARY, self.abort),
            FAIL: (UNARY, self.fail), SET_CODE: (UNARY, self.set_code), INSPECT: (UNARY, self.inspect),
            CHAT: (BIDI, self.chat), COUNT: (SERVER_STREAM, self.count), LAGGING_CHAT: (BIDI, self.lagging_chat)}
        return {path: Method(kind, parse, dump, fn) for path, (kind, fn) in table.items()}

    async def _hold(self, key: str) -> None:
        self.started.put(key)
        try:
            while not self.gate.is_set():
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            self.cancelled.put(key)
            raise

    async def infer(self, msg: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        """Echo; every metadata entry comes back as a parameter "str:<value>" or "bytes:<hex>"."""
        reply = _echo(msg)
        for key, value in context.invocation_metadata():
            reply.parameters[key].string_param = f"bytes:{value.hex()}" if isinstance(value, bytes) else f"str:{value}"
        size = _param(msg, "reply_bytes")
        if size:
            reply.raw_output_contents.append(pattern(size))
        return reply

    async def slow(self, msg: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        await self._hold(msg.id)
        return _echo(msg)

    async def abort(self, msg: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        await context.abort(_param(msg, "code") or 0, msg.id)

    async def fail(self, msg: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        raise RuntimeError("a bug in the handler")

    async def set_code(self, msg: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details(msg.id)
        return _echo(msg)

    async def inspect(self, msg: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        reply = pb.ModelInferResponse(id=msg.id)
        reply.parameters["peer"].string_param = context.peer()
        remaining = context.time_remaining()
        reply.parameters["time_remaining"].double_param = -1.0 if remaining is None else remaining
        return reply

    async def chat(self, requests: AsyncIterator[pb.ModelInferRequest],
                   context: Context) -> AsyncIterator[pb.ModelInferResponse]:
        """Bidi echo; a request with parameter `abort` ends the call with that code."""
        key = ""
        try:
            async for msg in requests:
                key = key or msg.id
                code = _param(msg, "abort")
                if code is not None:
                    await context.abort(code, f"aborted at {msg.id}")
                yield _echo(msg)
        except asyncio.CancelledError:
            self.cancelled.put(key)
            raise
        finally:
            self.ended.put(key)

    async def lagging_chat(self, requests: AsyncIterator[pb.ModelInferRequest],
                           context: Context) -> AsyncIterator[pb.ModelInferResponse]:
        """Bidi echo that reads the first message, then holds until the gate opens before reading on."""
        first = True
        async for msg in requests:
            if first:
                first = False
                await self._hold(msg.id)
            yield _echo(msg)

    async def count(self, msg: pb.ModelInferRequest, context: Context) -> AsyncIterator[pb.ModelInferResponse]:
        """`count` replies of `reply_bytes` each; `abort_after` aborts before reply n; `hold` then waits."""
        size, abort_after = _param(msg, "reply_bytes") or 0, _param(msg, "abort_after")
        for i in range(_param(msg, "count") or 0):
            if i == abort_after:
                await context.abort(grpc.StatusCode.DATA_LOSS, f"stopped before {i}")
            yield pb.ModelInferResponse(id=f"{msg.id}-{i}", raw_output_contents=[pattern(size, i)] if size else [])
        if "hold" in msg.parameters:
            await self._hold(msg.id)


class NativeServer:
    """`with NativeServer(service) as srv:` serves `service` on srv.port; stops it on exit and fails if a
    handler task is still pending once the server has stopped (a leaked call)."""

    def __init__(self, service: EchoService, *, max_message_bytes: int = 4 << 20, max_streams: int = 1024,
                 ssl_context: ssl.SSLContext | None = None, use_uvloop: bool = True,
                 extra_methods: dict[str, Method] | None = None, max_connection_age: float = 0.0,
                 max_connection_age_grace: float = 30.0, keepalive: tuple[float, float] = (7200.0, 20.0)) -> None:
        self.service = service
        self.server = H2GrpcServer(service.methods() | (extra_methods or {}), host="127.0.0.1", port=0,
                                   max_message_bytes=max_message_bytes, ssl_context=ssl_context,
                                   max_streams=max_streams, max_connection_age=max_connection_age,
                                   max_connection_age_grace=max_connection_age_grace,
                                   keepalive_time=keepalive[0], keepalive_timeout=keepalive[1])
        self.use_uvloop = use_uvloop
        self.port = 0
        self.leaked: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="h2-server", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            eventloop.run(self._main(), use_uvloop=self.use_uvloop)
        except BaseException as exc:  # surfaced to the test in __enter__ / __exit__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.port = await self.server.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop(1.0)
            self.leaked = await _leftover_tasks()

    def stop(self, grace: float) -> Future[None]:
        """Starts `H2GrpcServer.stop(grace)` on the server's loop and returns once its first step has run
        (listener closed, every connection draining); the future is done when stop returns."""
        stopping = self.run(self.server.stop(grace))
        self.run(asyncio.sleep(0)).result(WAIT_S)  # scheduled after stop's first step, so it runs after it
        return stopping

    def run(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        if self.loop is None:
            raise RuntimeError("server not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def __enter__(self) -> NativeServer:
        self._thread.start()
        if not self._ready.wait(WAIT_S) or self._error is not None:
            raise RuntimeError("the native gRPC server did not start") from self._error
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT_S * 3)
        if exc_type is None:
            if self._thread.is_alive() or self._error is not None:
                raise RuntimeError("the native gRPC server did not stop cleanly") from self._error
            if self.leaked:
                raise AssertionError(f"calls still running after the server stopped: {self.leaked}")


async def _leftover_tasks() -> list[str]:
    """Tasks other than this one that do not end within a few seconds of the connections closing."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if not others:
        return []
    _, pending = await asyncio.wait(others, timeout=WAIT_S / 2)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return [repr(task.get_coro()) for task in pending]


def loop_errors(records: list[logging.LogRecord]) -> list[str]:
    """Errors the event loop logged (a protocol callback that raised, a task destroyed while pending)."""
    return [r.getMessage() for r in records if r.name == "asyncio" and r.levelno >= logging.ERROR]
