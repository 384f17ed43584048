"""A CRD's OpenAPI v3 schema as a JSON Schema that rejects unknown fields the way the API
server prunes or rejects them: an object with `properties` allows nothing else unless it says
`x-kubernetes-preserve-unknown-fields: true` (or has additionalProperties)."""

from __future__ import annotations

import copy

import jsonschema


def strict(schema: dict) -> dict:
    schema = copy.deepcopy(schema)
    _walk(schema)
    return schema


def _walk(node) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in node:
        node["type"] = [node["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    for key in ("properties", "patternProperties"):
        for child in node.get(key, {}).values():
            _walk(child)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), (dict, list)):
            _walk(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        for child in node.get(key, []):
            _walk(child)


def errors(schema: dict, obj: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(strict(schema))
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]
