"""A TensorFlow error told in one line: what the training worker's last `error:` line and the
model server's answers and model status say."""

from __future__ import annotations

import re

# Lines that say where, not what: the graph, the node, the stack, gRPC's own wrapping.
NOISE = (
    "Graph execution error",
    "Detected at node",
    "File ",
    "[[",
    "<stack",
    "Op:__inference",
    "Additional GRPC",
    ":UNKNOWN:",
)
_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")


def reason(err: BaseException, lines: int | None = None, limit: int = 500) -> str:
    """The telling part of an error in one line: not its first line, which for a lost peer is
    only "Graph execution error:", but the cause (a reset connection, a peer that stopped
    sending heartbeats, a deadline, a bad input), without node names and stack notes; at most
    `lines` of it (None: all) and `limit` characters."""
    text = getattr(err, "message", None) or str(err) or ""
    cleaned = [_FUNCTION_NODE.sub("", line).strip() for line in text.splitlines()]
    kept = [line for line in cleaned if line and not line.startswith(NOISE)]
    return " ".join(kept[:lines])[:limit] or type(err).__name__
