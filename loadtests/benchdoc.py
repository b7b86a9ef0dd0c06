"""The benchmark report: the raw JSON document (machine facts, settings, runs, figures) and its Markdown."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from loadtests import figures

PACKAGES = ("grpcio", "protobuf", "numpy", "onnxruntime-gpu", "onnxruntime", "uvloop", "httptools", "orjson")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _tool_version(binary: str, flag: str) -> str | None:
    path = shutil.which(binary)
    if path is None:
        return None
    proc = subprocess.run([path, flag], capture_output=True, text=True, timeout=10, check=False)
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def machine() -> dict[str, Any]:
    """Facts that decide whether two reports can be compared."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import psutil

        memory = int(psutil.virtual_memory().total)
    except ImportError:
        memory = 0
    return {
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": memory, "platform": platform.platform(), "python": platform.python_version(),
        "load_average": list(os.getloadavg()), "packages": versions,
        "wrk": _tool_version("wrk", "-v"), "h2load": _tool_version("h2load", "--version"),
    }


def document(settings: Mapping[str, Any], runs: Mapping[str, Any], skipped: Sequence[str],
             figs: Sequence[Mapping[str, Any]], invocation: Sequence[str]) -> dict[str, Any]:
    return {
        "schema": "servegate.bench/1", "command": shlex.join(invocation),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "settings": dict(settings), "figures": list(figs), "runs": dict(runs), "skipped": list(skipped),
    }


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        return f"{value * 1e3:.3f} ms"
    return f"{value:,.1f} {unit}"


def _met(fig: Mapping[str, Any]) -> str:
    return {True: "yes", False: "**no**", None: "-"}[fig["met"]]


def _figure_rows(figs: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = ["| figure | measured | servegate | baseline | ratio | target | met | errors |",
            "|---|---|---|---|---|---|---|---|"]
    for f in figs:
        ratio = ("n/a" if f["ratio"] is None else f"{f['ratio']:.1%}" if f.get("share") else f"{f['ratio']:.2f}x")
        rows.append(f"| {f['name']} | {f['what']} | {_num(f['value'], f['unit'])} | "
                    f"{_num(f['baseline'], f['unit'])} | {ratio} | {f['target'] or '-'} | {_met(f)} | {f['errors']} |")
    return rows


def _run_rows(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = ["| run | req/s | rows/s | p50 | p99 | p99.9 | max | errors | server CPU/req | client busy | "
            "client CPU/req |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        cells = [figures.latency(run, k) for k in ("p50", "p99", "p99.9", "max")]
        lat = " | ".join(_num(c, "s") for c in cells)
        cpu = figures.cpu_us_per_request(run)
        busy = (run["result"].get("client") or {}).get("busy") if run["tool"] == "python" else None
        own = figures.client_cpu_us_per_request(run)
        rows.append(f"| {name} | {figures.rps(run):,.1f} | {figures.rows_per_s(run):,.1f} | {lat} | "
                    f"{figures.errors(run)} | {'-' if cpu is None else f'{cpu:,.0f} µs'} | "
                    f"{'-' if busy is None else f'{busy:.0%}'} | {'-' if own is None else f'{own:,.0f} µs'} |")
    return rows


def _machine_rows(m: Mapping[str, Any]) -> list[str]:
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    load = ", ".join(f"{x:.2f}" for x in m["load_average"])
    return [f"- CPU: {m['cpu_model']}, {m['cpu_count']} cores ({m['cpus_usable']} usable), "
            f"{m['memory_bytes'] / 2**30:.1f} GiB memory", f"- OS: {m['platform']}; Python {m['python']}",
            f"- packages: {pkgs}", f"- wrk: {m['wrk'] or 'not installed'}; h2load: {m['h2load'] or 'not installed'}",
            f"- load average at the end (1, 5, 15 min): {load}"]


NOTES = """\
- Every ratio compares two measurements taken in this one run, on this machine, with the same client.
- The load generator, the servers and the C clients share the machine's cores, so the figures are
  only comparable with each other, not with other machines.
- h2load sees HTTP status only, not grpc-status in trailers; the Python client's sampled reply checks
  cover correctness. h2load reports no percentiles, so its p50 column shows the mean.
- wrk counts non-2xx replies in errors; its latency is that of a closed loop (no coordinated-omission
  correction). The Python client's latency histogram holds successful requests only.
- The ORT baseline runs the model back to back from one caller in its own process, with
  `intra_op_num_threads` as in the settings.
- "server CPU/req" is the server process tree's CPU time over the whole run (warm-up included)
  divided by its request rate; "client busy" is the Python generator's CPU time over its wall time
  per worker (near or above 100% means the client, not the server, set the pace); "client CPU/req"
  is a C client's own CPU time over its run (from the kernel's accounting of the finished process)
  divided the same way. The client runs on the same cores, so what it costs is CPU the server lacks.
- wrk runs whole seconds and has no warm-up of its own; the servers are warm from the runs before it.
- The large-request target (gateway rows/s >= 0.8x in-process ORT at batch 64) has one row per client
  and protocol measured, each judged on its own, the worst included: `large` (Python client, gRPC),
  `large-h2load` (gRPC), `large-rest-binary-wrk` and `large-rest-binary-python`. The Python client
  shares the cores with the server, so it measures itself too; the C clients cost far less. Each
  `-vs-echo` row divides by the echo under the same client and protocol, the most that client and
  transport reach here. wrk and h2load count requests only: their rows/s is req/s times rows per request.
- Each large-request target figure is the median of 5 paired rounds (1 with `--quick`): in each
  round, that client's 4 s gateway run and a 4 s ORT run (its own process) follow each other, in
  alternating order. The host's speed drifts within minutes (ORT alone at batch 64 on one thread
  took a p50 of 291 µs, then 199 µs, under a minute apart), so a single ORT run set against gateway
  runs made minutes away moves the ratio by more than the target's margin. The figure's value and
  baseline columns are the middle run of each side; its ratio is the middle of the rounds' own
  ratios. The `-vs-echo` rows and the run table's full-length `gateway/…/r64` runs are single 10 s
  runs, as are `ort/b64` and the other figures.
- Engines: two more gateways, one per gRPC engine (`--grpc-engine native`, the default, and
  `--grpc-engine grpcio`, grpc.aio), serve side by side, and the single-caller, small and large gRPC
  loads run against one, then the other. Every other gateway figure is the native engine.
- Drift on/off: the same gateway with `drift: false` in its model config, in 8 pairs of 4 s runs
  whose order alternates; each figure is the median of the pairs' ratios (two 8 s runs of one server
  differ by up to 15 % here, so a single pair cannot resolve a few percent). `drift-share` reads the
  time the drift-on gateway spent binning (`servegate_drift_busy_seconds_total`) over its process CPU
  time in the same run: the cost itself, without the noise of the rates."""


def markdown(doc: Mapping[str, Any], json_name: str, fragments: Sequence[tuple[str, str]] = ()) -> str:
    """The report; `fragments` are (file name, Markdown) sections other benchmarks wrote beside it."""
    settings = doc["settings"]
    lines = [
        "# servegate benchmarks", "",
        f"Generated by `{doc['command']}` at {doc['finished_at']}. Raw results: `{json_name}`.", "",
        "## Machine", "", *_machine_rows(doc["machine"]), "",
        "## Settings", "",
        f"- {settings['duration_s']:g} s measured after {settings['warmup_s']:g} s warm-up per run; "
        f"{settings['workers']} generator process(es); scenarios: {', '.join(settings['scenarios'])}",
        f"- ONNX Runtime intra-op threads: {settings['ort_threads']} (the gateway's model config, the ORT "
        "baseline and the peers all get this); execution provider of the gateway and the ORT baseline: "
        f"{settings.get('provider', 'cpu')}",
        *[f"- {name}: `{shlex.join(cmd)}`" for name, cmd in settings.get("server_commands", {}).items()], "",
        "## Figures", "", *_figure_rows(doc["figures"]), "",
        "## Runs", "", *_run_rows(doc["runs"]), "",
    ]
    if doc["skipped"]:
        lines += ["## Skipped", "", *[f"- {s}" for s in doc["skipped"]], ""]
    lines += ["## Method", "", NOTES, ""]
    for name, text in fragments:
        lines += [text.rstrip(), "", f"_(section kept in `{name}` beside this file; its own command is given in it)_", ""]
    return "\n".join(lines)
