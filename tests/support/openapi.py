"""Validate responses against TGI's OpenAPI document (tests/data/tgi-openapi.json).

OpenAPI 3.0 marks optional values with `nullable: true`, which JSON Schema does not know; it is turned into a
`null` alternative. Everything else is checked as written (Draft 2020-12).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SPEC = Path(__file__).resolve().parents[1] / "data" / "tgi-openapi.json"


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _convert(v) for k, v in node.items() if k not in ("example", "default", "discriminator", "format")}
    if node.pop("nullable", False):
        return {"anyOf": [{"type": "null"}, node]}
    if "$ref" in node:
        node["$ref"] = node["$ref"].replace("#/components/schemas/", "#/$defs/")
    return node


@cache
def _spec() -> dict[str, Any]:
    return json.loads(SPEC.read_text())


@cache
def _defs() -> dict[str, Any]:
    return {name: _convert(schema) for name, schema in _spec()["components"]["schemas"].items()}


def schema_of(path: str, method: str, status: str, content_type: str) -> dict[str, Any]:
    schema = _spec()["paths"][path][method]["responses"][status]["content"][content_type]["schema"]
    return {**_convert(copy.deepcopy(schema)), "$defs": _defs()}


def named(name: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}", "$defs": _defs()}


def validate(instance: Any, schema: dict[str, Any]) -> None:
    Draft202012Validator(schema).validate(instance)
