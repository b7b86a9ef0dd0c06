"""What a scenario's gateway serves: a demo model's stable version in a fresh repository, its config.yaml,
and a candidate version built beside it for rollouts.

`tabular` and `mlp` are the demo models. `wide` is an MLP with three 2048-unit hidden layers (about
8 ms per row on one core), for an overload whose bottleneck is the model's own compute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.demo import models as demo

STABLE = "1"


@dataclass(frozen=True)
class ModelKind:
    name: str
    build: Callable[[Path, str], Path]  # (repository, version) -> model.onnx


def _tabular(repo: Path, version: str) -> Path:
    return demo.build_tabular(repo, "tabular", version, c=1.0)


def _mlp(repo: Path, version: str) -> Path:
    return demo.build_mlp(repo, "mlp", version)


def _wide(repo: Path, version: str) -> Path:
    return demo.build_mlp(repo, "wide", version, hidden=(2048, 2048, 2048))


MODELS: Mapping[str, ModelKind] = {
    "tabular": ModelKind("tabular", _tabular),
    "mlp": ModelKind("mlp", _mlp),
    "wide": ModelKind("wide", _wide),
}


def kind(name: str) -> ModelKind:
    found = MODELS.get(name)
    if found is None:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")
    return found


def build_repository(root: Path, model: str, config: Mapping[str, Any] | None = None) -> Path:
    """`root/repository/<model>/1/model.onnx` (+ config.yaml when given); returns the repository."""
    repo = root / "repository"
    kind(model).build(repo, STABLE)
    if config:
        (repo / model / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=True))
    return repo


def build_candidate(root: Path, model: str, version: str) -> Path:
    """The candidate's model.onnx, outside the repository (it is registered through the admin API).

    It is the stable model built again the same way: until a fault strikes it is a good release, so
    whatever a game day measures comes from the fault alone.
    """
    return kind(model).build(root / "candidates", version).resolve()
