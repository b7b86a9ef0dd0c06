"""The state-store protocol: versioned JSON documents with compare-and-set, an audit log, notifications.

Every control-path fact (registry versions, route tables, rollouts) is a document addressed by
(kind, key) holding a JSON object and a revision that increases by one on every write. Writers say
which revision they read; a write against a newer revision raises `StaleWrite`. `put_many` writes
several documents atomically (a promotion changes two versions, a route table and a rollout at once).
A write returns only after it is durable.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

SCHEMA_VERSION = 1

# Document kinds used across servegate; stores treat kinds as opaque strings.
KIND_MODEL = "model"  # key: model name; model-level settings (e.g. latency budget, allowed regions)
KIND_VERSION = "version"  # key: "<model>/<version>"; a registry version
KIND_ROUTE = "route"  # key: model name; the route table
KIND_ROLLOUT = "rollout"  # key: model name; the current (or last) rollout's spec and status
KIND_FAULT = "fault"  # key: "<model>/<version>"; injected faults (load testing)
KIND_LEASE = "lease"  # key: lease name; who may act alone (the promotion controller), renewed by its holder
# The kinds that make up the gateway's state: what a snapshot holds and a restore writes back. Leases are
# left out on purpose: they are ephemeral, and a restored one would name a holder that may be gone.
STATE_KINDS = (KIND_MODEL, KIND_VERSION, KIND_ROUTE, KIND_ROLLOUT, KIND_FAULT)


@dataclass(frozen=True, slots=True)
class Document:
    """A stored value with its revision (1 for the first write)."""

    value: Mapping[str, Any]
    revision: int


@dataclass(frozen=True, slots=True)
class Write:
    """One document write inside `put_many`. `expected_revision`: None = unconditional,
    0 = the document must not exist yet, n = the document must be at revision n."""

    kind: str
    key: str
    value: Mapping[str, Any] | None  # None deletes
    expected_revision: int | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An audit entry as stored: the store assigns `seq` and chains `prev_hash` -> `hash`."""

    seq: int
    ts: float  # seconds since the epoch (wall clock: audit is for humans)
    actor: str
    action: str
    model: str
    version: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    reason: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    prev_hash: str = ""
    hash: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    """A notification that a document changed (published after the write is durable)."""

    kind: str
    key: str
    revision: int


@runtime_checkable
class StateStore(Protocol):
    """What every backend offers. Methods are synchronous and thread-safe; async callers run them in a
    thread. Backends raise `rollout.errors.StoreUnavailable` when the store cannot be reached and
    `rollout.errors.StaleWrite` when a compare-and-set loses."""

    url: str

    def get(self, kind: str, key: str) -> Document | None: ...

    def put(self, kind: str, key: str, value: Mapping[str, Any],
            expected_revision: int | None = None) -> int:
        """Writes one document and returns its new revision."""
        ...

    def put_many(self, writes: Sequence[Write]) -> builtins.list[int]:
        """Writes all or nothing; returns the new revisions in order (0 for deletes)."""
        ...

    def list(self, kind: str, prefix: str = "") -> builtins.list[tuple[str, Document]]:
        """All documents of a kind whose key starts with `prefix`, sorted by key."""
        ...

    def append_audit(self, actor: str, action: str, model: str, version: str,
                     before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                     reason: str, evidence: Mapping[str, Any] | None = None,
                     ts: float | None = None) -> AuditRecord:
        """Appends atomically at the end of the hash chain (see rollout.audit for the hash)."""
        ...

    def audit(self, model: str | None = None, since: float | None = None,
              limit: int = 1000) -> builtins.list[AuditRecord]:
        """Entries, newest first, optionally for one model and from a time on."""
        ...

    def audit_all(self) -> builtins.list[AuditRecord]:
        """Every entry, oldest first (for chain verification)."""
        ...

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Calls `callback` (from a store thread) for every change; returns an unsubscribe function.
        Delivery is best effort: readers also resync periodically."""
        ...

    def ping(self) -> bool:
        """True when the store answers now."""
        ...

    def close(self) -> None: ...


# --- scale-out: shared measurements and store identity -------------------------------------------------

WINDOW_SLICE = "window"  # the SliceRecord name of request counts, errors and latency buckets


@dataclass(frozen=True, slots=True)
class SliceRecord:
    """One replica's measurements of one model version over one wall-clock second. `name` says what
    `data` holds (`WINDOW_SLICE`, or an extra payload such as drift counts); stores never look inside."""

    model: str
    version: str
    second: int
    name: str
    replica: str
    data: bytes


@runtime_checkable
class SliceStore(Protocol):
    """Per-second measurements shipped by every replica. Writing the same (model, version, second, name,
    replica) again replaces the record, so a replica may re-send a second that was still filling."""

    def put_slices(self, records: Sequence[SliceRecord], ttl_s: float) -> None:
        """Writes every record; each one disappears by itself `ttl_s` seconds later."""
        ...

    def read_slices(self, model: str, version: str, first: int, last: int,
                    names: Collection[str] | None = None) -> builtins.list[SliceRecord]:
        """Every replica's unexpired records for seconds `first <= s < last`, optionally only `names`."""
        ...


@dataclass(frozen=True, slots=True)
class EpochState:
    """`epoch`: an id written with the first document into an empty store (None: nothing written yet).
    `reset_of`: the epoch a replica remembered when it found the store emptied, until `state restore`."""

    epoch: str | None
    reset_of: str | None


@runtime_checkable
class EpochStore(Protocol):
    """Lets replicas notice a store that lost its data, and an admin put the state back."""

    def epoch_state(self) -> EpochState: ...

    def mark_reset(self, lost_epoch: str) -> None:
        """Records that the data of `lost_epoch` is gone (kept if a mark is already there)."""
        ...

    def clear_reset(self) -> None:
        """Removes the mark: the state was restored (or accepted as it is)."""
        ...

    def import_audit(self, records: Sequence[AuditRecord]) -> int:
        """Writes entries verbatim (seq and hashes kept) into an empty audit log and returns how many;
        raises `rollout.errors.Conflict` when the log already has entries."""
        ...
