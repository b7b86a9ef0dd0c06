"""Kernel tests run on warmed-up kernels, as the gateway does: the compiled forms tested are the ones served."""

from __future__ import annotations

import pytest

from kernels import warm_up


@pytest.fixture(autouse=True, scope="session")
def warmed_kernels() -> None:
    warm_up()
