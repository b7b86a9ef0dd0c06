"""Replies tallied by the version that answered them: wire parsing, bins, and a run against the echo."""

from __future__ import annotations

import pytest

from gateway.protocol.pb import grpc_service_pb2 as pb
from loadtests.clients import grpc_reply_version, rest_reply_version
from loadtests.runner import LoadPlan
from loadtests.scenario import Scenario, execute
from loadtests.services import Service
from loadtests.tally import VersionTally, answered_between


def test_grpc_reply_version_reads_field_two_only() -> None:
    raw = pb.ModelInferResponse(model_name="tabular", model_version="12", id="x").SerializeToString()
    assert grpc_reply_version(raw) == "12"
    assert grpc_reply_version(pb.ModelInferResponse(model_name="m").SerializeToString()) == ""
    assert grpc_reply_version(b"") == ""


def test_rest_reply_version_reads_the_json_header() -> None:
    header = b'{"model_name":"m","model_version":"3","outputs":[]}'
    assert rest_reply_version({"inference-header-content-length": str(len(header))}, header + b"\x00" * 8) == "3"
    assert rest_reply_version({}, b'{"model_name": "m", "model_version": "7"}') == "7"
    assert rest_reply_version({}, b'{"error": "no"}') == ""


def test_tally_bins_merge_and_count_between() -> None:
    a, b = VersionTally(), VersionTally()
    a.record(0.05, "1")
    a.record(1.25, "2")
    b.record(1.26, "2")
    b.record(2.5, "")
    merged = VersionTally()
    merged.merge_partial(a.to_partial())
    merged.merge_partial(b.to_partial())
    result = merged.to_result()
    assert result["2"]["answered"] == 2 and result["2"]["first_sent_s"] == pytest.approx(1.25)
    assert result["none"]["answered"] == 1
    assert merged.per_second(1) == {"2": 2}
    assert answered_between(result, "2", 1.2, 1.3) == 2
    assert answered_between(result, "2", 1.3, 5.0) == 0
    assert answered_between(result, "9", 0, 5) == 0


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["grpc", "rest-binary"])
def test_a_run_tallies_the_echo_version(echo: Service, protocol: str) -> None:
    sc = Scenario(protocol=protocol, model="mlp", grpc_target=echo.grpc, http_target=echo.http,
                  tally_versions=True)
    result = execute(sc, LoadPlan(duration_s=0.5, rate=40, max_in_flight=4, event_loop="asyncio"))
    versions = result["versions"]
    assert set(versions) == {"1"}
    assert versions["1"]["answered"] == result["requests"]["ok"] > 0
    assert sum(s["versions"].get("1", 0) for s in result["series"]) == result["requests"]["ok"]
    assert result["error_latency_s"] is None


@pytest.mark.integration
def test_without_tally_the_result_has_no_versions(echo: Service) -> None:
    sc = Scenario(protocol="grpc", model="mlp", grpc_target=echo.grpc)
    result = execute(sc, LoadPlan(duration_s=0.3, concurrency=1, event_loop="asyncio"))
    assert result["versions"] is None and "versions" not in result["series"][0]
