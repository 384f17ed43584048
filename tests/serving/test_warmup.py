"""Warm-up as TF Serving 2.20 does it (servables/tensorflow/saved_model_warmup_util.cc and
saved_model_warmup.cc): only from `assets.extra/tf_serving_warmup_requests`, a TFRecord file of
PredictionLogs (predict, classify, regress), at most 1000 records, any failure failing the load;
and the fmnist export writes that file, so that TF Serving and the local server warm it up."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from jobs.serving import servable, warmup
from jobs.serving.models import loader_with


def prediction_logs(path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


def test_the_export_writes_tf_servings_warmup_file(trained_model):
    """One predict request per signature of the fmnist model, in TF Serving's format."""
    import tensorflow as tf

    logs = prediction_logs(trained_model / warmup.FILE)
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request for log in logs}
    assert set(requests) == {"serving_default", "pixels"}
    assert tf.make_ndarray(requests["pixels"].inputs["pixels"]).shape == (1, 28, 28)
    (image,) = tf.make_ndarray(requests["serving_default"].inputs["image_bytes"])
    assert image.startswith(b"\x89PNG")
    loaded = servable.load(trained_model, 1)
    outcomes = []
    assert warmup.run(loaded, outcomes.append) == 2 and outcomes[0].status == "OK"


def records(path, *logs) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def examples_request(kind: str, signature: str, x: float):
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import classification_pb2, prediction_log_pb2, regression_pb2

    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.append(x)
    if kind == "classify":
        request = classification_pb2.ClassificationRequest()
        wrap = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request))
        inner = wrap.classify_log.request
    else:
        request = regression_pb2.RegressionRequest()
        wrap = prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=request))
        inner = wrap.regress_log.request
    inner.model_spec.signature_name = signature
    inner.input.example_list.examples.append(example)
    return wrap


@pytest.fixture
def tf1_version(half_plus_two, tmp_path):
    return shutil.copytree(half_plus_two["tf1"] / "00000123", tmp_path / "123")


def test_predict_classify_and_regress_records_are_replayed(tf1_version):
    warmup.write(tf1_version, {"serving_default": {"x": np.array([[1.0]], np.float32)}})
    predict = prediction_logs(tf1_version / warmup.FILE)[0]
    records(
        tf1_version / warmup.FILE,
        predict,
        examples_request("classify", "classify_x_to_y", 2.0),
        examples_request("regress", "regress_x_to_y", 3.0),
    )
    outcomes = []
    loaded = servable.load(tf1_version, 123)
    assert warmup.run(loaded, outcomes.append) == 3
    assert [(o.status, o.records) for o in outcomes] == [("OK", 3)]


def test_no_file_no_warmup(tf1_version):
    """Nothing is guessed: a version without the file is served as it is."""
    outcomes = []
    assert warmup.run(servable.load(tf1_version, 123), outcomes.append) == 0 and outcomes == []


@pytest.mark.parametrize(
    "case,code,needle",
    [
        ("not-tfrecord", "DATA_LOSS", "Please verify your warmup data is in TFRecord format."),
        ("unknown-signature", "FAILED_PRECONDITION", 'Serving signature key "nope" not found.'),
        ("model-error", "INVALID_ARGUMENT", "x"),
        ("too-many", "INVALID_ARGUMENT", "Number of warmup records exceeds the maximum (1000)"),
    ],
)
def test_a_failed_warmup_fails_the_load_with_tf_servings_status(tf1_version, case, code, needle):
    """The version is not served, and its status says why (the metrics say so too)."""
    file = tf1_version / warmup.FILE
    if case == "not-tfrecord":
        file.parent.mkdir()
        file.write_bytes(b"\x89PNG this is no TFRecord file at all")
    elif case == "unknown-signature":
        warmup.write(tf1_version, {"nope": {"x": np.array([[1.0]], np.float32)}})
    elif case == "model-error":
        records(file, examples_request("regress", "regress_x2_to_y3", 1.0))  # strings into a float input
    else:
        warmup.write(tf1_version, {"serving_default": {"x": np.array([[1.0]], np.float32)}})
        records(file, *prediction_logs(file) * 1001)
    reported, outcomes = [], []

    def warm(loaded):
        warmup.run(loaded, outcomes.append)

    load = loader_with(lambda path, ok, seconds: reported.append(ok), warm)
    with pytest.raises(warmup.WarmupError) as err:
        load(tf1_version, 123)
    assert err.value.code == code and needle in str(err.value)
    assert servable.error_code(err.value) == code
    assert reported == [True]  # the SavedModel itself loaded: its warm-up failed
    assert outcomes and outcomes[0].status.startswith(code)
