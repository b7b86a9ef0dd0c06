"""This replica's copy of the last good state it read from the store (documents and the audit chain),
kept in memory and served at `GET /admin/v1/state/snapshot` for `servegate state restore --from-replica`
when the store lost its data.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from gateway.admin.auth import ADMIN, Authenticator
from gateway.errors import ServerNotReady
from gateway.protocol.http_server import Request, Response, Route
from gateway.store_watch import StoreWatch
from rollout.errors import StoreUnavailable
from rollout.snapshot import Documents, Snapshot, read_documents
from rollout.store.base import STATE_KINDS, AuditRecord, Change, EpochStore, StateStore

log = logging.getLogger(__name__)

SNAPSHOT_PATH = "/admin/v1/state/snapshot"
REFRESH_S = 5.0
DEBOUNCE_S = 0.3  # a change is followed by its audit entry: read both in one pass
AUDIT_STEP = 200


class StateMirror:
    """Refreshes after every change notification and every `interval_s`, but only from the store epoch
    the replica's watch trusts: a store that came back empty never overwrites the copy."""

    def __init__(self, store: StateStore, watch: StoreWatch, *, source: str,
                 interval_s: float = REFRESH_S) -> None:
        self.store, self.watch, self.source, self.interval_s = store, watch, source, interval_s
        self._documents: Documents = {}
        self._audit: list[AuditRecord] = []
        self.taken_at = 0.0
        self.epoch: str | None = None

    def snapshot(self) -> Snapshot | None:
        if self.taken_at == 0.0:
            return None
        return Snapshot(self._documents, tuple(self._audit), self.taken_at, self.epoch, self.source)

    def refresh(self, now: float) -> bool:
        """Re-reads the state (blocking I/O); False when the store is not the trusted epoch or down."""
        trusted = self.watch.epoch
        if self.watch.reset or trusted is None or not isinstance(self.store, EpochStore):
            return False
        try:
            if self.store.epoch_state().epoch != trusted:
                return False
            documents, audit = read_documents(self.store), self._audit + self._new_audit()
            if self.store.epoch_state().epoch != trusted:  # emptied while reading: discard
                return False
        except StoreUnavailable:
            return False
        self._documents, self._audit, self.taken_at, self.epoch = documents, audit, now, trusted
        return True

    def _new_audit(self) -> list[AuditRecord]:
        last = self._audit[-1].seq if self._audit else 0
        newest = self.store.audit(limit=AUDIT_STEP)  # newest first
        if len(newest) < AUDIT_STEP or newest[-1].seq <= last + 1:
            return [r for r in reversed(newest) if r.seq > last]
        return [r for r in self.store.audit_all() if r.seq > last]

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def notify(change: Change) -> None:
            if change.kind in STATE_KINDS:  # not the lease renewals, every second or so, which the copy leaves out
                loop.call_soon_threadsafe(changed.set)

        try:
            unsubscribe = await asyncio.to_thread(self.store.subscribe, notify)
        except StoreUnavailable:
            unsubscribe = None  # the periodic refresh still runs
        try:
            while not stop.is_set():
                await asyncio.to_thread(self.refresh, time.time())
                await _wait_any((stop, changed), self.interval_s)
                if changed.is_set() and not stop.is_set():
                    changed.clear()
                    await asyncio.sleep(DEBOUNCE_S)
        finally:
            if unsubscribe is not None:
                unsubscribe()

    def route(self, authenticator: Authenticator) -> Route:
        """`GET /admin/v1/state/snapshot` (role admin): the copy as a `servegate-state` JSON document."""

        async def handler(req: Request) -> Response:
            authenticator.authorize(req.headers.get("authorization"), ADMIN)
            snapshot = self.snapshot()
            if snapshot is None:
                raise ServerNotReady("this replica has not read a complete state from the store yet")
            return Response(200, orjson.dumps(snapshot.to_dict()))

        return Route("GET", SNAPSHOT_PATH, handler)


async def _wait_any(events: tuple[asyncio.Event, ...], timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
