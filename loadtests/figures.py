"""Benchmark figures: each gateway measurement as a ratio to the baseline measured in the same run.

Works on the runs dictionary the benchmark builds (name -> tool, server, result), whatever the tool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from loadtests import cclients

Runs = Mapping[str, Mapping[str, Any]]


def rps(run: Mapping[str, Any]) -> float:
    result = run["result"]
    if run["tool"] == "python":
        return float(result["throughput"]["requests_per_s"])
    if run["tool"] == "ort":
        return float(result["runs_per_s"])
    return float(result["requests_per_s"])


def rows_per_s(run: Mapping[str, Any]) -> float:
    """Rows per second; C clients count requests only, so theirs is req/s times the run's rows per request
    (recorded as `rows`; runs recorded before it had single-row requests only)."""
    result = run["result"]
    if run["tool"] in ("python", "ort"):
        return float(result["throughput"]["rows_per_s"] if run["tool"] == "python" else result["rows_per_s"])
    return float(result["requests_per_s"]) * int(run.get("rows", 1))


def latency(run: Mapping[str, Any], key: str) -> float | None:
    """A latency in seconds; h2load reports no percentiles, so its p50 falls back to the mean."""
    lat = run["result"]["latency_s"]
    value = lat.get(key)
    if value is None and key == "p50" and run["tool"] == "h2load":
        value = lat.get("mean")
    return None if value is None else float(value)


def errors(run: Mapping[str, Any]) -> int:
    result = run["result"]
    if run["tool"] == "python":
        return int(result["requests"]["errors"]) + int(result["requests"]["unsent"])
    if run["tool"] == "ort":
        return 0
    return int(result["failed"]) + int(result["non_2xx"])


def cpu_us_per_request(run: Mapping[str, Any]) -> float | None:
    """Server CPU per request, from the cores it used over the run and the request rate."""
    cores, rate = run.get("server_cores"), rps(run)
    return None if cores is None or rate <= 0 else float(cores) / rate * 1e6


def client_cpu_us_per_request(run: Mapping[str, Any]) -> float | None:
    """A C client's own CPU per request (the cores it used over its run over its request rate); None for
    the other tools and for runs recorded before the C clients' CPU was."""
    if run["tool"] not in ("wrk", "h2load"):
        return None
    result = run["result"]
    return cclients.cpu_us_per_request(result.get("cpu_s"), result.get("wall_s"), rps(run))


def headline(run: Mapping[str, Any]) -> str:
    """One line per run for the progress output."""
    p50, p99 = latency(run, "p50") or 0.0, latency(run, "p99")
    lat = f"p50 {p50 * 1e3:.3f} ms" + (f", p99 {p99 * 1e3:.3f} ms" if p99 is not None else "")
    cpu = cpu_us_per_request(run)
    server = f", server {cpu:.0f} CPU us/req" if cpu is not None else ""
    own = client_cpu_us_per_request(run)
    client = f", client {own:.0f} CPU us/req" if own is not None else ""
    return f"{rps(run):.1f} req/s, {rows_per_s(run):.1f} rows/s, {lat}, {errors(run)} errors{server}{client}"


def _figure(name: str, what: str, value: float, baseline: float, target: str | None,
            check: Callable[[float], bool] | None, used: list[Mapping[str, Any]], run_names: list[str],
            unit: str) -> dict[str, Any]:
    ratio = value / baseline if baseline else None
    bad = sum(errors(r) for r in used)
    return {
        "name": name, "what": what, "value": value, "baseline": baseline, "unit": unit, "ratio": ratio,
        "target": target, "met": None if (check is None or ratio is None) else bool(check(ratio)),
        "runs": run_names, "errors": bad,
    }


def _pair(runs: Runs, name: str, what: str, gw: str, base: str, metric: Callable[[Mapping[str, Any]], float],
          target: str | None, check: Callable[[float], bool] | None, unit: str) -> list[dict[str, Any]]:
    if gw not in runs or base not in runs:
        return []
    used = [runs[gw], runs[base]]
    return [_figure(name, what, metric(runs[gw]), metric(runs[base]), target, check, used, [gw, base], unit)]


def _overhead(runs: Runs) -> list[dict[str, Any]]:
    gw, echo, ort = "gateway/python/grpc/c1/r1", "echo/python/grpc/c1/r1", "ort/b1"
    if not all(n in runs for n in (gw, echo, ort)):
        return []
    floor = (latency(runs[echo], "p50") or 0.0) + (latency(runs[ort], "p50") or 0.0)
    return [_figure("overhead", "p50 latency, 1 row, 1 caller, gRPC: gateway / (echo p50 + ORT p50 at batch 1)",
                    latency(runs[gw], "p50") or 0.0, floor, "<= 1.5", lambda r: r <= 1.5,
                    [runs[gw], runs[echo], runs[ort]], [gw, echo, ort], "s")]


def _best_peer(runs: Runs, pattern: str) -> str | None:
    """The peer run of this shape with the most req/s, among runs without errors."""
    peers = {n.split("/", 1)[0] for n in runs if n.startswith("peer-")}
    names = [pattern.format(peer=p) for p in sorted(peers)]
    present = [n for n in names if n in runs and errors(runs[n]) == 0]
    return max(present, key=lambda n: rps(runs[n]), default=None)


def _peers(runs: Runs, conc: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    gw = f"gateway/python/grpc/c{conc}/r1"
    best = _best_peer(runs, f"{{peer}}/python/grpc/c{conc}/r1")
    if best and gw in runs:
        out += _pair(runs, "peers-grpc", f"req/s, gRPC, {conc} callers: gateway / best peer ({best})", gw, best,
                     rps, ">= 2", lambda r: r >= 2, "req/s")
        out += _pair(runs, "peers-grpc-p99", f"p99 at that load: gateway / best peer ({best})", gw, best,
                     lambda r: latency(r, "p99") or 0.0, "< 1", lambda r: r < 1, "s")
    best_h2 = _best_peer(runs, f"{{peer}}/h2load/grpc/c{conc}/r1")
    if best_h2:
        out += _pair(runs, "peers-grpc-h2load", f"req/s, h2load: gateway / best peer ({best_h2})",
                     f"gateway/h2load/grpc/c{conc}/r1", best_h2, rps, ">= 2", lambda r: r >= 2, "req/s")
    rest_names = [f"{{peer}}/python/{p}/c{conc}/r1" for p in ("rest-binary", "rest-json")]
    best_rest = [b for b in (_best_peer(runs, n) for n in rest_names) if b]
    if best_rest:
        top = max(best_rest, key=lambda n: rps(runs[n]))
        out += _pair(runs, "peers-rest", f"req/s, REST: gateway binary / best peer REST ({top})",
                     f"gateway/python/rest-binary/c{conc}/r1", top, rps, ">= 4", lambda r: r >= 4, "req/s")
    wrk = [b for b in (_best_peer(runs, f"{{peer}}/wrk/{p}/c{conc}/r1") for p in ("rest-binary", "rest-json")) if b]
    if wrk:
        best_wrk = max(wrk, key=lambda n: rps(runs[n]))
        out += _pair(runs, "peers-rest-wrk", f"req/s, wrk: gateway binary / best peer REST ({best_wrk})",
                     f"gateway/wrk/rest-binary/c{conc}/r1", best_wrk, rps, ">= 4", lambda r: r >= 4, "req/s")
    return out


# The large-request target per client and protocol: (tool, protocol, figure name). The Python client over
# gRPC keeps the figure's first name, "large", so reports written before the others existed still read.
LARGE = (("python", "grpc", "large"), ("h2load", "grpc", "large-h2load"),
         ("wrk", "rest-binary", "large-rest-binary-wrk"),
         ("python", "rest-binary", "large-rest-binary-python"))
_PROTOCOL = {"grpc": "gRPC", "rest-binary": "REST binary"}


def _large(runs: Runs, conc: int, rows: int) -> list[dict[str, Any]]:
    """Per client and protocol, gateway rows/s over ORT at batch `rows` (the target), then each over the
    echo measured with the same client: every combination measured is listed, whichever fares worst.
    Where the run holds paired rounds (each gateway run next to an ORT run of its own), the target's
    figure is the median of the pairs' ratios; otherwise the full-length gateway run over the one ORT run."""
    to_ort: list[dict[str, Any]] = []
    to_echo: list[dict[str, Any]] = []
    for tool, protocol, name in LARGE:
        gw, echo = (f"{server}/{tool}/{protocol}/c{conc}/r{rows}" for server in ("gateway", "echo"))
        shape = f"rows/s, {rows}-row requests, {conc} callers, {_PROTOCOL[protocol]}, {tool}"
        pairs = _large_rounds(runs, gw, f"ort/b{rows}#{tool}/{protocol}")
        if pairs:
            to_ort.append(_median_of_pairs(
                runs, pairs, name, f"{shape}: gateway / ORT at batch {rows} (median of {len(pairs)} paired "
                "rounds' ratios)", rows_per_s, ">= 0.8", lambda r: r >= 0.8, "rows/s"))
        else:
            to_ort += _pair(runs, name, f"{shape}: gateway / ORT at batch {rows}", gw, f"ort/b{rows}", rows_per_s,
                            ">= 0.8", lambda r: r >= 0.8, "rows/s")
        to_echo += _pair(runs, f"{name}-vs-echo", f"{shape}: gateway / echo", gw, echo, rows_per_s,
                         None, None, "rows/s")
    return to_ort + to_echo


def _large_rounds(runs: Runs, gw: str, ort: str) -> list[tuple[str, str]]:
    """(gateway, ORT) run names of each numbered round in which both were measured."""
    rounds = sorted(int(r) for n in runs for b, _, r in [n.partition("#")] if b == gw and r.isdigit())
    return [(f"{gw}#{r}", f"{ort}#{r}") for r in rounds if f"{ort}#{r}" in runs]


def _median_of_pairs(runs: Runs, pairs: list[tuple[str, str]], name: str, what: str,
                     metric: Callable[[Mapping[str, Any]], float], target: str | None,
                     check: Callable[[float], bool] | None, unit: str) -> dict[str, Any]:
    """A figure whose value and baseline are the medians of each side, and whose ratio is the median of
    the pairs' own ratios (the pairs' runs were made next to each other; the medians of the sides were not)."""
    names = [n for pair in pairs for n in pair]
    figure = _figure(name, what, _median([metric(runs[a]) for a, _ in pairs]),
                     _median([metric(runs[b]) for _, b in pairs]), target, check, [runs[n] for n in names],
                     names, unit)
    ratios = [metric(runs[a]) / metric(runs[b]) for a, b in pairs if metric(runs[b])]
    if ratios:
        ratio = _median(ratios)
        figure.update(ratio=ratio, met=None if check is None else bool(check(ratio)))
    return figure


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _paired_rounds(runs: Runs, pattern: str) -> list[tuple[str, str]]:
    """(drift-on, drift-off) run names of each numbered round of `pattern` ("#warm" runs left out)."""
    pairs = []
    for name in sorted(runs):
        base, _, round_ = name.partition("#")
        if base == "drift-on/" + pattern and round_.isdigit() and f"drift-off/{pattern}#{round_}" in runs:
            pairs.append((name, f"drift-off/{pattern}#{round_}"))
    return pairs


def _drift(runs: Runs, conc: int, lconc: int, lrows: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for label, pattern, metric, unit in (
            (f"1-row requests, {conc} callers, h2load", f"h2load/grpc/c{conc}/r1", rps, "req/s"),
            (f"{lrows}-row requests, {lconc} callers, Python client", f"python/grpc/c{lconc}/r{lrows}",
             rows_per_s, "rows/s")):
        pairs = _paired_rounds(runs, pattern)
        if not pairs:
            continue
        names = [n for pair in pairs for n in pair]
        used = [runs[n] for n in names]
        kind = "single" if pattern.rsplit("/", 1)[1] == "r1" else "large"
        out.append(_median_of_pairs(runs, pairs, f"drift-cost-{kind}", f"{unit} with drift on / drift off, "
                                    f"{label} (median of {len(pairs)} paired rounds' ratios)", metric,
                                    ">= 0.97", lambda r: r >= 0.97, unit))
        cpu = [(cpu_us_per_request(runs[a]), cpu_us_per_request(runs[b])) for a, b in pairs]
        cpu_ratios = [b / a for a, b in cpu if a and b]
        if cpu_ratios:
            cpu_figure = _figure(f"drift-cpu-{kind}", f"server CPU per request, drift off / drift on, {label} "
                                 f"(median of {len(pairs)} paired rounds' ratios)",
                                 _median([b for _, b in cpu if b]), _median([a for a, _ in cpu if a]),
                                 None, None, used, names, "µs/req")
            cpu_figure.update(ratio=_median(cpu_ratios))
            out.append(cpu_figure)
        measured = [runs[a] for a, _ in pairs if runs[a].get("drift_busy_s") is not None and runs[a].get("server_cpu_s")]
        if measured:
            shares = [r["drift_busy_s"] / r["server_cpu_s"] for r in measured]
            share = _figure(f"drift-share-{kind}", f"share of the gateway's CPU time spent binning for drift, {label} "
                            f"(servegate_drift_busy_seconds_total over process CPU, median of {len(measured)} runs)",
                            _median([r["drift_busy_s"] for r in measured]),
                            _median([r["server_cpu_s"] for r in measured]), "<= 0.03", lambda r: r <= 0.03,
                            measured, [a for a, _ in pairs if runs[a] in measured], "s")
            share.update(ratio=_median(shares), met=_median(shares) <= 0.03, share=True)
            out.append(share)
    return out


def compute(runs: Runs, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every figure whose runs are present, in report order."""
    conc, lconc, lrows = settings["small_concurrency"], settings["large_concurrency"], settings["large_rows"]
    out = _overhead(runs)
    for tool in ("python", "h2load"):
        out += _pair(runs, f"small-{tool}", f"req/s, 1 row, {conc} callers, gRPC, {tool}: gateway / echo",
                     f"gateway/{tool}/grpc/c{conc}/r1", f"echo/{tool}/grpc/c{conc}/r1", rps,
                     ">= 0.7", lambda r: r >= 0.7, "req/s")
    out += _large(runs, lconc, lrows)
    for protocol in ("rest-binary", "rest-json"):
        for tool in ("python", "wrk"):
            out += _pair(runs, f"{protocol}-{tool}", f"req/s, 1 row, {conc} callers, {protocol}, {tool}: "
                         "gateway / HTTP echo", f"gateway/{tool}/{protocol}/c{conc}/r1",
                         f"echo/{tool}/{protocol}/c{conc}/r1", rps, None, None, "req/s")
    return out + _peers(runs, conc) + _drift(runs, conc, lconc, lrows) + _engines(runs, conc, lconc, lrows)


def _engines(runs: Runs, conc: int, lconc: int, lrows: int) -> list[dict[str, Any]]:
    """The native gRPC engine over grpc.aio, the same gateway otherwise, measured side by side."""
    def pair(name: str, what: str, run: str, metric: Callable[[Mapping[str, Any]], float],
             unit: str) -> list[dict[str, Any]]:
        return _pair(runs, name, f"{what}: native engine / grpcio engine", f"engine-native/{run}",
                     f"engine-grpcio/{run}", metric, None, None, unit)

    def p50(run: Mapping[str, Any]) -> float:
        return latency(run, "p50") or 0.0

    return (pair("engines-latency", "p50 latency, 1 row, 1 caller, gRPC, python", "python/grpc/c1/r1", p50, "s")
            + pair("engines-small-python", f"req/s, 1 row, {conc} callers, gRPC, python",
                   f"python/grpc/c{conc}/r1", rps, "req/s")
            + pair("engines-small-h2load", f"req/s, 1 row, {conc} callers, gRPC, h2load",
                   f"h2load/grpc/c{conc}/r1", rps, "req/s")
            + pair("engines-large-h2load", f"rows/s, {lrows}-row requests, {lconc} callers, gRPC, h2load",
                   f"h2load/grpc/c{lconc}/r{lrows}", rows_per_s, "rows/s"))
