"""Checks each field of a manifest against the Kubernetes API types, as the `kubernetes` Python
client describes them: unknown fields (a typo) and wrong types (an unquoted number in a string map)."""

from __future__ import annotations

import re
from typing import Any

from deploy.render import Doc

CUSTOM_KINDS = {"ServiceMonitor"}  # not in the Kubernetes API types; deploy.manifests checks them


def schema_errors(models: Any, doc: Doc) -> list[str]:
    if doc.get("kind") in CUSTOM_KINDS:
        return []
    version = str(doc.get("apiVersion", "")).rsplit("/", 1)[-1]
    type_name = version.capitalize() + str(doc.get("kind"))
    if not hasattr(models, type_name):
        return [f"{doc.get('kind')}: no such type in the Kubernetes API ({type_name})"]
    errors: list[str] = []
    _check_type(models, doc, type_name, str(doc.get("kind")), errors)
    return errors


def _check_type(models: Any, value: Any, type_name: str, where: str, errors: list[str]) -> None:
    if (m := re.fullmatch(r"List\[(.+)\]", type_name)) is not None:
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list")
            return
        for i, item in enumerate(value):
            _check_type(models, item, m[1], f"{where}[{i}]", errors)
    elif (m := re.fullmatch(r"Dict\[str, (.+)\]", type_name)) is not None:
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a map")
            return
        for key, item in value.items():
            _check_type(models, item, m[1], f"{where}.{key}", errors)
    elif type_name == "object":
        return  # int-or-string and free-form fields
    elif type_name in ("str", "bytes", "datetime"):
        if not isinstance(value, str):
            errors.append(f"{where}: expected str, got {value!r}")
    elif type_name in ("int", "float", "bool"):
        wanted: tuple[type, ...] = {"int": (int,), "float": (int, float), "bool": (bool,)}[type_name]
        if not isinstance(value, wanted) or (type_name != "bool" and isinstance(value, bool)):
            errors.append(f"{where}: expected {type_name}, got {value!r}")
    else:
        cls = getattr(models, type_name)
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object ({type_name})")
            return
        fields = {wire: attr for attr, wire in cls.attribute_map.items()}
        for key, item in value.items():
            if key not in fields:
                errors.append(f"{where}: unknown field {key!r}")
            else:
                _check_type(models, item, cls.openapi_types[fields[key]], f"{where}.{key}", errors)
