"""A predict request's JSON → validated numpy inputs for one signature, as TF Serving reads it
(the row format `instances` and the columnar format `inputs`, named or unnamed, `{"b64": ...}`
for binary strings). Pure: no server machinery, so it can be read and tested alone."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from jobs.serving import images
from jobs.serving.errors import bad_request
from jobs.serving.limits import PIXELS_INSTANCE_COST, Limits
from jobs.serving.servable import Signature, TensorSpec


@dataclasses.dataclass
class PredictRequest:
    signature: Signature
    inputs: dict[str, np.ndarray]
    size: int
    row_format: bool
    costs: np.ndarray  # decoded pixels per instance

    @property
    def where(self) -> str:
        return "instances" if self.row_format else "inputs"


def decode_predict(payload: Any, signatures: dict[str, Signature], limits: Limits) -> PredictRequest:
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object with 'instances' or 'inputs'")
    name = payload.get("signature_name", "serving_default")
    if not isinstance(name, str):
        raise bad_request("'signature_name' must be a string")
    name = name or "serving_default"
    signature = signatures.get(name)
    if signature is None:
        raise bad_request(f'Serving signature name: "{name}" not found in signature def')
    has_instances, has_inputs = "instances" in payload, "inputs" in payload
    if has_instances and has_inputs:
        raise bad_request("Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists")
    if not has_instances and not has_inputs:
        raise bad_request("Missing 'inputs' or 'instances' key")

    max_instances = limits.max_instances
    if has_instances:
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise bad_request("'instances' must be a list")
        if not instances:
            raise bad_request("'instances' is empty: send at least one instance")
        if len(instances) > max_instances:
            raise bad_request(f"{len(instances)} instances exceed the limit of {max_instances} per request")
        per_input: dict[str, list] = {key: [] for key in signature.inputs}
        for i, instance in enumerate(instances):
            for key, value in _split_named(instance, signature, f"instances[{i}]").items():
                per_input[key].append(_tensor(value, signature.inputs[key], f"instances[{i}]", batched=False))
        inputs = {key: np.stack(values) for key, values in per_input.items()}
    else:
        named = _split_named(payload["inputs"], signature, "inputs")
        inputs = {key: _tensor(value, signature.inputs[key], "inputs", batched=True) for key, value in named.items()}

    sizes = {value.shape[0] if value.ndim else 1 for value in inputs.values()}
    if len(sizes) != 1:
        raise bad_request("All inputs must have the same batch size (first dimension)")
    size = sizes.pop()
    if size == 0:
        raise bad_request("The batch is empty: send at least one instance")
    if size > max_instances:
        raise bad_request(f"{size} instances exceed the limit of {max_instances} per request")
    where = "instances" if has_instances else "inputs"
    costs = np.full(size, PIXELS_INSTANCE_COST, np.int64)
    for key, spec in signature.inputs.items():
        if spec.is_string and inputs[key].ndim == 1:  # the served model's string inputs are encoded images
            costs = images.pixel_costs(inputs[key], where, limits.max_image_pixels, limits.max_request_pixels)
    return PredictRequest(signature, inputs, size, has_instances, costs)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _string_value(value: Any, where: str) -> bytes:
    if _is_b64(value):
        encoded = value["b64"]
        if not isinstance(encoded, str):
            raise bad_request(f"{where}: 'b64' must be a base64 string")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"{where}: 'b64' is not valid base64") from None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    raise bad_request(f'{where}: expected a string or {{"b64": "..."}}, got {_describe(value)}')


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _strings(value: Any, rank: int, where: str) -> Any:
    """Nested JSON strings → nested lists of bytes with exactly `rank` dimensions."""
    if rank == 0:
        if isinstance(value, list):
            raise bad_request(f"{where}: expected a single string value, got a list (wrong rank)")
        return _string_value(value, where)
    if not isinstance(value, list):
        raise bad_request(f"{where}: expected a list of rank {rank}, got {_describe(value)} (wrong rank)")
    return [_strings(item, rank - 1, f"{where}[{i}]") for i, item in enumerate(value)]


def _numbers(value: Any, spec: TensorSpec, where: str) -> np.ndarray:
    leaf = _first_leaf(value)
    if _is_b64(leaf):
        raise bad_request(f'{where}: {{"b64": ...}} values are only accepted for string inputs')
    if isinstance(leaf, dict):
        raise bad_request(f"{where}: '{spec.name}' takes numbers, got an object")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = np.array(value)
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise bad_request(f"{where}: ragged or malformed nested lists") from None
    kind = array.dtype.kind
    target = spec.dtype
    if target.kind in "iu":
        if kind == "b" or kind in "USO":
            raise bad_request(
                f"{where}: '{spec.name}' takes {target.name} integers, got non-numeric or out-of-range values"
            )
        if kind == "f":
            if np.isnan(array).any():
                raise bad_request(f"{where}: '{spec.name}' takes {target.name} integers, got NaN")
            raise bad_request(f"{where}: '{spec.name}' takes {target.name} integers, got non-integer numbers")
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise bad_request(
                f"{where}: '{spec.name}' values must be within {info.min}..{info.max} ({target.name}), "
                f"got {array.min()}..{array.max()}"
            )
    elif target.kind == "f":
        if kind not in "iuf":
            raise bad_request(f"{where}: '{spec.name}' takes {target.name} numbers, got non-numeric values")
    elif kind not in "iufb":
        raise bad_request(f"{where}: '{spec.name}' takes {target.name} values, got non-numeric values")
    return array.astype(target)


def _first_leaf(value: Any) -> Any:
    for _ in range(64):
        if not isinstance(value, list) or not value:
            break
        value = value[0]
    return value


def _check_shape(array_shape: tuple[int, ...], spec: TensorSpec, where: str, batched: bool) -> None:
    expected = spec.shape if batched else spec.shape[1:]
    if len(array_shape) != len(expected):
        raise bad_request(
            f"{where}: '{spec.name}' must have rank {len(expected)} {_shape_text(expected)}, "
            f"got rank {len(array_shape)} {_shape_text(array_shape)}"
        )
    for got, want in zip(array_shape, expected, strict=True):
        if want is not None and got != want:
            raise bad_request(
                f"{where}: '{spec.name}' must have shape {_shape_text(expected)}, got {_shape_text(array_shape)}"
            )


def _shape_text(shape: Sequence[int | None]) -> str:
    return "[" + ",".join("N" if dim is None else str(dim) for dim in shape) + "]"


def _tensor(value: Any, spec: TensorSpec, where: str, batched: bool) -> np.ndarray:
    """One input's JSON value → a numpy array of the input's dtype and shape."""
    rank = len(spec.shape) - (0 if batched else 1)
    if spec.is_string:
        nested = _strings(value, rank, where)
        array = np.empty(_nested_shape(nested, rank, where), dtype=object)
        if array.ndim == 0:
            array[()] = nested
        else:
            _fill(array, nested)
    else:
        array = _numbers(value, spec, where)
    _check_shape(array.shape, spec, where, batched)
    return array


def _nested_shape(nested: Any, rank: int, where: str) -> tuple[int, ...]:
    shape = []
    level = nested
    for _ in range(rank):
        shape.append(len(level) if level is not None else 0)
        level = level[0] if level else None
    _check_rectangular(nested, tuple(shape), where)
    return tuple(shape)


def _check_rectangular(nested: Any, shape: tuple[int, ...], where: str) -> None:
    if not shape:
        return
    if len(nested) != shape[0]:
        raise bad_request(f"{where}: ragged nested lists")
    for item in nested:
        _check_rectangular(item, shape[1:], where)


def _fill(array: np.ndarray, nested: list) -> None:
    if array.ndim == 1:
        for i, item in enumerate(nested):
            array[i] = item
    else:
        for i, item in enumerate(nested):
            _fill(array[i], item)


def _split_named(value: Any, signature: Signature, where: str) -> dict[str, Any]:
    """A JSON value → {input name: value}: named inputs as an object, or one unnamed input."""
    names = list(signature.inputs)
    if isinstance(value, dict) and not _is_b64(value):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise bad_request(
                f"{where}: unknown input '{unknown[0]}' for signature '{signature.name}' (inputs: {', '.join(names)})"
            )
        missing = [name for name in names if name not in value]
        if missing:
            raise bad_request(f"{where}: missing input '{missing[0]}' for signature '{signature.name}'")
        return dict(value)
    if len(names) != 1:
        raise bad_request(f"{where}: signature '{signature.name}' has several inputs: name them ({', '.join(names)})")
    return {names[0]: value}
