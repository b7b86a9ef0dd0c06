"""Runs a real gateway (gRPC + HTTP + admin listeners on free ports) on its own event loop in a thread."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway import eventloop
from gateway.app import Endpoints, Gateway
from gateway.settings import ServerSettings, Settings


def gateway_settings(repo: Path | None, store: str = "sqlite:///:memory:", **server: Any) -> Settings:
    """Free ports, a short drain, and by default a private in-memory store (no state shared between tests)."""
    base = ServerSettings(host="127.0.0.1", http_port=0, grpc_port=0, admin_port=0, drain_seconds=5.0)
    return Settings(repository=repo, store=store, server=replace(base, **server))


class GatewayThread:
    """`with GatewayThread(settings) as gw:` -> gw.endpoints, gw.gateway; stops and drains on exit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway: Gateway | None = None
        self.endpoints: Endpoints | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)

    def _run(self) -> None:
        try:
            eventloop.run(self._main())
        except BaseException as exc:  # surfaced to the test in __enter__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.gateway = Gateway(self.settings)
        try:
            self.endpoints = await self.gateway.start()
            self._ready.set()
            await self._stop.wait()
        finally:
            await self.gateway.stop()

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Runs a coroutine on the gateway's loop from the test thread."""
        if self.loop is None:
            raise RuntimeError("gateway not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        if not self._ready.wait(120):
            raise RuntimeError("gateway did not start within 120 s")
        if self._error is not None:
            raise RuntimeError("gateway failed to start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self._thread.is_alive():
            raise RuntimeError("gateway did not stop within 60 s")
