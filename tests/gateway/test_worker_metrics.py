"""The merged `/metrics` of several workers: the text merge (pure) and real private listeners."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.worker_metrics import UP, WorkerMetrics, merge


def page(requests: float, ready: float, latencies: list[float]) -> str:
    registry = CollectorRegistry()
    counter = Counter("servegate_requests", "Requests.", ["model", "outcome"], registry=registry)
    counter.labels("m", "success").inc(requests)
    Gauge("servegate_ready", "Readiness.", registry=registry).set(ready)
    hist = Histogram("servegate_latency_seconds", "Latency.", ["model"], buckets=(0.01, 0.1), registry=registry)
    for v in latencies:
        hist.labels("m").observe(v)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by name and labels; a family split in two groups (invalid text format) fails."""
    out = {}
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), names
    for family in families:
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_merge_labels_every_sample_with_its_worker_and_keeps_families_whole() -> None:
    merged = merge({"0": page(3, 1, [0.005, 0.05]), "1": page(4, 0, [0.5])})
    got = samples(merged)
    assert got[("servegate_requests_total", (("model", "m"), ("outcome", "success"), ("worker", "0")))] == 3
    assert got[("servegate_requests_total", (("model", "m"), ("outcome", "success"), ("worker", "1")))] == 4
    assert got[("servegate_ready", (("worker", "0"),))] == 1
    assert got[("servegate_ready", (("worker", "1"),))] == 0
    assert got[("servegate_latency_seconds_bucket", (("le", "0.01"), ("model", "m"), ("worker", "0")))] == 1
    assert got[("servegate_latency_seconds_count", (("model", "m"), ("worker", "1")))] == 1
    assert got[(UP, (("worker", "0"),))] == 1 and got[(UP, (("worker", "1"),))] == 1
    assert merged.count("# TYPE servegate_requests_total counter") == 1
    assert merged.count("# HELP servegate_ready Readiness.") == 1


def test_a_worker_that_did_not_answer_shows_only_as_down() -> None:
    got = samples(merge({"0": page(2, 1, []), "1": None}))
    assert got[(UP, (("worker", "1"),))] == 0
    assert not any(dict(labels).get("worker") == "1" for name, labels in got if name != UP)


def test_label_values_with_braces_and_spaces_survive() -> None:
    text = '# HELP x_info Info.\n# TYPE x_info gauge\nx_info{path="/a {b} c",q="d e"} 1.0\n'
    got = samples(merge({"2": text}))
    assert got[("x_info", (("path", "/a {b} c"), ("q", "d e"), ("worker", "2")))] == 1


@pytest.mark.integration
def test_each_worker_answers_for_all_and_a_stopped_one_drops_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        pages = {0: page(5, 1, [0.05]), 1: page(7, 1, [0.05, 0.05])}
        a = WorkerMetrics(tmp_path, 0, lambda: pages[0].encode())
        b = WorkerMetrics(tmp_path, 1, lambda: pages[1].encode())
        await a.start()
        await b.start()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["worker-0.port", "worker-1.port"]
        for view in (a, b):
            got = samples((await view.render()).decode())
            totals = {dict(labels)["worker"]: v for (name, labels), v in got.items()
                      if name == "servegate_requests_total"}
            assert totals == {"0": 5, "1": 7}
        await b.stop()
        assert not (tmp_path / "worker-1.port").exists()
        got = samples((await a.render()).decode())
        assert got[(UP, (("worker", "0"),))] == 1
        assert not any(dict(labels).get("worker") == "1" for _, labels in got)
        (tmp_path / "worker-1.port").write_text("1")  # a stale file of a killed worker: nothing listens
        got = samples((await a.render()).decode())
        assert got[(UP, (("worker", "1"),))] == 0
        await a.stop()

    asyncio.run(scenario())
