"""How an Argo resource template decides that the object it created succeeded or failed, as
Argo Workflows v4.1.2 does it, for the tests to drive with realistic objects.

workflow/executor/resource.go (v4.1.2):
- WaitResource (L200-251) parses successCondition and failureCondition with Kubernetes'
  label-selector parser (k8s.io/apimachinery/pkg/labels.Parse) and polls the object every
  RESOURCE_STATE_CHECK_INTERVAL (default 5 s, cmd/argoexec/executor/init.go L110).
- matchConditions (L279-306): the failure requirements are checked first and ANY one that
  matches fails the step; then the step succeeds only when ALL success requirements match;
  otherwise it polls again.
- gjsonLabels (L179-198): a requirement's key is a gjson path into the object's JSON; Has is
  "the path exists", Get is the value as a string.

Kubernetes' selector syntax (labels/selector.go): requirements joined by ",", each `key`,
`!key`, `key = v`, `key == v`, `key != v`, `key in (a,b)`, `key notin (a,b)`, `key > n`,
`key < n`; keys are qualified names (`[prefix/]name`, name up to 63 of [A-Za-z0-9-_.]),
values label values (up to 63 of the same, or empty), > and < take integers. So a key can be
`status.conditions.2.type` (gjson reads a number as an array index) but no gjson query (`#`,
`(`, `*` are not allowed in a key).
"""

from __future__ import annotations

import dataclasses
import json
import re

NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
TOKEN = re.compile(r"\s*(==|!=|=|>|<|!|\(|\)|,|[^\s=!<>(),]+)")


class SelectorError(ValueError):
    """What labels.Parse would reject (Argo then fails the step as a bad request)."""


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # exists, !, =, ==, !=, in, notin, >, <
    values: tuple[str, ...] = ()

    def matches(self, obj: dict) -> bool:
        """labels.Requirement.Matches over gjsonLabels."""
        found, value = gjson(obj, self.key)
        if self.op in ("=", "==", "in"):
            return found and value in self.values
        if self.op in ("!=", "notin"):
            return not found or value not in self.values
        if self.op == "exists":
            return found
        if self.op == "!":
            return not found
        if not found:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        return number > int(self.values[0]) if self.op == ">" else number < int(self.values[0])


def validate_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not NAME.fullmatch(name):
        raise SelectorError(f"invalid label key {key!r}")
    if "/" in key and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix)):
        raise SelectorError(f"invalid label key prefix in {key!r}")


def validate_value(value: str) -> None:
    if len(value) > 63 or not VALUE.fullmatch(value):
        raise SelectorError(f"invalid label value {value!r}")


def parse(selector: str) -> list[Requirement]:
    """labels.Parse, for the operators above."""
    tokens = TOKEN.findall(selector)
    if "".join(tokens).replace(" ", "") != re.sub(r"\s", "", selector):
        raise SelectorError(f"cannot tokenize {selector!r}")
    out: list[Requirement] = []
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise SelectorError(f"unexpected end of {selector!r}")
        i += 1
        return tokens[i - 1]

    while i < len(tokens):
        negated = tokens[i] == "!"
        if negated:
            take()
        key = take()
        validate_key(key)
        if negated:
            out.append(Requirement(key, "!"))
        elif i == len(tokens) or tokens[i] == ",":
            out.append(Requirement(key, "exists"))
        else:
            op = take()
            if op in ("in", "notin"):
                if take() != "(":
                    raise SelectorError(f"expected ( after {op} in {selector!r}")
                values = []
                while True:
                    token = take()
                    if token == ")":
                        break
                    if token == ",":
                        continue
                    validate_value(token)
                    values.append(token)
                out.append(Requirement(key, op, tuple(values)))
            elif op in ("=", "==", "!=", ">", "<"):
                value = tokens[i] if i < len(tokens) and tokens[i] != "," else ""
                if value:
                    take()
                validate_value(value)
                if op in (">", "<") and not re.fullmatch(r"-?\d+", value):
                    raise SelectorError(f"{op} needs an integer, got {value!r}")
                out.append(Requirement(key, op, (value,)))
            else:
                raise SelectorError(f"unknown operator {op!r} in {selector!r}")
        if i < len(tokens) and take() != ",":
            raise SelectorError(f"expected , in {selector!r}")
    return sorted(out, key=lambda r: r.key)  # labels.Parse sorts by key (no change in meaning)


def gjson(obj, path: str) -> tuple[bool, str]:
    """(exists, value as a string) of a dotted path; a number indexes an array."""
    node = obj
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, ""
    if isinstance(node, bool):
        return True, "true" if node else "false"
    if isinstance(node, str):
        return True, node
    if node is None:
        return True, ""
    return True, json.dumps(node, separators=(",", ":"))


def decide(obj: dict, success: str, failure: str) -> str:
    """One poll of matchConditions: 'failed', 'succeeded' or 'waiting'."""
    if any(r.matches(obj) for r in (parse(failure) if failure else [])):
        return "failed"
    success_reqs = parse(success) if success else []
    if sum(r.matches(obj) for r in success_reqs) >= len(success_reqs):
        return "succeeded"
    return "waiting"
