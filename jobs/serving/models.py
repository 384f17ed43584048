"""The models a server serves, kept up to date by one poller thread: the model config is read
again (a model config file at each poll; models added are loaded, models removed unloaded, a
changed policy or label applied), then each model's versions are polled (versions.py).

A request names a model and a version, a label or neither (the latest). As in TF Serving's
ServerCore (2.20.0): a label resolves through the model's `version_labels` (an unknown one is an
invalid argument, `Unrecognized servable version label`); the status call ignores the label.
TF Serving refuses a config whose label points at a version that is not yet available (unless
`--allow_version_labels_for_unavailable_models`); here such a label is accepted, and a request
through it finds no servable (404) until that version is available.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from jobs.serving import modelconfig
from jobs.serving import servable as servables
from jobs.serving.errors import invalid_argument, not_found
from jobs.serving.modelconfig import ConfigError, ModelConfig
from jobs.serving.servable import Servable
from jobs.serving.versions import TF_SERVING_RETRIES, Loader, ModelVersions, Retries, servable_request

log = logging.getLogger("jobs.serve")


class Models:
    def __init__(
        self,
        loader: Loader,
        poll_seconds: float,
        config_file: Path | None = None,
        fixed: tuple[ModelConfig, ...] = (),
        retries: Retries = TF_SERVING_RETRIES,
    ):
        """Models from `config_file` (re-read at every poll) or else the `fixed` ones."""
        self.poll_seconds = poll_seconds
        self.config_file = config_file
        self._fixed = fixed
        self._loader = loader
        self._retries = retries
        self._lock = threading.Lock()
        self._models: dict[str, ModelVersions] = {}
        self._gone: dict[str, ModelVersions] = {}  # removed from the config: their status stays
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._config_said = ""

    # The request side.

    def _model(self, name: str) -> ModelVersions | None:
        with self._lock:
            return self._models.get(name)

    def acquire(self, name: str, version: int | None, label: str | None) -> Servable:
        """The servable for a request, held until its release()."""
        model = self._model(name)
        if label is not None:
            version = model.config.label(label) if model is not None else None
            if version is None:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
        if model is None:
            raise not_found(f"Servable not found for request: {servable_request(name, version)}")
        return model.acquire(version)

    def status(self, name: str, version: int | None) -> dict:
        with self._lock:
            model = self._models.get(name) or self._gone.get(name)
        if model is None:
            if version is not None:
                raise not_found(f"Could not find version {version} of model {name}")
            raise not_found(f"Could not find any versions of model {name}")
        return model.status(version)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    # The poller side.

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="version-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the poller must outlive any surprise; say what happened
                log.exception("poll failed; retrying in %.1fs", self.poll_seconds)
            self._stop.wait(self.poll_seconds)

    def poll_once(self) -> None:
        configs = self._configs()
        if configs is not None:
            self._apply(configs)
        for model in list(self._current()):
            if self._stop.is_set():
                return
            model.poll_once()
        for model in list(self._gone_models()):
            model.release_unused()

    def _current(self) -> list[ModelVersions]:
        with self._lock:
            return list(self._models.values())

    def _gone_models(self) -> list[ModelVersions]:
        with self._lock:
            return list(self._gone.values())

    def _configs(self) -> tuple[ModelConfig, ...] | None:
        """The models to serve now; None: keep the current ones (an unreadable config)."""
        if self.config_file is None:
            return self._fixed
        try:
            configs = modelconfig.read(self.config_file)
        except ConfigError as err:
            self._say(f"the model config {self.config_file} is refused, the models stay as they are: {err}", True)
            return None
        if configs is None:
            self._say(f"no model config at {self.config_file} yet: nothing is served until it lists a model")
            return ()
        if not configs:
            self._say(f"the model config {self.config_file} lists no model: nothing is served until it does")
        else:
            self._say("")
        return configs

    def _say(self, message: str, error: bool = False) -> None:
        if message and message != self._config_said:
            (log.error if error else log.warning)("%s", message)
        self._config_said = message

    def _apply(self, configs: tuple[ModelConfig, ...]) -> None:
        wanted = {config.name: config for config in configs}
        with self._lock:
            current = dict(self._models)
        for name, model in current.items():
            config = wanted.get(name)
            if config is None or config.base_path != model.config.base_path:
                log.info("model %s is no longer served from %s", name, model.config.base_path)
                with self._lock:
                    self._gone[name] = self._models.pop(name)
                model.unload_all()
            elif config != model.config:
                log.info("model %s: now %s", name, config.policy.describe())
                model.config = config
        for name, config in wanted.items():
            if self._model(name) is None:
                log.info("model %s: %s from %s", name, config.policy.describe(), config.base_path)
                with self._lock:
                    self._gone.pop(name, None)
                    self._models[name] = ModelVersions(config, self._loader, self._retries)


def loader_with(on_load: Callable[[Path, bool, float], None], warm: Callable[[Servable], None]) -> Loader:
    """servable.load, its load reported (path, success, seconds), then the version warmed up."""

    def load(path: Path, version: int) -> Servable:
        started = time.monotonic()
        try:
            loaded = servables.load(path, version)
        except BaseException:
            on_load(path, False, time.monotonic() - started)
            raise
        on_load(path, True, time.monotonic() - started)
        try:
            warm(loaded)
        except BaseException:
            loaded.close()
            raise
        return loaded

    return load
