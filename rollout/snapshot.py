"""Snapshots of the gateway's state (registry, route tables, rollouts, faults and the audit chain) and
their restore into a store that lost its data.

A snapshot is plain JSON, so it can come from a replica's memory over the admin API or from a file.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rollout.audit import record_from_dict, record_to_dict, verify
from rollout.errors import Conflict, InvalidSpec
from rollout.store.base import STATE_KINDS, AuditRecord, EpochStore, StateStore, Write

FORMAT = "servegate-state"
FORMAT_VERSION = 1
WRITE_CHUNK = 200  # documents per put_many: one script call or transaction stays small

Documents = dict[str, dict[str, dict[str, Any]]]  # kind -> key -> value


@dataclass(frozen=True)
class Snapshot:
    documents: Documents
    audit: tuple[AuditRecord, ...]
    taken_at: float
    epoch: str | None = None  # the store epoch the state was read from
    source: str = ""  # who took it (a replica id, a file name)

    @property
    def document_count(self) -> int:
        return sum(len(keys) for keys in self.documents.values())

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "taken_at": self.taken_at,
                "epoch": self.epoch, "source": self.source, "documents": self.documents,
                "audit": [record_to_dict(r) for r in self.audit]}

    @staticmethod
    def from_dict(body: Mapping[str, Any]) -> Snapshot:
        if not isinstance(body, Mapping) or body.get("format") != FORMAT:
            raise InvalidSpec("snapshot", f"expected a {FORMAT} document")
        if body.get("format_version") != FORMAT_VERSION:
            raise InvalidSpec("snapshot.format_version",
                              f"expected {FORMAT_VERSION}, got {body.get('format_version')!r}")
        documents = body.get("documents")
        if not isinstance(documents, Mapping) or any(k not in STATE_KINDS for k in documents):
            raise InvalidSpec("snapshot.documents", f"expected a mapping of {', '.join(STATE_KINDS)}")
        audit = body.get("audit")
        if not isinstance(audit, list):
            raise InvalidSpec("snapshot.audit", "expected a list of audit entries")
        return Snapshot(_documents(documents), tuple(record_from_dict(a) for a in audit),
                        float(body.get("taken_at", 0.0)), body.get("epoch"), str(body.get("source", "")))


def _documents(raw: Mapping[str, Any]) -> Documents:
    out: Documents = {}
    for kind, keys in raw.items():
        if not isinstance(keys, Mapping) or not all(isinstance(v, Mapping) for v in keys.values()):
            raise InvalidSpec(f"snapshot.documents.{kind}", "expected key -> JSON object")
        out[kind] = {str(k): dict(v) for k, v in keys.items()}
    return out


def read_documents(store: StateStore) -> Documents:
    """Every state document, by kind and key (leases excluded, see `STATE_KINDS`)."""
    return {kind: {key: dict(doc.value) for key, doc in store.list(kind)} for kind in STATE_KINDS}


def take(store: StateStore, *, source: str = "", now: float | None = None) -> Snapshot:
    """Reads the whole state, audit chain included (for `servegate state snapshot`)."""
    epoch = store.epoch_state().epoch if isinstance(store, EpochStore) else None
    return Snapshot(read_documents(store), tuple(store.audit_all()), time.time() if now is None else now,
                    epoch, source)


@dataclass(frozen=True)
class RestoreReport:
    documents: int
    audit_entries: int
    audit_kept: bool = False  # the store's own audit log was not empty, so it was left as it was
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"documents": self.documents, "audit_entries": self.audit_entries,
                "audit_kept": self.audit_kept, "notes": self.notes}


def restore(store: StateStore, snapshot: Snapshot, *, force: bool = False) -> RestoreReport:
    """Writes the snapshot into `store` and clears the store's reset mark, so replicas resume.

    Without `force` the store must hold no state document and no audit entry (a lease or shipped
    measurements do not count): a restore never silently replaces newer state. With `force`, the
    snapshot's documents overwrite what is there, and a non-empty audit log is kept as it is."""
    if not isinstance(store, EpochStore):
        raise InvalidSpec("store", f"{store.url} cannot take a restore (no epoch support)")
    _check_chain(snapshot.audit)
    present = _present(store)
    if present and not force:
        raise Conflict(f"the store already holds state ({present}); restore into an empty store, or "
                       "pass force to overwrite it")
    writes = [Write(kind, key, value, None if force else 0)
              for kind, keys in snapshot.documents.items() for key, value in sorted(keys.items())]
    for start in range(0, len(writes), WRITE_CHUNK):
        store.put_many(writes[start:start + WRITE_CHUNK])
    kept = bool(store.audit(limit=1))
    imported = 0 if kept or not snapshot.audit else store.import_audit(snapshot.audit)
    store.clear_reset()
    notes = ["the store's audit log was not empty; the snapshot's entries were not imported"] if kept else []
    return RestoreReport(len(writes), imported, kept and bool(snapshot.audit), notes)


def _check_chain(records: Sequence[AuditRecord]) -> None:
    result = verify(records)
    if not result.ok:
        raise InvalidSpec("snapshot.audit", f"the audit chain breaks at seq {result.broken_seq}: {result.reason}")


def _present(store: StateStore) -> str:
    """What state the store holds, in words ("" = none)."""
    counts = {kind: len(store.list(kind)) for kind in STATE_KINDS}
    held = [f"{n} {kind} document(s)" for kind, n in counts.items() if n]
    if store.audit(limit=1):
        held.append("audit entries")
    return ", ".join(held)
