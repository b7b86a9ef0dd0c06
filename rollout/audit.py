"""The append-only, hash-chained audit log: the canonical entry hash, chain verification, and a facade.

Every backend chains entries with `entry_hash`, so a log copied between stores verifies the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from rollout.errors import InvalidSpec
from rollout.store.base import AuditRecord, StateStore

GENESIS_HASH = ""  # prev_hash of the first entry

# The fields covered by the hash, in the order they are documented (the JSON itself is key-sorted).
HASHED_FIELDS = ("seq", "ts", "actor", "action", "model", "version", "before", "after", "reason",
                 "evidence", "prev_hash")


def canonical_json(value: Any) -> str:
    """Key-sorted, compact, ASCII-only JSON; non-finite floats are refused so every reader agrees."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def normalize(field: str, value: Any) -> Any:
    """Returns `value` as it will read back from storage (tuples become lists, keys become strings).

    Hashing the normalised form makes a stored entry verify after a JSON round trip."""
    try:
        return json.loads(canonical_json(value))
    except (TypeError, ValueError) as exc:
        raise InvalidSpec(field, f"expected JSON data (finite numbers, string keys): {exc}") from exc


def entry_hash(record: AuditRecord) -> str:
    """sha256 (hex) over the canonical JSON of the entry's fields, `prev_hash` included, `hash` excluded."""
    payload = {name: getattr(record, name) for name in HASHED_FIELDS}
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


def record_to_dict(record: AuditRecord) -> dict[str, Any]:
    """The stored form of an entry: every field, `hash` included."""
    out = {name: getattr(record, name) for name in HASHED_FIELDS}
    out["hash"] = record.hash
    return out


def record_from_dict(data: Mapping[str, Any]) -> AuditRecord:
    """Reads a stored entry back; a missing field raises `InvalidSpec` naming it."""
    try:
        return AuditRecord(
            seq=int(data["seq"]), ts=float(data["ts"]), actor=str(data["actor"]),
            action=str(data["action"]), model=str(data["model"]), version=str(data["version"]),
            before=data["before"], after=data["after"], reason=str(data["reason"]),
            evidence=data.get("evidence") or {}, prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
        )
    except KeyError as exc:
        raise InvalidSpec(f"audit.{exc.args[0]}", "missing from a stored audit entry") from exc


def chain_next(last_seq: int, last_hash: str, *, actor: str, action: str, model: str, version: str,
               before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, reason: str,
               evidence: Mapping[str, Any] | None, ts: float) -> AuditRecord:
    """Builds the entry that follows the chain's head (`last_seq` 0 and `last_hash` "" for the first
    entry), hashed and ready to store."""
    record = AuditRecord(
        seq=last_seq + 1, ts=float(ts), actor=str(actor), action=str(action),
        model=str(model), version=str(version), before=normalize("before", before),
        after=normalize("after", after), reason=str(reason),
        evidence=normalize("evidence", dict(evidence or {})),
        prev_hash=last_hash,
    )
    return replace(record, hash=entry_hash(record))


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of a chain check: `broken_seq` and `reason` name the first entry that fails."""

    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""  # "hash mismatch" | "prev_hash mismatch" | "seq gap" (with detail after a colon)


def verify(entries: Iterable[AuditRecord]) -> VerifyResult:
    """Checks entries oldest first: seq runs 1, 2, 3…, each prev_hash is the previous hash, and each
    hash is the hash of the entry. A deleted or edited entry breaks the chain at or after it.
    Truncation at the newest end leaves a valid chain and is not detected here."""
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
    for entry in entries:
        if entry.seq != expected_seq:
            return VerifyResult(False, checked, entry.seq, f"seq gap: expected {expected_seq}, found {entry.seq}")
        if entry.prev_hash != prev_hash:
            return VerifyResult(False, checked, entry.seq, "prev_hash mismatch: not the previous entry's hash")
        if entry_hash(entry) != entry.hash:
            return VerifyResult(False, checked, entry.seq, "hash mismatch: the entry was changed after it was written")
        checked += 1
        expected_seq, prev_hash = entry.seq + 1, entry.hash
    return VerifyResult(True, checked)


class AuditLog:
    """Who changed what, when, why and on what evidence, over any `StateStore`."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def record(self, actor: str, action: str, model: str = "", version: str = "", *,
               before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
               reason: str = "", evidence: Mapping[str, Any] | None = None,
               ts: float | None = None) -> AuditRecord:
        """Appends one entry; `actor` and `action` must be non-empty."""
        if not actor:
            raise InvalidSpec("actor", "expected a non-empty name of who made the change")
        if not action:
            raise InvalidSpec("action", "expected a non-empty name of what was done")
        return self._store.append_audit(actor, action, model, version, before, after, reason,
                                        evidence, ts)

    def entries(self, model: str | None = None, since: float | None = None,
                limit: int = 1000) -> list[AuditRecord]:
        """Newest first, optionally for one model and from a time on."""
        if limit < 1:
            raise InvalidSpec("limit", f"expected a positive number of entries, got {limit}")
        return self._store.audit(model, since, limit)

    def verify(self) -> VerifyResult:
        """Verifies the whole chain as the store holds it now."""
        return verify(self._store.audit_all())

