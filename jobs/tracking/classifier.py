"""The candidate as an MLflow model: a `mlflow.pyfunc.PythonModel` over its SavedModel.

MLflow logs this file as the model's code ("models from code", `python_model=<this path>`),
so it imports nothing from this project: a user's `mlflow models serve` or
`mlflow.pyfunc.load_model` runs it with only the model's own requirements installed.

Why not MLflow's TensorFlow flavour: in MLflow 3.17.2 `mlflow.tensorflow.log_model` takes a
Keras model or a `tf.Module`, and its pyfunc calls the module on one tensor and hands back what
the module returns (`mlflow/tensorflow/__init__.py`, `_TF2ModuleWrapper.predict`): it cannot call
a named signature, and the class names come back as bytes. This model calls the SavedModel's
`pixels` signature and answers with plain strings.

Input: `{"pixels": uint8 [N, 28, 28]}`. Output: `{"probabilities": float32 [N, 10],
"class_id": int64 [N], "class_name": str [N]}`.
"""

from __future__ import annotations

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

SAVED_MODEL = "saved_model"  # the artifact holding the SavedModel
SIGNATURE = "pixels"


class Classifier(PythonModel):
    def load_context(self, context):
        import tensorflow as tf

        self._call = tf.saved_model.load(context.artifacts[SAVED_MODEL]).signatures[SIGNATURE]

    # The hint is one MLflow reads (mlflow/pyfunc/utils/data_validation.py, 3.17.2): numpy's array
    # asks for no schema inference from hints (the logged signature validates the input), where no
    # hint at all warns on every log and load. The one named tensor may also come as a dict.
    def predict(self, context, model_input: np.ndarray, params=None):
        pixels = model_input[SIGNATURE] if isinstance(model_input, dict) else model_input
        out = {name: tensor.numpy() for name, tensor in self._call(pixels=np.asarray(pixels, np.uint8)).items()}
        out["class_name"] = np.array([name.decode() for name in out["class_name"]], dtype=str)
        return out


set_model(Classifier())
