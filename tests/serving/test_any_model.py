"""A user's own SavedModel, not this project's: TF1 and TF2 exports with string, integer, float
and boolean inputs, served from one model config file and called as TF Serving's REST API is
(util/json_tensor.cc at 2.20.0 for the types each JSON value must have and how outputs are
written: a string output named `*_bytes` as base64, integers as integers, floats with 6
significant digits)."""

from __future__ import annotations

import base64

import httpx
import pytest

from .conftest import LocalServer, local_only, wait_until

pytestmark = local_only


def build_tf2(path):
    import tensorflow as tf

    class Echo(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="text"),
                tf.TensorSpec([None], tf.int32, name="count"),
                tf.TensorSpec([None], tf.float64, name="scale"),
                tf.TensorSpec([None], tf.bool, name="flag"),
            ]
        )
        def serve(self, text, count, scale, flag):
            return {
                "length": tf.strings.length(text, unit="UTF8_CHAR"),
                "text_bytes": text,
                "upper": tf.strings.upper(text),
                "twice": count * 2,
                "third": scale / 3,
                "flipped": tf.logical_not(flag),
            }

    module = Echo()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def build_tf1(path):
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        words = v1.placeholder(tf.string, [None], name="words")
        ids = v1.placeholder(tf.int64, [None, 2], name="ids")
        info = v1.saved_model.utils.build_tensor_info
        signature = v1.saved_model.signature_def_utils.build_signature_def(
            {"words": info(words), "ids": info(ids)},
            {
                "joined": info(tf.strings.reduce_join(words, separator=" ", name="joined")),
                "sums": info(tf.reduce_sum(ids, axis=1, name="sums")),
            },
            "tensorflow/serving/predict",
        )
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
        builder.save()


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    root = tmp_path_factory.mktemp("any")
    build_tf2(root / "echo" / "1")
    build_tf1(root / "words" / "3")
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow" }}\n'
            for name in ("echo", "words")
        )
        + "}\n"
    )
    server = LocalServer(root / "echo", root / "serve.log", "--model-config-file", str(config), model="echo")
    server.start(expect_version=1)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            wait_until(lambda: client.post("/v1/models/words:predict", json={"inputs": {}}).status_code != 404)
            yield client
    finally:
        server.stop()


def test_string_integer_float_and_boolean_inputs(http):
    body = {
        "instances": [
            {"text": "héllo", "count": 3, "scale": 1.0, "flag": True},
            {"text": {"b64": base64.b64encode(b"tf").decode()}, "count": -4, "scale": 2.5, "flag": False},
        ]
    }
    response = http.post("/v1/models/echo:predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [
        {
            "length": 5,
            "text_bytes": {"b64": base64.b64encode("héllo".encode()).decode()},
            "upper": "HéLLO",
            "twice": 6,
            "third": pytest.approx(1 / 3, abs=1e-15),
            "flipped": False,
        },
        {
            "length": 2,
            "text_bytes": {"b64": "dGY="},
            "upper": "TF",
            "twice": -8,
            "third": pytest.approx(2.5 / 3, abs=1e-15),
            "flipped": True,
        },
    ]  # a float64 whose 6 digits do not read back is written with 17: the double the model made
    columns = http.post(
        "/v1/models/echo:predict",
        json={"inputs": {"text": ["a"], "count": [2147483647], "scale": [3.0], "flag": [False]}},
    )
    assert columns.json()["outputs"]["twice"] == [-2] and columns.json()["outputs"]["third"] == [1.0]


def test_the_types_json_values_must_have(http):
    def error(instance: dict) -> str:
        base = {"text": "a", "count": 1, "scale": 1.0, "flag": True}
        response = http.post("/v1/models/echo:predict", json={"instances": [{**base, **instance}]})
        assert response.status_code == 400, response.text
        return response.json()["error"]

    assert "JSON Value: 1.5 Type: Number is not of expected type: int32" in error({"count": 1.5})
    assert "JSON Value: 1 Type: Number is not of expected type: bool" in error({"flag": 1})
    assert 'JSON Value: "x" Type: String is not of expected type: double' in error({"scale": "x"})
    assert "JSON Value: 5 Type: Number is not of expected type: string" in error({"text": 5})
    assert "does not have named input: extra" in error({"extra": 1})
    missing = http.post("/v1/models/echo:predict", json={"instances": [{"text": "a", "count": 1, "scale": 1.0}]})
    assert "keys must be equal to: count,flag,scale,text" in missing.json()["error"]


def test_a_tf1_graph_with_int64_and_string_inputs(http):
    answer = http.post("/v1/models/words:predict", json={"inputs": {"words": ["to", "be"], "ids": [[1, 2], [3, 4]]}})
    assert answer.json() == {"outputs": {"joined": "to be", "sums": [3, 7]}}, answer.text
    rows = http.post("/v1/models/words:predict", json={"instances": [{"words": "x", "ids": [1, 2]}]})
    assert rows.status_code == 400  # `joined` is a scalar: a row answer needs every output batched
    assert rows.json()["error"] == "Tensor name: joined has no shape information "
    metadata = http.get("/v1/models/words/metadata").json()["metadata"]["signature_def"]["signature_def"]
    inputs = metadata["serving_default"]["inputs"]
    assert inputs["ids"]["dtype"] == "DT_INT64" and inputs["ids"]["name"] == "ids:0"
    assert [d["size"] for d in inputs["ids"]["tensor_shape"]["dim"]] == ["-1", "2"]
