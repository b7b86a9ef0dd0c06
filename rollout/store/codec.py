"""How every backend encodes what it stores: the versioned JSON envelope, audit entries, write checks.

Keeping one codec makes the backends byte-compatible and their errors identical.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from rollout.audit import canonical_json, record_from_dict, record_to_dict
from rollout.errors import InvalidSpec, StaleWrite, StoreUnavailable
from rollout.store.base import SCHEMA_VERSION, AuditRecord, Change, SliceRecord, Write

_log = logging.getLogger(__name__)

MAX_SLICE_SPAN = 7 * 24 * 3600  # seconds one slice read may cover: a bound against a mistyped window
_SLICE_SEPARATORS = (":", "|")  # used in slice keys; registry names never contain them


def encode_document(kind: str, key: str, value: Mapping[str, Any]) -> str:
    """The stored text of a document: {"schema": SCHEMA_VERSION, "value": {...}}."""
    if not isinstance(value, Mapping):
        raise InvalidSpec(f"{kind}/{key}", f"expected a JSON object, got {type(value).__name__}")
    try:
        text = canonical_json({"schema": SCHEMA_VERSION, "value": value})
    except (TypeError, ValueError) as exc:
        raise InvalidSpec(f"{kind}/{key}", f"expected JSON data (finite numbers, string keys): {exc}") from exc
    _check_integers(kind, key, value)
    return text


def _check_integers(kind: str, key: str, value: Mapping[str, Any]) -> None:
    """Refuses integers outside 64 bits: documents are read back with orjson, which would turn them into
    floats (and so would most readers in other languages)."""
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        if "64-bit" in str(exc):
            raise InvalidSpec(f"{kind}/{key}", "expected integers within 64 bits "
                              "(-2**63 to 2**64 - 1); send larger numbers as strings") from exc
        # Anything else orjson refuses, json.dumps has already accepted; the json fallback reads it.


def decode_document(kind: str, key: str, text: str | bytes) -> dict[str, Any]:
    """Reads an envelope back; a newer schema than this build knows is refused rather than misread.

    orjson parses a large document (a version's drift profile) several times faster than json, which
    matters to the periodic registry and mirror refreshes; json reads what orjson refuses (an escaped
    lone surrogate)."""
    try:
        envelope = orjson.loads(text)
    except orjson.JSONDecodeError:
        envelope = json.loads(text)
    schema = envelope.get("schema") if isinstance(envelope, dict) else None
    if not isinstance(schema, int) or not isinstance(envelope.get("value"), dict):
        raise StoreUnavailable(f"document {kind}/{key} is not a servegate envelope")
    if schema > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"document {kind}/{key} has schema {schema}; this build reads up to {SCHEMA_VERSION}"
        )
    value: dict[str, Any] = envelope["value"]
    return value


def check_name(field: str, value: object) -> str:
    """Kinds and keys are non-empty strings."""
    if not isinstance(value, str) or not value:
        raise InvalidSpec(field, f"expected a non-empty string, got {value!r}")
    return value


def check_expected(field: str, expected: object) -> None:
    """`expected_revision` is None, 0 (must not exist) or a positive revision."""
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int) or expected < 0):
        raise InvalidSpec(field, f"expected None or a revision >= 0, got {expected!r}")


def check_writes(writes: Sequence[Write]) -> list[str | None]:
    """Validates a `put_many` batch and returns each write's encoded value (None for deletes)."""
    seen: set[tuple[str, str]] = set()
    encoded: list[str | None] = []
    for i, w in enumerate(writes):
        check_name(f"writes[{i}].kind", w.kind)
        check_name(f"writes[{i}].key", w.key)
        check_expected(f"writes[{i}].expected_revision", w.expected_revision)
        if (w.kind, w.key) in seen:
            raise InvalidSpec(f"writes[{i}]", f"document {w.kind}/{w.key} appears twice in one batch")
        seen.add((w.kind, w.key))
        encoded.append(None if w.value is None else encode_document(w.kind, w.key, w.value))
    return encoded


def stale(kind: str, key: str, expected: int, actual: int) -> StaleWrite:
    """The error for a lost compare-and-set, naming the document and both revisions."""
    found = "does not exist" if actual == 0 else f"is at revision {actual}"
    wanted = "not to exist" if expected == 0 else f"revision {expected}"
    return StaleWrite(f"document {kind}/{key} {found}; the write expected {wanted}")


def encode_record(record: AuditRecord) -> str:
    return canonical_json(record_to_dict(record))


def decode_record(text: str | bytes) -> AuditRecord:
    return record_from_dict(json.loads(text))


def check_slice(record: SliceRecord) -> tuple[str, str, int, str, str]:
    """A slice record's address, validated: names without the key separators, an integer second."""
    for field in ("model", "version", "name", "replica"):
        value = check_name(f"slice.{field}", getattr(record, field))
        if any(sep in value for sep in _SLICE_SEPARATORS):
            raise InvalidSpec(f"slice.{field}", f"expected a name without ':' or '|', got {value!r}")
    if isinstance(record.second, bool) or not isinstance(record.second, int):
        raise InvalidSpec("slice.second", f"expected whole seconds, got {record.second!r}")
    if not isinstance(record.data, bytes):
        raise InvalidSpec("slice.data", f"expected bytes, got {type(record.data).__name__}")
    return record.model, record.version, record.second, record.name, record.replica


def check_ttl(ttl_s: float) -> float:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s) or ttl_s <= 0:
        raise InvalidSpec("ttl_s", f"expected seconds > 0, got {ttl_s!r}")
    return float(ttl_s)


def check_span(first: int, last: int) -> None:
    """A slice read covers `first <= s < last`, at most `MAX_SLICE_SPAN` seconds."""
    if last - first > MAX_SLICE_SPAN:
        raise InvalidSpec("last", f"a slice read covers at most {MAX_SLICE_SPAN} s, asked for {last - first} s")


def deliver(callbacks: Sequence[Callable[[Change], None]], change: Change) -> None:
    """Calls every subscriber with a change; one subscriber's bug must not silence the others."""
    for callback in callbacks:
        try:
            callback(change)
        except Exception:
            _log.exception("change subscriber failed on %s/%s", change.kind, change.key)
