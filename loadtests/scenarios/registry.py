"""Every scenario by name, and running one end to end: gateway up, play, gateway down, report, plots,
summary; the exit code is 0 only when the verdict passes."""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import plots
from loadtests.game import GameGateway, local_gateway, target_gateway
from loadtests.scenarios import canary, failover, overload, ramp, soak, steady
from loadtests.scenarios.context import Outcome, Run
from loadtests.scenarios.document import build, markdown, write
from loadtests.scenarios.models import build_repository
from loadtests.scenarios.options import Options
from loadtests.scenarios.verdict import Check, equals


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    play: Callable[[Run], Outcome]
    defaults: Mapping[str, Any]
    summary: str
    model_config: Callable[[Options], dict[str, Any]] | None = None
    own_gateways: bool = False  # the scenario starts its gateways itself (replicas)
    extra: Mapping[str, Any] = field(default_factory=dict)


SCENARIOS: Mapping[str, ScenarioSpec] = {s.name: s for s in (
    ScenarioSpec("steady", steady.play, steady.DEFAULTS, "constant open-loop rate; p50 / p99 / errors"),
    ScenarioSpec("ramp", ramp.play, ramp.DEFAULTS, "rising rate until p99 breaks; the sustainable rate"),
    ScenarioSpec("overload", overload.play, overload.DEFAULTS, "twice the sustainable rate; shed fast",
                 model_config=overload.model_config),
    *(ScenarioSpec(name, canary.player(name), canary.defaults(name), text) for name, text in canary.SCENARIOS.items()),
    ScenarioSpec("soak", soak.play, soak.DEFAULTS, "hour-scale steady load; fails on memory / fd / p99 growth"),
    ScenarioSpec("replica-failover", failover.play, failover.DEFAULTS,
                 "three replicas on Redis; one killed and restarted under load", own_gateways=True),
)}


def lookup(name: str) -> ScenarioSpec:
    spec = SCENARIOS.get(name)
    if spec is None:
        raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}")
    return spec


@contextmanager
def gateways_for(spec: ScenarioSpec, opts: Options, workdir: Path) -> Iterator[list[GameGateway]]:
    if spec.own_gateways:
        yield []
    elif opts.targeted:
        secret = opts.jwt_secret or os.environ.get("SERVEGATE_JWT_SECRET") or None
        yield [target_gateway(opts.target, opts.http, opts.admin_url, token=opts.token or None, secret=secret)]
    else:
        config = spec.model_config(opts) if spec.model_config else None
        repo = build_repository(workdir, opts.model, config)
        interval = opts.controller_interval_s or None
        with local_gateway(repo, f"sqlite:///{workdir / 'state.db'}", controller_interval_s=interval) as gw:
            yield [gw]


def _play(spec: ScenarioSpec, run: Run) -> Outcome:
    try:
        return spec.play(run)
    except Exception as exc:
        # The report still gets written: a run that broke is a failed verdict with its reason.
        traceback.print_exc()
        return Outcome([Check("scenario_completed", False, f"{type(exc).__name__}: {exc}", "no error")])


def run_scenario(opts: Options) -> int:
    """Plays one scenario and writes its report; returns 0 when the verdict passes, else 1."""
    spec = lookup(opts.name)
    opts = opts.with_defaults(dict(spec.defaults))
    opts.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"servegate-{opts.name}-") as tmp:
        with gateways_for(spec, opts, Path(tmp)) as gateways:
            run = Run(opts, gateways, Path(tmp))
            outcome = _play(spec, run)
            ended = time.time()
        checks = [*outcome.checks, *_exit_checks(run.gateways)]
    doc = build(run, outcome, checks, ended)
    write(opts.out, doc)
    written = plots.render(doc, opts.out)
    print(markdown(doc, written), flush=True)
    return 0 if doc["verdict"]["passed"] else 1


def _exit_checks(gateways: list[GameGateway]) -> list[Check]:
    """A gateway started here must drain and exit 0 on SIGTERM: nothing hung."""
    return [equals("gateway_exit_code", gw.exit_code, 0, "after SIGTERM: drained and exited")
            for gw in gateways if gw.local]
