"""The benchmark runner end to end, with the echo server standing in for the gateway, and its figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from loadtests import bench, benchdoc, figures
from loadtests.bench import BenchRun, BenchSettings
from loadtests.cli import main
from loadtests.services import Service

pytestmark = pytest.mark.integration
SETTINGS = {"small_concurrency": 64, "large_concurrency": 16, "large_rows": 64}


def _quick_echo_bench(out: Path, scenarios: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """`bench --quick` with the echo standing in for the gateway and no C clients; its JSON document."""
    code = main(["bench", "--echo-as-gateway", "--quick", "--duration", "0.3", "--warmup", "0.1",
                 "--scenarios", scenarios, "--no-c-clients", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    doc: dict[str, Any] = json.loads(out.with_suffix(".json").read_text())
    return doc


def test_bench_runs_every_scenario_and_writes_report_and_json(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.md"
    # Two scenarios and no C clients keep this quick; the other steps differ only in their numbers,
    # and test_bench_c_client_steps_record_runs covers wrk and h2load.
    doc = _quick_echo_bench(out, "overhead,rest", capsys)
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
    assert doc["settings"]["provider"] == "cpu" and "execution provider of the gateway and the ORT baseline: cpu" in text
    assert runs["ort/b1"]["result"]["providers"] == ["CPUExecutionProvider"]


def test_bench_model_config_names_the_provider(tmp_path: Path) -> None:
    bench.build_model(tmp_path, 3, "cuda")
    assert (tmp_path / bench.MODEL / "config.yaml").read_text() == "intra_op_threads: 3\nprovider: cuda\n"


def test_ort_baseline_refuses_a_silent_cpu_fallback(tmp_path: Path) -> None:
    """Asked for CUDA where it cannot run, the baseline fails instead of timing the CPU under CUDA's name."""
    from gateway.inference import providers
    from loadtests import ortbench

    if providers.cuda_device_count() > 0:
        pytest.skip("a CUDA device is present: the CUDA baseline would run")
    model = bench.build_model(tmp_path, 1)
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider was asked for but the session runs on "
                                           "CPUExecutionProvider"):
        ortbench.measure(str(model), rows=1, duration_s=0.1, warmup_s=0, providers=ortbench.PROVIDERS["cuda"])


@pytest.mark.skipif(shutil.which("wrk") is None or shutil.which("h2load") is None,
                    reason="wrk or h2load is not installed (apt-get install wrk nghttp2-client)")
def test_bench_c_client_steps_record_runs(echo: Service) -> None:
    st = BenchSettings(duration_s=1.0, warmup_s=0.0, workers=1, ort_threads=0, c_clients=True,
                       scenarios=("small",), gateway_cmd="")
    run = BenchRun(st)
    bench._h2load(run, echo, 8, bench._grpc_bytes(echo, 1))
    bench._wrk(run, echo, "rest-binary", 8)
    bench._h2load(run, echo, 4, bench._grpc_bytes(echo, 64), rows=64)
    bench._wrk(run, echo, "rest-binary", 4, 64)
    assert set(run.runs) == {"echo/h2load/grpc/c8/r1", "echo/wrk/rest-binary/c8/r1",
                             "echo/h2load/grpc/c4/r64", "echo/wrk/rest-binary/c4/r64"}
    for name, entry in run.runs.items():
        assert figures.rps(entry) > 0 and figures.errors(entry) == 0
        rows = 64 if name.endswith("/r64") else 1
        assert figures.rows_per_s(entry) == pytest.approx(rows * figures.rps(entry))
        own = figures.client_cpu_us_per_request(entry)
        assert own is not None and own > 0, name


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


def _c_client(tool: str, rps: float, rows: int | None) -> dict[str, Any]:
    run = {"tool": tool, "server": "", "result": {"requests_per_s": rps, "failed": 0, "non_2xx": 0,
                                                  "latency_s": {"mean": 0.01}}}
    return run if rows is None else {**run, "rows": rows}


def _large_runs() -> dict[str, Any]:
    ort = {"tool": "ort", "server": "", "result": {"runs_per_s": 5000, "rows_per_s": 320_000,
                                                   "latency_s": {"p50": 0.0002}}}
    return {
        "echo/python/grpc/c16/r64": _run("python", 120_000), "gateway/python/grpc/c16/r64": _run("python", 75_000),
        "echo/h2load/grpc/c16/r64": _c_client("h2load", 3000, 64),
        "gateway/h2load/grpc/c16/r64": _c_client("h2load", 2000, 64),
        "echo/wrk/rest-binary/c16/r64": _c_client("wrk", 5000, 64),
        "gateway/wrk/rest-binary/c16/r64": _c_client("wrk", 4500, 64),
        "echo/python/rest-binary/c16/r64": _run("python", 200_000),
        "gateway/python/rest-binary/c16/r64": _run("python", 160_000), "ort/b64": ort,
    }


def test_c_client_rows_per_s_is_requests_times_rows_per_request() -> None:
    assert figures.rows_per_s(_c_client("wrk", 100, 64)) == pytest.approx(6400)
    assert figures.rows_per_s(_c_client("h2load", 100, None)) == pytest.approx(100)  # older runs: single rows


def test_large_figures_per_client_and_protocol_against_ort_and_echo() -> None:
    by_name = {f["name"]: f for f in figures.compute(_large_runs(), SETTINGS)}
    assert [n for n in by_name if n.startswith("large")] == [
        "large", "large-h2load", "large-rest-binary-wrk", "large-rest-binary-python", "large-vs-echo",
        "large-h2load-vs-echo", "large-rest-binary-wrk-vs-echo", "large-rest-binary-python-vs-echo"]
    large = by_name["large"]  # the Python client over gRPC keeps its name and runs
    assert large["runs"] == ["gateway/python/grpc/c16/r64", "ort/b64"]
    assert large["ratio"] == pytest.approx(75_000 / 320_000) and large["met"] is False
    h2load = by_name["large-h2load"]
    assert (h2load["value"], h2load["baseline"]) == (128_000, 320_000) and h2load["target"] == ">= 0.8"
    wrk = by_name["large-rest-binary-wrk"]
    assert wrk["ratio"] == pytest.approx(0.9) and wrk["met"] is True and wrk["unit"] == "rows/s"
    assert by_name["large-rest-binary-python"]["ratio"] == pytest.approx(0.5)
    echo = by_name["large-h2load-vs-echo"]
    assert (echo["value"], echo["baseline"]) == (128_000, 192_000) and echo["target"] is None
    assert echo["met"] is None and echo["runs"][1] == "echo/h2load/grpc/c16/r64"


def test_large_figure_is_the_median_of_paired_rounds_when_the_run_has_them() -> None:
    """Each round's gateway run is divided by the ORT run next to it; the host slowed down during
    round 1 (both sides), which a single ORT run measured elsewhere would have turned into a low ratio."""
    def ort(rows_per_s: float) -> dict[str, Any]:
        return {"tool": "ort", "server": "", "result": {"runs_per_s": rows_per_s / 64, "rows_per_s": rows_per_s,
                                                        "latency_s": {"p50": 0.0002}}}

    runs = _large_runs()
    gw_rps, ort_rows = (4000, 2500, 4100), (300_000, 190_000, 310_000)  # ratios 0.853, 0.842, 0.846
    for i, (rate, base) in enumerate(zip(gw_rps, ort_rows, strict=True)):
        runs[f"gateway/wrk/rest-binary/c16/r64#{i}"] = _c_client("wrk", rate, 64)
        runs[f"ort/b64#wrk/rest-binary#{i}"] = ort(base)
    runs["gateway/h2load/grpc/c16/r64#0"] = _c_client("h2load", 1000, 64)  # its ORT run is missing: no pair
    by_name = {f["name"]: f for f in figures.compute(runs, SETTINGS)}
    wrk = by_name["large-rest-binary-wrk"]
    assert wrk["ratio"] == pytest.approx(4100 * 64 / 310_000) and wrk["met"] is True  # the middle ratio
    assert (wrk["value"], wrk["baseline"]) == (4000 * 64, 300_000)  # the middle of each side
    assert "median of 3 paired rounds' ratios" in wrk["what"]
    assert wrk["runs"] == ["gateway/wrk/rest-binary/c16/r64#0", "ort/b64#wrk/rest-binary#0",
                           "gateway/wrk/rest-binary/c16/r64#1", "ort/b64#wrk/rest-binary#1",
                           "gateway/wrk/rest-binary/c16/r64#2", "ort/b64#wrk/rest-binary#2"]
    h2load = by_name["large-h2load"]  # no complete pair: the full-length runs, as before
    assert h2load["runs"] == ["gateway/h2load/grpc/c16/r64", "ort/b64"] and h2load["ratio"] == pytest.approx(0.4)
    assert by_name["large-rest-binary-wrk-vs-echo"]["ratio"] == pytest.approx(0.9)  # full-length runs


def test_bench_large_pairs_each_client_with_an_ort_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _quick_echo_bench(tmp_path / "bench.md", "large", capsys)
    runs = doc["runs"]
    for protocol in ("grpc", "rest-binary"):  # one round in quick mode; ORT first in even rounds
        names = list(runs)
        ort, gw = f"ort/b64#python/{protocol}#0", f"gateway/python/{protocol}/c16/r64#0"
        assert names.index(ort) < names.index(gw)
        assert runs[ort]["result"]["duration_s"] == pytest.approx(0.3, abs=0.1)
        assert figures.rows_per_s(runs[gw]) > 0 and figures.errors(runs[gw]) == 0
    large = {f["name"]: f for f in doc["figures"]}["large"]
    assert large["runs"] == ["gateway/python/grpc/c16/r64#0", "ort/b64#python/grpc#0"]


def test_large_figures_cover_only_the_combinations_measured() -> None:
    runs = {n: r for n, r in _large_runs().items() if "/python/grpc/" in n or n == "ort/b64"}
    names = [f["name"] for f in figures.compute(runs, SETTINGS)]
    assert names == ["large", "large-vs-echo"]


def test_report_lists_the_large_target_for_every_combination() -> None:
    runs = _large_runs()
    runs["gateway/wrk/rest-binary/c16/r64"]["result"].update(cpu_s=1.8, wall_s=10.0)  # 0.18 cores at 4,500 req/s
    doc = {"command": "python -m loadtests bench", "finished_at": "now", "skipped": [], "runs": runs,
           "figures": figures.compute(runs, SETTINGS),
           "machine": {"cpu_model": "cpu", "cpu_count": 2, "cpus_usable": 2, "memory_bytes": 2**30,
                       "platform": "linux", "python": "3.11", "load_average": [0.0, 0.0, 0.0], "packages": {},
                       "wrk": None, "h2load": None},
           "settings": {"duration_s": 1, "warmup_s": 0, "workers": 1, "ort_threads": 1, "scenarios": ["large"]}}
    text = benchdoc.markdown(doc, "bench.json")
    for name, ratio, met in (("large", "0.23x", "**no**"), ("large-h2load", "0.40x", "**no**"),
                             ("large-rest-binary-wrk", "0.90x", "yes"),
                             ("large-rest-binary-python", "0.50x", "**no**")):
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {ratio} | >= 0.8 | {met} |" in row, row
    assert "| gateway/h2load/grpc/c16/r64 | 2,000.0 | 128,000.0 |" in text
    wrk_row = next(line for line in text.splitlines() if line.startswith("| gateway/wrk/rest-binary/c16/r64 |"))
    assert wrk_row.endswith("| 40 µs |"), wrk_row  # the client's own CPU per request
    h2load_row = next(line for line in text.splitlines() if line.startswith("| gateway/h2load/grpc/c16/r64 |"))
    assert h2load_row.endswith("| - |"), h2load_row  # a run recorded without the client's CPU


def test_engine_figures_compare_the_native_engine_with_grpcio() -> None:
    runs = {"engine-native/python/grpc/c1/r1": _run("python", 900, p99=0.002),
            "engine-grpcio/python/grpc/c1/r1": _run("python", 600, p99=0.003),
            "engine-native/python/grpc/c64/r1": _run("python", 3000),
            "engine-grpcio/python/grpc/c64/r1": _run("python", 2000),
            "engine-native/h2load/grpc/c64/r1": _c_client("h2load", 6000, 1),
            "engine-grpcio/h2load/grpc/c64/r1": _c_client("h2load", 2400, 1),
            "engine-native/h2load/grpc/c16/r64": _c_client("h2load", 1500, 64),
            "engine-grpcio/h2load/grpc/c16/r64": _c_client("h2load", 1000, 64)}
    by_name = {f["name"]: f for f in figures.compute(runs, SETTINGS)}
    assert list(by_name) == ["engines-latency", "engines-small-python", "engines-small-h2load",
                             "engines-large-h2load"]
    assert by_name["engines-latency"]["ratio"] == pytest.approx(0.001 / 0.0015)
    assert by_name["engines-small-h2load"]["ratio"] == pytest.approx(2.5)
    large = by_name["engines-large-h2load"]
    assert (large["value"], large["baseline"], large["unit"]) == (96_000, 64_000, "rows/s")
    assert all(f["target"] is None and f["met"] is None for f in by_name.values())
