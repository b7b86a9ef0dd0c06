"""Closed and open loops against the echo servers: every request is counted exactly once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from loadtests.clients import Caller
from loadtests.payload import grpc_request, random_tensors, rest_binary_body
from loadtests.report import Recorder, build_result, merge
from loadtests.runner import LoadPlan, _Budget, open_loop
from loadtests.scenario import Scenario, execute
from loadtests.services import Service

pytestmark = pytest.mark.integration


def _closed(echo: Service, protocol: str, **kw: Any) -> dict[str, Any]:
    sc = Scenario(protocol=protocol, model="mlp", grpc_target=echo.grpc, http_target=echo.http,
                  check_every=kw.pop("check_every", 50), rows=kw.pop("rows", 1))
    return execute(sc, LoadPlan(duration_s=0.6, warmup_s=0.2, event_loop="asyncio", **kw))


def _assert_accounted(result: dict[str, Any]) -> None:
    req = result["requests"]
    assert req["answered"] == sum(result["outcomes"].values())
    assert req["answered"] == sum(s["count"] for s in result["series"])
    assert req["errors"] == sum(s["errors"] for s in result["series"])
    assert result["histogram"]["total"] == req["ok"]


@pytest.mark.parametrize("protocol", ["grpc", "rest-binary", "rest-json"])
def test_closed_loop_counts_add_up_and_replies_check_out(echo: Service, protocol: str) -> None:
    result = _closed(echo, protocol, concurrency=4, rows=3)
    _assert_accounted(result)
    assert result["requests"]["ok"] > 0
    assert result["outcomes"] == {"OK": result["requests"]["ok"]}
    assert result["checks"]["checked"] >= 4 and result["checks"]["failed"] == 0
    assert result["throughput"]["rows_per_s"] == pytest.approx(3 * result["throughput"]["requests_per_s"])
    assert result["config"]["rows"] == 3 and result["schedule"] is None


def test_max_requests_bounds_a_closed_loop(echo: Service) -> None:
    result = _closed(echo, "grpc", concurrency=2, max_requests=30, check_every=0)
    assert result["requests"]["answered"] == 30


def _foreign_model(echo: Service, protocol: str) -> dict[str, Any]:
    # The echo serves "mlp"; a request for another model must be counted as its error outcome.
    from loadtests.clients import Workload
    from loadtests.runner import run_load

    tensors = random_tensors(random_specs(), 1)
    if protocol == "grpc":
        work = Workload("grpc", echo.grpc or "", "", grpc_request("other", "", tensors), ())
    else:
        rest = rest_binary_body(tensors)
        work = Workload(protocol, echo.http or "", "/v2/models/other/infer", rest.body,
                        tuple(rest.headers.items()))
    plan = LoadPlan(duration_s=0.5, concurrency=2, event_loop="asyncio")
    return build_result(merge(run_load(work, plan)), {}, rows=1, duration_s=0.5, started_at=0, ended_at=0,
                        open_loop=False)


def random_specs() -> list[Any]:
    from loadtests.payload import TensorSpec

    return [TensorSpec("input", "FP32", (-1, 784))]


@pytest.mark.parametrize(("protocol", "outcome"), [("grpc", "grpc:NOT_FOUND"), ("rest-binary", "http:404")])
def test_error_outcomes_are_counted_by_code(echo: Service, protocol: str, outcome: str) -> None:
    result = _foreign_model(echo, protocol)
    _assert_accounted(result)
    assert set(result["outcomes"]) == {outcome}
    assert result["requests"]["ok"] == 0 and result["requests"]["errors"] > 0


def test_open_loop_counts_requests_it_could_not_send(slow_echo: Service) -> None:
    # 20 ms per request and 2 slots serve ~100 req/s; asking 400 req/s must leave most unsent.
    sc = Scenario(protocol="grpc", model="mlp", grpc_target=slow_echo.grpc)
    result = execute(sc, LoadPlan(duration_s=1.0, warmup_s=0.1, rate=400, max_in_flight=2,
                                  event_loop="asyncio"))
    sched = result["schedule"]
    assert sched["intended"] == sched["sent"] + sched["unsent"]
    assert sched["unsent"] > 0 and sched["sent"] > 0
    assert result["requests"]["answered"] == sched["sent"]
    assert result["requests"]["unsent"] == sched["unsent"] == sum(s["unsent"] for s in result["series"])


def test_open_loop_rest_at_a_modest_rate_sends_everything(echo: Service) -> None:
    sc = Scenario(protocol="rest-json", model="mlp", http_target=echo.http)
    # No warm-up: the schedule's first instant is then exactly the window's start, so 50 fall inside.
    result = execute(sc, LoadPlan(duration_s=1.0, rate=50, max_in_flight=16, event_loop="asyncio"))
    sched = result["schedule"]
    assert sched["intended"] == 50 and sched["unsent"] == 0
    assert result["requests"]["ok"] == 50


class _BlockingCaller:
    """Holds the event loop for 15 ms per call, as an overloaded client process would."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self) -> str:
        self.calls += 1
        time.sleep(0.015)
        return "OK"

    async def close(self) -> None:
        return None


def test_open_loop_counts_late_sends_and_measures_from_the_intended_time() -> None:
    callers: list[Caller] = [_BlockingCaller() for _ in range(8)]
    start = time.monotonic() + 0.01
    rec = Recorder(start, start + 0.3, late_after_s=0.002)
    asyncio.run(open_loop(callers, rec, start, start + 0.3, 200.0, _Budget(0, start)))
    sched = rec.schedule
    assert sched.intended == 60 == sched.sent + sched.unsent
    assert sched.late > 0 and sched.max_lateness_s > 0.002
    # Latency runs from the intended time, so it includes the time spent waiting to be sent.
    worst = max(s.hist.max_s for s in rec.seconds.values())
    assert worst >= sched.max_lateness_s


def test_workers_split_callers_and_merge_counts(echo: Service) -> None:
    result = _closed(echo, "rest-binary", concurrency=3, workers=2, check_every=0)
    _assert_accounted(result)
    assert result["requests"]["ok"] > 0 and result["config"]["workers"] == 2
    assert result["checks"]["checked"] == 3


def test_plan_validation() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        LoadPlan(duration_s=1, concurrency=2, rate=10)
    with pytest.raises(ValueError, match="workers"):
        LoadPlan(duration_s=1, concurrency=2, workers=3)
    with pytest.raises(ValueError, match="duration"):
        LoadPlan(duration_s=0, concurrency=1)
    shares = [LoadPlan(duration_s=1, rate=90, max_in_flight=10, workers=3).share(i) for i in range(3)]
    assert [s.max_in_flight for s in shares] == [4, 3, 3]
    assert sum(s.rate for s in shares) == pytest.approx(90)
    assert [s.phase_s for s in shares] == pytest.approx([0, 1 / 90, 2 / 90])


def test_open_loop_latency_includes_the_server_time(slow_echo: Service) -> None:
    # The echo takes 20 ms per request; an open-loop latency below that would time the send, not the reply.
    sc = Scenario(protocol="grpc", model="mlp", grpc_target=slow_echo.grpc)
    result = execute(sc, LoadPlan(duration_s=0.5, rate=20, max_in_flight=4, event_loop="asyncio"))
    assert result["requests"]["ok"] >= 5
    assert result["latency_s"]["min"] >= 0.020
