"""The `servegate` command: serve, demo, loadtest and the admin verbs; the only code that exits the process."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway import eventloop, workers
from gateway.cli_admin import register_admin_commands
from gateway.cli_state import register_state_commands
from gateway.settings import SETTINGS, Settings, SettingsError, load

log = logging.getLogger("servegate")

Command = Callable[[argparse.Namespace], int]
# What `servegate controller` reads: the store, its lease and pace, and the health / metrics listener.
CONTROLLER_SETTINGS = ("store", "host", "admin_port", "controller_interval", "lease_ttl", "log_level")


def _add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        flag = f"--{name.replace('_', '-')}"
        if name in ("require_auth",):
            parser.add_argument(flag, dest=name, action="store_const", const="true", default=None,
                                help=f"also settable as SERVEGATE_{name.upper()}")
        else:
            parser.add_argument(flag, dest=name, default=None, help=f"(env SERVEGATE_{name.upper()})")
    parser.add_argument("--config", type=Path, default=None, help="YAML settings file")


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name in SETTINGS}
    return load(flags, os.environ, getattr(args, "config", None))


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _serve(settings: Settings, ready: Callable[[str], None] | None = None) -> None:
    from gateway.app import Gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A worker of `--workers N` also stops when its supervisor is gone.
    watcher = asyncio.ensure_future(workers.watch_parent(stop)) if workers.is_worker() else None
    gateway = Gateway(settings)
    try:
        endpoints = await gateway.start()
        _settle_heap()
        print(endpoints.line(), flush=True)
        if ready is not None:
            ready(endpoints.line())
        await stop.wait()
        log.info("stopping: draining in-flight requests (up to %.0fs)", settings.server.drain_seconds)
    finally:
        await gateway.stop()
        if watcher is not None:
            stop.set()
            await watcher


def _settle_heap() -> None:
    """Moves what start-up built (modules, sessions, drift profiles) out of the cyclic collector's full
    passes: it lives as long as the process, and scanning it stalled the event loop for 70-90 ms at
    every full collection under load (a process's concern, so here and not in the Gateway, which tests
    start many times in one process)."""
    gc.collect()
    gc.freeze()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    _configure_logging(settings.log_level)
    if settings.server.workers > 1 and not workers.is_worker():
        return workers.Supervisor(settings, getattr(args, "config", None)).run()
    eventloop.run(_serve(settings))
    return 0


async def _control(settings: Settings) -> None:
    from gateway.controller_process import ControllerProcess

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    process = ControllerProcess(settings)
    try:
        print(await process.start(), flush=True)
        await stop.wait()
    finally:
        await process.stop()


def cmd_controller(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    _configure_logging(settings.log_level)
    eventloop.run(_control(settings))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo.run import DemoOptions
    from gateway.demo.run import main as run_demo

    _configure_logging(os.environ.get("SERVEGATE_LOG_LEVEL", "warning"))
    ports = (args.http_port, args.grpc_port, args.admin_port)
    return run_demo(DemoOptions(bad_candidate=args.bad_candidate, window_s=args.window, rate=args.rate,
                                workdir=args.dir, ports=ports, tail_s=args.tail))


def cmd_loadtest(args: argparse.Namespace) -> int:
    from loadtests.cli import main as loadtest_main

    return loadtest_main(list(args.rest))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="servegate", description="Model serving gateway with rollout control.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a model repository over gRPC and REST")
    _add_setting_flags(serve, list(SETTINGS))
    serve.set_defaults(func=cmd_serve)
    controller = sub.add_parser("controller", help="run only the promotion controller on a shared store")
    _add_setting_flags(controller, CONTROLLER_SETTINGS)
    controller.set_defaults(func=cmd_controller)
    demo = sub.add_parser("demo", help="serve demo models and run a live canary rollout (or a rollback)")
    demo.add_argument("--bad-candidate", action="store_true",
                      help="the candidate turns bad partway: watch the automatic rollback")
    demo.add_argument("--window", type=float, default=5.0, help="analysis window per step, seconds")
    demo.add_argument("--rate", type=float, default=200.0, help="requests/s from the load generator")
    demo.add_argument("--dir", type=Path, default=None, help="keep models and state here (default: a temp dir)")
    demo.add_argument("--tail", type=float, default=20.0, help="seconds of traffic shown after the outcome")
    demo.add_argument("--http-port", type=int, default=8000)
    demo.add_argument("--grpc-port", type=int, default=8001)
    demo.add_argument("--admin-port", type=int, default=8002)
    demo.set_defaults(func=cmd_demo)
    loadtest = sub.add_parser("loadtest", help="the bundled load generator: run, scenario, report, bench, echo",
                              add_help=False)
    loadtest.add_argument("rest", nargs=argparse.REMAINDER)
    loadtest.set_defaults(func=cmd_loadtest)
    register_admin_commands(sub)
    register_state_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["loadtest"]:  # the load generator parses its own arguments (help included)
        from loadtests.cli import main as loadtest_main

        return loadtest_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        func: Command = args.func
        return func(args)
    except SettingsError as exc:
        print(f"servegate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
