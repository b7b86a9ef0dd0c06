"""State stores: one protocol, an embedded SQLite backend and a Redis backend for replicas.

`open_store(url)` picks the backend from the URL's scheme; the Redis client is imported only when asked for.
"""

from __future__ import annotations

from rollout.errors import InvalidSpec
from rollout.store.base import StateStore

SUPPORTED_URLS = "sqlite:///<absolute path>.db, sqlite:///:memory: or redis://host:port/<db>"


def open_store(url: str) -> StateStore:
    """Opens the store that `url` names; anything else is an `InvalidSpec` on the field `store`."""
    if not isinstance(url, str) or not url:
        raise InvalidSpec("store", f"expected a store URL ({SUPPORTED_URLS}), got {url!r}")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from rollout.store.sqlite import SqliteStore

        return SqliteStore(url)
    if scheme in ("redis", "rediss", "unix"):
        from rollout.store.redis import RedisStore

        return RedisStore(url)
    shown = url.split("@")[-1]  # never echo credentials
    raise InvalidSpec("store", f"unsupported store URL {shown!r}: expected {SUPPORTED_URLS}")
