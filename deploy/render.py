"""Renders a kustomization as `kustomize build` does, for the features deploy/kubernetes uses:
`resources` (files and folders) and strategic-merge `patches` (from a file or inline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]


def load_yaml(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def identity(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def render(kdir: Path) -> list[Doc]:
    """The documents `kustomize build kdir` produces, for the features deploy/kubernetes uses."""
    spec = load_yaml(kdir / "kustomization.yaml")[0]
    unknown = set(spec) - {"apiVersion", "kind", "resources", "patches"}
    if unknown:
        raise ValueError(f"{kdir}: deploy.render does not know {sorted(unknown)}; "
                         "render with `kubectl kustomize` (--kubectl) instead")
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        target = kdir / entry
        docs.extend(render(target) if target.is_dir() else load_yaml(target))
    for entry in spec.get("patches", []):
        patches = load_yaml(kdir / entry["path"]) if "path" in entry else [yaml.safe_load(entry["patch"])]
        for patch in patches:
            docs = apply_patch(docs, patch)
    return docs


def apply_patch(docs: list[Doc], patch: Doc) -> list[Doc]:
    target = identity(patch)
    if sum(identity(d) == target for d in docs) != 1:
        raise ValueError(f"patch for {target} does not match exactly one document")
    if patch.get("$patch") == "delete":
        return [d for d in docs if identity(d) != target]
    return [merge(d, patch) if identity(d) == target else d for d in docs]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge: maps key by key (null deletes a key), lists of named items (containers, env,
    volumes) item by item (`$patch: delete` removes one), any other list is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(out[key], value) if key in out else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and named_items(base) and named_items(patch):
        items = list(base)
        for item in patch:
            at = next((i for i, old in enumerate(items) if old["name"] == item["name"]), None)
            if item.get("$patch") == "delete":
                items = [old for old in items if old["name"] != item["name"]]
            elif at is None:
                items.append(item)
            else:
                items[at] = merge(items[at], item)
        return items
    return patch


def named_items(items: list[Any]) -> bool:
    """Whether a list merges item by item, keyed on `name`."""
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)
