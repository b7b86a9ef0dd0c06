"""The model repository on disk: `DIR/<model>/<version>/model.onnx` plus an optional `DIR/<model>/config.yaml`.

Scanning is pure file-system reading; nothing is loaded here. A config that does not validate is an
error naming the file and the field; a model directory without versions is reported, not fatal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s)?\s*$")
PROVIDERS = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A repository or config value is wrong; the message names the file and field."""


@dataclass(frozen=True, slots=True)
class InputOverride:
    """Per-input settings from config.yaml: fixed dims for symbolic non-batch dimensions."""

    dims: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Serving settings of one model (all its versions). Defaults derive from the ONNX signature."""

    max_batch_size: int = 64
    max_queue_delay_us: int = 0
    queue_capacity: int = 1024  # queued requests per version before Overloaded
    instances: int = 1  # concurrent batches per version (each on its own thread)
    provider: str = "auto"
    device_id: int = 0  # CUDA device this model's sessions run on (with the CUDA provider)
    tf32: bool = True  # CUDA: FP32 matrix products in TF32 on Ampere and later (ONNX Runtime's default)
    intra_op_threads: int = 0  # 0 = derived from the cores and the instance count
    default_timeout_us: int = 0  # 0 = no server-side deadline
    inputs: Mapping[str, InputOverride] = field(default_factory=dict)
    latency_budget_ms: float = 100.0  # validation gate: p99 at batch 1
    drift_bins: int = 10
    drift_sample_rows: int = 0  # rows of a batch binned: 0 = auto (sampled for wide models), -1 = all
    reference_rows: int = 1000  # rows of live traffic that become the reference when none is given
    drift: bool = True  # bin inputs and outputs for drift (off: no drift figures for this model)
    drift_cpu_budget: float = 0.005  # share of one core each version's drift binning may take (0 = no limit)


@dataclass(frozen=True, slots=True)
class VersionSource:
    model: str
    version: str
    path: Path  # the model.onnx file

    @property
    def reference(self) -> Path | None:
        p = self.path.parent / "reference.npz"
        return p if p.is_file() else None

    @property
    def holdout(self) -> Path | None:
        p = self.path.parent / "holdout.npz"
        return p if p.is_file() else None


@dataclass(frozen=True, slots=True)
class ModelSource:
    name: str
    config: ModelConfig
    versions: tuple[VersionSource, ...]


def version_key(version: str) -> tuple[int, int | str]:
    """Orders versions numerically when they are numbers ("2" < "10"), else by name after numbers."""
    return (0, int(version)) if version.isdigit() else (1, version)


def scan(root: Path, defaults: ModelConfig | None = None) -> dict[str, ModelSource]:
    """Every model under `root` with its config and versions (sorted, highest last)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"model repository {root} is not a directory")
    found: dict[str, ModelSource] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _NAME.match(model_dir.name):
            continue
        config = load_config(model_dir / CONFIG_FILE, defaults or ModelConfig())
        versions = [
            VersionSource(model_dir.name, v.name, v / MODEL_FILE)
            for v in model_dir.iterdir()
            if v.is_dir() and _NAME.match(v.name) and (v / MODEL_FILE).is_file()
        ]
        versions.sort(key=lambda s: version_key(s.version))
        found[model_dir.name] = ModelSource(model_dir.name, config, tuple(versions))
    return found


def load_config(path: Path, defaults: ModelConfig) -> ModelConfig:
    if not path.is_file():
        return defaults
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse_config(raw, defaults, source=str(path))


_INT_FIELDS = {
    "max_batch_size": (0, 1 << 20),
    "queue_capacity": (1, 1 << 24),
    "instances": (1, 64),
    "intra_op_threads": (0, 1024),
    "device_id": (0, 1023),
    "drift_bins": (2, 256),
    "drift_sample_rows": (-1, 1 << 20),
    "reference_rows": (1, 1 << 24),
}


def parse_config(raw: Mapping[str, Any], defaults: ModelConfig, source: str = "config") -> ModelConfig:
    """Validates a config mapping; errors name `source` and the field."""
    known = set(_INT_FIELDS) | {"max_queue_delay", "max_queue_delay_us", "provider", "inputs", "drift", "tf32",
                                "default_timeout", "default_timeout_us", "latency_budget_ms", "drift_cpu_budget"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {unknown}; expected some of {sorted(known)}")
    values: dict[str, Any] = {}
    for name, (lo, hi) in _INT_FIELDS.items():
        if name in raw:
            values[name] = _int_in(raw[name], lo, hi, f"{source}: {name}")
    for name in ("max_queue_delay", "default_timeout"):
        for key in (name, f"{name}_us"):
            if key in raw:
                unit = "us" if key.endswith("_us") else "s"
                values[f"{name}_us"] = _duration_us(raw[key], unit, f"{source}: {key}")
    for name in ("drift", "tf32"):
        if name in raw:
            if not isinstance(raw[name], bool):
                raise ConfigError(f"{source}: {name} must be true or false, got {raw[name]!r}")
            values[name] = raw[name]
    if "provider" in raw:
        if raw["provider"] not in PROVIDERS:
            raise ConfigError(f"{source}: provider must be one of {list(PROVIDERS)}, got {raw['provider']!r}")
        values["provider"] = raw["provider"]
    if "latency_budget_ms" in raw:
        budget = raw["latency_budget_ms"]
        if not isinstance(budget, int | float) or isinstance(budget, bool) or budget <= 0:
            raise ConfigError(f"{source}: latency_budget_ms must be a positive number, got {budget!r}")
        values["latency_budget_ms"] = float(budget)
    if "drift_cpu_budget" in raw:
        share = raw["drift_cpu_budget"]
        if not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= 1:
            raise ConfigError(f"{source}: drift_cpu_budget must be a share of one core from 0 to 1 "
                              f"(0 = no limit), got {share!r}")
        values["drift_cpu_budget"] = float(share)
    if "inputs" in raw:
        values["inputs"] = _parse_inputs(raw["inputs"], source)
    return replace(defaults, **values)


def _parse_inputs(raw: Any, source: str) -> dict[str, InputOverride]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: inputs must map input names to settings")
    out: dict[str, InputOverride] = {}
    for name, spec in raw.items():
        where = f"{source}: inputs.{name}"
        if not isinstance(spec, dict) or set(spec) - {"dims"}:
            raise ConfigError(f"{where}: expected a mapping with 'dims'")
        dims = spec.get("dims")
        if dims is not None and (not isinstance(dims, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)):
            raise ConfigError(f"{where}.dims: expected a list of positive integers (without the batch dimension)")
        out[str(name)] = InputOverride(tuple(dims) if dims is not None else None)
    return out


def _int_in(value: Any, lo: int, hi: int, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{where}: expected an integer in [{lo}, {hi}], got {value!r}")
    return value


def _duration_us(value: Any, default_unit: str, where: str) -> int:
    """Accepts numbers (in `default_unit`) or strings like '500us', '2ms', '0.5s'."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), default_unit
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"{where}: expected a duration like '500us', '2ms' or '0.5s', got {value!r}")
        number, unit = float(match.group(1)), match.group(2) or default_unit
    scale = {"us": 1, "µs": 1, "ms": 1_000, "s": 1_000_000}[unit]
    micros = round(number * scale)
    if micros < 0 or micros > 3_600_000_000:
        raise ConfigError(f"{where}: out of range: {value!r}")
    return micros
