"""Makes this interpreter look like the jobs image: the modules named in FMNIST_HIDE_MODULES
(what the full MLflow of requirements/local.txt adds to the image's mlflow-skinny: pandas,
scipy, sqlalchemy, flask, ...) cannot be imported and are not found by importlib.

Used by tests/pipeline/test_tracking.py with PYTHONPATH=<this folder>:<repo>, so that every job of its
pipeline runs with only what the image installs."""

import os
import sys

HIDDEN = {name for name in os.environ.get("FMNIST_HIDE_MODULES", "").split(",") if name}


class _Hide:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


if HIDDEN:
    sys.meta_path[:] = [_Hide(finder) if hasattr(finder, "find_spec") else finder for finder in sys.meta_path]
