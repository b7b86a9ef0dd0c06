"""Echo servers for the load generator's tests, started once per session through the real CLI."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from loadtests.services import Service, running

ECHO = [sys.executable, "-m", "loadtests", "echo", "--grpc-port", "0", "--http-port", "0"]


@pytest.fixture(scope="session")
def echo() -> Iterator[Service]:
    """An echo declaring the mlp signature (input FP32 [-1, 784])."""
    with running("echo", ECHO, ready_timeout_s=60) as service:
        yield service


@pytest.fixture(scope="session")
def slow_echo() -> Iterator[Service]:
    """An echo that takes 20 ms per inference, for open-loop back-pressure."""
    with running("slow-echo", [*ECHO, "--delay-ms", "20", "--shape", "x:FP32:-1,4"], ready_timeout_s=60) as service:
        yield service
