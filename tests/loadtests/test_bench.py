"""The benchmark runner end to end, with the echo server standing in for the gateway, and its figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from loadtests import bench, figures
from loadtests.bench import BenchRun, BenchSettings
from loadtests.cli import main
from loadtests.services import Service

pytestmark = pytest.mark.integration
SETTINGS = {"small_concurrency": 64, "large_concurrency": 16, "large_rows": 64}


def test_bench_runs_every_scenario_and_writes_report_and_json(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.md"
    # Two scenarios and no C clients keep this quick; the other steps differ only in their numbers,
    # and test_bench_c_client_steps_record_runs covers wrk and h2load.
    code = main(["bench", "--echo-as-gateway", "--quick", "--duration", "0.3", "--warmup", "0.1",
                 "--scenarios", "overhead,rest", "--no-c-clients", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.with_suffix(".json").read_text())
    runs = doc["runs"]
    assert len(runs) == 7
    for name in ("echo/python/grpc/c1/r1", "gateway/python/grpc/c1/r1", "ort/b1",
                 "echo/python/rest-binary/c64/r1", "gateway/python/rest-json/c64/r1"):
        assert name in runs, name
        assert figures.errors(runs[name]) == 0
    names = {f["name"] for f in doc["figures"]}
    assert names == {"overhead", "rest-binary-python", "rest-json-python"}
    for fig in doc["figures"]:
        assert fig["ratio"] == pytest.approx(fig["value"] / fig["baseline"])
    text = out.read_text()
    assert doc["command"] in text and "| overhead |" in text and doc["machine"]["cpu_model"] in text
    assert doc["settings"]["gateway_cmd"].endswith("--onnx {model_file}")


@pytest.mark.skipif(shutil.which("wrk") is None or shutil.which("h2load") is None,
                    reason="wrk or h2load is not installed (apt-get install wrk nghttp2-client)")
def test_bench_c_client_steps_record_runs(echo: Service) -> None:
    st = BenchSettings(duration_s=1.0, warmup_s=0.0, workers=1, ort_threads=0, c_clients=True,
                       scenarios=("small",), gateway_cmd="")
    run = BenchRun(st)
    bench._h2load(run, echo, 8, bench._grpc_bytes(echo, 1))
    bench._wrk(run, echo, "rest-binary", 8)
    assert set(run.runs) == {"echo/h2load/grpc/c8/r1", "echo/wrk/rest-binary/c8/r1"}
    for entry in run.runs.values():
        assert figures.rps(entry) > 0 and figures.errors(entry) == 0


def _run(tool: str, rps: float, p99: float = 0.01, errors: int = 0) -> dict[str, Any]:
    result = {"throughput": {"requests_per_s": rps, "rows_per_s": rps}, "latency_s": {"p50": p99 / 2, "p99": p99},
              "requests": {"errors": errors, "unsent": 0}}
    return {"tool": tool, "server": "", "result": result}


def test_peer_figures_compare_with_the_best_error_free_peer() -> None:
    runs = {
        "gateway/python/grpc/c64/r1": _run("python", 3000, p99=0.02),
        "peer-a/python/grpc/c64/r1": _run("python", 1000, p99=0.05),
        "peer-b/python/grpc/c64/r1": _run("python", 1200, p99=0.01),
        "peer-c/python/grpc/c64/r1": _run("python", 9000, errors=5),  # fast but failing: not a baseline
        "gateway/python/rest-binary/c64/r1": _run("python", 8000),
        "peer-a/python/rest-json/c64/r1": _run("python", 1500),
        "peer-b/python/rest-binary/c64/r1": _run("python", 2500),
    }
    by_name = {f["name"]: f for f in figures.compute(runs, SETTINGS)}
    grpc = by_name["peers-grpc"]
    assert grpc["runs"][1] == "peer-b/python/grpc/c64/r1"
    assert grpc["ratio"] == pytest.approx(2.5) and grpc["met"] is True
    assert by_name["peers-grpc-p99"]["ratio"] == pytest.approx(2.0) and by_name["peers-grpc-p99"]["met"] is False
    rest = by_name["peers-rest"]
    assert rest["baseline"] == 2500 and rest["ratio"] == pytest.approx(3.2) and rest["met"] is False


def test_overhead_figure_adds_echo_and_ort_latency() -> None:
    runs = {"gateway/python/grpc/c1/r1": _run("python", 500, p99=0.004),
            "echo/python/grpc/c1/r1": _run("python", 900, p99=0.002),
            "ort/b1": {"tool": "ort", "server": "", "result": {"runs_per_s": 5000, "rows_per_s": 5000,
                                                              "latency_s": {"p50": 0.0005}}}}
    (fig,) = figures.compute(runs, SETTINGS)
    assert fig["baseline"] == pytest.approx(0.0015) and fig["ratio"] == pytest.approx(0.002 / 0.0015)
    assert fig["met"] is True


def test_drift_cost_is_the_median_of_paired_rounds_ratios() -> None:
    # Round 1 is a noisy pair (the off run stalled); the warm-up runs are left out of the figure.
    def h2load(rate: float, cpu_us: float) -> dict[str, Any]:
        return {"tool": "h2load", "server": "", "server_cores": rate * cpu_us * 1e-6,
                "result": {"requests_per_s": rate, "failed": 0, "non_2xx": 0}}

    on_rps, off_rps = (980, 500, 990), (1000, 1000, 1000)
    runs: dict[str, Any] = {}
    for i, (a, b) in enumerate(zip(on_rps, off_rps, strict=True)):
        runs[f"drift-on/h2load/grpc/c64/r1#{i}"] = {**h2load(a, 1100), "drift_busy_s": 0.05 * (i + 1),
                                                    "server_cpu_s": 5.0}
        runs[f"drift-off/h2load/grpc/c64/r1#{i}"] = h2load(b, 1000)
    runs["drift-on/h2load/grpc/c64/r1#warm"] = h2load(10, 5000)
    by_name = {f["name"]: f for f in figures.compute(runs, SETTINGS)}
    cost = by_name["drift-cost-single"]
    assert cost["ratio"] == pytest.approx(0.98) and cost["met"] is True
    assert len(cost["runs"]) == 6 and not any("#warm" in n for n in cost["runs"])
    cpu = by_name["drift-cpu-single"]  # 1100 µs per request on, 1000 off
    assert cpu["ratio"] == pytest.approx(1000 / 1100) and cpu["met"] is None
    share = by_name["drift-share-single"]  # binning took 1 %, 2 %, 3 % of the server's CPU
    assert share["ratio"] == pytest.approx(0.02) and share["met"] is True
