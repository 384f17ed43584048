"""TF Serving's own test model, half_plus_two, rebuilt here in its two forms with the same
signatures, methods and tensor names (the facts are in tensorflow_serving/servables/tensorflow/
testdata at 2.20.0: saved_model_half_plus_two_2_versions_metadata.json for the TF1 form,
saved_model_half_plus_two_tf2_2_versions_metadata.json for the TF2 one).

y = 0.5 x + 2 ("serving_default", "regress_x_to_y", "classify_x_to_y"); y2 = 0.5 x + 3
("regress_x_to_y2"); y3 = 0.5 x2 + 3 ("regress_x2_to_y3", "classify_x2_to_y3"). The
tf.Example signatures read a float feature `x` of one value and an optional `x2` (default 0).

    TF1: SavedModelBuilder; `x`, `y`... are graph tensors `x:0`, `y:0`; the examples are fed to
         the placeholder `tf_example:0` (of unknown rank); methods predict, classify, regress
    TF2: tf.saved_model.save of a tf.Module; every method is `predict`; serving_default takes
         `x` of shape [1], the example signatures `inputs` of shape [-1]
"""

from __future__ import annotations

from pathlib import Path


def _features(tf):
    return {
        "x": tf.io.FixedLenFeature([1], tf.float32),
        "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
    }


def build_tf1(path: Path) -> Path:
    """The TF1 form at `path` (a version folder)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(2.0, name="b")
        c = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, shape=None, name="tf_example")  # of unknown rank
        parsed = v1.io.parse_example(tf.reshape(serialized, [-1]), _features(tf))
        x = tf.identity(parsed["x"], name="x")
        x2 = tf.identity(parsed["x2"], name="x2")
        y = tf.identity(a * x + b, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        y3 = tf.identity(a * x2 + c, name="y3")
        session.run(v1.global_variables_initializer())

        def signature(inputs, outputs, method):
            info = v1.saved_model.utils.build_tensor_info
            return v1.saved_model.signature_def_utils.build_signature_def(
                {k: info(v) for k, v in inputs.items()}, {k: info(v) for k, v in outputs.items()}, method
            )

        predict, classify, regress = (
            "tensorflow/serving/predict",
            "tensorflow/serving/classify",
            "tensorflow/serving/regress",
        )
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(
            session,
            ["serve"],
            signature_def_map={
                "serving_default": signature({"x": x}, {"y": y}, predict),
                "classify_x_to_y": signature({"inputs": serialized}, {"scores": y}, classify),
                "classify_x2_to_y3": signature({"inputs": x2}, {"scores": y3}, classify),
                "regress_x_to_y": signature({"inputs": serialized}, {"outputs": y}, regress),
                "regress_x_to_y2": signature({"inputs": serialized}, {"outputs": y2}, regress),
                "regress_x2_to_y3": signature({"inputs": x2}, {"outputs": y3}, regress),
            },
            strip_default_attrs=True,
        )
        builder.save()
    return path


def build_tf2(path: Path) -> Path:
    """The TF2 form at `path` (a version folder)."""
    import tensorflow as tf

    one_float = tf.TensorSpec([1], tf.float32)
    examples = tf.TensorSpec([None], tf.string, name="inputs")
    float_inputs = tf.TensorSpec([1], tf.float32, name="inputs")

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(0.5)
            self.b = tf.Variable(2.0)
            self.c = tf.Variable(3.0)

        def _x(self, serialized):
            return tf.io.parse_example(serialized, _features(tf))["x"]

        @tf.function(input_signature=[one_float])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[examples])
        def regress_xy(self, inputs):
            return {"outputs": self.a * self._x(inputs) + self.b}

        @tf.function(input_signature=[examples])
        def regress_xy2(self, inputs):
            return {"outputs": self.a * self._x(inputs) + self.c}

        @tf.function(input_signature=[float_inputs])
        def regress_x2y3(self, inputs):
            return {"outputs": self.a * inputs + self.c}

        @tf.function(input_signature=[examples])
        def classify_xy(self, inputs):
            return {"scores": self.a * self._x(inputs) + self.b}

        @tf.function(input_signature=[float_inputs])
        def classify_x2y3(self, inputs):
            return {"scores": self.a * inputs + self.c}

    module = HalfPlusTwo()
    signatures = {
        "serving_default": module.predict,
        "regress_x_to_y": module.regress_xy,
        "regress_x_to_y2": module.regress_xy2,
        "regress_x2_to_y3": module.regress_x2y3,
        "classify_x_to_y": module.classify_xy,
        "classify_x2_to_y3": module.classify_x2y3,
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path
