"""A load scenario end to end: discover the model, build the payload once, run the plan, build the result.

This is the programmatic face of `python -m loadtests run`; the benchmark runner calls it directly.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.clients import PROTOCOLS, Workload
from loadtests.metadata import DiscoveryError, discover
from loadtests.payload import (
    Signature,
    Tensor,
    grpc_request,
    infer_path,
    npz_tensors,
    random_tensors,
    rest_binary_body,
    rest_json_body,
    rows_of,
)
from loadtests.report import build_result, client_usage, merge
from loadtests.runner import LoadPlan, run_load


@dataclass(frozen=True)
class Scenario:
    """What to call and with which payload; the load itself is a LoadPlan."""

    protocol: str
    model: str
    grpc_target: str | None = None
    http_target: str | None = None
    version: str = ""
    rows: int = 1
    inputs_file: Path | None = None
    headers: tuple[tuple[str, str], ...] = ()
    sticky_keys: int = 0
    sticky_header: str = "x-user-id"
    timeout_s: float = 10.0
    check_every: int = 0
    connections: int = 1
    seed: int = 0
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    tally_versions: bool = False  # count replies by the `model_version` they name
    channel_options: tuple[tuple[str, str | int], ...] = ()  # extra gRPC channel arguments

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.protocol == "grpc" and not self.grpc_target:
            raise ValueError("protocol grpc needs --grpc HOST:PORT")
        if self.protocol != "grpc" and not self.http_target:
            raise ValueError(f"protocol {self.protocol} needs --http HOST:PORT")

    @property
    def target(self) -> str:
        target = self.grpc_target if self.protocol == "grpc" else self.http_target
        return target or ""


def signature_of(sc: Scenario) -> Signature | None:
    """The model's signature from the endpoint under test; None if the server cannot say and an .npz is given."""
    grpc_target = sc.grpc_target if sc.protocol == "grpc" else None
    http_target = sc.http_target if sc.protocol != "grpc" else None
    try:
        return discover(grpc_target, http_target, sc.model, sc.version)
    except DiscoveryError:
        if sc.inputs_file is None:
            raise
        return None


def tensors_for(sc: Scenario, sig: Signature | None) -> list[Tensor]:
    if sc.inputs_file is not None:
        return npz_tensors(sc.inputs_file, sig.inputs if sig else None)
    if sig is None:
        raise DiscoveryError("no signature and no --inputs file")
    return random_tensors(sig.inputs, sc.rows, sc.seed)


def prepare(sc: Scenario) -> tuple[Workload, int]:
    """The workload (encoded request and call settings) and the rows each request carries."""
    sig = signature_of(sc)
    tensors = tensors_for(sc, sig)
    body_headers: tuple[tuple[str, str], ...] = ()
    if sc.protocol == "grpc":
        body = grpc_request(sc.model, sc.version, tensors)
    else:
        rest = rest_binary_body(tensors) if sc.protocol == "rest-binary" else rest_json_body(tensors)
        body, body_headers = rest.body, tuple(rest.headers.items())
    rows = rows_of(tensors)
    work = Workload(
        protocol=sc.protocol, target=sc.target, path=infer_path(sc.model, sc.version), body=body,
        body_headers=body_headers, headers=sc.headers, sticky_header=sc.sticky_header,
        sticky_keys=sc.sticky_keys, expected_outputs=tuple(o.name for o in sig.outputs) if sig else (),
        timeout_s=sc.timeout_s, check_every=sc.check_every, connections=sc.connections, rows=rows,
        tally_versions=sc.tally_versions, channel_options=sc.channel_options,
    )
    return work, rows


def config_of(sc: Scenario, plan: LoadPlan, rows: int, request_bytes: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "label": sc.label, "protocol": sc.protocol, "target": sc.target, "model": sc.model,
        "model_version": sc.version, "rows": rows, "request_bytes": request_bytes,
        "inputs_file": str(sc.inputs_file) if sc.inputs_file else None,
        "headers": [f"{k}={v}" for k, v in sc.headers], "sticky_keys": sc.sticky_keys,
        "sticky_header": sc.sticky_header if sc.sticky_keys else None,
        "mode": "open" if plan.open_loop else "closed",
    }
    doc.update({k: v for k, v in asdict(plan).items() if k != "phase_s"})
    doc.update(timeout_s=sc.timeout_s, check_every=sc.check_every, connections=sc.connections)
    doc.update(sc.extra)
    return doc


def execute(sc: Scenario, plan: LoadPlan) -> dict[str, Any]:
    """Runs the scenario under the plan and returns the JSON result document."""
    work, rows = prepare(sc)
    partials = run_load(work, plan)
    ended = time.time()
    started = min(p["measure_start_epoch"] for p in partials)
    return build_result(merge(partials), config_of(sc, plan, rows, len(work.body)), rows=rows,
                        duration_s=plan.duration_s, started_at=started, ended_at=ended,
                        open_loop=plan.open_loop, client=client_usage(partials))
