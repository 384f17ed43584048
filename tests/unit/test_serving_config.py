"""jobs.serving_config: the model servers' config file (what TF Serving loads)."""

from __future__ import annotations

import pytest

from jobs.core import serving_config
from jobs.core.cli import JobError
from jobs.core.paths import Work


def test_latest_and_pinned_versions():
    latest = serving_config.render([serving_config.Model("fmnist", "/work/models/fmnist")])
    assert 'name: "fmnist"' in latest and 'base_path: "/work/models/fmnist"' in latest
    assert "latest {" in latest and "num_versions: 1" in latest and "specific" not in latest
    pinned = serving_config.render([serving_config.Model("fmnist", "/work/models/fmnist", (4, 2, 4))])
    assert "latest" not in pinned
    assert [line.strip() for line in pinned.splitlines() if "versions:" in line] == ["versions: 2", "versions: 4"]
    assert latest.count("{") == latest.count("}") and pinned.count("{") == pinned.count("}")
    assert serving_config.render([]) == serving_config.PLACEHOLDER
    assert serving_config.PLACEHOLDER.startswith("#") and serving_config.PLACEHOLDER.count("\n") == 1


@pytest.mark.parametrize(
    "name, base, versions",
    [("", "/w", ()), ("a b", "/w", ()), ("fmnist", "relative/path", ()), ("fmnist", '/a"b', ()), ("m", "/w", (-1,))],
)
def test_bad_models_are_refused(name, base, versions):
    with pytest.raises(JobError):
        serving_config.Model(name, base, versions)


def test_serve_latest_replaces_the_file_whole(tmp_path):
    work = Work(tmp_path)
    path = serving_config.path(work)
    path.parent.mkdir(parents=True)
    path.write_text(serving_config.PLACEHOLDER)
    assert serving_config.serve_latest(work) == path
    text = path.read_text()
    assert f'base_path: "{tmp_path / "models" / "fmnist"}"' in text
    assert sorted(p.name for p in path.parent.iterdir()) == ["serving.config"], "no temp file left"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    serving_config.serve_latest(work)
    assert path.read_text() == text
