"""Plots and `python -m loadtests report DIR` from a report written by hand: every plot is a PNG, plots
without data say so instead of failing, and the summary's exit code follows the verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtests import plots
from loadtests.cli import main
from loadtests.scenarios.document import SCHEMA
from loadtests.scenarios.verdict import at_most, equals, verdict

PNG = b"\x89PNG\r\n\x1a\n"


def _sample(t: float, weights: dict[str, float], requests: dict[str, float], rss: float | None) -> dict[str, Any]:
    gateway: dict[str, Any] = {"up": True, "requests": sum(requests.values())}
    if rss is not None:
        gateway |= {"rss_mb": rss, "fds": 30.0, "cpu_s": t}
    sample: dict[str, Any] = {"t": t, "weights": weights, "rollout_weights": weights,
                              "requests": {v: {"success": n} for v, n in requests.items()},
                              "drift": {"2/probabilities/prediction/psi_max": 0.1 * t}, "gateways": {"gateway": gateway}}
    if rss is not None:
        sample |= {"rss_mb": rss, "fds": 30.0}
    return sample


def report(passed: bool = True, rss: bool = True, rollout: bool = True) -> dict[str, Any]:
    samples = [_sample(float(t), {"1": 90.0, "2": 10.0}, {"1": 90.0 * t, "2": 10.0 * t}, 200.0 + t if rss else None)
               for t in range(6)]
    series = [{"t": float(t), "load": "a" if t < 3 else "b", "second": t % 3, "count": 100, "errors": t % 2,
               "unsent": 0, "p50_s": 0.002, "p99_s": 0.01 * (t + 1), "versions": {"1": 90, "2": 10 - t % 2}}
              for t in range(6)]
    status = {"phase": "rolled_back", "history": [
        {"end": 1002.5, "candidate_weight": 10, "verdict": "successful", "measurements": {"prediction_psi": 0.01}},
        {"end": 1004.0, "candidate_weight": 25, "verdict": "failed", "measurements": {"prediction_psi": 0.9}}]}
    check = at_most("p99_ms", 5.0, 10.0) if passed else equals("phase", "promoted", "rolled_back")
    return {
        "schema": SCHEMA, "scenario": "bad-canary-drift", "model": "tabular", "started_at": "2026-01-01T00:00:00",
        "ended_at": "2026-01-01T00:00:06", "t0": 1000.0, "duration_s": 6.0, "config": {},
        "verdict": verdict([check]), "figures": {"time_to_rollback_s": 1.5}, "series": series,
        "samples": samples, "loads": [],
        "events": [{"t": 1.0, "kind": "rollout.start", "detail": ""}, {"t": 3.0, "kind": "fault.inject", "detail": ""},
                   {"t": 4.0, "kind": "rollout.rolled_back", "detail": ""}],
        "rollout": {"spec": {"analysis": {"max_prediction_psi": 0.2}}, "status": status} if rollout else None,
        "gateways": [{"local": True, "exit_code": 0}],
    }


def test_render_writes_every_plot_as_png(tmp_path: Path) -> None:
    written = plots.render(report(), tmp_path)
    assert written == ["latency.png", "traffic.png", "drift.png", "resources.png"]
    for name in written:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000


def test_plots_without_data_still_render_and_resources_need_a_local_process(tmp_path: Path) -> None:
    doc = report(rss=False, rollout=False)
    doc["samples"] = [{**s, "weights": {}, "rollout_weights": {}, "drift": {}} for s in doc["samples"]]
    written = plots.render(doc, tmp_path)
    assert written == ["latency.png", "traffic.png", "drift.png"]
    assert not (tmp_path / "resources.png").exists()


def test_answers_per_second_come_from_the_gateway_counters_without_a_client_tally() -> None:
    doc = report()
    for s in doc["series"]:
        del s["versions"]
    per_version = plots._versions_per_second(doc)
    assert [v for _, v in per_version["1"]] == pytest.approx([90.0] * 5)
    assert [v for _, v in per_version["2"]] == pytest.approx([10.0] * 5)


@pytest.mark.parametrize("passed", [True, False])
def test_report_command_re_renders_and_exits_with_the_verdict(tmp_path: Path, passed: bool,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "report.json").write_text(json.dumps(report(passed)))
    assert main(["report", str(tmp_path)]) == (0 if passed else 1)
    out = capsys.readouterr().out
    assert ("PASS" if passed else "FAIL") in out and "time_to_rollback_s" in out
    assert (tmp_path / "traffic.png").read_bytes()[:8] == PNG
