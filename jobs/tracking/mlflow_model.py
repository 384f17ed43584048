"""The served SavedModel as an MLflow model folder, written without MLflow's model flavours.

`mlflow.tensorflow` and `mlflow.pyfunc` import pandas, which the jobs image (mlflow-skinny)
does not have. So this module writes the folder those flavours would read: the SavedModel
under `tfmodel/`, and an `MLmodel` file that declares

- the `tensorflow` flavour as a SavedModel with a named signature (`signature_def_key:
  pixels`, MLflow's model type for a SavedModel signature), so that
  `mlflow.tensorflow.load_model(uri)` returns that signature as a callable;
- the `python_function` flavour through `mlflow.tensorflow`, so that
  `mlflow.pyfunc.load_model(uri).predict({"pixels": uint8 [N,28,28]})` returns
  `{"probabilities", "class_id", "class_name"}`;
- the model signature (tensor specs) and an input example, as MLflow writes them.

The model servers keep serving the SavedModel folder itself; this is its MLflow view.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import numpy as np

from jobs.ingest.data import IMAGE_SHAPE

SAVED_MODEL_DIR = "tfmodel"
SIGNATURE = "pixels"
EXAMPLE_FILE = "input_example.json"
SERVING_EXAMPLE_FILE = "serving_input_example.json"


def signature() -> dict:
    """The `pixels` signature as MLflow's MLmodel `signature` entry (tensor-based schemas)."""
    from mlflow.types.schema import Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *IMAGE_SHAPE), "pixels")])
    outputs = Schema(
        [
            TensorSpec(np.dtype(np.float32), (-1, 10), "probabilities"),
            TensorSpec(np.dtype(np.int64), (-1,), "class_id"),
            TensorSpec(np.dtype(object), (-1,), "class_name"),
        ]
    )
    return {"inputs": inputs.to_json(), "outputs": outputs.to_json(), "params": None}


def requirements() -> list[str]:
    """What loading the model needs, pinned to what wrote it."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("mlflow-skinny", "tensorflow", "numpy"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def write(saved_model: Path, target: Path, example: np.ndarray, model_id: str, run_id: str, artifact_path: str):
    """Writes the MLflow model folder for `saved_model` (a SavedModel with a `pixels`
    signature) into `target`, which must not exist; `example` is a few uint8 [N,28,28] images."""
    import yaml
    from mlflow.models import Model

    target.mkdir(parents=True)
    shutil.copytree(saved_model, target / SAVED_MODEL_DIR)
    model = Model(artifact_path=artifact_path, run_id=run_id, model_uuid=model_id, model_id=model_id)
    model.add_flavor(
        "tensorflow",
        code=None,
        saved_model_dir=SAVED_MODEL_DIR,
        meta_graph_tags=["serve"],
        signature_def_key=SIGNATURE,
        model_type="tf1-estimator",  # MLflow's name for "a SavedModel, called through a signature"
    )
    model.add_flavor(
        "python_function",
        loader_module="mlflow.tensorflow",
        python_version=platform.python_version(),
        env={"virtualenv": "python_env.yaml"},
    )
    example = np.asarray(example, np.uint8)
    (target / EXAMPLE_FILE).write_text(json.dumps({"pixels": example.tolist()}))
    (target / SERVING_EXAMPLE_FILE).write_text(json.dumps({"inputs": {"pixels": example.tolist()}}, indent=2))
    (target / "requirements.txt").write_text("".join(f"{pin}\n" for pin in requirements()))
    python_env = {
        "python": platform.python_version(),
        "build_dependencies": ["pip"],
        "dependencies": ["-r requirements.txt"],
    }
    (target / "python_env.yaml").write_text(yaml.safe_dump(python_env, sort_keys=False))
    entry = model.to_dict()
    entry["signature"] = signature()
    entry["saved_input_example_info"] = {
        "artifact_path": EXAMPLE_FILE,
        "serving_input_path": SERVING_EXAMPLE_FILE,
        "type": "ndarray",
    }
    entry["model_size_bytes"] = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    (target / "MLmodel").write_text(yaml.safe_dump(entry, default_flow_style=False))
