"""`servegate demo`: real models served by the full gateway, traffic from the bundled load generator, and a
live canary rollout of a new version that the controller promotes — or, with `--bad-candidate`, rolls
back on its own once the candidate starts failing. Everything is printed as it happens.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from gateway.app import Endpoints, Gateway
from gateway.demo import models
from gateway.settings import AuthSettings, ControllerSettings, ServerSettings, Settings

MODEL = "tabular"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    bad_candidate: bool = False
    window_s: float = 5.0
    rate: float = 200.0
    workdir: Path | None = None
    ports: tuple[int, int, int] = (0, 0, 0)
    tail_s: float = 20.0  # traffic shown after the outcome


def spec(options: DemoOptions) -> dict[str, Any]:
    # Half of what the first step's 10 % should see in a window, so short windows stay conclusive.
    min_requests = int(min(50, max(10, 0.5 * 0.10 * options.rate * options.window_s)))
    return {
        "candidate": "2", "strategy": "canary", "window": f"{options.window_s:g}s",
        "steps": [{"weight": 10}, {"weight": 25}, {"weight": 50}, {"weight": 100}],
        "analysis": {"min_requests": min_requests, "max_error_rate": 0.02, "max_p99_latency_ratio": 3.0,
                     "max_p99_latency_ms": 250, "failure_limit": 1, "on_inconclusive": "pause"},
        "retry_on_stable": True, "approval": "auto",
    }


class Demo:
    def __init__(self, options: DemoOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.started = time.monotonic()
        self.seen_windows = 0

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=self.out, flush=True)

    async def run(self, workdir: Path) -> int:
        repo, candidates = workdir / "repository", workdir / "candidates"
        self.say("building demo models: a scikit-learn classifier on the breast-cancer data set "
                 "(versions 1 and 2), an MLP and a two-input model")
        await asyncio.to_thread(_build, repo, candidates)
        gateway = Gateway(self._settings(repo, workdir))
        endpoints = await gateway.start()
        self.say(f"gateway up: {endpoints.line()}")
        load = self._start_load(endpoints, workdir)
        try:
            return await self._rollout(gateway, candidates, load, workdir)
        finally:
            if load.poll() is None:
                load.kill()
            load.wait(30)
            if load.stderr is not None:
                load.stderr.close()
            await gateway.stop()
            self.say("gateway stopped")

    def _settings(self, repo: Path, workdir: Path) -> Settings:
        http, grpc, admin = self.options.ports
        server = ServerSettings(host="127.0.0.1", http_port=http, grpc_port=grpc, admin_port=admin,
                                drain_seconds=5.0)
        return Settings(repository=repo, store=f"sqlite:///{workdir / 'state.db'}", server=server,
                        auth=AuthSettings(jwt_secret=secrets.token_hex(32)),
                        controller=ControllerSettings(interval_s=0.5))

    def load_seconds(self) -> float:
        """Long enough for every step's window, plus a tail that shows traffic after the outcome."""
        return len(spec(self.options)["steps"]) * self.options.window_s + self.options.tail_s

    def _start_load(self, endpoints: Endpoints, workdir: Path) -> subprocess.Popen[str]:
        self.say(f"load generator: {self.options.rate:g} requests/s of {MODEL} over gRPC (open loop) "
                 f"for {self.load_seconds():.0f}s")
        return subprocess.Popen(
            [sys.executable, "-m", "loadtests", "run", "--grpc", endpoints.grpc, "--model", MODEL,
             "--rate", str(self.options.rate), "--duration", str(self.load_seconds()), "--timeout", "5",
             "--out", str(workdir / "load.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    async def _rollout(self, gw: Gateway, candidates: Path, load: subprocess.Popen[str], workdir: Path) -> int:
        control = gw.control
        await asyncio.sleep(2.0)
        version = await control.register(MODEL, {"version": "2", "artifact": str(candidates / MODEL / "2" / "model.onnx"),
                                                 "metadata": {"owner": "demo", "training_data": "breast_cancer"}},
                                         actor="demo")
        gates = ", ".join(f"{g['gate']}={'ok' if g['passed'] else 'FAIL'}" for g in version["validation"]["gates"]
                          if not g.get("skipped"))
        self.say(f"registered {MODEL} v2 -> {version['stage']} ({gates})")
        doc = spec(self.options)
        await control.start_rollout(MODEL, doc, actor="demo")
        self.say(f"canary started: steps {[s['weight'] for s in doc['steps']]}% , {doc['window']} windows, "
                 f"retry on stable")
        injected = False
        deadline = time.monotonic() + self.load_seconds()
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            status = (await control.rollout(MODEL))["status"]
            self._print_second(gw, status)
            if self.options.bad_candidate and not injected and status["step_index"] >= 1:
                await control.set_faults(MODEL, "2", {"error_rate": 0.3, "latency_ms": 40, "duration": "10m"},
                                         actor="demo")
                self.say("fault injected: candidate v2 now fails 30% of its requests and is 40 ms slower")
                injected = True
            if status["phase"] in ("promoted", "rolled_back", "aborted"):
                return await self._finish(gw, status, load, workdir)
        self.say("the rollout did not finish in time")
        return 1

    def _print_second(self, gw: Gateway, status: dict[str, Any]) -> None:
        now = float(int(time.time()))  # the last complete second
        arms = []
        for version in sorted(status["weights"]):
            loaded = gw.manager.find(MODEL, version)
            if loaded is None:
                continue
            s = loaded.windows.summary(now - 1, now)
            p99 = f"{s.p99_ms:.1f}ms" if s.p99_ms is not None else "-"
            arms.append(f"v{version} {status['weights'][version]:3d}% {s.requests:4d} req/s p99 {p99:>7} "
                        f"err {s.error_rate:5.1%}")
        self.say(f"{status['phase']:<12} step {status['step_index']}  " + " | ".join(arms))
        for window in status["history"][self.seen_windows:]:
            self.say(f"  window judged {window['verdict'].upper()}: {window.get('reason', '')}")
        self.seen_windows = len(status["history"])

    async def _finish(self, gw: Gateway, status: dict[str, Any], load: subprocess.Popen[str], workdir: Path) -> int:
        outcome = status["phase"]
        took = status["finished_at"] - status["started_at"]
        self.say(f"rollout {outcome.upper()} after {took:.1f}s: {status['message']}")
        detail = await gw.control.model(MODEL)
        self.say("registry: " + ", ".join(f"v{v['version']}={v['stage']}" for v in detail["versions"]))
        for entry in reversed(await gw.control.audit(MODEL, None, 6)):
            self.say(f"  audit #{entry['seq']} {entry['actor']}: {entry['action']} v{entry['version'] or '-'} "
                     f"{entry['reason'][:70]}")
        verify = await gw.control.verify_audit()
        self.say(f"audit chain verifies: {verify['ok']} ({verify['checked']} entries)")
        self.say("traffic continues on the new arrangement until the load generator finishes:")
        while load.poll() is None:
            await asyncio.sleep(1.0)
            self._print_second(gw, (await gw.control.rollout(MODEL))["status"])
        result = _read(workdir / "load.json")
        if result is not None:
            req = result["requests"]
            self.say(f"clients: {req['ok']} answered, {req['errors']} errors seen by clients")
        expected = "rolled_back" if self.options.bad_candidate else "promoted"
        return 0 if outcome == expected else 1


def _build(repo: Path, candidates: Path) -> None:
    models.build_tabular(repo, MODEL, "1", c=1.0)
    models.build_tabular(candidates, MODEL, "2", c=0.5)
    models.build_mlp(repo, "mlp", "1")
    models.build_two_input(repo, "mixed", "1")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def main(options: DemoOptions) -> int:
    from gateway import eventloop

    async def go() -> int:
        if options.workdir is not None:
            options.workdir.mkdir(parents=True, exist_ok=True)
            return await Demo(options).run(options.workdir)
        with tempfile.TemporaryDirectory(prefix="servegate-demo-") as tmp:
            return await Demo(replace(options, workdir=Path(tmp))).run(Path(tmp))

    return eventloop.run(go())
