"""`python -m loadtests run` end to end: the JSON result's shape and the numbers inside agreeing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loadtests.cli import main
from loadtests.histogram import Histogram
from loadtests.services import Service

pytestmark = pytest.mark.integration


def test_run_writes_a_consistent_json_result(echo: Service, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    code = main(["run", "--grpc", echo.grpc or "", "--model", "mlp", "--rows", "2", "--concurrency", "3",
                 "--duration", "0.5", "--warmup", "0.2", "--header", "x-servegate-version=1",
                 "--sticky-keys", "5", "--loop", "asyncio", "--out", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "servegate.loadtest/1"
    assert set(doc) >= {"config", "started_at", "ended_at", "duration_s", "requests", "outcomes", "throughput",
                        "latency_s", "histogram", "series", "schedule", "checks"}
    cfg = doc["config"]
    assert (cfg["protocol"], cfg["mode"], cfg["concurrency"], cfg["rows"]) == ("grpc", "closed", 3, 2)
    assert cfg["headers"] == ["x-servegate-version=1"] and cfg["sticky_keys"] == 5
    ok = doc["requests"]["ok"]
    assert ok > 0 and doc["outcomes"] == {"OK": ok}
    assert doc["throughput"]["requests_per_s"] == pytest.approx(ok / doc["duration_s"])
    assert doc["throughput"]["rows_per_s"] == pytest.approx(2 * ok / doc["duration_s"])
    assert len(doc["series"]) == 1 and doc["series"][0]["count"] == ok
    hist = Histogram.from_dict(doc["histogram"])
    assert hist.total == ok
    lat = doc["latency_s"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert lat["p99"] == hist.percentile(99)
    assert "req/s" in capsys.readouterr().out


def test_npz_inputs_set_the_rows(echo: Service, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, input=np.zeros((4, 784), dtype=np.float32))
    out = tmp_path / "result.json"
    code = main(["run", "--http", echo.http or "", "--protocol", "rest-json", "--model", "mlp",
                 "--inputs", str(inputs), "--rate", "20", "--duration", "0.5", "--warmup", "0",
                 "--loop", "asyncio", "--out", str(out)])
    doc = json.loads(out.read_text())
    assert code == 0 and doc["config"]["rows"] == 4 and doc["config"]["mode"] == "open"
    assert doc["schedule"]["intended"] == 10 and doc["requests"]["ok"] == 10


def test_usage_errors_return_codes_instead_of_exiting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "mlp"]) == 2  # neither --concurrency nor --rate
    assert main(["run", "--model", "mlp", "--concurrency", "1"]) == 1  # no endpoint
    assert "error:" in capsys.readouterr().err
