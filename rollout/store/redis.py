"""The shared state store for several replicas: Redis, with Lua scripts for compare-and-set and audit.

Durability comes from the server's AOF (`appendfsync always` in our deployments); changes are
published on a channel from inside the writing script and heard by a reconnecting listener thread.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rollout.audit import chain_next
from rollout.errors import Conflict, InvalidSpec, StaleWrite, StoreUnavailable
from rollout.store import codec
from rollout.store.base import AuditRecord, Change, Document, EpochState, SliceRecord, Write

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "servegate:"
SOCKET_TIMEOUT_S = 2.0  # a dead Redis must fail a control-path call fast, not hang it
CONNECT_TIMEOUT_S = 1.0
LISTEN_POLL_S = 0.2
AUDIT_RETRIES = 100  # appends race only with other appenders; each lost race costs one round trip
AUDIT_PAGE = 200
AUDIT_IMPORT_CHUNK = 500  # entries per import script call: keeps one call's arguments small
_OUTAGE_REPLIES = ("MISCONF", "OOM", "MASTERDOWN", "READONLY", "LOADING")

# Checks every expected revision first, then writes, indexes and publishes: all or nothing.
# KEYS: n document hashes, then n kind indexes, then the meta hash.
# ARGV: channel, n, epoch-if-new, then per write: expected ("" = any), envelope ("" = delete), kind, key.
_PUT_MANY = """
local n = tonumber(ARGV[2])
local current = {}
for i = 1, n do
  current[i] = tonumber(redis.call('HGET', KEYS[i], 'revision') or '0')
  local expected = ARGV[4 + (i - 1) * 4]
  if expected ~= '' and tonumber(expected) ~= current[i] then return {'stale', i, current[i]} end
end
redis.call('HSETNX', KEYS[2 * n + 1], 'epoch', ARGV[3])
local out = {'ok'}
for i = 1, n do
  local base = 4 + (i - 1) * 4
  local value, kind, key = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local rev = 0
  if value == '' then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[n + i], key)
  else
    rev = current[i] + 1
    redis.call('HSET', KEYS[i], 'value', value, 'revision', rev)
    redis.call('ZADD', KEYS[n + i], 0, key)
  end
  out[i + 1] = rev
  redis.call('PUBLISH', ARGV[1], cjson.encode({kind = kind, key = key, revision = rev}))
end
return out
"""

# Appends only if the chain's head is still the one the entry was hashed against.
# KEYS: head hash, entries hash, the model's index, meta hash. ARGV: head seq read, seq, hash, entry, epoch.
_APPEND_AUDIT = """
local head = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if head ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSETNX', KEYS[4], 'epoch', ARGV[5])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'hash', ARGV[3])
redis.call('ZADD', KEYS[3], tonumber(ARGV[2]), ARGV[2])
return 1
"""

# Imports entries verbatim, only on top of the head the caller saw (0 = an empty log).
# KEYS: head hash, entries hash, meta hash. ARGV: head seq expected, epoch, new head seq, new head hash,
# the model index key prefix, then per entry: seq, model, stored entry.
_IMPORT_AUDIT = """
local head = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if head ~= tonumber(ARGV[1]) then return 0 end
if head == 0 and redis.call('HLEN', KEYS[2]) > 0 then return 0 end
redis.call('HSETNX', KEYS[3], 'epoch', ARGV[2])
for i = 6, #ARGV, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', ARGV[5] .. ARGV[i + 1], tonumber(ARGV[i]), ARGV[i])
end
redis.call('HSET', KEYS[1], 'seq', ARGV[3], 'hash', ARGV[4])
return 1
"""

# A consistent snapshot of one kind: keys from the index, each with its value and revision.
# KEYS: the kind index. ARGV: document key prefix, lex min, lex max.
_LIST = """
local out = {}
for _, k in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3])) do
  local v = redis.call('HMGET', ARGV[1] .. k, 'value', 'revision')
  if v[1] then out[#out + 1] = k; out[#out + 1] = v[1]; out[#out + 1] = v[2] end
end
return out
"""


def split_url(url: str) -> tuple[str, str, str]:
    """Returns (connection URL, key prefix from `?prefix=`, URL safe to log: no password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise InvalidSpec("store", f"expected redis://host:port/db, got scheme {parts.scheme!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), DEFAULT_PREFIX)
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    conn_url = urlunsplit(parts._replace(query=rest))
    netloc = parts.netloc if parts.password is None else parts.netloc.replace(f":{parts.password}@", ":***@")
    return conn_url, prefix, urlunsplit(parts._replace(netloc=netloc))


def _text(value: object) -> str:
    """Redis replies are bytes (responses are not decoded, so values stay byte-exact)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _is_outage(exc: redis.exceptions.ResponseError) -> bool:
    return str(exc).startswith(_OUTAGE_REPLIES)


class RedisStore:
    """`StateStore` on one Redis server (single node; no WAIT). Construction does not connect."""

    def __init__(self, url: str, *, prefix: str | None = None) -> None:
        conn_url, url_prefix, self.url = split_url(url)
        self.prefix = url_prefix if prefix is None else prefix
        self.channel = f"{self.prefix}changes"
        # One retry on a connection error heals a pooled socket that died with a server restart.
        self._client = redis.Redis.from_url(
            conn_url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        )
        self._put_many = self._client.register_script(_PUT_MANY)
        self._append = self._client.register_script(_APPEND_AUDIT)
        self._list = self._client.register_script(_LIST)
        self._import = self._client.register_script(_IMPORT_AUDIT)
        self._lock = threading.Lock()
        self._callbacks: builtins.list[Callable[[Change], None]] = []
        self._listener: _Listener | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        return cls(url)

    # -- key layout ----------------------------------------------------------------------------

    def _doc_key(self, kind: str, key: str) -> str:
        return f"{self.prefix}doc:{kind}:{key}"

    def _index_key(self, kind: str) -> str:
        return f"{self.prefix}index:{kind}"

    @property
    def _meta_key(self) -> str:
        return f"{self.prefix}meta"

    @property
    def _audit_keys(self) -> tuple[str, str]:
        return f"{self.prefix}audit:head", f"{self.prefix}audit:entries"

    def _audit_model_key(self, model: str) -> str:
        return f"{self.prefix}audit:model:{model}"

    def _slice_key(self, model: str, version: str, second: int) -> str:
        return f"{self.prefix}slice:{model}:{version}:{second}"

    @contextmanager
    def _mapped(self, what: str) -> Iterator[redis.Redis]:
        if self._closed:
            raise StoreUnavailable(f"store {self.url} is closed")
        try:
            yield self._client
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailable(f"redis store {self.url} cannot {what}: {exc}") from exc
        except redis.exceptions.ResponseError as exc:
            if not _is_outage(exc):
                raise
            raise StoreUnavailable(f"redis store {self.url} cannot {what}: {exc}") from exc

    # -- documents -----------------------------------------------------------------------------

    def get(self, kind: str, key: str) -> Document | None:
        with self._mapped("read") as client:
            value, revision = client.hmget(self._doc_key(kind, key), ["value", "revision"])
        if value is None:
            return None
        return Document(codec.decode_document(kind, key, value), int(_text(revision)))

    def put(self, kind: str, key: str, value: Mapping[str, Any],
            expected_revision: int | None = None) -> int:
        return self.put_many([Write(kind, key, value, expected_revision)])[0]

    def put_many(self, writes: Sequence[Write]) -> builtins.list[int]:
        encoded = codec.check_writes(writes)
        if not writes:
            return []
        keys = [self._doc_key(w.kind, w.key) for w in writes] + [self._index_key(w.kind) for w in writes]
        args: builtins.list[str | int] = [self.channel, len(writes), uuid.uuid4().hex]
        for w, text in zip(writes, encoded, strict=True):
            expected = "" if w.expected_revision is None else w.expected_revision
            args += [expected, text or "", w.kind, w.key]
        with self._mapped("write") as client:
            reply = self._put_many(keys=[*keys, self._meta_key], args=args, client=client)
        if reply[0] == b"stale":
            w = writes[int(reply[1]) - 1]
            raise codec.stale(w.kind, w.key, int(w.expected_revision or 0), int(reply[2]))
        return [int(r) for r in reply[1:]]

    def list(self, kind: str, prefix: str = "") -> builtins.list[tuple[str, Document]]:
        low, high = ("-", "+") if not prefix else (b"[" + prefix.encode(), b"(" + prefix.encode() + b"\xff")
        with self._mapped("list") as client:
            flat = self._list(keys=[self._index_key(kind)], args=[self._doc_key(kind, ""), low, high],
                              client=client)
        out = []
        for i in range(0, len(flat), 3):
            key = _text(flat[i])
            out.append((key, Document(codec.decode_document(kind, key, flat[i + 1]), int(flat[i + 2]))))
        return out

    # -- audit ---------------------------------------------------------------------------------

    def append_audit(self, actor: str, action: str, model: str, version: str,
                     before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                     reason: str, evidence: Mapping[str, Any] | None = None,
                     ts: float | None = None) -> AuditRecord:
        stamp = time.time() if ts is None else ts
        head_key, entries_key = self._audit_keys
        keys = [head_key, entries_key, self._audit_model_key(model), self._meta_key]
        for _ in range(AUDIT_RETRIES):
            with self._mapped("append to the audit log") as client:
                seq, last_hash = client.hmget(head_key, ["seq", "hash"])
                last_seq = int(seq or 0)
                record = chain_next(last_seq, _text(last_hash or b""), actor=actor, action=action,
                                    model=model, version=version, before=before, after=after,
                                    reason=reason, evidence=evidence, ts=stamp)
                args: builtins.list[str | int] = [last_seq, record.seq, record.hash, codec.encode_record(record), uuid.uuid4().hex]
                if self._append(keys=keys, args=args, client=client) == 1:
                    return record
        raise StaleWrite(f"audit append lost {AUDIT_RETRIES} races in a row against other writers")

    def audit(self, model: str | None = None, since: float | None = None,
              limit: int = 1000) -> builtins.list[AuditRecord]:
        out: builtins.list[AuditRecord] = []
        for page in self._audit_pages(model):
            out += [r for r in page if since is None or r.ts >= since]
            if len(out) >= limit:
                break
        return out[:limit]

    def _audit_pages(self, model: str | None) -> Iterator[builtins.list[AuditRecord]]:
        """Entries newest first, a page at a time (seq order; entries removed by hand are skipped)."""
        head_key, entries_key = self._audit_keys
        with self._mapped("read the audit log") as client:
            top = int(client.hget(head_key, "seq") or 0)
        offset = 0
        while True:
            with self._mapped("read the audit log") as client:
                if model is None:
                    seqs = [str(s) for s in range(top - offset, max(top - offset - AUDIT_PAGE, 0), -1)]
                else:
                    seqs = [_text(s) for s in client.zrevrange(self._audit_model_key(model), offset,
                                                                 offset + AUDIT_PAGE - 1)]
                texts = client.hmget(entries_key, seqs) if seqs else []
            if not seqs:
                return
            yield [codec.decode_record(t) for t in texts if t is not None]
            offset += AUDIT_PAGE

    def audit_all(self) -> builtins.list[AuditRecord]:
        with self._mapped("read the audit log") as client:
            texts = client.hvals(self._audit_keys[1])
        return sorted((codec.decode_record(t) for t in texts), key=lambda r: r.seq)

    # -- scale-out support ---------------------------------------------------------------------

    def epoch(self) -> str | None:
        """The id written with the first write into an empty Redis. Remember it; a different value or
        None later means Redis lost its data (restarted empty or flushed) and must be re-seeded."""
        with self._mapped("read the store epoch") as client:
            value = client.hget(self._meta_key, "epoch")
        return None if value is None else _text(value)

    def epoch_state(self) -> EpochState:
        with self._mapped("read the store epoch") as client:
            epoch, reset_of = client.hmget(self._meta_key, ["epoch", "reset_of"])
        return EpochState(None if epoch is None else _text(epoch), None if reset_of is None else _text(reset_of))

    def mark_reset(self, lost_epoch: str) -> None:
        with self._mapped("mark the store as reset") as client:
            client.hsetnx(self._meta_key, "reset_of", lost_epoch)

    def clear_reset(self) -> None:
        with self._mapped("clear the reset mark") as client:
            client.hdel(self._meta_key, "reset_of")

    def import_audit(self, records: Sequence[AuditRecord]) -> int:
        head_key, entries_key = self._audit_keys
        expected = 0
        for start in range(0, len(records), AUDIT_IMPORT_CHUNK):
            chunk = records[start:start + AUDIT_IMPORT_CHUNK]
            args: builtins.list[str | int] = [expected, uuid.uuid4().hex, chunk[-1].seq, chunk[-1].hash,
                                              self._audit_model_key("")]
            for r in chunk:
                args += [r.seq, r.model, codec.encode_record(r)]
            with self._mapped("import the audit log") as client:
                done = self._import(keys=[head_key, entries_key, self._meta_key], args=args, client=client)
            if done != 1:
                raise Conflict("the audit log already has entries (or gained some during the import); "
                               "an import needs an empty one")
            expected = chunk[-1].seq
        return len(records)

    def put_slices(self, records: Sequence[SliceRecord], ttl_s: float) -> None:
        ttl = max(1, math.ceil(codec.check_ttl(ttl_s)))
        grouped: dict[str, dict[str, bytes]] = {}
        for r in records:
            model, version, second, name, replica = codec.check_slice(r)
            grouped.setdefault(self._slice_key(model, version, second), {})[f"{name}|{replica}"] = r.data
        if not grouped:
            return
        with self._mapped("write slices") as client:
            pipe = client.pipeline(transaction=False)
            for key, fields in grouped.items():
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.expire(key, ttl)
            pipe.execute()

    def read_slices(self, model: str, version: str, first: int, last: int,
                    names: Collection[str] | None = None) -> builtins.list[SliceRecord]:
        codec.check_span(first, last)
        seconds = range(first, last)
        if not seconds:
            return []
        with self._mapped("read slices") as client:
            pipe = client.pipeline(transaction=False)
            for second in seconds:
                pipe.hgetall(self._slice_key(model, version, second))
            replies = pipe.execute()
        out = []
        for second, fields in zip(seconds, replies, strict=True):
            for field, data in sorted(fields.items()):
                name, _, replica = _text(field).partition("|")
                if names is None or name in names:
                    out.append(SliceRecord(model, version, second, name, replica, bytes(data)))
        return out

    # -- notifications -------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"store {self.url} is closed")
            self._callbacks.append(callback)
            if self._listener is None:
                self._listener = _Listener(self._client, self.channel, self._deliver)
            listener = self._listener
        # Return once the server has confirmed the subscription, so that the caller's next write is
        # heard; with Redis down, give up waiting after the timeouts and let the listener keep trying.
        listener.ready.wait(CONNECT_TIMEOUT_S + SOCKET_TIMEOUT_S)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
                listener = None if self._callbacks else self._listener
                if listener is not None:
                    self._listener = None
            if listener is not None:
                listener.stop()

        return unsubscribe

    def _deliver(self, change: Change) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        codec.deliver(callbacks, change)

    # -- lifecycle -----------------------------------------------------------------------------

    def ping(self) -> bool:
        try:
            with self._mapped("ping") as client:
                return bool(client.ping())
        except Exception:  # the contract: ping reports, it never raises
            return False

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            self._callbacks.clear()
            closed, self._closed = self._closed, True
        if listener is not None:
            listener.stop()
        if not closed:
            self._client.close()
            self._client.connection_pool.disconnect()


class _Listener:
    """A pub/sub thread that reconnects after errors; messages missed while away are not replayed."""

    def __init__(self, client: redis.Redis, channel: str, deliver: Callable[[Change], None]) -> None:
        self._client = client
        self._channel = channel
        self._deliver = deliver
        self._stopped = threading.Event()
        self.ready = threading.Event()  # set while a subscription is confirmed
        self._thread = threading.Thread(target=self._run, name="servegate-redis-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():  # a callback may unsubscribe itself
            self._thread.join()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopped.is_set():
            pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
                backoff = 0.1
                self._listen(pubsub)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("change listener lost redis, reconnecting: %s", exc)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self.ready.clear()
                pubsub.close()

    def _listen(self, pubsub: Any) -> None:
        while not self._stopped.is_set():
            message = pubsub.get_message(timeout=LISTEN_POLL_S)
            if message is not None and message.get("type") == "subscribe":
                self.ready.set()
            if message is None or message.get("type") != "message":
                continue
            try:
                data = json.loads(message["data"])
                change = Change(str(data["kind"]), str(data["key"]), int(data["revision"]))
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring a malformed change message on %s", self._channel)
                continue
            self._deliver(change)
