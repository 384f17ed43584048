"""A predict request's JSON → numpy inputs of a signature, as TF Serving reads it
(util/json_tensor.cc, `FillPredictRequestFromJson`, 2.20.0), with its error messages.

The row format `{"instances": [...]}` holds one value per instance, either unnamed (the
signature has one input) or objects naming every input; the columnar format `{"inputs": ...}`
holds whole tensors, unnamed or by name. Each value becomes a tensor as tensors.py says. The
signature's declared shapes are not checked here, nor there: the model decides (but see
`_check_ranks`). Pure: no server machinery.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jobs.serving import images
from jobs.serving.errors import ApiError, invalid_argument
from jobs.serving.jsonbody import debug_text
from jobs.serving.limits import Limits
from jobs.serving.servable import Signature
from jobs.serving.tensors import exact_tensor, fast_tensor, is_b64, tensor

DEFAULT_SIGNATURE = "serving_default"


@dataclasses.dataclass
class PredictRequest:
    signature: Signature
    inputs: dict[str, np.ndarray]
    row_format: bool
    size: int  # instances of the batch (1 for a request that is not one)
    batched: bool  # every input leads with `size` rows: the request may be merged and split
    costs: np.ndarray  # decoding cost per instance (pixels of images, else values)

    @property
    def where(self) -> str:
        return "instances" if self.row_format else "inputs"


# -- the document and the signature ---------------------------------------------------------


def signature_name(payload: Any) -> str:
    """The requested signature ('' for the default); the body must be a JSON object."""
    if not isinstance(payload, dict):
        raise invalid_argument(f"JSON Value: {debug_text(payload)} Is not object")
    name = payload.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {debug_text(payload)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


def find_signature(signatures: dict[str, Signature], name: str) -> Signature:
    key = name or DEFAULT_SIGNATURE
    signature = signatures.get(key)
    if signature is None:
        raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
    if not signature.inputs:
        raise invalid_argument(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    return signature


def decode_predict(
    payload: dict, signature: Signature, limits: Limits, booleans: bool = True, strict_ranks: bool = False
) -> PredictRequest:
    """`booleans`: the body may hold `true`/`false` (jsonbody.may_hold_booleans); when it
    cannot, numbers are converted by numpy without looking at each one. `strict_ranks`: refuse
    an input of another rank than its signature declares (Servable.strict_ranks)."""
    has_instances, has_inputs = "instances" in payload, "inputs" in payload
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {debug_text(payload)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(f"JSON Value: {debug_text(payload)} Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument(f"JSON Value: {debug_text(payload)} No values in 'instances' array")
        if len(instances) > limits.max_instances:
            raise invalid_argument(f"{len(instances)} instances exceed the limit of {limits.max_instances} per request")
        inputs = _rows(instances, signature, booleans)
        size, batched = len(instances), True
    elif has_inputs:
        inputs = _columns(payload["inputs"], signature, booleans)
        size, batched = _batch_size(inputs)
        if size > limits.max_instances:
            raise invalid_argument(f"{size} instances exceed the limit of {limits.max_instances} per request")
    else:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    _check_inputs(inputs, signature)
    if strict_ranks:
        _check_ranks(inputs, signature)
    where = "instances" if has_instances else "inputs"
    costs = instance_costs(inputs, signature, size if batched else 1, where, limits)
    return PredictRequest(signature, inputs, has_instances, size if batched else 1, batched, costs)


def _check_inputs(inputs: dict[str, np.ndarray], signature: Signature) -> None:
    """Every input of the signature, and no other (predict_util.cc, VerifyRequestInputsSize)."""
    sent, wanted = set(inputs), set(signature.inputs)
    if sent != wanted:
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(sorted(sent))}}}) "
            f"!= len({{{','.join(sorted(wanted))}}}). Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
        )


def _check_ranks(inputs: dict[str, np.ndarray], signature: Signature) -> None:
    """Each input of the rank its signature declares (when it declares one). TF Serving feeds
    any shape and leaves it to the model, but in a model with layout-sensitive ops a tensor of
    another rank can abort the whole process (TensorFlow 2.20's oneDNN convolution does: "Check
    failed: index >= 0 && index < num_total_dims"); sizes within the rank are the model's to
    check, as there."""
    for key, value in inputs.items():
        declared = signature.inputs[key].shape
        if declared is not None and value.ndim != len(declared):
            shown = "(" + ", ".join("None" if d < 0 else str(d) for d in declared) + ("," if len(declared) == 1 else "")
            raise invalid_argument(
                f"Cannot feed value of shape {tuple(value.shape)} for Tensor {signature.inputs[key].tensor}, "
                f"which has shape {shown})"
            )


def _batch_size(inputs: dict[str, np.ndarray]) -> tuple[int, bool]:
    """(rows, True) when every columnar input leads with the same number of rows (at least
    one), else (1, False): the request is then run as it is."""
    firsts = {value.shape[0] if value.ndim else None for value in inputs.values()}
    if len(firsts) == 1 and None not in firsts and 0 not in firsts:
        return firsts.pop(), True
    return 1, False


def instance_costs(
    inputs: dict[str, np.ndarray], signature: Signature, rows: int, where: str, limits: Limits
) -> np.ndarray:
    """What each row costs to run: the pixels of its images, else its number of values."""
    costs = np.zeros(rows, np.int64)
    for key, value in inputs.items():
        if signature.inputs[key].dtype == "DT_STRING":
            each = images.costs(value, where, limits.max_image_pixels, limits.max_request_pixels)
            costs += each.reshape(rows, -1).sum(axis=1)
        else:
            costs += value.size // rows
    return np.maximum(costs, 1)


# -- the two formats ------------------------------------------------------------------------


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) and not is_b64(value)


def _rows(instances: list, signature: Signature, booleans: bool) -> dict[str, np.ndarray]:
    names = list(signature.inputs)
    if not isinstance(instances[0], dict) and len(names) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    named = _is_object(instances[0])
    if named and all(type(item) is dict and item.keys() == signature.inputs.keys() for item in instances):
        columns = {name: [item[name] for item in instances] for name in names}
    elif not named and not any(_is_object(item) for item in instances):
        columns = {names[0]: instances}
    else:
        columns = None
    if columns is not None:
        fast = {name: fast_tensor(column, signature.inputs[name], booleans) for name, column in columns.items()}
        if all(value is not None for value in fast.values()):
            return fast
    return _rows_exactly(instances, signature, named)


def _rows_exactly(instances: list, signature: Signature, named: bool) -> dict[str, np.ndarray]:
    names = list(signature.inputs)
    parts: dict[str, list[np.ndarray]] = {}
    for i, item in enumerate(instances):
        if named:
            if not _is_object(item):
                raise invalid_argument(f"Expecting object but got list at item {i} of input list")
            for key, value in item.items():
                context = f"Failed to process element: {i} key: {key} of 'instances' list"
                _add_item(value, key, signature, parts, context)
            if set(item) != set(names):
                raise invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. JSON object: {debug_text(item)} "
                    f"keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_object(item):
                raise invalid_argument(f"Expecting value/list but got object at item {i} of input list")
            _add_item(item, names[0], signature, parts, f"Failed to process element: {i} of 'instances' list")
    return {name: np.stack(values) for name, values in parts.items()}


def _add_item(value: Any, name: str, signature: Signature, parts: dict[str, list], context: str) -> None:
    try:
        if name not in signature.inputs:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        item = exact_tensor(value, signature.inputs[name])
        seen = parts.setdefault(name, [])
        if seen and seen[0].size != item.size:
            raise invalid_argument(f"Expecting tensor size: {seen[0].size} but got: {item.size}")
        if seen and seen[0].shape != item.shape:
            raise invalid_argument(f"Expecting shape {_shape(seen[0].shape)} but got: {_shape(item.shape)}")
        seen.append(item)
    except ApiError as err:
        raise invalid_argument(f"{context}. Error: {err.code}: {err.message}") from None


def _columns(value: Any, signature: Signature, booleans: bool) -> dict[str, np.ndarray]:
    names = list(signature.inputs)
    if not _is_object(value):
        if len(names) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        return {names[0]: tensor(value, signature.inputs[names[0]], booleans)}
    found = {}
    for name in names:
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        found[name] = tensor(value[name], signature.inputs[name], booleans)
    return found


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(dim) for dim in shape) + "]"
