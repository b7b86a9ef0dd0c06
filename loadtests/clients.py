"""Callers that send one prepared inference request and name its outcome: gRPC (grpc.aio) and REST.

A caller never raises for a failed request: it returns an outcome label ("OK", "grpc:UNAVAILABLE",
"http:503", "error:timeout", "error:connection", "bad-reply") so the loops can count every request.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from loadtests.httpclient import HttpConnection, HttpError, HttpReply, build_request
from loadtests.metadata import CHANNEL_OPTIONS, split_hostport
from loadtests.verify import grpc_reply_problem, rest_reply_problem

OK = "OK"
BAD_REPLY = "bad-reply"
TIMEOUT = "error:timeout"
CONNECTION = "error:connection"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
PROTOCOLS = ("grpc", "rest-binary", "rest-json")
_REST_VERSION = re.compile(rb'"model_version"\s*:\s*"([^"]*)"')


@dataclass(frozen=True)
class Workload:
    """Everything a worker process needs to call the server; plain values so it pickles."""

    protocol: str
    target: str
    path: str
    body: bytes
    body_headers: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...] = ()
    sticky_header: str = "x-user-id"
    sticky_keys: int = 0
    expected_outputs: tuple[str, ...] = ()
    timeout_s: float = 10.0
    check_every: int = 0
    connections: int = 1
    rows: int = 1
    tally_versions: bool = False  # read `model_version` from every reply (which version answered)
    channel_options: tuple[tuple[str, str | int], ...] = ()  # extra gRPC channel arguments

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.timeout_s <= 0 or self.connections < 1 or self.sticky_keys < 0 or self.check_every < 0:
            raise ValueError("timeout, connections, sticky keys and check interval must be positive")

    def header_sets(self) -> list[tuple[tuple[str, str], ...]]:
        """One header set per sticky user (or a single set without sticky keys)."""
        base = tuple((k.lower(), v) for k, v in self.headers)
        if self.sticky_keys == 0:
            return [base]
        return [(*base, (self.sticky_header.lower(), f"user-{i}")) for i in range(self.sticky_keys)]


@dataclass
class Samples:
    """What the sampled correctness checks found; a few reasons are kept for the report."""

    checked: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)

    def note(self, problem: str | None) -> None:
        self.checked += 1
        if problem is not None:
            self.failed += 1
            if len(self.reasons) < 5 and problem not in self.reasons:
                self.reasons.append(problem)


class Caller(Protocol):
    async def call(self) -> str: ...

    async def close(self) -> None: ...


def grpc_reply_version(raw: bytes) -> str:
    """`model_version` (field 2) of a serialised ModelInferResponse, read without parsing the rest."""
    pos = 0
    while pos < len(raw):
        tag, pos = _varint(raw, pos)
        field, wire = tag >> 3, tag & 7
        if wire != 2:
            return ""  # fields 1 and 2 are strings and come first; anything else means no version
        size, pos = _varint(raw, pos)
        if field == 2:
            return raw[pos:pos + size].decode("utf-8", "replace")
        if field > 2:
            return ""
        pos += size
    return ""


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(raw):
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return value, pos


def rest_reply_version(headers: dict[str, str], body: bytes) -> str:
    """`model_version` from a REST reply's JSON header (the whole body when it is plain JSON)."""
    header_len = headers.get("inference-header-content-length")
    head = body[:int(header_len)] if header_len and header_len.isdigit() else body[:4096]
    match = _REST_VERSION.search(head)
    return match.group(1).decode("utf-8", "replace") if match else ""


class _Sampler:
    """Decides which replies to parse: each caller's first, then every `every`-th (0 = first only)."""

    def __init__(self, every: int) -> None:
        self._every = every
        self._n = 0

    def due(self) -> bool:
        self._n += 1
        return self._n == 1 or (self._every > 0 and self._n % self._every == 0)


class GrpcCaller:
    """Sends the pre-serialised request as raw bytes; the reply stays bytes unless it is sampled."""

    def __init__(self, channel: grpc.aio.Channel, work: Workload, samples: Samples) -> None:
        self._call = channel.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
        self._work = work
        self._metadata = work.header_sets()
        self._samples = samples
        self._sampler = _Sampler(work.check_every)
        self.last_version = ""  # the version that answered the last call, when versions are tallied

    async def call(self) -> str:
        metadata = self._metadata[random.randrange(len(self._metadata))]
        self.last_version = ""
        try:
            reply = await self._call(self._work.body, timeout=self._work.timeout_s, metadata=metadata or None)
        except grpc.aio.AioRpcError as exc:
            return f"grpc:{exc.code().name}"
        if self._work.tally_versions:
            self.last_version = grpc_reply_version(reply)
        if self._sampler.due():
            problem = grpc_reply_problem(reply, self._work.expected_outputs)
            self._samples.note(problem)
            if problem is not None:
                return BAD_REPLY
        return OK

    async def close(self) -> None:
        return None  # the channel belongs to the pool


class RestCaller:
    """One keep-alive connection of its own; reconnects on the next call after a failure."""

    def __init__(self, work: Workload, samples: Samples) -> None:
        self._host, self._port = split_hostport(work.target)
        headers = [*work.body_headers]
        self._requests = [
            build_request("POST", work.target, work.path, dict(headers + list(extra)), work.body)
            for extra in work.header_sets()
        ]
        self._work = work
        self._samples = samples
        self._sampler = _Sampler(work.check_every)
        self._conn: HttpConnection | None = None
        self.last_version = ""

    async def call(self) -> str:
        raw = self._requests[random.randrange(len(self._requests))]
        self.last_version = ""
        try:
            # asyncio.timeout arms one timer handle; wait_for would wrap every call in a new task.
            async with asyncio.timeout(self._work.timeout_s):
                reply = await self._send(raw)
        except TimeoutError:
            self._drop()
            return TIMEOUT
        except HttpError:
            self._drop()
            return CONNECTION
        if reply.status // 100 != 2:
            return f"http:{reply.status}"
        if self._work.tally_versions:
            self.last_version = rest_reply_version(reply.headers, reply.body)
        if self._sampler.due():
            problem = rest_reply_problem(reply.status, reply.headers, reply.body, self._work.expected_outputs)
            self._samples.note(problem)
            if problem is not None:
                return BAD_REPLY
        return OK

    async def _send(self, raw: bytes) -> HttpReply:
        if self._conn is None or self._conn.closed:
            self._conn = await HttpConnection.open(self._host, self._port)
        return await self._conn.request(raw)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        self._drop()


class CallerPool:
    """Builds callers for one worker: gRPC callers share `connections` channels, REST ones do not share."""

    def __init__(self, work: Workload) -> None:
        self.work = work
        self.samples = Samples()
        self._channels: list[grpc.aio.Channel] = []
        self._callers: list[Caller] = []

    async def open(self, count: int) -> Sequence[Caller]:
        if self.work.protocol == "grpc":
            self._channels = [self._channel(i) for i in range(self.work.connections)]
            for channel in self._channels:
                try:
                    await asyncio.wait_for(channel.channel_ready(), self.work.timeout_s)
                except TimeoutError:
                    raise RuntimeError(f"no gRPC connection to {self.work.target} within "
                                       f"{self.work.timeout_s:g} s") from None
            self._callers = [GrpcCaller(self._channels[i % len(self._channels)], self.work, self.samples)
                             for i in range(count)]
        else:
            self._callers = [RestCaller(self.work, self.samples) for _ in range(count)]
        return self._callers

    def _channel(self, index: int) -> grpc.aio.Channel:
        # A distinct channel argument keeps grpc from sharing one subchannel (one TCP connection).
        options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1), ("loadtests.channel", index),
                   *self.work.channel_options]
        return grpc.aio.insecure_channel(self.work.target, options=options)

    async def close(self) -> None:
        for caller in self._callers:
            await caller.close()
        for channel in self._channels:
            await channel.close()
