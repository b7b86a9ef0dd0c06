"""A gateway serving the demo repository, shared by the integration tests of a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.harness import GatewayThread, gateway_settings


@pytest.fixture(scope="module")
def served(model_repo: Path) -> Iterator[GatewayThread]:
    with GatewayThread(gateway_settings(model_repo)) as gw:
        yield gw
