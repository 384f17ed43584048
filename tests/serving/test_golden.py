"""TF Serving's own REST expectations, against a local server serving its test model.

The model is half_plus_two in its TF1 and TF2 forms, rebuilt here (halfplustwo.py), served from a
model config file as TF Serving's handler test serves it: the TF1 form as
`saved_model_half_plus_two_2_versions`, versions 123 and 124 on disk, `specific { versions: 123 }`
and the label `Version_Label` → 123; the TF2 form as `half_plus_two_tf2` (its latest version).
Every request and expected answer below is a fact of TF Serving 2.20.0's sources, named in each
test: model_servers/http_rest_api_handler_test.cc (the handler), tensorflow_model_server_test.py
(the REST calls on the TF2 form), servables/tensorflow/testdata/*_metadata.json (metadata), and
http_server.cc, classifier.cc, regressor.cc where a test says so.
"""

from __future__ import annotations

import httpx
import pytest

from .conftest import LocalServer, local_only, wait_until

pytestmark = local_only

TF1 = "saved_model_half_plus_two_2_versions"
TF2 = "half_plus_two_tf2"
PREDICT, CLASSIFY, REGRESS = "tensorflow/serving/predict", "tensorflow/serving/classify", "tensorflow/serving/regress"


@pytest.fixture(scope="module")
def golden(half_plus_two, tmp_path_factory):
    folder = tmp_path_factory.mktemp("golden")
    config = folder / "models.config"
    config.write_text(
        f"""model_config_list {{
  config {{
    name: "{TF1}"
    base_path: "{half_plus_two["tf1"]}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 123 }} }}
    version_labels {{ key: "Version_Label" value: 123 }}
  }}
  config {{ name: "{TF2}" base_path: "{half_plus_two["tf2"]}" model_platform: "tensorflow" }}
}}
"""
    )
    server = LocalServer(
        half_plus_two["tf1"],
        folder / "serve.log",
        "--model-config-file",
        str(config),
        "--rest_api_enable_cors_support=true",
        model=TF1,
    )
    server.start(expect_version=123)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            wait_until(lambda: _available(client, TF2), what=f"{TF2} to load")
            yield client
    finally:
        server.stop()


def _available(client: httpx.Client, name: str) -> bool:
    """The status call answers 200 while a version is still LOADING: wait for AVAILABLE."""
    response = client.get(f"/v1/models/{name}")
    return response.status_code == 200 and any(
        entry["state"] == "AVAILABLE" for entry in response.json()["model_version_status"]
    )


def post(http, path: str, body: str) -> httpx.Response:
    return http.post(path, content=body.encode(), headers={"content-type": "application/json"})


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


# --- the handler's tests (http_rest_api_handler_test.cc) ----------------------------------


def test_predict(golden):
    """Predict: latest, a specific version, a label, an explicit signature, columnar."""
    cases = [
        (
            f"/v1/models/{TF1}:predict",
            '{"instances": [[1.0, 2.0], [3.0, 4.0]]}',
            {"predictions": [[2.5, 3.0], [3.5, 4.0]]},
        ),
        (f"/v1/models/{TF1}/versions/123:predict", '{"instances": [1.0, 2.0]}', {"predictions": [2.5, 3.0]}),
        (f"/v1/models/{TF1}/labels/Version_Label:predict", '{"instances": [1.0, 2.0]}', {"predictions": [2.5, 3.0]}),
        (
            f"/v1/models/{TF1}/versions/123:predict",
            '{"signature_name": "serving_default", "instances": [3.0, 4.0]}',
            {"predictions": [3.5, 4.0]},
        ),
        (
            f"/v1/models/{TF1}/versions/123:predict",
            '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}',
            {"outputs": [3.5, 4.0]},
        ),
    ]
    for path, body, expected in cases:
        response = post(golden, path, body)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json() == expected, (path, body)


def test_regress_and_classify(golden):
    """Regress and Classify: tf.Example features in, `results` out (a label is '' without a
    `classes` output)."""
    regress = '{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }'
    for path in (f"/v1/models/{TF1}:regress", f"/v1/models/{TF1}/versions/123:regress"):
        assert post(golden, path, regress).json() == {"results": [42]}
    assert post(golden, f"/v1/models/{TF1}/labels/Version_Label:regress", regress).json() == {"results": [42]}
    classify = '{"signature_name": "classify_x_to_y", "examples": [ { "x": 20.0 } ] }'
    assert post(golden, f"/v1/models/{TF1}:classify", classify).json() == {"results": [[["", 12]]]}
    labelled = '{"signature_name": "classify_x_to_y", "examples": [ { "x": 10.0 } ] }'
    assert post(golden, f"/v1/models/{TF1}/labels/Version_Label:classify", labelled).json() == {"results": [[["", 7]]]}


def test_predict_request_errors(golden):
    """PredictRequestErrors."""
    path = f"/v1/models/{TF1}:predict"
    assert "JSON Parse error: The document is empty" in error_of(post(golden, path, ""), 400)
    assert "JSON Parse error: Invalid value" in error_of(post(golden, path, "instances = [1, 2]"), 400)
    assert "not of expected type: float" in error_of(post(golden, path, '{ "instances": ["x", "y"] }'), 400)
    unknown = post(golden, f"/v1/models/{TF1}/labels/Version_Nonexistent:predict", '{ "instances": ["x", "y"] }')
    assert "Unrecognized servable version label" in error_of(unknown, 400)
    wrong = post(golden, path, '{ "signature_name": 100 }')
    assert "'signature_name' key must be a string value." in error_of(wrong, 400)


def test_predict_model_name_and_version_errors(golden):
    """PredictModelNameVersionErrors: an unknown model or version is NOT_FOUND (404)."""
    for path in ("/v1/models/foo:predict", "/v1/models/foo/versions/50:predict", f"/v1/models/{TF1}99:predict"):
        assert "Servable not found for request" in error_of(post(golden, path, '{ "instances": [1] }'), 404)
    # Version 124 is on disk but not in the specific policy: never loaded.
    assert error_of(post(golden, f"/v1/models/{TF1}/versions/124:predict", '{"instances": [1.0]}'), 404) == (
        f"Servable not found for request: Specific({TF1}, 124)"
    )


@pytest.mark.parametrize(
    "method,path,needle",
    [
        ("GET", "/v1/foo", "Malformed request"),
        ("POST", "/v1/foo", "Malformed request"),
        ("GET", "/v1/models", "Missing model name"),
        ("GET", "/v1/models/debug/model_name", "Malformed request"),
        ("POST", "/v1/models", "Malformed request"),
        ("GET", "/v1/models/foo:predict", "Malformed request"),
        ("GET", "/v1/models/foo/version/50:predict", "Malformed request"),
        ("POST", "/v1/models/foo/version/50:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/HELLO:regress", "Malformed request"),
        ("POST", f"/v1/models/foo/versions/{2**64 - 1}:regress", "Failed to convert version"),
        ("POST", "/v1/models/foo/metadata", "Malformed request"),
        ("POST", "/v1/models/foo/label/some_label:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/some_label:regress", "Malformed request"),
    ],
)
def test_unsupported_api_calls(golden, method, path, needle):
    """UnsupportedApiCalls: each an invalid argument (400)."""
    assert needle in error_of(golden.request(method, path), 400)


def test_status(golden):
    """GetStatus: every version, a specific version, and a label (which the status call ignores);
    version 124 is not in the policy and so not in the status either."""
    expected = {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    for path in (f"/v1/models/{TF1}", f"/v1/models/{TF1}/versions/123", f"/v1/models/{TF1}/labels/Version_Label"):
        response = golden.get(path)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.json() == expected, path
    assert golden.get(f"/v1/models/{TF1}/labels/no_such_label").json() == expected
    assert error_of(golden.get("/v1/models/foo"), 404) == "Could not find any versions of model foo"
    assert error_of(golden.get("/v1/models/foo/versions/3"), 404) == "Could not find version 3 of model foo"
    assert error_of(golden.get(f"/v1/models/{TF1}/versions/124"), 404) == f"Could not find version 124 of model {TF1}"


def tensor(name: str, dtype: str, dims: tuple[int, ...] | None) -> dict:
    shape = (
        {"dim": [], "unknown_rank": True}
        if dims is None
        else {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}
    )
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def signature(inputs: dict, outputs: dict, method: str) -> dict:
    return {"inputs": inputs, "outputs": outputs, "method_name": method, "defaults": {}}


def test_metadata_of_the_tf1_form(golden):
    """GetModelMetadata: the whole answer, as saved_model_half_plus_two_2_versions_metadata.json
    holds it (every field printed, sizes as strings, no `@type`)."""
    batch = (-1, 1)
    x, x2 = tensor("x:0", "DT_FLOAT", batch), tensor("x2:0", "DT_FLOAT", batch)
    y, y2, y3 = (tensor(f"{n}:0", "DT_FLOAT", batch) for n in ("y", "y2", "y3"))
    examples = tensor("tf_example:0", "DT_STRING", None)
    expected = {
        "model_spec": {"name": TF1, "signature_name": "", "version": "123"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": signature({"x": x}, {"y": y}, PREDICT),
                    "classify_x_to_y": signature({"inputs": examples}, {"scores": y}, CLASSIFY),
                    "classify_x2_to_y3": signature({"inputs": x2}, {"scores": y3}, CLASSIFY),
                    "regress_x_to_y": signature({"inputs": examples}, {"outputs": y}, REGRESS),
                    "regress_x_to_y2": signature({"inputs": examples}, {"outputs": y2}, REGRESS),
                    "regress_x2_to_y3": signature({"inputs": x2}, {"outputs": y3}, REGRESS),
                }
            }
        },
    }
    for path in (f"/v1/models/{TF1}/metadata", f"/v1/models/{TF1}/labels/Version_Label/metadata"):
        response = golden.get(path)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.json() == expected, path
    assert "Unrecognized servable version label" in error_of(golden.get(f"/v1/models/{TF1}/labels/x/metadata"), 400)


def test_metadata_of_the_tf2_form(golden):
    """saved_model_half_plus_two_tf2_2_versions_metadata.json: every method is predict; the
    signature that runs the initializers, `__saved_model_init_op`, is shown too. (That file
    leaves out its `defaults: {}`, which TF Serving's printer writes for every signature with
    always_print_fields_with_no_presence; no TF Serving test compares the file.)"""
    one, batch = (1,), (-1, 1)
    examples = {name: tensor(f"{name}_inputs:0", "DT_STRING", (-1,)) for name in ("regress_x_to_y", "regress_x_to_y2")}
    call = {i: f"StatefulPartitionedCall{'' if i == 0 else f'_{i}'}:0" for i in range(6)}
    defs = {
        "regress_x_to_y": signature(
            {"inputs": examples["regress_x_to_y"]}, {"outputs": tensor(call[3], "DT_FLOAT", batch)}, PREDICT
        ),
        "regress_x_to_y2": signature(
            {"inputs": examples["regress_x_to_y2"]}, {"outputs": tensor(call[4], "DT_FLOAT", batch)}, PREDICT
        ),
        "classify_x_to_y": signature(
            {"inputs": tensor("classify_x_to_y_inputs:0", "DT_STRING", (-1,))},
            {"scores": tensor(call[1], "DT_FLOAT", batch)},
            PREDICT,
        ),
        "serving_default": signature(
            {"x": tensor("serving_default_x:0", "DT_FLOAT", one)}, {"y": tensor(call[5], "DT_FLOAT", one)}, PREDICT
        ),
        "regress_x2_to_y3": signature(
            {"inputs": tensor("regress_x2_to_y3_inputs:0", "DT_FLOAT", one)},
            {"outputs": tensor(call[2], "DT_FLOAT", one)},
            PREDICT,
        ),
        "classify_x2_to_y3": signature(
            {"inputs": tensor("classify_x2_to_y3_inputs:0", "DT_FLOAT", one)},
            {"scores": tensor(call[0], "DT_FLOAT", one)},
            PREDICT,
        ),
        "__saved_model_init_op": signature({}, {"__saved_model_init_op": tensor("NoOp", "DT_INVALID", None)}, ""),
    }
    body = golden.get(f"/v1/models/{TF2}/metadata").json()
    assert body["model_spec"] == {"name": TF2, "signature_name": "", "version": "123"}
    assert body["metadata"]["signature_def"]["signature_def"] == defs


def test_rest_calls_on_the_tf2_form(golden):
    """tensorflow_model_server_test.py: testPredictREST, testPredictColumnarREST, testClassifyREST,
    testRegressREST, testGetStatusREST (there the model is served as `default`)."""
    assert post(golden, f"/v1/models/{TF2}:predict", '{"instances": [2.0, 3.0, 4.0]}').json() == {
        "predictions": [3.0, 3.5, 4.0]
    }
    assert post(golden, f"/v1/models/{TF2}:predict", '{"inputs": [2.0, 3.0, 4.0]}').json() == {
        "outputs": [3.0, 3.5, 4.0]
    }
    classify = '{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}'
    assert post(golden, f"/v1/models/{TF2}:classify", classify).json() == {"results": [[["", 3.0]]]}
    regress = '{"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}'
    assert post(golden, f"/v1/models/{TF2}:regress", regress).json() == {"results": [3.0]}
    assert golden.get(f"/v1/models/{TF2}").json() == {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def test_classify_and_regress_need_their_signature_shapes(golden):
    """classifier.cc and regressor.cc: the signature must be found and have the input `inputs`
    and the outputs `classes`/`scores` (classify) or `outputs` (regress)."""
    path = f"/v1/models/{TF1}"
    examples = '"examples": [{"x": 1.0}]'
    nope = post(golden, f"{path}:classify", f'{{"signature_name": "nope", {examples}}}')
    assert error_of(nope, 400) == "No signature was found with the name: nope"
    default = post(golden, f"{path}:classify", f"{{{examples}}}")  # serving_default's input is x
    assert error_of(default, 400).startswith("No classification inputs found in SignatureDef: ")
    scores = post(golden, f"{path}:regress", f'{{"signature_name": "classify_x_to_y", {examples}}}')
    assert error_of(scores, 400).startswith("No regression outputs found in SignatureDef: ")
    typed = post(golden, f"{path}:regress", '{"signature_name": "regress_x_to_y", "examples": [{"x": 80}]}')
    assert "x" in error_of(typed, 400)  # an int64 feature where the model parses a float one


def test_cors(golden):
    """http_server.cc with --rest_api_enable_cors_support: every /v1 answer has the CORS headers;
    a preflight is 200 when Origin names an http(s) origin, else FAILED_PRECONDITION (400)."""
    cors = {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "POST, GET",
        "access-control-allow-headers": "Content-Type",
    }
    for response in (golden.get(f"/v1/models/{TF1}"), golden.get("/v1/models/foo")):
        assert {k: response.headers.get(k) for k in cors} == cors
    preflight = golden.options(f"/v1/models/{TF1}:predict", headers={"Origin": "https://example.org"})
    assert preflight.status_code == 200 and preflight.content == b""
    assert {k: preflight.headers.get(k) for k in cors} == cors
    missing = golden.options(f"/v1/models/{TF1}:predict")
    assert missing.status_code == 400 and "Origin header is missing in CORS preflight" in missing.json()["error"]
    assert "access-control-allow-origin" not in golden.get("/monitoring/prometheus/metrics").headers
