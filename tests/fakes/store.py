"""An in-memory `StateStore` with the real stores' semantics, for unit tests of the control path.

It shares the real codec (same envelope, same errors, same audit hashes) and delivers changes
synchronously in the writer's thread, after the write, so tests need not wait. `available = False`
makes every call raise `StoreUnavailable`, as a lost backend would.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from rollout.audit import GENESIS_HASH, chain_next
from rollout.errors import StoreUnavailable
from rollout.store import codec
from rollout.store.base import AuditRecord, Change, Document, Write

log = logging.getLogger(__name__)


class FakeStore:
    """Thread-safe; documents are kept as encoded text so callers can never alias stored values."""

    url = "memory://fake"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._docs: dict[tuple[str, str], tuple[str, int]] = {}
        self._audit: list[AuditRecord] = []
        self._callbacks: list[Callable[[Change], None]] = []
        self.available = True
        self.writes = 0  # successful put/put_many calls, for tests that count round trips

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable(f"store {self.url} is unavailable (test switch)")

    def get(self, kind: str, key: str) -> Document | None:
        with self._lock:
            self._check()
            found = self._docs.get((kind, key))
        return None if found is None else Document(codec.decode_document(kind, key, found[0]), found[1])

    def put(self, kind: str, key: str, value: Mapping[str, Any],
            expected_revision: int | None = None) -> int:
        return self.put_many([Write(kind, key, value, expected_revision)])[0]

    def put_many(self, writes: Sequence[Write]) -> builtins.list[int]:
        encoded = codec.check_writes(writes)
        with self._lock:
            self._check()
            for w in writes:
                current = self._docs.get((w.kind, w.key), ("", 0))[1]
                if w.expected_revision is not None and w.expected_revision != current:
                    raise codec.stale(w.kind, w.key, w.expected_revision, current)
            revisions = [self._apply(w, text) for w, text in zip(writes, encoded, strict=True)]
            self.writes += 1
        self._notify([Change(w.kind, w.key, r) for w, r in zip(writes, revisions, strict=True)])
        return revisions

    def _apply(self, w: Write, text: str | None) -> int:
        if text is None:
            self._docs.pop((w.kind, w.key), None)
            return 0
        revision = self._docs.get((w.kind, w.key), ("", 0))[1] + 1
        self._docs[(w.kind, w.key)] = (text, revision)
        return revision

    def list(self, kind: str, prefix: str = "") -> builtins.list[tuple[str, Document]]:
        with self._lock:
            self._check()
            rows = sorted((k, v) for (kd, k), v in self._docs.items() if kd == kind and k.startswith(prefix))
        return [(k, Document(codec.decode_document(kind, k, text), rev)) for k, (text, rev) in rows]

    def append_audit(self, actor: str, action: str, model: str, version: str,
                     before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                     reason: str, evidence: Mapping[str, Any] | None = None,
                     ts: float | None = None) -> AuditRecord:
        with self._lock:
            self._check()
            last = self._audit[-1] if self._audit else None
            record = chain_next(last.seq if last else 0, last.hash if last else GENESIS_HASH,
                                actor=actor, action=action, model=model, version=version,
                                before=before, after=after, reason=reason, evidence=evidence,
                                ts=time.time() if ts is None else ts)
            self._audit.append(record)
        return record

    def audit(self, model: str | None = None, since: float | None = None,
              limit: int = 1000) -> builtins.list[AuditRecord]:
        with self._lock:
            self._check()
            rows = [r for r in reversed(self._audit)
                    if (model is None or r.model == model) and (since is None or r.ts >= since)]
        return rows[:limit]

    def audit_all(self) -> builtins.list[AuditRecord]:
        with self._lock:
            self._check()
            return list(self._audit)

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def _notify(self, changes: builtins.list[Change]) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for change in changes:
            for callback in callbacks:
                try:
                    callback(change)
                except Exception:  # as in the real stores: one subscriber's bug stays its own
                    log.exception("change subscriber failed on %s/%s", change.kind, change.key)

    def ping(self) -> bool:
        return self.available

    def close(self) -> None:
        with self._lock:
            self._callbacks.clear()

    # -- test hooks: what an attacker with write access to the backend could do ----------------

    def tamper_audit(self, seq: int, **fields: Any) -> None:
        """Edits a stored audit entry in place, leaving its hash as it was."""
        with self._lock:
            i = next(i for i, r in enumerate(self._audit) if r.seq == seq)
            self._audit[i] = replace(self._audit[i], **fields)

    def delete_audit(self, seq: int) -> None:
        with self._lock:
            self._audit = [r for r in self._audit if r.seq != seq]
