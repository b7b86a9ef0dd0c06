"""Scenarios: the pure parts (options, ramp steps, growth, scrapes, verdicts, blast radius, the report) in
process, and short runs of `steady`, `overload`, `bad-canary-errors` and `good-canary` end to end
through `python -m loadtests scenario`, each against a gateway it starts, judged by its own verdict.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from loadtests.cli import main
from loadtests.scenarios import blast, ramp
from loadtests.scenarios.document import SCHEMA, markdown, series
from loadtests.scenarios.options import Options
from loadtests.scenarios.registry import SCENARIOS, lookup
from loadtests.scenarios.sampler import drift_scores
from loadtests.scenarios.scrape import model_figures, total_requests
from loadtests.scenarios.trend import second_half_growth, slope
from loadtests.scenarios.verdict import at_least, at_most, equals, slo_checks, verdict

METRICS = """# HELP servegate_requests_total Inference requests by outcome.
servegate_requests_total{model="tabular",outcome="success",protocol="grpc",version="1"} 90.0
servegate_requests_total{model="tabular",outcome="success",protocol="rest",version="1"} 10.0
servegate_requests_total{model="tabular",outcome="failed",protocol="grpc",version="2"} 4.0
servegate_requests_total{model="mlp",outcome="success",protocol="grpc",version="1"} 7.0
servegate_traffic_weight{model="tabular",version="1"} 75.0
servegate_traffic_weight{model="tabular",version="2"} 25.0
servegate_queue_depth{model="tabular",version="1"} 3.0
servegate_drift{kind="prediction",model="tabular",statistic="psi_max",tensor="probabilities",version="2"} 0.4
servegate_drift{kind="prediction",model="tabular",statistic="psi_max",tensor="probabilities",version="3"} NaN
"""


def test_every_scenario_of_the_issue_is_registered() -> None:
    assert set(SCENARIOS) == {"steady", "ramp", "overload", "bad-canary-latency", "bad-canary-errors",
                              "bad-canary-drift", "good-canary", "soak", "replica-failover"}
    with pytest.raises(ValueError, match="unknown scenario"):
        lookup("chaos")


def test_options_take_scenario_defaults_only_where_unset(tmp_path: Path) -> None:
    opts = Options(name="steady", out=tmp_path, rate=50.0, max_error_rate=0.0)
    filled = opts.with_defaults({"rate": 200.0, "duration_s": 60.0, "max_error_rate": 0.01, "model": "tabular"})
    assert (filled.rate, filled.duration_s, filled.model) == (50.0, 60.0, "tabular")
    assert filled.max_error_rate == 0.0  # zero errors is a real target, not "unset"
    assert Options(name="x", out=tmp_path).with_defaults({"max_error_rate": 0.01}).max_error_rate == 0.01
    doc = Options(name="x", out=tmp_path, token="secret-token", jwt_secret="s3cret").to_dict()
    assert "secret-token" not in json.dumps(doc) and "s3cret" not in json.dumps(doc)
    with pytest.raises(ValueError, match="protocol"):
        Options(name="x", out=tmp_path, protocol="smoke-signals")


def test_ramp_rates_rise_geometrically_and_the_sustainable_rate_survives_one_noisy_step() -> None:
    rates = ramp.rates(50, 800, 5)
    assert rates[0] == 50 and rates[-1] == 800
    assert [b / a for a, b in pairwise(rates)] == pytest.approx([2.0] * 4, rel=0.01)
    with pytest.raises(ValueError):
        ramp.rates(100, 50, 3)
    steps = [{"rate": r, "held": h} for r, h in ((50, True), (100, False), (200, True), (400, False), (800, False))]
    assert ramp.sustainable(steps) == (200, 400)
    assert ramp.sustainable([{"rate": 50, "held": False}]) == (None, 50)
    assert ramp.sustainable([{"rate": 50, "held": True}]) == (50, None)


def test_a_ramp_step_is_judged_on_its_seconds_so_one_stalled_second_does_not_break_it() -> None:
    def result(p99s: list[float]) -> dict[str, Any]:
        return {"requests": {"answered": 500, "ok": 500, "errors": 0}, "schedule": {"intended": 500, "unsent": 0},
                "throughput": {"requests_per_s": 100.0}, "latency_s": {"p50": 0.003, "p99": max(p99s)},
                "series": [{"count": 100, "errors": 0, "p99_s": v} for v in p99s], "client": {"busy": 0.1}}
    stalled_once = ramp.step_figures(100, result([0.01, 0.01, 0.4, 0.01, 0.01]), 50, 0.001)
    assert stalled_once["held"] and stalled_once["p99_ms"] == pytest.approx(10) and stalled_once["step_p99_ms"] == 400
    saturated = ramp.step_figures(100, result([0.03, 0.08, 0.2, 0.4, 0.9]), 50, 0.001)
    assert not saturated["held"] and saturated["p99_ms"] == pytest.approx(200)


def test_growth_is_the_fitted_rise_over_the_second_half() -> None:
    assert slope([(0, 1.0), (1, 3.0), (2, 5.0)]) == pytest.approx(2.0)
    assert slope([(0, 1.0), (1, 2.0)]) is None
    flat_then_leak = [(float(t), 100.0 if t < 50 else 100.0 + (t - 50) * 0.5) for t in range(101)]
    assert second_half_growth(flat_then_leak, 5.0) == pytest.approx(25.0, rel=0.1)
    noisy_flat = [(float(t), 100.0 + (7.0 if t % 10 == 0 else 0.0)) for t in range(100)]
    assert abs(second_half_growth(noisy_flat, 5.0) or 0.0) < 1.0  # medians ignore the spikes
    assert second_half_growth([], 5.0) is None


def test_scrape_reduces_metrics_to_one_model() -> None:
    figures = model_figures(METRICS, "tabular")
    assert figures["weights"] == {"1": 75.0, "2": 25.0}
    assert figures["requests"] == {"1": {"success": 100.0}, "2": {"failed": 4.0}}
    assert total_requests(figures) == 104.0 and total_requests(figures, "2") == 4.0
    assert figures["queue_depth"] == {"1": 3.0}
    assert figures["drift"] == {"2/probabilities/prediction/psi_max": 0.4}  # NaN is no data


def test_drift_scores_found_wherever_the_reply_nests_them() -> None:
    doc = {"model": "m", "report": {"tensors": [{"tensor": "x", "role": "input", "psi_max": 0.3},
                                                {"tensor": "y", "role": "output", "psi_max": None}]}}
    assert drift_scores(doc, "2") == {"2/x/input/psi_max": 0.3}
    assert drift_scores(None, "2") == {}


def test_checks_fail_on_missing_evidence_and_the_verdict_needs_all() -> None:
    assert at_most("p99_ms", 5.0, 10.0).passed and not at_most("p99_ms", None, 10.0).passed
    assert not at_least("rate", 1.0, 2.0).passed and equals("phase", "x", "x").passed
    assert verdict([at_most("a", 1, 2), equals("b", 1, 2)]) == {
        "passed": False, "failed": ["b"], "checks": [at_most("a", 1, 2).to_dict(), equals("b", 1, 2).to_dict()]}
    assert verdict([])["passed"] is False
    result: dict[str, Any] = {"requests": {"answered": 0, "ok": 0, "errors": 0}, "schedule": None,
                              "latency_s": {"p50": 0.0, "p99": 0.0}}
    assert [c.passed for c in slo_checks(result, p50_ms=1, p99_ms=1, max_error_rate=0)] == [False, False, False, True]


def test_candidate_answers_after_a_moment_are_counted_from_the_tally() -> None:
    versions = {"2": {"last_sent_s": 10.05, "per_100ms": {"99": 3, "100": 2, "101": 4}}}
    assert blast.answers_after(versions, "2", 10.06) == 0  # its last answer was sent before
    assert blast.answers_after(versions, "2", 10.0) == 4  # the bins after the one holding 10.0 s
    assert blast.answers_after(versions, "2", 10.04) == 4
    assert blast.answers_after({}, "2", 0.0) == 0


def test_report_series_sit_on_the_run_axis_and_the_summary_names_failures() -> None:
    loads = [{"label": "a", "started_at": "2026-01-01T00:00:10+00:00", "series": [{"second": 0}, {"second": 1}]}]
    t0 = 1767225600.0  # 2026-01-01T00:00:00Z
    assert [s["t"] for s in series(loads, t0)] == [10.0, 11.0]
    doc = {"schema": SCHEMA, "scenario": "steady", "model": "tabular", "duration_s": 3.0, "started_at": "x",
           "verdict": verdict([at_most("p99_ms", 50.0, 10.0, " ms")]), "figures": {"rate": 100.0, "steps": []},
           "loads": []}
    text = markdown(doc, ["latency.png"])
    assert "FAIL" in text and "| p99_ms | 50 | <= 10 ms | **FAIL** |" in text and "latency.png" in text
    assert "steps" not in text  # lists stay in report.json


def test_cli_refuses_unknown_scenarios_and_foreign_reports(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "--help"]) == 0
    assert "bad-canary-errors:" in "".join(capsys.readouterr().out.split())  # help wraps at hyphens
    assert main(["scenario", "chaos"]) == 2
    (tmp_path / "report.json").write_text(json.dumps({"schema": "servegate.loadtest/1"}))
    assert main(["report", str(tmp_path)]) == 1
    assert main(["scenario", "steady", "--target", "127.0.0.1:1", "--out", str(tmp_path / "t")]) == 1


# --- short runs end to end (CI) -------------------------------------------------------------------

ALL_PLOTS = ("latency.png", "traffic.png", "drift.png", "resources.png")


STALL_S = 0.1


def _run(out: Path, name: str, flags: tuple[str, ...], timeout: float) -> tuple[subprocess.CompletedProcess[str],
                                                                                dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "loadtests", "scenario", name, "--out", str(out), *flags],
                          capture_output=True, text=True, timeout=timeout)
    report = json.loads((out / "report.json").read_text())
    assert proc.returncode == (0 if report["verdict"]["passed"] else 1)
    return proc, report


def _host_stalled(report: dict[str, Any]) -> bool:
    """The generator itself fell behind its schedule: the host, not the gateway, was short of CPU."""
    return any((load.get("schedule") or {}).get("max_lateness_s", 0.0) > STALL_S for load in report["loads"])


def _scenario(tmp_path: Path, name: str, *flags: str, timeout: float = 240,
              plots: tuple[str, ...] = ALL_PLOTS) -> dict[str, Any]:
    """Runs a scenario through the CLI and requires a passing verdict. A failed run during which the load
    generator stalled (a busy shared host) is run once more; any other failure stands."""
    out = tmp_path / name
    proc, report = _run(out, name, flags, timeout)
    if proc.returncode != 0 and _host_stalled(report):
        out = tmp_path / f"{name}-again"
        proc, report = _run(out, name, flags, timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["schema"] == SCHEMA and report["scenario"] == name
    for plot in plots:
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Scenario `{name}`: PASS" in proc.stdout
    return dict(report)


@pytest.mark.integration
@pytest.mark.slow
def test_steady_meets_its_targets(tmp_path: Path) -> None:
    # A shared CI runner stalls a process for a few hundred ms now and then, which is the p99 of a 10 s run;
    # the default 100 ms target is for a dedicated host.
    report = _scenario(tmp_path, "steady", "--duration", "10", "--rate", "100", "--p99-ms", "400")
    load = report["loads"][0]
    assert load["requests"]["ok"] == 1000 and load["requests"]["errors"] == 0
    assert len(report["series"]) == 10 and report["samples"]
    assert all(s["rss_mb"] > 0 for s in report["samples"] if "rss_mb" in s)


@pytest.mark.integration
@pytest.mark.slow
def test_overload_is_shed_fast_and_the_gateway_recovers(tmp_path: Path) -> None:
    report = _scenario(tmp_path, "overload", "--duration", "10")
    figures = report["figures"]
    assert figures["shed"] > 0 and figures["other_errors"] == 0
    assert figures["offered_rate"] == pytest.approx(2 * figures["sustainable_rate"])
    assert report["config"]["model_config"]["queue_capacity"] == 8 and report["config"]["service_ms"] == 8
    assert figures["shed_p50_ms"] <= 20


@pytest.mark.integration
@pytest.mark.slow
def test_a_canary_failing_a_fifth_of_its_requests_is_rolled_back_without_client_errors(tmp_path: Path) -> None:
    report = _scenario(tmp_path, "bad-canary-errors", "--duration", "20")
    f = report["figures"]
    assert f["phase"] == "rolled_back" and f["client_errors"] == 0
    assert f["time_to_rollback_windows"] <= 2
    assert 0 < f["blast_radius_failed"] < f["blast_radius_requests"]
    assert report["rollout"]["status"]["weights"]["1"] == 100
    kinds = [e["kind"] for e in report["events"]]
    assert kinds.index("rollout.start") < kinds.index("fault.inject") < kinds.index("rollout.rolled_back")


@pytest.mark.integration
@pytest.mark.slow
def test_a_good_canary_is_promoted_through_every_step(tmp_path: Path) -> None:
    report = _scenario(tmp_path, "good-canary", "--duration", "22", "--window", "3")
    f = report["figures"]
    assert f["phase"] == "promoted" and f["client_errors"] == 0 and not math.isnan(f["rollout_time_s"])
    weights = [w["candidate_weight"] for w in report["rollout"]["status"]["history"]]
    assert weights == [10, 25, 50, 100]
    assert f["candidate_answers"] > 0


@pytest.mark.integration
@pytest.mark.slow
def test_target_mode_plays_against_a_running_gateway_over_rest(tmp_path: Path) -> None:
    from gateway.demo import models
    from tests.serve_process import SECRET, ServeProcess

    models.build_tabular(tmp_path / "repo", "tabular", "1")
    with ServeProcess(tmp_path / "repo", store=f"sqlite:///{tmp_path / 'state.db'}") as gw:
        report = _scenario(tmp_path, "steady", "--target", gw.grpc, "--http", gw.http, "--protocol", "rest-binary",
                           "--admin-url", f"http://{gw.admin}", "--jwt-secret", SECRET, "--duration", "4",
                           "--rate", "50", plots=("latency.png", "traffic.png", "drift.png"))
    assert report["gateways"] == [{"local": False, "exit_code": None}]
    assert report["loads"][0]["config"]["protocol"] == "rest-binary"
    assert report["loads"][0]["requests"]["ok"] == 200
    assert report["samples"] and all(s["weights"] == {"1": 100.0} for s in report["samples"])
    assert SECRET not in (tmp_path / "steady" / "report.json").read_text()
