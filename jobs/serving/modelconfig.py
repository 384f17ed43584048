"""Which models are served, from where, which versions, under which labels: TF Serving's model
config file (`--model_config_file`, a `ModelServerConfig` in protobuf text format, parsed with
TF Serving's own proto from tensorflow-serving-api) or `--model_name`/`--model_base_path`.

As TF Serving 2.20 reads it (model_servers/server_core.cc): a `model_config_list` of models, each
with a unique `name`, an absolute `base_path` and `model_platform: "tensorflow"`; a version policy
(`latest { num_versions: N }`, 1 by default; `all {}`; `specific { versions: ... }`) choosing which
numeric version folders are served; `version_labels` naming versions. A file that lists no model
(only a comment) is an empty config: nothing is served until it lists one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

PLATFORM = "tensorflow"


class ConfigError(Exception):
    """A config TF Serving would refuse, in its words."""


@dataclasses.dataclass(frozen=True)
class Policy:
    kind: str = "latest"  # latest, all, specific
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def aspired(self, found: Iterable[int]) -> set[int]:
        """The versions to serve among those on disk."""
        found = sorted(found)
        if self.kind == "all":
            return set(found)
        if self.kind == "specific":
            return set(found) & set(self.versions)
        return set(found[-self.num_versions :]) if found else set()

    def describe(self) -> str:
        if self.kind == "specific":
            return f"specific versions {', '.join(map(str, self.versions))}"
        if self.kind == "all":
            return "all versions"
        return "the latest version" if self.num_versions == 1 else f"the latest {self.num_versions} versions"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: Path
    policy: Policy = Policy()
    labels: tuple[tuple[str, int], ...] = ()

    def label(self, label: str) -> int | None:
        return dict(self.labels).get(label)


def single(name: str, base_path: Path) -> ModelConfig:
    """The one model of `--model_name`/`--model_base_path` (its latest version)."""
    return ModelConfig(name, base_path)


def parse(text: str) -> tuple[ModelConfig, ...]:
    """The models of a ModelServerConfig text (none for an empty one); ConfigError if TF Serving
    would refuse it."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ConfigError(f"the model config does not parse as a ModelServerConfig: {err}") from None
    which = config.WhichOneof("config")
    if which is None:
        return ()
    if which != "model_config_list":
        raise ConfigError("only a model_config_list is served here (custom_model_config is not)")
    models, names = [], set()
    for entry in config.model_config_list.config:
        if entry.name in names:
            raise ConfigError(f"Illegal to list model {entry.name} multiple times in config list")
        names.add(entry.name)
        models.append(_model(entry))
    return tuple(models)


def _model(entry) -> ModelConfig:
    if not entry.base_path.startswith("/"):
        raise ConfigError(
            f"Expected model {entry.name} to have an absolute path or URI; got base_path()={entry.base_path}"
        )
    if not entry.model_platform:
        raise ConfigError(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {entry.name}"
        )
    if entry.model_platform != PLATFORM:
        raise ConfigError(f"Model {entry.name} requests unsupported platform {entry.model_platform}")
    policy = entry.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        chosen = Policy("all")
    elif which == "specific":
        chosen = Policy("specific", versions=tuple(policy.specific.versions))
    else:
        chosen = Policy("latest", num_versions=policy.latest.num_versions or 1)
    labels = tuple(sorted(entry.version_labels.items()))
    return ModelConfig(entry.name, Path(entry.base_path), chosen, labels)


def read(path: Path) -> tuple[ModelConfig, ...] | None:
    """The models of a config file; None when the file is not there (yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the model config {path}: {err}") from None
    return parse(text)
