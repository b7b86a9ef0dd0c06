"""wrk and h2load drivers: a one-second run each against the echo servers, and their output parsers."""

from __future__ import annotations

import shutil

import pytest

from loadtests.cclients import CClientResult, parse_h2load, run_h2load, run_wrk
from loadtests.metadata import discover
from loadtests.payload import grpc_request, infer_path, random_tensors, rest_binary_body, rest_json_body
from loadtests.services import Service

pytestmark = pytest.mark.integration
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
needs_h2load = pytest.mark.skipif(shutil.which("h2load") is None,
                                  reason="h2load is not installed (apt-get install nghttp2-client)")


@needs_wrk
@pytest.mark.parametrize("form", ["binary", "json"])
def test_wrk_posts_inference_requests(echo: Service, form: str) -> None:
    tensors = random_tensors(discover(None, echo.http, "mlp").inputs, 1)
    body = rest_binary_body(tensors) if form == "binary" else rest_json_body(tensors)
    result = run_wrk(echo.http or "", infer_path("mlp", ""), body, connections=4, duration_s=1)
    assert result.requests > 0 and result.requests_per_s > 0
    assert result.non_2xx == 0 and result.failed == 0
    lat = result.latency_s
    assert lat["p50"] is not None and lat["p99"] is not None and 0 < lat["p50"] <= lat["p99"]
    _assert_own_cpu(result)


@needs_wrk
def test_wrk_counts_error_statuses(echo: Service) -> None:
    body = rest_binary_body(random_tensors(discover(None, echo.http, "mlp").inputs, 1))
    result = run_wrk(echo.http or "", infer_path("unknown", ""), body, connections=2, duration_s=1)
    assert result.requests > 0 and result.non_2xx == result.requests


@needs_h2load
def test_h2load_posts_framed_grpc_requests(echo: Service) -> None:
    request = grpc_request("mlp", "", random_tensors(discover(echo.grpc, None, "mlp").inputs, 1))
    result = run_h2load(echo.grpc or "", request, streams=8, duration_s=1, warmup_s=0.2)
    assert result.requests > 0 and result.requests_per_s > 0
    assert result.non_2xx == 0 and result.failed == 0
    assert result.detail["status_2xx"] == result.requests
    assert result.latency_s["mean"] is not None and result.latency_s["mean"] > 0
    _assert_own_cpu(result)


H2LOAD_SAMPLE = """\
finished in 2.00s, 1500.50 req/s, 4.61MB/s
requests: 3001 total, 3065 started, 3001 done, 2990 succeeded, 11 failed, 0 errored, 0 timeout
status codes: 2990 2xx, 0 3xx, 0 4xx, 11 5xx
                     min         max         mean         sd        +/- sd
time for request:      621us     95.23ms     37.02ms     11.31ms    80.99%
"""


def test_h2load_parser_reads_counts_and_time_units() -> None:
    result = parse_h2load(H2LOAD_SAMPLE, ["h2load"])
    assert (result.requests, result.requests_per_s, result.failed, result.non_2xx) == (3001, 1500.5, 11, 11)
    assert result.latency_s["min"] == pytest.approx(621e-6)
    assert result.latency_s["max"] == pytest.approx(0.09523)
    with pytest.raises(RuntimeError, match="not understood"):
        parse_h2load("nothing here", ["h2load"])


def _assert_own_cpu(result: CClientResult) -> None:
    """The client's CPU over its run: some, at most one core per client thread, and spread per request."""
    assert result.cpu_s is not None and result.wall_s is not None
    assert result.wall_s >= result.duration_s * 0.9
    assert 0 < result.cpu_s <= result.wall_s * 1.05  # one client thread cannot use more than a core
    per_request = result.cpu_us_per_request()
    assert per_request == pytest.approx(result.cpu_s / result.wall_s / result.requests_per_s * 1e6)


def test_client_cpu_per_request_needs_the_cpu_and_a_rate() -> None:
    result = parse_h2load(H2LOAD_SAMPLE, ["h2load"])
    assert result.cpu_us_per_request() is None  # parsed output alone: the run's CPU is not known
    result.cpu_s, result.wall_s = 0.6, 3.0  # 0.2 cores at 1500.5 req/s
    assert result.cpu_us_per_request() == pytest.approx(0.2 / 1500.5 * 1e6)

