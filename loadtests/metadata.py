"""Discovers a model's signature from the server itself: gRPC ModelMetadata or REST GET /v2/models/{m}."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import grpc
import orjson

from gateway.protocol.pb import grpc_service_pb2 as pb
from loadtests.httpclient import HttpError, fetch
from loadtests.payload import Signature, TensorSpec

MAX_MESSAGE = 2**31 - 1
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


class DiscoveryError(RuntimeError):
    """The server could not tell us the model's signature."""


def split_hostport(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {target!r}")
    return host.strip("[]"), int(port)


def _specs(items: Iterable[Mapping[str, object]]) -> tuple[TensorSpec, ...]:
    out = []
    for item in items:
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
            raise DiscoveryError(f"tensor metadata lacks name, datatype or shape: {item!r}")
        out.append(TensorSpec(name, datatype, tuple(int(d) for d in shape)))
    return tuple(out)


async def grpc_signature(target: str, model: str, version: str = "", timeout_s: float = 10.0) -> Signature:
    """Asks ModelMetadata over gRPC."""
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        try:
            reply = await call(pb.ModelMetadataRequest(name=model, version=version), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise DiscoveryError(f"ModelMetadata({model!r}) failed: {exc.code().name} {exc.details()}") from exc
    return Signature(
        inputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in reply.inputs),
        outputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in reply.outputs),
    )


async def rest_signature(target: str, model: str, version: str = "", timeout_s: float = 10.0) -> Signature:
    """Asks GET /v2/models/{m}[/versions/{v}] over HTTP."""
    host, port = split_hostport(target)
    path = f"/v2/models/{model}/versions/{version}" if version else f"/v2/models/{model}"
    try:
        reply = await fetch(host, port, "GET", path, timeout_s=timeout_s)
    except (HttpError, TimeoutError) as exc:
        raise DiscoveryError(f"GET {path} on {target} failed: {exc or type(exc).__name__}") from exc
    if reply.status != 200:
        raise DiscoveryError(f"GET {path} answered {reply.status}: {reply.body[:200]!r}")
    try:
        doc = orjson.loads(reply.body)
    except orjson.JSONDecodeError as exc:
        raise DiscoveryError(f"GET {path} did not return JSON") from exc
    return Signature(_specs(doc.get("inputs", [])), _specs(doc.get("outputs", [])))


def discover(grpc_target: str | None, http_target: str | None, model: str, version: str = "") -> Signature:
    """Signature from whichever endpoint was given (gRPC first); raises DiscoveryError."""
    if grpc_target:
        sig = asyncio.run(grpc_signature(grpc_target, model, version))
    elif http_target:
        sig = asyncio.run(rest_signature(http_target, model, version))
    else:
        raise DiscoveryError("no endpoint given: pass --grpc HOST:PORT or --http HOST:PORT")
    if not sig.inputs:
        raise DiscoveryError(f"model {model!r} declares no inputs")
    return sig
