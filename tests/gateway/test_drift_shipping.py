"""Drift counts shipped by several replicas and summed by the controller give the same PSI as one
monitor that saw all the traffic."""

from __future__ import annotations

import numpy as np

from gateway.observability.drift import DriftConfig, DriftMonitor
from gateway.observability.drift_shipping import PAYLOAD, SharedDrift, decode, encode, provider
from kernels import warm_up
from kernels.profile import build_profile
from rollout.store.base import SliceRecord

SECOND = 1_000


def profile_and_batches() -> tuple[object, list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(4)
    reference = rng.normal(size=(3000, 6)).astype(np.float32)
    scores = rng.random((3000, 2)).astype(np.float32)
    profile = build_profile({"x": reference}, {"p": scores})
    live = reference[rng.integers(0, 3000, 800)].copy()
    live[:, 2] += 2 * reference[:, 2].std()
    inputs = [{"x": live[i:i + 100]} for i in range(0, 800, 100)]
    outputs = [{"p": rng.random((100, 2)).astype(np.float32) ** 2} for _ in inputs]
    return profile, inputs, outputs


def monitor(profile: object) -> DriftMonitor:
    return DriftMonitor(profile, DriftConfig(keep_seconds=60), clock=lambda: SECOND + 0.5)  # type: ignore[arg-type]


def test_counts_round_trip() -> None:
    counts = {("input", "x"): np.arange(12, dtype=np.int64).reshape(3, 4), ("output", "p"): np.ones((2, 5), np.int64)}
    back = decode(encode(counts))
    assert back.keys() == counts.keys()
    for key, value in counts.items():
        np.testing.assert_array_equal(back[key], value)
        assert back[key].dtype == np.int64


def test_summed_replica_counts_give_the_psi_of_all_traffic() -> None:
    warm_up()
    profile, inputs, outputs = profile_and_batches()
    whole, replica_a, replica_b = monitor(profile), monitor(profile), monitor(profile)
    for i, (ins, outs) in enumerate(zip(inputs, outputs, strict=True)):
        whole.record(ins, outs)
        (replica_a if i % 2 else replica_b).record(ins, outs)
    records = []
    for name, mon in (("a", replica_a), ("b", replica_b)):
        data = provider(lambda m, v, mon=mon: mon)("m", "1", SECOND)
        assert data is not None
        records.append(SliceRecord("m", "1", SECOND, PAYLOAD, name, data))
    shared = SharedDrift(lambda n, m, v, s, e: records if n == PAYLOAD else [], lambda m: profile)  # type: ignore[arg-type, return-value]
    expected = whole.drift(1.0, SECOND + 0.5)
    got = shared.input_psi_max("m", "1", SECOND, SECOND + 1)
    assert got is not None
    assert abs(got - max(t.psi_max for t in expected.inputs)) < 1e-9
    assert got > 0.25  # the shifted feature shows through the merged counts


def test_prediction_psi_between_arms_from_merged_counts() -> None:
    warm_up()
    profile, inputs, outputs = profile_and_batches()
    stable, candidate = monitor(profile), monitor(profile)
    for ins, outs in zip(inputs, outputs, strict=True):
        stable.record(ins, outs)
        candidate.record(ins, {"p": np.clip(outs["p"] + 0.5, 0, 1)})
    payload = {v: provider(lambda m, ver, mon=mon: mon)("m", v, SECOND) for v, mon in (("1", stable), ("2", candidate))}
    def payloads(name: str, model: str, version: str, start: float, end: float) -> list[SliceRecord]:
        data = payload[version]
        return [SliceRecord(model, version, SECOND, PAYLOAD, "a", data)] if data is not None else []
    shared = SharedDrift(payloads, lambda m: profile)  # type: ignore[arg-type, return-value]
    expected = candidate.compare(stable, 1.0, SECOND + 0.5)
    got = shared.prediction_psi("m", "2", "1", SECOND, SECOND + 1)
    assert got is not None
    assert abs(got - max(t.psi_max for t in expected.outputs)) < 1e-9
    assert got > 0.25
