"""`servegate state snapshot | restore`: copy the gateway's state out of a store, and put it back into a
store that lost its data - from a running replica's memory or from a snapshot file.

Exit codes: 0 done, 1 refused (the store holds state, the source has none), 2 usage or unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.admin.auth import ADMIN, mint
from gateway.admin.client import AdminClient, AdminError
from gateway.mirror import SNAPSHOT_PATH
from gateway.settings import AuthSettings
from rollout.errors import Conflict, InvalidSpec, StoreUnavailable
from rollout.snapshot import Snapshot, restore, take
from rollout.store import open_store

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

TOKEN_TTL_S = 300.0


def register_state_commands(sub: Subparsers) -> None:
    state = sub.add_parser("state", help="snapshot the state store, or restore one that lost its data")
    verbs = state.add_subparsers(dest="state_command", required=True)
    snap = verbs.add_parser("snapshot", help="write the store's state (documents and audit chain) as JSON")
    _store_flag(snap)
    snap.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    snap.set_defaults(func=cmd_snapshot)
    rest = verbs.add_parser("restore", help="write a snapshot back into a store that lost its data")
    _store_flag(rest)
    source = rest.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-replica", metavar="URL",
                        help="a running gateway's admin URL: restores the state it last read")
    source.add_argument("--from-file", type=Path, metavar="FILE", help="a file from `servegate state snapshot`")
    rest.add_argument("--force", action="store_true",
                      help="overwrite state already in the store (its audit log is kept)")
    rest.add_argument("--token", help="bearer token with role admin (env SERVEGATE_TOKEN)")
    rest.add_argument("--jwt-secret", help="HS256 secret to mint one locally (env SERVEGATE_JWT_SECRET)")
    rest.add_argument("--jwt-audience", default=None, help="audience of the minted token")
    rest.add_argument("--ca-cert", type=Path, metavar="PEM", help="CA bundle to trust for https")
    rest.set_defaults(func=cmd_restore)


def _store_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=os.environ.get("SERVEGATE_STORE"),
                        help="state store URL (env SERVEGATE_STORE)")


def cmd_snapshot(args: argparse.Namespace) -> int:
    try:
        store = open_store(_required_store(args))
        try:
            snapshot = take(store, source=store.url)
        finally:
            store.close()
    except (InvalidSpec, StoreUnavailable) as exc:
        return _fail(exc, 2)
    text = json.dumps(snapshot.to_dict(), indent=1, sort_keys=True)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n")
        print(f"wrote {snapshot.document_count} documents and {len(snapshot.audit)} audit entries to {args.out}",
              file=sys.stderr)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    try:
        snapshot = Snapshot.from_dict(_source(args))
        store = open_store(_required_store(args))
        try:
            report = restore(store, snapshot, force=args.force)
        finally:
            store.close()
    except AdminError as exc:
        return _fail(f"the replica refused: error {exc.status}: {exc.message}", 1)
    except Conflict as exc:
        return _fail(exc, 1)
    except (InvalidSpec, StoreUnavailable, OSError, ValueError) as exc:
        return _fail(exc, 2)
    print(json.dumps({"restored_from": snapshot.source, "taken_at": snapshot.taken_at, **report.to_dict()},
                     indent=2))
    return 0


def _source(args: argparse.Namespace) -> Any:
    if args.from_file is not None:
        return json.loads(Path(args.from_file).read_text())
    client = AdminClient(args.from_replica, _bearer(args), ca_file=args.ca_cert)
    return client.request("GET", SNAPSHOT_PATH)


def _bearer(args: argparse.Namespace) -> str | None:
    token = args.token or os.environ.get("SERVEGATE_TOKEN")
    secret = args.jwt_secret or os.environ.get("SERVEGATE_JWT_SECRET")
    if token or not secret:
        return token or None
    audience = args.jwt_audience or os.environ.get("SERVEGATE_JWT_AUDIENCE") or "servegate"
    return mint(AuthSettings(jwt_secret=secret, audience=audience), "state-restore", [ADMIN], TOKEN_TTL_S)


def _required_store(args: argparse.Namespace) -> str:
    if not args.store:
        raise InvalidSpec("store", "pass --store URL (or set SERVEGATE_STORE)")
    return str(args.store)


def _fail(message: object, code: int) -> int:
    print(f"servegate: {message}", file=sys.stderr)
    return code
