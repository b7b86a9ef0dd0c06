"""One scenario run: its options, the gateway under test, the timeline of samples and events, and the
loads it drove (each a load-generator result). Scenarios play against this and return an Outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from loadtests.game import GameGateway
from loadtests.runner import LoadPlan
from loadtests.scenario import Scenario, execute
from loadtests.scenarios.options import Options
from loadtests.scenarios.sampler import Sampler, Timeline, Watched
from loadtests.scenarios.verdict import Check

MAX_IN_FLIGHT = 512


@dataclass
class Outcome:
    """What a scenario found: its checks, headline figures, extra config and the last rollout document."""

    checks: list[Check]
    figures: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    rollout: dict[str, Any] | None = None


def epoch_of(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


class BackgroundLoad:
    """A load run on its own thread, so the scenario can steer the gateway meanwhile."""

    def __init__(self, run: Run, label: str, sc: Scenario, plan: LoadPlan) -> None:
        self._result: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._go, args=(run, label, sc, plan), name=f"load-{label}",
                                        daemon=True)
        self._thread.start()

    def _go(self, run: Run, label: str, sc: Scenario, plan: LoadPlan) -> None:
        try:
            self._result = run.load(label, sc, plan)
        except BaseException as exc:  # handed to the scenario's thread in result()
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout_s: float) -> dict[str, Any]:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"the load did not finish within {timeout_s:.0f} s")
        if self._error is not None:
            raise RuntimeError(f"the load failed: {self._error}") from self._error
        if self._result is None:
            raise RuntimeError("the load returned no result")
        return self._result


class Run:
    """Shared by every scenario: how to call the gateway, run load, sample and mark events."""

    def __init__(self, opts: Options, gateways: Sequence[GameGateway], workdir: Path) -> None:
        self.opts = opts
        self.gateways = list(gateways)
        self.workdir = workdir
        self.timeline = Timeline()
        self.loads: list[dict[str, Any]] = []

    @property
    def gateway(self) -> GameGateway:
        if not self.gateways:
            raise RuntimeError("this scenario has no gateway yet")
        return self.gateways[0]

    def scenario(self, *, tally: bool = False, grpc: str | None = None,
                 channel_options: tuple[tuple[str, str | int], ...] = ()) -> Scenario:
        """The load generator's view of the gateway: model, protocol, payload and timeouts."""
        gw = self.gateway
        return Scenario(protocol=self.opts.protocol, model=self.opts.model, grpc_target=grpc or gw.grpc or None,
                        http_target=gw.http or None, timeout_s=self.opts.timeout_s, seed=self.opts.seed,
                        tally_versions=tally, channel_options=channel_options, label=self.opts.name)

    def plan(self, duration_s: float, *, rate: float = 0.0, concurrency: int = 0, warmup_s: float = 1.0,
             workers: int | None = None) -> LoadPlan:
        return LoadPlan(duration_s=duration_s, warmup_s=warmup_s, rate=rate, concurrency=concurrency,
                        max_in_flight=MAX_IN_FLIGHT, workers=workers or self.opts.workers or 1)

    def load(self, label: str, sc: Scenario, plan: LoadPlan) -> dict[str, Any]:
        """Runs one load to its end; the result is kept (with its label) for the report."""
        result = execute(sc, plan)
        result["label"] = label
        self.loads.append(result)
        return result

    def background(self, label: str, sc: Scenario, plan: LoadPlan) -> BackgroundLoad:
        return BackgroundLoad(self, label, sc, plan)

    def watched(self) -> list[Watched]:
        def pid_of(gw: GameGateway) -> Callable[[], int | None]:
            return lambda: gw.pid
        return [Watched(f"gateway-{i}" if len(self.gateways) > 1 else "gateway", gw.admin, pid_of(gw))
                for i, gw in enumerate(self.gateways)]

    def sampler(self, *, rollout: bool = False, watched: Sequence[Watched] | None = None) -> Sampler:
        return Sampler(self.timeline, self.watched() if watched is None else watched, self.opts.model,
                       interval_s=self.opts.sample_interval_s, rollout=rollout,
                       drift_window_s=self.opts.window_s)

    def event(self, kind: str, detail: str = "", t: float | None = None, **extra: Any) -> dict[str, Any]:
        entry = self.timeline.event(kind, detail, t, **extra)
        print(f"[{entry['t'] - self.timeline.t0:7.1f}s] {kind}: {detail}", flush=True)
        return entry

    def wait(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))
