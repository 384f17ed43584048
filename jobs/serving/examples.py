"""A classify or regress request's JSON → serialized `tf.Example`s, as TF Serving reads it
(util/json_tensor.cc, `FillClassifyRegressRequestFromJson`, 2.20.0), with its error messages.

    {"signature_name": "...", "context": {feature: value, ...}, "examples": [{feature: value}, ...]}

A feature's value is one value or a list of them, all of one kind: a number with a fraction or
an exponent is a float, one without an int64 (`true`/`false` too, as 1 and 0), a string or
`{"b64": ...}` bytes. With a `context`, each example is the context's serialized bytes followed
by its own, as TF Serving concatenates them (so an example's feature wins over the context's).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jobs.serving.errors import invalid_argument
from jobs.serving.jsonbody import debug_text
from jobs.serving.tensors import b64_bytes, json_type

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
KINDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


@dataclasses.dataclass(frozen=True)
class Examples:
    serialized: np.ndarray  # object array of bytes, one per example

    @property
    def count(self) -> int:
        return len(self.serialized)


def decode_examples(payload: dict) -> Examples:
    """The body's examples (the body is already known to be an object with a string or no
    signature_name, request.signature_name)."""
    context = b""
    if "context" in payload:
        context = _example(payload["context"]).SerializeToString()
    if "examples" not in payload:
        raise invalid_argument(
            f"JSON Value: {debug_text(payload)} When method is classify, key 'examples' is expected and was not found"
        )
    examples = payload["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(f"JSON Value: {debug_text(payload)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {debug_text(payload)} 'examples' value is an empty array")
    serialized = np.empty(len(examples), dtype=object)
    for i, value in enumerate(examples):
        serialized[i] = context + _example(value).SerializeToString()
    return Examples(serialized)


def _example(value: Any):
    from tensorflow.core.example import example_pb2

    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        feature.Clear()
        for item in content if isinstance(content, list) else [content]:
            _add(item, name, feature)
    return example


def _add(value: Any, name: str, feature) -> None:
    if value is None or isinstance(value, list):
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
    if isinstance(value, bool):
        _kind(feature, "int64_list", name).value.append(1 if value else 0)
    elif isinstance(value, dict):
        if not (len(value) == 1 and isinstance(value.get("b64"), str)):
            raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: Object")
        _kind(feature, "bytes_list", name).value.append(b64_bytes(value["b64"]))
    elif isinstance(value, str):
        _kind(feature, "bytes_list", name).value.append(value.encode("utf-8", "surrogateescape"))
    elif isinstance(value, float) or value > UINT64_MAX or value < -INT64_MAX - 1:
        _kind(feature, "float_list", name).value.append(float(value))  # rapidjson: a double
    else:
        features = _kind(feature, "int64_list", name)
        if value > INT64_MAX:
            raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        features.value.append(value)


def _kind(feature, kind: str, name: str):
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: {KINDS[current]}")
    return getattr(feature, kind)
