"""A gateway serving the demo repository, shared by the integration tests of a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.harness import GatewayThread, gateway_settings
from tests.gateway.native_grpc import loop_errors


@pytest.fixture(scope="module")
def served(model_repo: Path) -> Iterator[GatewayThread]:
    with GatewayThread(gateway_settings(model_repo)) as gw:
        yield gw


@pytest.fixture
def no_loop_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails a test whose server loop logged an error (a protocol callback that raised, a lost task)."""
    yield
    assert loop_errors(caplog.records) == []


@pytest.fixture(params=[True, False], ids=["uvloop", "asyncio"])
def use_uvloop(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)
