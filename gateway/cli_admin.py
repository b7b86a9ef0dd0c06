"""The admin verbs of the `servegate` command: registry, traffic, rollouts, audit, faults, drift, token.

Each verb is one admin API call through `AdminClient`; output is a compact table, or the raw JSON with
`--json`. Exit codes: 0 done, 1 refused by the server (its error is printed), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.admin.auth import ADMIN, OPERATOR, ROLES, VIEWER, mint
from gateway.admin.client import AdminClient, AdminError
from gateway.settings import AuthSettings
from rollout.errors import InvalidSpec
from rollout.spec import parse_duration

DEFAULT_ADMIN_URL = "http://127.0.0.1:8002"
VERSION_COLUMNS = ("version", "stage", "state", "provider", "sha256", "reason")
LOCAL_TOKEN_TTL_S = 300.0  # tokens minted on the fly only need to outlive one request
if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
Action = Callable[[AdminClient, argparse.Namespace], Any]


class UsageError(ValueError):
    pass


def register_admin_commands(sub: Subparsers) -> None:
    """Adds the admin verbs to `servegate`'s sub-commands."""
    common = _common_flags()
    _models(sub, common)
    _registry(sub, common)
    _traffic(sub, common)
    _rollout(sub, common)
    _audit(sub, common)
    _faults(sub, common)
    _drift(sub, common)
    _token(sub, common)
    whoami = sub.add_parser("whoami", parents=[common], help="show the subject and roles of your token")
    whoami.set_defaults(func=_command(VIEWER, lambda c, a: c.whoami()))


def _common_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin", metavar="URL", help=f"admin API URL (env SERVEGATE_ADMIN_URL, default "
                                                       f"{DEFAULT_ADMIN_URL})")
    common.add_argument("--token", help="bearer token (env SERVEGATE_TOKEN)")
    common.add_argument("--as", dest="as_user", metavar="NAME",
                        help="subject of a locally minted token (default $USER)")
    common.add_argument("--jwt-secret", help="HS256 secret for locally minted tokens (env SERVEGATE_JWT_SECRET)")
    common.add_argument("--jwt-audience", help="audience of minted tokens (env SERVEGATE_JWT_AUDIENCE)")
    common.add_argument("--jwt-issuer", help="issuer of minted tokens (env SERVEGATE_JWT_ISSUER)")
    common.add_argument("--ca-cert", type=Path, metavar="PEM", help="CA bundle to trust for https (env "
                                                                    "SERVEGATE_ADMIN_CA_CERT)")
    common.add_argument("--json", dest="as_json", action="store_true", help="print the raw JSON reply")
    return common


def _leaf(parent: Subparsers, name: str, common: argparse.ArgumentParser, help_text: str,
          role: str, action: Action, *, model: bool = True, version: bool = False) -> argparse.ArgumentParser:
    parser = parent.add_parser(name, parents=[common], help=help_text, description=help_text)
    if model:
        parser.add_argument("model", metavar="MODEL")
    if version:
        parser.add_argument("version", metavar="VERSION")
    parser.set_defaults(func=_command(role, action))
    return parser


# --- the verbs ----------------------------------------------------------------------------------------

def _models(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = _leaf(sub, "models", common, "list models, or show one in full", VIEWER,
                   lambda c, a: c.model(a.model) if a.model else {"models": c.models()}, model=False)
    parser.add_argument("model", metavar="MODEL", nargs="?")


def _registry(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    verbs = sub.add_parser("registry", help="register versions and change their stage").add_subparsers(
        dest="registry_command", required=True)
    register = _leaf(verbs, "register", common, "register a version (runs the validation gates)", ADMIN,
                     lambda c, a: c.register(a.model, _register_body(a)), version=True)
    register.add_argument("--artifact", required=True, metavar="PATH", help="ONNX file on the gateway's host")
    register.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    register.add_argument("--holdout", metavar="FILE", help="holdout set for the evaluation gate")
    register.add_argument("--reference", metavar="FILE", help="reference data for drift bin edges")
    register.add_argument("--breaking", action="store_true", help="the signature change is intended")
    stage = _leaf(verbs, "stage", common, "move a version to another stage", ADMIN,
                  lambda c, a: c.set_stage(a.model, a.version, a.stage, a.reason), version=True)
    stage.add_argument("stage", metavar="STAGE")
    stage.add_argument("--reason", required=True, help="why (kept in the audit log)")


def _traffic(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    verbs = sub.add_parser("traffic", help="show or set a model's route table").add_subparsers(
        dest="traffic_command", required=True)
    _leaf(verbs, "show", common, "show the route table", VIEWER, lambda c, a: c.model(a.model).get("traffic"))
    split = _leaf(verbs, "set", common, "split traffic by weight (VERSION=PERCENT ...)", OPERATOR,
                  lambda c, a: c.set_traffic(a.model, _split_table(a)))
    split.add_argument("weights", nargs="+", metavar="VERSION=PERCENT")
    split.add_argument("--policy", choices=("canary", "ab"), default="canary")
    split.add_argument("--sticky-key", metavar="KEY", help="header / metadata name that pins a user to an arm")
    split.add_argument("--shadow", metavar="VERSION:PERCENT", help="mirror a share of requests to a version")
    switch = _leaf(verbs, "blue-green", common, "send all traffic to one version, keep another warm",
                   OPERATOR, lambda c, a: c.set_traffic(a.model, _blue_green_table(a)))
    switch.add_argument("--active", required=True, metavar="VERSION")
    switch.add_argument("--preview", metavar="VERSION")


def _rollout(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    verbs = sub.add_parser("rollout", help="start and steer rollouts").add_subparsers(
        dest="rollout_command", required=True)
    start = _leaf(verbs, "start", common, "start a rollout from a spec file (YAML or JSON)", OPERATOR,
                  lambda c, a: c.start_rollout(a.model, _read_spec(a.file)))
    start.add_argument("-f", "--file", required=True, metavar="SPEC", help="spec file, or - for stdin")
    _leaf(verbs, "status", common, "the current or last rollout", VIEWER, lambda c, a: c.rollout(a.model))
    for verb in ("pause", "resume", "promote", "abort", "approve"):
        role = ADMIN if verb == "approve" else OPERATOR
        _leaf(verbs, verb, common, f"{verb} the model's rollout", role, _verb_action(verb))


def _verb_action(verb: str) -> Action:
    return lambda client, args: client.rollout_verb(args.model, verb)


def _audit(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = _leaf(sub, "audit", common, "list audit entries (newest first), or verify the chain", VIEWER,
                   lambda c, a: c.verify_audit() if a.action == "verify"
                   else {"entries": c.audit(a.model_filter, a.since, a.limit)}, model=False)
    parser.add_argument("action", nargs="?", choices=("verify",), help="verify the audit hash chain")
    parser.add_argument("--model", dest="model_filter", metavar="MODEL")
    parser.add_argument("--since", metavar="T", help="unix seconds, ISO 8601 time, or a duration ago (1h)")
    parser.add_argument("--limit", type=int, metavar="N")


def _faults(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    verbs = sub.add_parser("faults", help="inject, show or clear faults in a version").add_subparsers(
        dest="faults_command", required=True)
    inject = _leaf(verbs, "set", common, "inject faults that expire on their own", ADMIN,
                   lambda c, a: c.set_faults(a.model, a.version, _faults_body(a)), version=True)
    for flag in ("latency-ms", "latency-jitter-ms", "error-rate", "output-shift", "output-noise"):
        inject.add_argument(f"--{flag}", type=float, metavar="N")
    inject.add_argument("--latency-distribution", choices=("fixed", "uniform", "exponential"))
    inject.add_argument("--duration", required=True, help="how long, e.g. 5m")
    _leaf(verbs, "show", common, "the faults in force", VIEWER, lambda c, a: c.faults(a.model, a.version),
          version=True)
    _leaf(verbs, "clear", common, "remove the faults", ADMIN, lambda c, a: c.clear_faults(a.model, a.version),
          version=True)


def _drift(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = _leaf(sub, "drift", common, "drift statistics of a version", VIEWER,
                   lambda c, a: c.drift(a.model, a.version, a.window), version=True)
    parser.add_argument("--window", default="60s", help="window length (default 60s)")


def _token(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("token", parents=[common], help="print a token minted from the HS256 secret")
    parser.add_argument("--role", action="append", required=True, choices=ROLES, dest="roles")
    parser.add_argument("--sub", metavar="NAME", help="subject (default $USER)")
    parser.add_argument("--ttl", default="1h", help="lifetime (default 1h)")
    parser.set_defaults(func=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    try:
        ttl = parse_duration("ttl", args.ttl)
        print(mint(_auth_settings(args), args.sub or _user(), args.roles, ttl))
    except (ValueError, InvalidSpec) as exc:
        print(f"servegate: {exc}", file=sys.stderr)
        return 2
    return 0


# --- running a verb ---------------------------------------------------------------------------------

def _command(role: str, action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            client = AdminClient(_url(args), _bearer(args, role), ca_file=_ca_file(args))
            result = action(client, args)
        except AdminError as exc:
            return _refused(exc, args)
        except (ValueError, InvalidSpec, OSError) as exc:
            print(f"servegate: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(result, indent=2) if args.as_json else render(result))
        return 0
    return run


def _refused(exc: AdminError, args: argparse.Namespace) -> int:
    where = f"error {exc.status}: " if exc.status else ""
    print(f"servegate: {where}{exc.message}", file=sys.stderr)
    if exc.detail:
        print(json.dumps(exc.detail, indent=2) if args.as_json else render(exc.detail), file=sys.stderr)
    if exc.status == 401 and not _given_token(args) and not _secret(args):
        print("servegate: pass --token (or SERVEGATE_TOKEN), or set SERVEGATE_JWT_SECRET to mint one "
              "locally", file=sys.stderr)
    return 1


def _url(args: argparse.Namespace) -> str:
    return str(args.admin or os.environ.get("SERVEGATE_ADMIN_URL") or DEFAULT_ADMIN_URL)


def _ca_file(args: argparse.Namespace) -> Path | None:
    env = os.environ.get("SERVEGATE_ADMIN_CA_CERT")
    return args.ca_cert or (Path(env) if env else None)


def _given_token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("SERVEGATE_TOKEN") or None


def _secret(args: argparse.Namespace) -> str | None:
    return args.jwt_secret or os.environ.get("SERVEGATE_JWT_SECRET") or None


def _user() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "servegate"


def _auth_settings(args: argparse.Namespace) -> AuthSettings:
    return AuthSettings(jwt_secret=_secret(args),
                        audience=args.jwt_audience or os.environ.get("SERVEGATE_JWT_AUDIENCE") or "servegate",
                        issuer=args.jwt_issuer or os.environ.get("SERVEGATE_JWT_ISSUER") or None)


def _bearer(args: argparse.Namespace, role: str) -> str | None:
    """The given token; else, where the secret is at hand, a short-lived one for just this verb's role."""
    given = _given_token(args)
    if given or not _secret(args):
        return given
    return mint(_auth_settings(args), args.as_user or _user(), [role], LOCAL_TOKEN_TTL_S)


# --- request bodies from flags ------------------------------------------------------------------------

def _pair(text: str, sep: str, what: str) -> tuple[str, str]:
    key, found, value = text.partition(sep)
    if not found or not key or not value:
        raise UsageError(f"expected {what}, got {text!r}")
    return key, value


def _percent(text: str, what: str) -> int:
    if not text.isdigit():
        raise UsageError(f"{what}: expected an integer percent, got {text!r}")
    return int(text)


def _register_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"version": args.version, "artifact": args.artifact}
    if args.metadata:
        body["metadata"] = dict(_pair(item, "=", "--metadata KEY=VALUE") for item in args.metadata)
    for name in ("holdout", "reference"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    if args.breaking:
        body["breaking"] = True
    return body


def _split_table(args: argparse.Namespace) -> dict[str, Any]:
    weights = {}
    for item in args.weights:
        version, percent = _pair(item, "=", "VERSION=PERCENT")
        weights[version] = _percent(percent, f"weight of {version}")
    table: dict[str, Any] = {"policy": args.policy, "weights": weights}
    if args.sticky_key:
        table["sticky_key"] = args.sticky_key
    if args.shadow:
        version, percent = _pair(args.shadow, ":", "--shadow VERSION:PERCENT")
        table["shadow"] = {"version": version, "percent": _percent(percent, "--shadow")}
    return table


def _blue_green_table(args: argparse.Namespace) -> dict[str, Any]:
    table = {"policy": "blue_green", "active": args.active}
    if args.preview:
        table["preview"] = args.preview
    return table


def _faults_body(args: argparse.Namespace) -> dict[str, Any]:
    names = ("latency_ms", "latency_jitter_ms", "latency_distribution", "error_rate", "output_shift",
             "output_noise")
    body: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    body["duration"] = args.duration
    return body


def _read_spec(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"-f {path}: cannot read the spec: {exc.strerror}") from exc


# --- human output -------------------------------------------------------------------------------------

def render(value: Any) -> str:
    """A compact, human view of any reply: objects as `key: value` lines, lists of objects as tables."""
    if isinstance(value, dict) and set(value) == {"models"}:
        return table([_model_row(m) for m in value["models"]]) or "no models"
    if isinstance(value, dict) and set(value) == {"entries"}:
        return table([_audit_row(e) for e in value["entries"]]) or "no audit entries"
    if isinstance(value, dict) and isinstance(value.get("status"), dict) and "spec" in value:
        # a rollout document: its status is what a person watches; --json has the spec and history
        value = {k: v for k, v in value["status"].items() if v not in (None, "", [], {})}
    if isinstance(value, dict) and "name" in value and isinstance(value.get("versions"), list):
        value = {**value, "versions": [{k: v.get(k) for k in VERSION_COLUMNS if k in v} for v in value["versions"]]}
    if isinstance(value, list):
        return table(value)
    if not isinstance(value, dict):
        return cell(value)
    if not value:
        return "(none)"
    lines = []
    for key, item in value.items():
        if isinstance(item, list) and item and all(isinstance(i, dict) for i in item):
            lines.append(f"{key}:")
            lines.extend("  " + row for row in table(item).splitlines())
        elif isinstance(item, dict) and item and any(isinstance(v, dict | list) for v in item.values()):
            lines.append(f"{key}:")
            lines.extend("  " + row for row in render(item).splitlines())
        else:
            lines.append(f"{key}: {cell(item, key)}")
    return "\n".join(lines)


def table(rows: list[Any]) -> str:
    """Rows of objects as aligned columns (every key any row has, in first-seen order)."""
    rows = [r if isinstance(r, dict) else {"value": r} for r in rows]
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    if not columns:
        return ""
    grid = [[c.upper() for c in columns]] + [[cell(r.get(c), c) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in grid)


def cell(value: Any, key: str = "") -> str:
    """One value on one line; `key` marks wall-clock times (`ts`, `*_at`, `*_until`, `*_start`) as UTC."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and (key == "ts" or key.endswith(("_at", "_until", "_start"))):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, float):
        return f"{value:.4g}"
    if key == "sha256" and isinstance(value, str):
        return value[:12]  # enough to tell versions apart; --json has the whole digest
    if isinstance(value, dict):
        if all(not isinstance(v, dict | list) for v in value.values()):
            return " ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
        return "{…}"
    if isinstance(value, list):
        return ",".join(cell(v) for v in value) if len(value) <= 8 else f"[{len(value)} items]"
    return str(value)


def _model_row(model: dict[str, Any]) -> dict[str, Any]:
    versions = " ".join(f"{v.get('version')}:{v.get('stage')}" for v in model.get("versions") or [])
    traffic = model.get("traffic") or {}
    rollout = model.get("rollout") or {}
    split = traffic.get("weights") if traffic.get("policy") != "blue_green" else \
        {"active": traffic.get("active"), "preview": traffic.get("preview")}
    return {"model": model.get("name"), "versions": versions or "-",
            "policy": traffic.get("policy"), "traffic": split,
            "rollout": " ".join(str(rollout[k]) for k in ("phase", "candidate") if rollout.get(k)) or None}


def _audit_row(entry: dict[str, Any]) -> dict[str, Any]:
    return {"seq": entry.get("seq"), "time": cell(entry.get("ts"), "ts"), "actor": entry.get("actor"),
            "action": entry.get("action"), "model": entry.get("model"), "version": entry.get("version"),
            "reason": entry.get("reason")}
