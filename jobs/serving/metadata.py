"""The status and metadata calls' JSON, printed as TF Serving prints its protos
(model_servers/http_rest_api_util.cc, `ToJsonString`, 2.20.0): every field, also those at their
default (`always_print_fields_with_no_presence`: a dimension's `name: ""`, `unknown_rank:
false`, an empty `defaults: {}`), proto field names, 64-bit integers as strings, and the
metadata's `Any` unpacked (no `@type`). Every signature def is shown, `__saved_model_init_op`
too."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format


def _printed(message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def signature_defs(meta_graph) -> dict[str, Any]:
    """`metadata.signature_def` of the metadata call: {"signature_def": {name: SignatureDef}}."""
    return {"signature_def": {name: _printed(value) for name, value in meta_graph.signature_def.items()}}


def metadata_answer(name: str, version: int, signature_defs: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": signature_defs},
    }


def version_status(version: int, state: str, error_code: str = "OK", error_message: str = "") -> dict[str, Any]:
    """One `model_version_status` entry (GetModelStatusResponse)."""
    return {
        "version": str(version),
        "state": state,
        "status": {"error_code": error_code, "error_message": error_message},
    }
