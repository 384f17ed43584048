"""A request body → JSON as TF Serving reads it, with the cost bounded before any object is
built; JSON out.

TF Serving parses with rapidjson (`util/json_tensor.cc`, `ParseJson`, 2.20.0): `NaN`,
`Infinity` and `-Infinity` are numbers, anything after the first complete value is ignored,
bytes in strings need not be UTF-8, and a failure reads `JSON Parse error: <what> at offset:
<n>`. Here orjson parses the common case; a body orjson refuses is parsed again by the standard
library's decoder, which accepts those three words and stops after the first value, over the
body decoded with `surrogateescape` (so any byte survives into a string); its failure is told
in rapidjson's words.

A body of millions of tiny lists or strings is cheap to send and expensive to parse into Python
objects (time under the GIL, and memory). So the structure is counted in the raw bytes first,
which costs a few milliseconds for the largest allowed body: the brackets and braces (lists and
objects) and the commas (an upper bound on the values). Bytes inside strings are counted too,
so the counts are upper bounds; base64 holds none of these characters. Only a body within both
limits is parsed; orjson's own nesting limit (1024) ends a too-deep body early.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from jobs.serving.errors import invalid_argument

WHITESPACE = " \t\n\r"
MAX_DEBUG_BYTES = 256  # TF Serving shows at most this much of a JSON value in a message

# The standard library's messages → rapidjson's (rapidjson/error/en.h).
_RAPIDJSON = (
    ("Expecting value", "Invalid value."),
    ("Expecting property name", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid \\uXXXX", "Incorrect hex digit after \\u escape in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid control character", "Invalid encoding in string."),
)


def check_structure(body: bytes, max_containers: int, max_values: int) -> None:
    containers = body.count(b"[") + body.count(b"{")
    if containers > max_containers:
        raise invalid_argument(
            f"JSON Parse error: the body holds {containers} lists and objects, over the limit of {max_containers}"
        )
    values = body.count(b",") + 1
    if values > max_values:
        raise invalid_argument(f"JSON Parse error: the body holds {values} values, over the limit of {max_values}")


def parse(body: bytes, max_containers: int, max_values: int) -> Any:
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    check_structure(body, max_containers, max_values)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _lenient(body)


def _lenient(body: bytes) -> Any:
    text = body.decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip(WHITESPACE))
    if start == len(text):
        raise invalid_argument(f"JSON Parse error: The document is empty. at offset: {len(body)}")
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as err:
        offset = len(text[: err.pos].encode("utf-8", "surrogateescape"))
        raise invalid_argument(f"JSON Parse error: {_rapidjson_words(err, text)} at offset: {offset}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: nested too deeply") from None
    return value


def _rapidjson_words(err: json.JSONDecodeError, text: str) -> str:
    if err.msg.startswith("Expecting ',' delimiter"):
        inner = _innermost(text[: err.pos])
        return (
            "Missing a comma or ']' after an array element."
            if inner == "["
            else "Missing a comma or '}' after an object member."
        )
    for prefix, words in _RAPIDJSON:
        if err.msg.startswith(prefix):
            return words
    return err.msg + "."


def _innermost(text: str) -> str:
    """The innermost list or object still open at the end of `text` ('[' or '{')."""
    stack, in_string, escaped = [], False, False
    for char in text:
        if in_string:
            escaped = not escaped and char == "\\"
            in_string = escaped or char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else "{"


def may_hold_booleans(body: bytes) -> bool:
    """False when no JSON `true` or `false` can be in `body` (numbers can then be converted a
    whole array at a time: numpy would turn a boolean into a number unnoticed)."""
    return b"true" in body or b"false" in body


def debug_text(value: Any) -> str:
    """A JSON value as TF Serving shows it in a message: at most 256 bytes of it."""
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and abs(value) == float("inf"):
        return "Infinity" if value > 0 else "-Infinity"
    try:
        text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        text = repr(value).encode("utf-8", "replace")
    return text[:MAX_DEBUG_BYTES].decode("utf-8", "replace")


def dumps(payload: Any) -> bytes:
    """JSON bytes; numpy arrays are written directly (orjson), raw fragments as they are."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
