"""The embedded state store: one SQLite file in WAL mode, safe for several threads and processes.

Writes commit with `synchronous=FULL` before they return; a notifier thread delivers this process's
changes at once and polls the `changes` table so that other processes' writes are seen too.
"""

from __future__ import annotations

import builtins
import logging
import queue
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rollout.audit import GENESIS_HASH, chain_next
from rollout.errors import Conflict, InvalidSpec, StoreUnavailable
from rollout.store import codec
from rollout.store.base import AuditRecord, Change, Document, EpochState, SliceRecord, Write

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
BUSY_TIMEOUT_S = 5.0  # another process holding the write lock longer than this = unavailable
CHANGES_KEPT = 10_000  # the change feed is a notification channel, not history
PRUNE_EVERY_S = 10.0  # expired slices are deleted at most this often (a read skips them anyway)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, revision INTEGER NOT NULL,
    PRIMARY KEY (kind, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, ts REAL NOT NULL, model TEXT NOT NULL, entry TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_model ON audit (model, seq);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, writer TEXT NOT NULL,
    kind TEXT NOT NULL, key TEXT NOT NULL, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS slices (
    model TEXT NOT NULL, version TEXT NOT NULL, second INTEGER NOT NULL, name TEXT NOT NULL,
    replica TEXT NOT NULL, data BLOB NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (model, version, second, name, replica)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


def path_from_url(url: str) -> str:
    """`sqlite:///abs/path.db` -> "/abs/path.db"; `sqlite:///:memory:` -> ":memory:"."""
    if not url.startswith("sqlite:///"):
        raise InvalidSpec("store", f"expected sqlite:///<absolute path> or sqlite:///:memory:, got {url!r}")
    rest = url[len("sqlite://"):]
    if rest == "/:memory:":
        return ":memory:"
    if not Path(rest).is_absolute() or rest.endswith("/"):
        raise InvalidSpec("store", f"expected an absolute file path after sqlite://, got {url!r}")
    return rest


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """SQLite's 'cannot reach the data' errors become StoreUnavailable; programming errors stay."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(f"sqlite store cannot {what}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        if type(exc) is not sqlite3.DatabaseError:  # IntegrityError etc. are bugs, not outages
            raise
        raise StoreUnavailable(f"sqlite store cannot {what}: {exc}") from exc


class SqliteStore:
    """`StateStore` on one SQLite database (a file, or `:memory:` for tests and one-off runs)."""

    def __init__(self, url: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.url = url
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._path = path_from_url(url)
        self._writer = uuid.uuid4().hex  # tells this instance's rows in `changes` from others'
        self._lock = threading.RLock()
        self._closed = False
        self._callbacks: list[Callable[[Change], None]] = []
        self._notifier: _Notifier | None = None
        self._pruned_at = 0.0
        with _mapped(f"open {self._path}"):
            self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            try:
                self._configure()
            except BaseException:
                self._conn.close()
                raise

    def _configure(self) -> None:
        # WAL lets readers in other processes run beside a writer. synchronous=FULL fsyncs the WAL at
        # every commit, so an acknowledged write survives power loss; NORMAL would only survive a
        # process crash, and control-path writes are rare enough that the fsync costs nothing visible.
        self._conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                self._prepare()
                return
            except sqlite3.OperationalError as exc:
                # Switching a new file to WAL needs every other connection out of it, and SQLite reports
                # "locked" at once instead of waiting (several workers opening one file at start).
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(random.uniform(0.005, 0.03))

    def _prepare(self) -> None:
        if self._path != ":memory:":
            mode = str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            if mode != "wal":  # the switch did not happen: another connection held the file
                raise sqlite3.OperationalError(f"database is locked (journal mode stayed {mode})")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.executescript(_SCHEMA)

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        return cls(url)

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock, _mapped(what):
            self._check_open()
            yield self._conn

    @contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken up front, so a compare-and-set cannot
        interleave with another process's write between its read and its write."""
        with self._lock, _mapped(what):
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"store {self.url} is closed")

    # -- documents -----------------------------------------------------------------------------

    def get(self, kind: str, key: str) -> Document | None:
        with self._reading("read") as conn:
            row = conn.execute("SELECT value, revision FROM documents WHERE kind = ? AND key = ?",
                               (kind, key)).fetchone()
        return None if row is None else Document(codec.decode_document(kind, key, row[0]), row[1])

    def put(self, kind: str, key: str, value: Mapping[str, Any],
            expected_revision: int | None = None) -> int:
        return self.put_many([Write(kind, key, value, expected_revision)])[0]

    def put_many(self, writes: Sequence[Write]) -> builtins.list[int]:
        encoded = codec.check_writes(writes)
        with self._writing("write") as conn:
            current = [self._revision(conn, w.kind, w.key) for w in writes]
            for w, rev in zip(writes, current, strict=True):
                if w.expected_revision is not None and w.expected_revision != rev:
                    raise codec.stale(w.kind, w.key, w.expected_revision, rev)
            revisions = [self._apply(conn, w, text, rev)
                         for w, text, rev in zip(writes, encoded, current, strict=True)]
            changes = [Change(w.kind, w.key, r) for w, r in zip(writes, revisions, strict=True)]
            self._record_changes(conn, changes)
            _stamp_epoch(conn)
        with self._lock:
            if self._notifier is not None:
                self._notifier.push(changes)
        return revisions

    @staticmethod
    def _revision(conn: sqlite3.Connection, kind: str, key: str) -> int:
        row = conn.execute("SELECT revision FROM documents WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def _apply(conn: sqlite3.Connection, w: Write, text: str | None, rev: int) -> int:
        if text is None:
            conn.execute("DELETE FROM documents WHERE kind = ? AND key = ?", (w.kind, w.key))
            return 0
        conn.execute("INSERT OR REPLACE INTO documents (kind, key, value, revision) VALUES (?, ?, ?, ?)",
                     (w.kind, w.key, text, rev + 1))
        return rev + 1

    def _record_changes(self, conn: sqlite3.Connection, changes: builtins.list[Change]) -> None:
        conn.executemany("INSERT INTO changes (writer, kind, key, revision) VALUES (?, ?, ?, ?)",
                         [(self._writer, c.kind, c.key, c.revision) for c in changes])
        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        conn.execute("DELETE FROM changes WHERE id <= ?", (last - CHANGES_KEPT,))

    def list(self, kind: str, prefix: str = "") -> builtins.list[tuple[str, Document]]:
        # substr() rather than LIKE: keys may hold % or _, and LIKE ignores case.
        with self._reading("list") as conn:
            rows = conn.execute(
                "SELECT key, value, revision FROM documents WHERE kind = ? AND substr(key, 1, ?) = ? "
                "ORDER BY key", (kind, len(prefix), prefix)).fetchall()
        return [(k, Document(codec.decode_document(kind, k, v), r)) for k, v, r in rows]

    # -- audit ---------------------------------------------------------------------------------

    def append_audit(self, actor: str, action: str, model: str, version: str,
                     before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                     reason: str, evidence: Mapping[str, Any] | None = None,
                     ts: float | None = None) -> AuditRecord:
        stamp = time.time() if ts is None else ts
        with self._writing("append to the audit log") as conn:
            row = conn.execute("SELECT entry FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            last = codec.decode_record(row[0]) if row else None
            record = chain_next(last.seq if last else 0, last.hash if last else GENESIS_HASH,
                                actor=actor, action=action, model=model, version=version, before=before,
                                after=after, reason=reason, evidence=evidence, ts=stamp)
            conn.execute("INSERT INTO audit (seq, ts, model, entry) VALUES (?, ?, ?, ?)",
                         (record.seq, record.ts, record.model, codec.encode_record(record)))
            _stamp_epoch(conn)
        return record

    def audit(self, model: str | None = None, since: float | None = None,
              limit: int = 1000) -> builtins.list[AuditRecord]:
        sql = "SELECT entry FROM audit WHERE ts >= ?"
        args: builtins.list[object] = [float("-inf") if since is None else since]
        if model is not None:
            sql, args = sql + " AND model = ?", [*args, model]
        with self._reading("read the audit log") as conn:
            rows = conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [codec.decode_record(r[0]) for r in rows]

    def audit_all(self) -> builtins.list[AuditRecord]:
        with self._reading("read the audit log") as conn:
            rows = conn.execute("SELECT entry FROM audit ORDER BY seq").fetchall()
        return [codec.decode_record(r[0]) for r in rows]

    # -- scale-out support ---------------------------------------------------------------------

    def put_slices(self, records: Sequence[SliceRecord], ttl_s: float) -> None:
        expires = time.time() + codec.check_ttl(ttl_s)
        rows = [(*codec.check_slice(r), r.data, expires) for r in records]
        with self._writing("write slices") as conn:
            conn.executemany("INSERT OR REPLACE INTO slices (model, version, second, name, replica, data, "
                             "expires) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                conn.execute("DELETE FROM slices WHERE expires < ?", (time.time(),))
                self._pruned_at = time.monotonic()

    def read_slices(self, model: str, version: str, first: int, last: int,
                    names: Collection[str] | None = None) -> builtins.list[SliceRecord]:
        codec.check_span(first, last)
        with self._reading("read slices") as conn:
            rows = conn.execute("SELECT second, name, replica, data FROM slices WHERE model = ? AND "
                                "version = ? AND second >= ? AND second < ? AND expires >= ? ORDER BY second",
                                (model, version, first, last, time.time())).fetchall()
        return [SliceRecord(model, version, int(second), name, replica, bytes(data))
                for second, name, replica, data in rows if names is None or name in names]

    def epoch_state(self) -> EpochState:
        with self._reading("read the store epoch") as conn:
            found = dict(conn.execute("SELECT name, value FROM meta WHERE name IN ('epoch', 'reset_of')"))
        return EpochState(found.get("epoch"), found.get("reset_of"))

    def mark_reset(self, lost_epoch: str) -> None:
        with self._writing("mark the store as reset") as conn:
            conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('reset_of', ?)", (lost_epoch,))

    def clear_reset(self) -> None:
        with self._writing("clear the reset mark") as conn:
            conn.execute("DELETE FROM meta WHERE name = 'reset_of'")

    def import_audit(self, records: Sequence[AuditRecord]) -> int:
        with self._writing("import the audit log") as conn:
            if conn.execute("SELECT count(*) FROM audit").fetchone()[0]:
                raise Conflict("the audit log already has entries; an import needs an empty one")
            conn.executemany("INSERT INTO audit (seq, ts, model, entry) VALUES (?, ?, ?, ?)",
                             [(r.seq, r.ts, r.model, codec.encode_record(r)) for r in records])
            if records:
                _stamp_epoch(conn)
        return len(records)

    # -- notifications -------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        with self._lock:
            self._check_open()
            self._callbacks.append(callback)
            if self._notifier is None:
                self._notifier = _Notifier(self, self._feed_end())

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
                notifier = None if self._callbacks else self._notifier
                if notifier is not None:
                    self._notifier = None
            if notifier is not None:
                notifier.stop()

        return unsubscribe

    def _feed_end(self) -> int:
        # Changes written before anyone listened are not replayed: start at the feed's current end.
        with _mapped("read the change feed"):
            return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0])

    def _poll(self, seen: int) -> tuple[int, builtins.list[Change]]:
        """Other writers' changes recorded after `seen`, and the new high-water mark."""
        if self._path == ":memory:":
            return seen, []  # nobody else can write to a private in-memory database
        with self._reading("poll the change feed") as conn:
            rows = conn.execute("SELECT id, writer, kind, key, revision FROM changes WHERE id > ? "
                                "ORDER BY id", (seen,)).fetchall()
        found = [Change(kind, key, rev) for _, writer, kind, key, rev in rows if writer != self._writer]
        return (rows[-1][0] if rows else seen), found

    def _deliver(self, change: Change) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        codec.deliver(callbacks, change)

    # -- lifecycle -----------------------------------------------------------------------------

    def ping(self) -> bool:
        try:
            with self._reading("ping") as conn:
                conn.execute("SELECT 1").fetchone()
        except StoreUnavailable:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            notifier, self._notifier = self._notifier, None
            self._callbacks.clear()
        if notifier is not None:
            notifier.stop()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


def _stamp_epoch(conn: sqlite3.Connection) -> None:
    """The first write into an empty database names its epoch (see `EpochStore`)."""
    conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('epoch', ?)", (uuid.uuid4().hex,))


class _Notifier:
    """The thread that delivers changes: this process's at once, other processes' by polling."""

    def __init__(self, store: SqliteStore, seen: int) -> None:
        self._store = store
        self._seen = seen
        self._queue: queue.SimpleQueue[list[Change] | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="servegate-sqlite-notifier", daemon=True)
        self._thread.start()

    def push(self, changes: list[Change]) -> None:
        self._queue.put(changes)

    def stop(self) -> None:
        self._stopped.set()
        self._queue.put(None)
        if self._thread is not threading.current_thread():  # a callback may unsubscribe itself
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                batch = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                batch = self._poll()
            for change in batch or ():
                if self._stopped.is_set():
                    return
                self._store._deliver(change)

    def _poll(self) -> list[Change]:
        try:
            self._seen, found = self._store._poll(self._seen)
        except StoreUnavailable as exc:
            log.warning("change poll failed, will retry: %s", exc)
            return []
        return found
