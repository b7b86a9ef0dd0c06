"""Command line: `run` (the load generator), `echo` (baseline servers), `bench` (the serving benchmark),
`scenario` (game days with a verdict) and `report` (re-render a scenario's plots and summary).

`main(argv)` is also what `servegate loadtest ...` calls; it returns an exit code and never exits itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from loadtests.clients import PROTOCOLS

EXIT_USAGE = 2
EXIT_FAILED = 1


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return name.strip(), value


def _run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="drive an Open Inference Protocol server with load")
    p.add_argument("--grpc", metavar="HOST:PORT", help="gRPC endpoint")
    p.add_argument("--http", metavar="HOST:PORT", help="HTTP endpoint")
    p.add_argument("--protocol", choices=PROTOCOLS, help="default: grpc if --grpc is given, else rest-binary")
    p.add_argument("--model", required=True)
    p.add_argument("--model-version", default="", help="default: the server chooses")
    p.add_argument("--rows", type=int, default=1, help="rows per request (replaces -1 dimensions)")
    p.add_argument("--inputs", type=Path, help=".npz file whose arrays are the inputs, by name")
    p.add_argument("--header", type=_header, action="append", default=[], metavar="KEY=VALUE",
                   help="extra request header / gRPC metadata (repeatable)")
    p.add_argument("--sticky-keys", type=int, default=0, metavar="N",
                   help="add a per-request user key drawn from N users")
    p.add_argument("--sticky-header", default="x-user-id")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--concurrency", type=int, default=0, help="closed loop with N callers")
    mode.add_argument("--rate", type=float, default=0.0, help="open loop at R requests/s")
    p.add_argument("--max-in-flight", type=int, default=256, help="open loop: in-flight cap (all workers)")
    p.add_argument("--late-after", type=float, default=0.002, metavar="S",
                   help="open loop: a send this much behind schedule counts as late")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (excluded)")
    p.add_argument("--max-requests", type=int, default=0, help="stop after N requests (0: duration only)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    p.add_argument("--check-every", type=int, default=0, metavar="N",
                   help="parse and check every N-th reply per caller (the first always)")
    p.add_argument("--connections", type=int, default=1, help="gRPC channels per worker")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--label", default="")
    p.add_argument("--out", type=Path, help="write the JSON result here")


def _echo_parser(sub: Any) -> None:
    p = sub.add_parser("echo", help="baseline echo servers (gRPC and HTTP), no model")
    p.add_argument("--grpc-port", type=int, help="0 picks a free port; omit to leave gRPC off")
    p.add_argument("--http-port", type=int, help="0 picks a free port; omit to leave HTTP off")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model", default="mlp")
    p.add_argument("--model-version", default="1")
    p.add_argument("--shape", action="append", default=[], metavar="NAME:DTYPE:DIMS",
                   help="an input, e.g. input:FP32:-1,784 (repeatable; default mimics mlp)")
    p.add_argument("--onnx", help="declare the inputs of this ONNX file instead")
    p.add_argument("--delay-ms", type=float, default=0.0, help="added service time per inference")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")


def _ort_parser(sub: Any) -> None:
    p = sub.add_parser("ort", help="in-process ONNX Runtime latency and throughput (a baseline)")
    p.add_argument("--onnx", required=True)
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--intra-threads", type=int, default=0, help="0: ONNX Runtime's default")
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: the CUDA execution provider (with CPU for the operators CUDA lacks)")
    p.add_argument("--out", type=Path)


def build_parser() -> argparse.ArgumentParser:
    from loadtests import bench

    parser = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _echo_parser(sub)
    _ort_parser(sub)
    bench.add_parser(sub)
    _scenario_parsers(sub)
    return parser


def _scenario_parsers(sub: Any) -> None:
    from loadtests.scenarios.options import add_arguments
    from loadtests.scenarios.registry import SCENARIOS

    p = sub.add_parser("scenario", help="a load scenario with a pass/fail verdict, report.json and plots")
    p.add_argument("name", choices=sorted(SCENARIOS), metavar="NAME",
                   help="; ".join(f"{s.name}: {s.summary}" for s in SCENARIOS.values()).replace("%", "%%"))
    add_arguments(p)
    r = sub.add_parser("report", help="re-render a scenario report's plots and print its summary")
    r.add_argument("dir", type=Path, help="a directory holding report.json")


def _cmd_scenario(args: argparse.Namespace) -> int:
    from loadtests.scenarios.options import from_args
    from loadtests.scenarios.registry import run_scenario

    return run_scenario(from_args(args.name, args))


def _cmd_report(args: argparse.Namespace) -> int:
    from loadtests import plots
    from loadtests.scenarios.document import markdown, read

    doc = read(args.dir)
    out = args.dir if args.dir.is_dir() else args.dir.parent
    print(markdown(doc, plots.render(doc, out)))
    return 0 if doc["verdict"]["passed"] else 1


def _cmd_run(args: argparse.Namespace) -> int:
    from loadtests.report import summary
    from loadtests.runner import LoadPlan
    from loadtests.scenario import Scenario, execute

    protocol = args.protocol or ("grpc" if args.grpc else "rest-binary")
    sc = Scenario(protocol=protocol, model=args.model, grpc_target=args.grpc, http_target=args.http,
                  version=args.model_version, rows=args.rows, inputs_file=args.inputs,
                  headers=tuple(args.header), sticky_keys=args.sticky_keys, sticky_header=args.sticky_header,
                  timeout_s=args.timeout, check_every=args.check_every, connections=args.connections,
                  label=args.label)
    plan = LoadPlan(duration_s=args.duration, warmup_s=args.warmup, concurrency=args.concurrency,
                    rate=args.rate, max_in_flight=args.max_in_flight, workers=args.workers,
                    max_requests=args.max_requests, late_after_s=args.late_after, event_loop=args.loop)
    result = execute(sc, plan)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(summary(result))
    return 0


def _cmd_echo(args: argparse.Namespace) -> int:
    from loadtests import baseline

    if args.grpc_port is None and args.http_port is None:
        raise ValueError("give --grpc-port and/or --http-port")
    model = baseline.model_from_flags(args.model, args.model_version, args.shape, args.onnx, args.delay_ms)
    return baseline.run(model, args.grpc_port, args.http_port, args.host, args.loop)


def _cmd_ort(args: argparse.Namespace) -> int:
    from loadtests import ortbench

    result = ortbench.measure(args.onnx, rows=args.rows, duration_s=args.duration, warmup_s=args.warmup,
                              intra_threads=args.intra_threads, providers=ortbench.PROVIDERS[args.provider])
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m loadtests` and `servegate loadtest`; returns the exit code."""
    from loadtests import bench

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error: report the code, leave exiting to the caller
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"run": _cmd_run, "echo": _cmd_echo, "ort": _cmd_ort, "bench": bench.command,
                "scenario": _cmd_scenario, "report": _cmd_report}
    try:
        return commands[args.command](args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
