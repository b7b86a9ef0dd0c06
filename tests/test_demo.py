"""`servegate demo` end to end: models built, served, loaded by the load generator, canary promoted."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_promotes_a_good_candidate_with_no_client_errors() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--window", "2", "--rate", "150", "--tail", "2",
         "--http-port", "0", "--grpc-port", "0", "--admin-port", "0"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "registered tabular v2 -> validated" in out
    assert "rollout PROMOTED" in out
    assert "registry: v1=archived, v2=production" in out
    assert "audit chain verifies: True" in out
    assert ", 0 errors seen by clients" in out
