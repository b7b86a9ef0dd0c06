"""The serving benchmark: starts the echo baseline and the gateway on free ports, loads both side by side
in one run, and writes every figure and its ratio to its baseline as Markdown plus the raw JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from loadtests import benchdoc, figures
from loadtests.cclients import ClientMissing, run_h2load, run_wrk
from loadtests.metadata import discover
from loadtests.payload import grpc_request, infer_path, random_tensors, rest_binary_body, rest_json_body
from loadtests.peers_hook import PeerTarget, peer_api, peer_targets
from loadtests.runner import LoadPlan
from loadtests.scenario import Scenario, execute
from loadtests.services import cpu_seconds, running_all

MODEL = "mlp"
DEFAULT_GATEWAY = ("{python} -m gateway.cli serve --repository {repository} "
                   "--http-port 0 --grpc-port 0 --admin-port 0")
ECHO_AS_GATEWAY = "{python} -m loadtests echo --grpc-port 0 --http-port 0 --onnx {model_file}"
SCENARIOS = ("overhead", "small", "large", "rest", "peers", "drift", "engines")
# The cost sought (a few %) is below this machine's run-to-run noise (an A/A pair of 8 s runs here
# differs by up to 15 %): many short paired rounds, each pair in alternating order, and the median of
# the pairs' ratios.
DRIFT_ROUNDS = 8
DRIFT_RUN_S = 4.0
DRIFT_WARMUP_S = 1.0
# The large-request target divides the gateway's rows/s by ORT's. The host's speed drifts within
# minutes (ORT alone at batch 64 on one thread: p50 291 µs, then 199 µs, under a minute apart), so
# one ORT run set against runs made minutes before or after it moves the ratio by more than its
# margin. Each client's gateway run is paired with an ORT run made next to it, in rounds whose order
# alternates, and the figure is the median of the pairs' ratios.
LARGE_ROUNDS = 5
LARGE_RUN_S = 4.0
LARGE_WARMUP_S = 1.0
# (tool, protocol) of the large-request runs: the Python client over both protocols, h2load, wrk.
LARGE_CLIENTS = (("python", "grpc"), ("python", "rest-binary"), ("h2load", "grpc"), ("wrk", "rest-binary"))


class Target(Protocol):
    """A server under test: the echo, the gateway or a peer."""

    @property
    def name(self) -> str: ...

    @property
    def grpc(self) -> str | None: ...

    @property
    def http(self) -> str | None: ...

    @property
    def pid(self) -> int | None: ...


@dataclass
class BenchSettings:
    duration_s: float
    warmup_s: float
    workers: int
    ort_threads: int
    c_clients: bool
    scenarios: tuple[str, ...]
    gateway_cmd: str
    provider: str = "cpu"
    small_concurrency: int = 64
    large_concurrency: int = 16
    large_rows: int = 64
    h2load_connections: int = 1
    wrk_threads: int = 1


@dataclass
class BenchRun:
    """Everything measured in one benchmark run, keyed by run name."""

    settings: BenchSettings
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    commands: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, tool: str, server: str, result: dict[str, Any],
            server_cores: float | None = None, server_cpu_s: float | None = None,
            rows: int | None = None) -> None:
        """Records a run; C clients count requests only, so theirs carry `rows`, the rows per request."""
        self.runs[name] = {"tool": tool, "server": server, "result": result, "server_cores": server_cores}
        if server_cpu_s is not None:
            self.runs[name]["server_cpu_s"] = server_cpu_s
        if rows is not None:
            self.runs[name]["rows"] = rows
        print(f"  {name}: {figures.headline(self.runs[name])}", flush=True)

    def measure(self, name: str, tool: str, server: Target, run: Callable[[], dict[str, Any]],
                rows: int | None = None) -> None:
        """Runs one load and records it with the server's CPU use over the run (cores, warm-up included)."""
        before, start = cpu_seconds(server.pid), time.monotonic()
        result = run()
        after, wall = cpu_seconds(server.pid), time.monotonic() - start
        used = None if before is None or after is None else after - before
        cores = None if used is None or wall <= 0 else used / wall
        self.add(name, tool, server.name, result, cores, used, rows)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="serving benchmark: gateway vs echo and ORT baselines, side by side")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"), help="Markdown report")
    p.add_argument("--json", type=Path, help="raw results (default: --out with .json)")
    p.add_argument("--quick", action="store_true", help="short runs for a smoke test")
    p.add_argument("--duration", type=float, help="seconds per run (default 10, quick 2)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per run (default 2, quick 0.5)")
    p.add_argument("--workers", type=int, default=1, help="Python load generator processes")
    p.add_argument("--ort-threads", type=int, default=default_threads(),
                   help="ORT intra-op threads for the gateway's model config, the ORT baseline and the peers "
                        "(default: cores - 1, leaving one to the event loop)")
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu",
                   help="execution provider of the gateway's model config and of the ORT baseline")
    p.add_argument("--gateway-cmd", default=DEFAULT_GATEWAY,
                   help="command that serves the gateway; {python}, {repository}, {model_file} are filled in")
    p.add_argument("--echo-as-gateway", action="store_true",
                   help="stand the echo server in for the gateway (exercises the runner end to end)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)}")
    p.add_argument("--no-c-clients", action="store_true", help="skip wrk and h2load")


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) - 1)


def settings_from(args: argparse.Namespace) -> BenchSettings:
    chosen = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; choose from {SCENARIOS}")
    return BenchSettings(
        duration_s=args.duration or (2.0 if args.quick else 10.0),
        warmup_s=args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0),
        workers=args.workers, ort_threads=args.ort_threads, c_clients=not args.no_c_clients,
        scenarios=chosen, gateway_cmd=ECHO_AS_GATEWAY if args.echo_as_gateway else args.gateway_cmd,
        provider=args.provider,
    )


def command(args: argparse.Namespace) -> int:
    """`python -m loadtests bench`: runs everything and writes the report."""
    st = settings_from(args)
    json_path = args.json or args.out.with_suffix(".json")
    with tempfile.TemporaryDirectory(prefix="loadtests-bench-") as tmp:
        model_file = build_model(Path(tmp) / "repository", st.ort_threads, st.provider)
        bench = run_all(st, Path(tmp) / "repository", model_file)
    invocation = ["python", "-m", "loadtests", *getattr(args, "argv", ["bench"])]
    settings = {**settings_dict(st), "server_commands": bench.commands}
    doc = benchdoc.document(settings, bench.runs, bench.skipped, figures.compute(bench.runs, settings), invocation)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=1))
    args.out.write_text(benchdoc.markdown(doc, json_path.name, fragments(args.out.parent / "bench")))
    print(f"wrote {args.out} and {json_path}")
    return 0


def fragments(directory: Path) -> list[tuple[str, str]]:
    """Sections that other benchmarks (kernels, scale-out, rollout scenarios) keep in `docs/bench/`."""
    if not directory.is_dir():
        return []
    return [(f"{directory.name}/{f.name}", f.read_text()) for f in sorted(directory.glob("*.md"))]


def build_model(repository: Path, intra_op_threads: int, provider: str = "cpu") -> Path:
    """The MLP in a Triton-layout repository, its config pinning ORT's intra-op threads and the execution
    provider for a fair match with the in-process baseline."""
    from gateway.demo.models import build_mlp

    model_file = build_mlp(repository, MODEL, "1")
    (repository / MODEL / "config.yaml").write_text(f"intra_op_threads: {intra_op_threads}\nprovider: {provider}\n")
    return model_file


def gateway_command(template: str, repository: Path, model_file: Path) -> list[str]:
    filled = template.format(python=shlex.quote(sys.executable), repository=shlex.quote(str(repository)),
                             model_file=shlex.quote(str(model_file)))
    return shlex.split(filled)


def run_all(st: BenchSettings, repository: Path, model_file: Path) -> BenchRun:
    bench = BenchRun(st)
    echo_cmd = gateway_command(ECHO_AS_GATEWAY, repository, model_file)
    gateway_cmd = gateway_command(st.gateway_cmd, repository, model_file)
    bench.commands.update(echo=echo_cmd, gateway=gateway_cmd)
    with running_all([("echo", echo_cmd), ("gateway", gateway_cmd)]) as (echo, gateway):
        steps: dict[str, Callable[[], None]] = {
            "overhead": lambda: overhead(bench, echo, gateway, model_file),
            "small": lambda: small(bench, echo, gateway),
            "large": lambda: large(bench, echo, gateway, model_file),
            "rest": lambda: rest(bench, echo, gateway),
            "peers": lambda: peers(bench, model_file),
            "drift": lambda: drift(bench, repository),
            "engines": lambda: engines(bench, repository, model_file),
        }
        for name in st.scenarios:
            print(f"{name}:", flush=True)
            steps[name]()
    return bench


def _py(bench: BenchRun, server: Target, protocol: str, concurrency: int, rows: int, suffix: str = "",
        duration_s: float | None = None, warmup_s: float | None = None) -> None:
    st = bench.settings
    name = f"{server.name}/python/{protocol}/c{concurrency}/r{rows}{suffix}"
    sc = Scenario(protocol=protocol, model=MODEL, grpc_target=server.grpc, http_target=server.http, rows=rows,
                  label=name)
    plan = LoadPlan(duration_s=duration_s or st.duration_s,
                    warmup_s=st.warmup_s if warmup_s is None else warmup_s, concurrency=concurrency,
                    workers=min(st.workers, concurrency))
    bench.measure(name, "python", server, lambda: execute(sc, plan))


def _ort(bench: BenchRun, model_file: Path, rows: int, suffix: str = "", duration_s: float | None = None,
         warmup_s: float | None = None) -> None:
    import subprocess

    st = bench.settings
    duration = duration_s or st.duration_s
    warmup = st.warmup_s if warmup_s is None else warmup_s
    cmd = [sys.executable, "-m", "loadtests", "ort", "--onnx", str(model_file), "--rows", str(rows),
           "--duration", f"{duration:g}", "--warmup", f"{warmup:g}",
           "--intra-threads", str(st.ort_threads), "--provider", st.provider]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ORT baseline failed: {proc.stderr.strip()[-500:]}")
    bench.add(f"ort/b{rows}{suffix}", "ort", "onnxruntime", json.loads(proc.stdout))


def _grpc_bytes(server: Target, rows: int) -> bytes:
    sig = discover(server.grpc, None, MODEL)
    return grpc_request(MODEL, "", random_tensors(sig.inputs, rows))


def _h2load(bench: BenchRun, server: Target, concurrency: int, request: bytes, *, rows: int = 1,
            suffix: str = "", duration_s: float | None = None, warmup_s: float | None = None) -> None:
    """h2load posting `request` (which holds `rows` rows) on `concurrency` streams over few connections."""
    st = bench.settings
    conns = min(st.h2load_connections, concurrency)
    def run() -> dict[str, Any]:
        return run_h2load(server.grpc or "", request, streams=max(1, concurrency // conns), connections=conns,
                          duration_s=duration_s or st.duration_s,
                          warmup_s=st.warmup_s if warmup_s is None else warmup_s).to_dict()
    name = f"{server.name}/h2load/grpc/c{concurrency}/r{rows}{suffix}"
    try:
        bench.measure(name, "h2load", server, run, rows)
    except ClientMissing as exc:
        bench.skipped.append(str(exc))


def _wrk(bench: BenchRun, server: Target, protocol: str, concurrency: int, rows: int = 1, suffix: str = "",
         duration_s: float | None = None) -> None:
    """wrk posting one `rows`-row REST body (binary or JSON) on `concurrency` connections."""
    st = bench.settings
    sig = discover(None, server.http, MODEL)
    tensors = random_tensors(sig.inputs, rows)
    body = rest_binary_body(tensors) if protocol == "rest-binary" else rest_json_body(tensors)
    def run() -> dict[str, Any]:
        return run_wrk(server.http or "", infer_path(MODEL, ""), body, connections=concurrency,
                       duration_s=duration_s or st.duration_s, threads=st.wrk_threads).to_dict()
    try:
        bench.measure(f"{server.name}/wrk/{protocol}/c{concurrency}/r{rows}{suffix}", "wrk", server, run, rows)
    except ClientMissing as exc:
        bench.skipped.append(str(exc))


def overhead(bench: BenchRun, echo: Target, gateway: Target, model_file: Path) -> None:
    """Single-row MLP, one caller, gRPC: gateway p50 against echo p50 + in-process ORT p50."""
    for server in (echo, gateway):
        _py(bench, server, "grpc", 1, 1)
    _ort(bench, model_file, 1)


def small(bench: BenchRun, echo: Target, gateway: Target) -> None:
    """Single-row MLP, many callers, gRPC: req/s against echo, with the Python client and h2load."""
    conc = bench.settings.small_concurrency
    for server in (echo, gateway):
        _py(bench, server, "grpc", conc, 1)
    if bench.settings.c_clients:
        request = _grpc_bytes(echo, 1)
        for server in (echo, gateway):
            _h2load(bench, server, conc, request)


def large(bench: BenchRun, echo: Target, gateway: Target, model_file: Path) -> None:
    """64-row requests, 16 callers: gateway rows/s against in-process ORT at batch 64, over gRPC and REST
    binary, with the Python client and with h2load / wrk (the Python runs first warm both paths up).
    Full-length runs against the echo and the gateway, one ORT run, then LARGE_ROUNDS rounds in which
    each client's gateway run sits next to an ORT run of its own (see LARGE_ROUNDS)."""
    st = bench.settings
    conc, rows = st.large_concurrency, st.large_rows
    for protocol in ("grpc", "rest-binary"):
        for server in (echo, gateway):
            _py(bench, server, protocol, conc, rows)
    request = _grpc_bytes(echo, rows)
    if st.c_clients:
        for server in (echo, gateway):
            _h2load(bench, server, conc, request, rows=rows)
        for server in (echo, gateway):
            _wrk(bench, server, "rest-binary", conc, rows)
    _ort(bench, model_file, rows)
    quick = st.duration_s < LARGE_RUN_S
    rounds, run_s = (1, st.duration_s) if quick else (LARGE_ROUNDS, LARGE_RUN_S)
    warmup_s = min(st.warmup_s, LARGE_WARMUP_S)
    clients = [(tool, protocol) for tool, protocol in LARGE_CLIENTS if tool == "python" or st.c_clients]
    for round_ in range(rounds):
        for tool, protocol in clients:
            suffix = f"#{round_}"
            def gateway_run(tool: str = tool, protocol: str = protocol, suffix: str = suffix) -> None:
                if tool == "python":
                    _py(bench, gateway, protocol, conc, rows, suffix=suffix, duration_s=run_s, warmup_s=warmup_s)
                elif tool == "h2load":
                    _h2load(bench, gateway, conc, request, rows=rows, suffix=suffix, duration_s=run_s,
                            warmup_s=warmup_s)
                else:  # wrk has no warm-up; the gateway is warm from the runs before
                    _wrk(bench, gateway, protocol, conc, rows, suffix=suffix, duration_s=run_s)
            def ort_run(tool: str = tool, protocol: str = protocol, suffix: str = suffix) -> None:
                _ort(bench, model_file, rows, suffix=f"#{tool}/{protocol}{suffix}", duration_s=run_s,
                     warmup_s=warmup_s)
            steps = (ort_run, gateway_run) if round_ % 2 == 0 else (gateway_run, ort_run)
            for step in steps:
                step()


def rest(bench: BenchRun, echo: Target, gateway: Target) -> None:
    """The small-request load over REST binary and REST JSON, against the HTTP echo."""
    conc = bench.settings.small_concurrency
    for protocol in ("rest-binary", "rest-json"):
        for server in (echo, gateway):
            _py(bench, server, protocol, conc, 1)
        if bench.settings.c_clients:
            for server in (echo, gateway):
                _wrk(bench, server, protocol, conc)


def peers(bench: BenchRun, model_file: Path) -> None:
    """The small-request loads against each peer server that loadtests/peers can start."""
    api = peer_api()
    if isinstance(api, str):
        bench.skipped.append(f"peers: {api}")
        print(f"  skipped: {api}", flush=True)
        return
    for name in api.names:
        try:
            with peer_targets(api, name, model_file, MODEL, bench.settings.ort_threads) as server:
                _peer_runs(bench, server)
        except Exception as exc:  # one peer failing must not lose the other figures
            bench.skipped.append(f"peer {name}: {type(exc).__name__}: {exc}")
            print(f"  peer {name} skipped: {exc}", flush=True)


def _peer_runs(bench: BenchRun, server: PeerTarget) -> None:
    conc = bench.settings.small_concurrency
    for protocol in server.protocols:
        _py(bench, server, protocol, conc, 1)
    if not bench.settings.c_clients:
        return
    if "grpc" in server.protocols:
        _h2load(bench, server, conc, _grpc_bytes(server, 1))
    for protocol in ("rest-binary", "rest-json"):
        if protocol in server.protocols:
            _wrk(bench, server, protocol, conc)


def engines(bench: BenchRun, repository: Path, model_file: Path) -> None:
    """The gateway on each gRPC engine, side by side: native (the default) and grpcio (grpc.aio). The
    single-caller, small and large gRPC loads run against one, then the other, with both serving."""
    template = bench.settings.gateway_cmd
    if template == ECHO_AS_GATEWAY:
        bench.skipped.append("engines: the echo stands in for the gateway, which has no engines to compare")
        return
    commands = [(f"engine-{name}", gateway_command(f"{template} --grpc-engine {name}", repository, model_file))
                for name in ("native", "grpcio")]
    bench.commands.update(dict(commands))
    st = bench.settings
    with running_all(commands) as servers:
        for server in servers:
            _py(bench, server, "grpc", 1, 1)
        for server in servers:
            _py(bench, server, "grpc", st.small_concurrency, 1)
        if st.c_clients:
            small_request, large_request = _grpc_bytes(servers[0], 1), _grpc_bytes(servers[0], st.large_rows)
            for server in servers:
                _h2load(bench, server, st.small_concurrency, small_request)
            for server in servers:
                _h2load(bench, server, st.large_concurrency, large_request, rows=st.large_rows)


def drift(bench: BenchRun, repository: Path) -> None:
    """The same gateway with drift binning on and off (a copy of the repository with `drift: false`),
    loaded in turn: single-row requests with h2load, 64-row requests with the Python client, in
    DRIFT_ROUNDS pairs of short runs whose order alternates."""
    import shutil

    off = repository.parent / "repository-drift-off"
    if not off.exists():
        shutil.copytree(repository, off)
        config = off / MODEL / "config.yaml"
        config.write_text(config.read_text() + "drift: false\n")
    template = bench.settings.gateway_cmd
    on_cmd = gateway_command(template, repository, repository / MODEL / "1" / "model.onnx")
    off_cmd = gateway_command(template, off, off / MODEL / "1" / "model.onnx")
    bench.commands.update({"gateway-drift-on": on_cmd, "gateway-drift-off": off_cmd})
    st = bench.settings
    quick = st.duration_s < DRIFT_RUN_S
    rounds, run_s = (1, st.duration_s) if quick else (DRIFT_ROUNDS, DRIFT_RUN_S)
    warmup_s = min(st.warmup_s, DRIFT_WARMUP_S)
    with running_all([("drift-on", on_cmd), ("drift-off", off_cmd)]) as (on, off_server):
        request = _grpc_bytes(on, 1)
        for server in (on, off_server):  # both past first-use costs (the live reference) before any pair
            _py(bench, server, "grpc", st.large_concurrency, st.large_rows, suffix="#warm", duration_s=run_s,
                warmup_s=warmup_s)
        for round_ in range(rounds):
            order = (on, off_server) if round_ % 2 == 0 else (off_server, on)
            if st.c_clients:
                for server in order:
                    with _drift_busy(bench, server, f"{server.name}/h2load/grpc/c{st.small_concurrency}/r1#{round_}"):
                        _h2load(bench, server, st.small_concurrency, request, suffix=f"#{round_}",
                                duration_s=run_s, warmup_s=warmup_s)
            for server in order:
                name = f"{server.name}/python/grpc/c{st.large_concurrency}/r{st.large_rows}#{round_}"
                with _drift_busy(bench, server, name):
                    _py(bench, server, "grpc", st.large_concurrency, st.large_rows, suffix=f"#{round_}",
                        duration_s=run_s, warmup_s=warmup_s)


@contextlib.contextmanager
def _drift_busy(bench: BenchRun, server: Target, name: str) -> Iterator[None]:
    """Adds to run `name` the seconds the gateway's drift binning took during it, from its metrics."""
    admin = getattr(server, "endpoints", {}).get("admin")
    before = _scrape_drift_busy(admin) if admin else None
    yield
    after = _scrape_drift_busy(admin) if admin else None
    if before is not None and after is not None and name in bench.runs:
        bench.runs[name]["drift_busy_s"] = after - before


def _scrape_drift_busy(admin: str) -> float | None:
    """Sum of `servegate_drift_busy_seconds_total` on a gateway's metrics endpoint."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("servegate_drift_busy_seconds_total{"))


def settings_dict(st: BenchSettings) -> dict[str, Any]:
    return asdict(st)
