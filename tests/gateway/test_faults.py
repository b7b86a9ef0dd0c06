"""Fault injection: validated bodies, expiry, and each fault's effect on a version."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.errors import InferenceFailed
from gateway.faults import FaultInjector, Faults, parse_faults
from gateway.models import ModelManager
from gateway.observability.metrics import Metrics
from rollout.errors import InvalidSpec


@pytest.mark.parametrize(("body", "field"), [
    ({"error_rate": 0.2}, "duration"),
    ({"error_rate": 1.5, "duration": "1m"}, "error_rate"),
    ({"latency_ms": -1, "duration": "1m"}, "latency_ms"),
    ({"duration": "soon"}, "duration"),
    ({"duration": "25h"}, "duration"),
    ({"duration": "1m", "latency_distribution": "gamma"}, "latency_distribution"),
    ({"duration": "1m", "slow": True}, "slow"),
])
def test_bad_bodies_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_faults(body, "sre", now=0.0)
    assert err.value.field == field


def test_faults_expire_on_their_own() -> None:
    faults = parse_faults({"error_rate": 1.0, "duration": "90s"}, "sre", now=1000.0)
    assert faults.expires_at == 1090.0
    assert faults.active(1089.9) and not faults.active(1090.0)


def test_error_rate_fails_that_share_of_requests() -> None:
    clock = [0.0]
    injector = FaultInjector(ModelManager(Metrics()), clock=lambda: clock[0], seed=1)
    injector.set("m", "2", Faults(error_rate=0.2, expires_at=100.0))
    failed = 0
    for _ in range(5_000):
        try:
            injector.check_request("m", "2")
        except InferenceFailed as exc:
            assert "injected fault" in str(exc)
            failed += 1
    assert 0.17 < failed / 5_000 < 0.23
    injector.check_request("m", "1")  # other versions untouched
    clock[0] = 100.0
    injector.check_request("m", "2")  # expired: no more failures


def test_latency_distribution_and_output_corruption() -> None:
    import random

    rand = random.Random(0)
    fixed = Faults(latency_ms=30, expires_at=1)
    assert fixed.delay_s(rand) == pytest.approx(0.030)
    spread = Faults(latency_ms=10, latency_jitter_ms=20, latency_distribution="uniform", expires_at=1)
    delays = [spread.delay_s(rand) for _ in range(2_000)]
    assert min(delays) >= 0.010 and max(delays) <= 0.030 and 0.018 < sum(delays) / 2000 < 0.022
    from gateway.faults import _corrupt

    outputs = {"probabilities": np.full((4, 2), 0.5, np.float32), "label": np.zeros(4, np.int64)}
    _corrupt(outputs, Faults(output_shift=0.25, expires_at=1), rand)
    np.testing.assert_allclose(outputs["probabilities"], 0.75)
    assert outputs["label"].sum() == 0  # integer outputs are left alone
