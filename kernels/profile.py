"""Reference profiles: per-feature bin edges, reference counts and moments of every input and output.

Built with plain numpy from a reference sample (or the first rows of live traffic) and stored as a
JSON-safe dict, so that the registry can keep it beside the model version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernels import reference
from kernels.binning import EXTRA_SLOTS

DEFAULT_BINS = 10
# Integer outputs get one bin per class; beyond this many classes they are binned by quantiles.
MAX_CLASSES = 1024
FORMAT = 1
KINDS = ("quantile", "classes")

Array = np.ndarray[Any, np.dtype[Any]]
TensorMap = Mapping[str, Any]


def quantile_edges(column: Array, bins: int) -> Array:
    """Edges (1-D, ascending, finite) splitting the finite values of `column` into `bins` quantile bins.

    At most `bins - 1` edges. A value that fills several quantiles (a point mass, e.g. a constant
    feature) gets a bin of its own: [v, next float above v). Without finite values there are no edges.
    """
    finite = np.asarray(column, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return np.empty(0)
    q = np.quantile(finite, np.arange(1, bins) / bins)
    values, repeats = np.unique(q, return_counts=True)
    masses = np.nextafter(values[repeats > 1], np.inf)
    edges = np.unique(np.concatenate([values, masses]))
    finite_edges: Array = edges[np.isfinite(edges)]
    return finite_edges


def class_edges(classes: int) -> Array:
    """Edges giving labels 0..classes-1 a bin each, between a below-range and an above-range bin."""
    return np.arange(classes + 1, dtype=np.float64) - 0.5


@dataclass(frozen=True, eq=False)
class TensorProfile:
    """Reference binning of one tensor: edges [E, F] (+inf = unused), counts [F, E + 4], moments [5, F]."""

    name: str
    kind: str
    edges: Array
    counts: Array
    moments: Array
    feature_names: tuple[str, ...]
    classes: int = 0

    @property
    def features(self) -> int:
        return int(self.edges.shape[1])

    @property
    def slots(self) -> int:
        return int(self.counts.shape[1])

    @property
    def rows(self) -> int:
        """Reference rows behind the counts."""
        return int(self.counts[0].sum()) if self.features else 0

    def proportions(self) -> Array:
        """Reference share of each slot, per feature [F, S]."""
        total = np.maximum(self.counts.sum(axis=1, keepdims=True), 1)
        return np.asarray(self.counts / total, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "classes": self.classes,
            "feature_names": list(self.feature_names),
            "edges": [[float(e) for e in col[np.isfinite(col)]] for col in self.edges.T],
            "slots": self.slots,
            "counts": self.counts.tolist(),
            "moments": [[_json_float(v) for v in row] for row in self.moments],
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any], where: str = "tensor") -> TensorProfile:
        """Rebuild from `to_dict` output; a malformed field raises ValueError naming it."""
        name = _field(d, "name", str, where)
        kind = _field(d, "kind", str, where)
        if kind not in KINDS:
            raise ValueError(f"{where}.kind: expected one of {KINDS}, got {kind!r}")
        slots = _field(d, "slots", int, where)
        names = tuple(str(n) for n in _field(d, "feature_names", list, where))
        edges = _edges_from_lists(_field(d, "edges", list, where), slots - EXTRA_SLOTS, f"{where}.edges")
        counts = _array(_field(d, "counts", list, where), np.int64, (len(names), slots), f"{where}.counts")
        moments = _moments_from_lists(_field(d, "moments", list, where), len(names), f"{where}.moments")
        if edges.shape[1] != len(names):
            raise ValueError(f"{where}.edges: expected {len(names)} features, got {edges.shape[1]}")
        if (counts < 0).any():
            raise ValueError(f"{where}.counts: expected non-negative counts")
        classes = d.get("classes", 0)
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 0:
            raise ValueError(f"{where}.classes: expected an integer >= 0, got {classes!r}")
        return TensorProfile(name, kind, edges, counts, moments, names, classes)


@dataclass(frozen=True, eq=False)
class Profile:
    """Reference profiles of a model version's inputs and outputs."""

    inputs: tuple[TensorProfile, ...]
    outputs: tuple[TensorProfile, ...]
    bins: int = DEFAULT_BINS

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "bins": self.bins,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Profile:
        if not isinstance(d, Mapping):
            raise ValueError(f"profile: expected a mapping, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ValueError(f"profile.format: expected {FORMAT}, got {d.get('format')!r}")
        return Profile(
            tuple(TensorProfile.from_dict(t, f"profile.inputs[{i}]") for i, t in enumerate(_field(d, "inputs", list, "profile"))),
            tuple(TensorProfile.from_dict(t, f"profile.outputs[{i}]") for i, t in enumerate(_field(d, "outputs", list, "profile"))),
            _field(d, "bins", int, "profile"),
        )


def build_profile(
    inputs: TensorMap,
    outputs: TensorMap | None = None,
    *,
    bins: int = DEFAULT_BINS,
    feature_names: Mapping[str, Sequence[str]] | None = None,
    classes: Mapping[str, int] | None = None,
) -> Profile:
    """Profile a reference sample: tensor name -> array [rows, ...], non-batch dims flattened.

    Inputs get quantile bins. Outputs get quantile bins too (scores, probabilities) unless they hold
    integers (class labels): one bin per class, `classes[name]` or the largest label + 1.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins: expected an integer >= 2, got {bins!r}")
    names = feature_names or {}
    labels = classes or {}
    return Profile(
        tuple(_profile_tensor(n, a, bins, names.get(n), None) for n, a in inputs.items()),
        tuple(_profile_tensor(n, a, bins, names.get(n), labels.get(n, -1)) for n, a in (outputs or {}).items()),
        bins,
    )


class ProfileBuilder:
    """Collects the first `rows_needed` rows of live traffic, then freezes them into a Profile."""

    def __init__(
        self,
        rows_needed: int,
        *,
        bins: int = DEFAULT_BINS,
        feature_names: Mapping[str, Sequence[str]] | None = None,
        classes: Mapping[str, int] | None = None,
    ) -> None:
        if isinstance(rows_needed, bool) or not isinstance(rows_needed, int) or rows_needed < 1:
            raise ValueError(f"rows_needed: expected an integer >= 1, got {rows_needed!r}")
        self.rows_needed = rows_needed
        self.rows_seen = 0
        self._options: dict[str, Any] = {"bins": bins, "feature_names": feature_names, "classes": classes}
        self._parts: dict[tuple[str, str], list[Array]] = {}

    @property
    def done(self) -> bool:
        return self.rows_seen >= self.rows_needed

    def add(self, inputs: TensorMap, outputs: TensorMap) -> int:
        """Keep a copy of up to the rows still needed of this batch; returns how many rows were taken.

        Raises ValueError, taking nothing, when a tensor is not [rows, ...] with the row length it had before.
        """
        batch = {("in", n): np.asarray(a) for n, a in inputs.items()}
        batch.update({("out", n): np.asarray(a) for n, a in outputs.items()})
        if self.done or not batch:
            return 0
        for key, a in batch.items():
            known = self._parts.get(key)
            if a.ndim == 0 or (known and int(np.prod(a.shape[1:])) != known[0].shape[1]):
                raise ValueError(f"tensor {key[1]!r}: shape {a.shape} does not match the rows recorded before")
        take = min(self.rows_needed - self.rows_seen, min(int(a.shape[0]) for a in batch.values()))
        if take <= 0:
            return 0
        for key, a in batch.items():
            self._parts.setdefault(key, []).append(np.array(a[:take]).reshape(take, int(np.prod(a.shape[1:]))))
        self.rows_seen += take
        return take

    def build(self) -> Profile:
        """The profile of the rows collected; ValueError if none were."""
        if self.rows_seen == 0:
            raise ValueError("live reference: no rows were recorded yet")
        inputs = {n: np.concatenate(p) for (role, n), p in self._parts.items() if role == "in"}
        outputs = {n: np.concatenate(p) for (role, n), p in self._parts.items() if role == "out"}
        return build_profile(inputs, outputs, **self._options)


def _profile_tensor(name: str, data: Any, bins: int, names: Sequence[str] | None, classes: int | None) -> TensorProfile:
    arr = np.asarray(data)
    if arr.dtype.kind not in "biuf" or arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(
            f"tensor {name!r}: expected a numeric array [rows, ...] with at least one row, "
            f"got dtype {arr.dtype} shape {arr.shape}"
        )
    values = arr.reshape(arr.shape[0], -1)
    kind, n_classes, columns = _edges_of(values, bins, classes)
    edges = np.full((max((len(c) for c in columns), default=0), values.shape[1]), np.inf)
    for f, col in enumerate(columns):
        edges[: len(col), f] = col
    feature_names = _feature_names(name, values.shape[1], names)
    return TensorProfile(
        name, kind, edges, reference.bin_counts(values, edges), reference.moments(values), feature_names, n_classes
    )


def _edges_of(values: Array, bins: int, classes: int | None) -> tuple[str, int, list[Array]]:
    if classes is not None and values.dtype.kind in "biu":
        finite_max = int(values.max()) if values.size else 0
        n = classes if classes > 0 else max(finite_max + 1, 1)
        if n <= MAX_CLASSES:
            return "classes", n, [class_edges(n)] * values.shape[1]
    return "quantile", 0, [quantile_edges(values[:, f], bins) for f in range(values.shape[1])]


def _feature_names(tensor: str, features: int, names: Sequence[str] | None) -> tuple[str, ...]:
    if names is None:
        return tuple(f"{tensor}[{i}]" for i in range(features))
    if len(names) != features:
        raise ValueError(f"feature_names[{tensor!r}]: expected {features} names, got {len(names)}")
    return tuple(str(n) for n in names)


def _edges_from_lists(columns: list[Any], n_edges: int, where: str) -> Array:
    if n_edges < 0:
        raise ValueError(f"{where}: slots must be at least {EXTRA_SLOTS}")
    edges = np.full((n_edges, len(columns)), np.inf)
    for f, col in enumerate(columns):
        e = np.asarray(col, dtype=np.float64) if isinstance(col, list) else np.array([np.nan])
        if e.ndim != 1 or len(e) > n_edges or not np.isfinite(e).all() or (np.diff(e) < 0).any():
            raise ValueError(f"{where}[{f}]: expected at most {n_edges} ascending finite numbers")
        edges[: len(e), f] = e
    return edges


def _moments_from_lists(rows: list[Any], features: int, where: str) -> Array:
    # JSON has no infinities: an empty feature's min (+inf) and max (-inf) travel as null.
    missing = (np.nan, np.nan, np.nan, np.inf, -np.inf)
    if len(rows) != len(missing) or not all(isinstance(r, list) for r in rows):
        raise ValueError(f"{where}: expected {len(missing)} lists of {features} numbers")
    filled = [[m if v is None else v for v in row] for row, m in zip(rows, missing, strict=True)]
    return _array(filled, np.float64, (len(missing), features), where)


def _array(data: Any, dtype: Any, shape: tuple[int, ...], where: str) -> Array:
    try:
        arr = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: expected numbers of shape {list(shape)}") from exc
    if arr.shape != shape:
        raise ValueError(f"{where}: expected shape {list(shape)}, got {list(arr.shape)}")
    return arr


def _field(d: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise ValueError(f"{where}.{key}: missing")
    value = d[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _json_float(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None
