"""The ingest step's memoization key, evaluated for every dataset the workflow accepts, must be
a key Argo v4.1.2 stores: `workflow/controller/cache/cache.go` at v4.1.2 defines
`cacheKeyRegex = ^[a-zA-Z0-9][-a-zA-Z0-9]*$`, and `configmap_cache.go` refuses any other key on
Load and Save ("invalid cache key"), which errors the node: with the key `fashion_mnist` the
default `make pipeline` failed at its first step. Nothing else checks it before run time (no
schema, no `argo lint`).

The key is a template: `{{workflow.parameters.X}}` tags and `{{=expr}}` expression tags, which
the controller substitutes before it loads the cache (`operator.go` executeTemplate, through
`util/template`; expressions are expr-lang with sprig's functions under `sprig`,
`util/expr/env/env.go`). The few sprig functions a key may use are evaluated here as their Go
implementations do (`strings.Replace` with n = -1, `strings.ToLower`, `regexp.ReplaceAllString`).
"""

from __future__ import annotations

import re

import pytest

from jobs.ingest import data
from tests.cluster import workflow

# workflow/controller/cache/cache.go at v4.1.2
CACHE_KEY = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
# A ConfigMap data key (the cache stores one entry per key): at most 253 of [-._a-zA-Z0-9].
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")

SPRIG = {
    "replace": lambda old, new, src: src.replace(old, new),
    "lower": lambda s: s.lower(),
    "regexReplaceAll": lambda regex, s, repl: re.sub(regex, repl.replace("$", "\\"), s),
}
TOKEN = re.compile(r"\s*(?:(?P<string>'[^']*'|\"[^\"]*\")|(?P<name>[A-Za-z_][\w.-]*)|(?P<punct>[(),]))")


def evaluate(expression: str, values: dict[str, str]) -> str:
    """An expr-lang expression of string literals, parameters and sprig calls."""
    tokens = [m for m in TOKEN.finditer(expression) if m.group().strip()]
    assert "".join(m.group().strip() for m in tokens) == re.sub(r"\s+", "", expression), expression
    position = 0

    def take() -> re.Match:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def value() -> str:
        token = take()
        if token["string"]:
            return token["string"][1:-1]
        name = token["name"]
        if name.startswith("sprig."):
            assert take()["punct"] == "("
            args = [value()]
            while take()["punct"] == ",":
                args.append(value())
            return SPRIG[name.removeprefix("sprig.")](*args)
        return values[name]

    result = value()
    assert position == len(tokens), f"trailing text in {expression!r}"
    return result


def substitute(template: str, values: dict[str, str]) -> str:
    def tag(m: re.Match) -> str:
        body = m[1]
        return evaluate(body[1:], values) if body.startswith("=") else values[body.strip()]

    return re.sub(r"\{\{\s*(.+?)\s*\}\}", tag, template)


def datasets(wf: dict) -> list[str]:
    [parameter] = [p for p in wf["spec"]["arguments"]["parameters"] if p["name"] == "dataset"]
    return parameter["enum"]


@pytest.fixture(scope="module")
def keys(wf) -> dict[str, str]:
    template = workflow.templates(wf)["ingest"]["memoize"]["key"]
    return {d: substitute(template, workflow.sample_values(wf, {"dataset": d})) for d in datasets(wf)}


def test_every_dataset_gives_a_key_argo_stores(keys, wf):
    assert set(keys) == {"fashion_mnist", "idx", "synthetic"}
    assert workflow.parameter_defaults(wf)["dataset"] == "fashion_mnist"
    for dataset, key in keys.items():
        assert CACHE_KEY.match(key), f"{dataset}: {key!r} is an invalid cache key for Argo v4.1.2"
        assert CONFIGMAP_KEY.match(key), key


def test_datasets_do_not_share_a_key(keys):
    assert len(set(keys.values())) == len(keys), keys


def test_the_key_changes_with_the_format_ingest_writes(keys):
    """A new data format (jobs/ingest/data.py FORMAT_VERSION, which ingest's manifest records) must not
    hit an entry of the old one: ingest would be skipped and training read the old files."""
    for key in keys.values():
        assert re.search(rf"(^|-)format{data.FORMAT_VERSION}(-|$)", key), key


def test_the_old_key_is_refused():
    assert not CACHE_KEY.match(
        substitute("{{workflow.parameters.dataset}}", {"workflow.parameters.dataset": "fashion_mnist"})
    )


def test_the_evaluator_follows_go_semantics():
    values = {"workflow.parameters.d": "Fashion_MNIST_x"}
    assert substitute("a-{{=sprig.replace('_', '-', workflow.parameters.d)}}", values) == "a-Fashion-MNIST-x"
    assert substitute("{{=sprig.lower(workflow.parameters.d)}}", values) == "fashion_mnist_x"
    assert substitute("{{=sprig.regexReplaceAll('[^a-z]', workflow.parameters.d, '-')}}", values) == "-ashion-------x"
    with pytest.raises(KeyError):
        substitute("{{workflow.parameters.missing}}", values)
