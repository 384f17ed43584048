"""Render the kustomize tree offline: remote bases mapped to a local mirror of the upstream.

A remote base `https://github.com/<org>/<repo>//<path>?ref=<tag>` is read from
`$UPSTREAM_MIRROR/github.com/<org>/<repo>/<tag>/<path>`: the tree is copied to a temp dir, the
URLs rewritten there (our files stay as they are), and kustomize runs with
`--load-restrictor LoadRestrictionsNone` because the mirror lies outside the copy.
Without a mirror the URLs are used as they are, which needs network.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from tests.helpers import ROOT

KUSTOMIZE = ROOT / "kustomize"
REMOTE = re.compile(r"https://github\.com/(?P<org>[\w.-]+)/(?P<repo>[\w.-]+)//(?P<path>[\w./-]+)\?ref=(?P<ref>[\w.-]+)")

# Every kustomization a user can apply or that a test renders, and the components.
KUSTOMIZATIONS = (
    "addons/argo-crds",
    "addons/training-operator",
    "addons/argo",
    "base",
    "overlays/local",
    "overlays/local-nodes",
    "overlays/cluster",
    "overlays/cluster-admin",
)
# The overlays a user applies (hack/deploy.sh's OVERLAY).
OVERLAYS = ("local", "local-nodes", "cluster")
COMPONENTS = ("gpu", "arm64-serving", "monitoring")


class Unavailable(Exception):
    """Neither a mirror nor the network: the caller skips."""


def remote_urls() -> set[str]:
    urls = set()
    for path in KUSTOMIZE.rglob("kustomization.yaml"):
        urls.update(m.group(0) for m in REMOTE.finditer(path.read_text()))
    return urls


def mirror_path(url: str, mirror: Path) -> Path:
    m = REMOTE.fullmatch(url)
    if not m:
        raise ValueError(f"not a pinned remote base: {url}")
    return mirror / "github.com" / m["org"] / m["repo"] / m["ref"] / m["path"]


def kubectl() -> str:
    venv = ROOT / ".venv" / "bin" / "kubectl"
    found = str(venv) if venv.exists() else shutil.which("kubectl")
    if not found:
        raise Unavailable("kubectl not found (it comes with the venv: make venv)")
    return found


def network_reaches_github(timeout: float = 15.0) -> bool:
    try:
        subprocess.run(
            ["git", "ls-remote", "--exit-code", "https://github.com/kubeflow/trainer", "v1.9.4"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        return True
    except (subprocess.SubprocessError, OSError):
        return False


def source() -> Path | None:
    """The mirror to read remote bases from, or None for the network; Unavailable if neither."""
    mirror = os.environ.get("UPSTREAM_MIRROR")
    if mirror:
        mirror_dir = Path(mirror).resolve()
        missing = [url for url in remote_urls() if not mirror_path(url, mirror_dir).is_dir()]
        if missing:
            raise Unavailable(f"UPSTREAM_MIRROR={mirror} lacks {', '.join(sorted(missing))}")
        return mirror_dir
    if network_reaches_github():
        return None
    raise Unavailable("no UPSTREAM_MIRROR set and github.com is unreachable: cannot read the pinned remote bases")


def copy_tree(dest: Path, mirror: Path | None) -> Path:
    """Our kustomize tree under dest, remote URLs rewritten to the mirror."""
    tree = dest / "kustomize"
    shutil.copytree(KUSTOMIZE, tree)
    if mirror is not None:
        for path in tree.rglob("kustomization.yaml"):
            text = path.read_text()
            # kustomize wants bases as relative paths.
            path.write_text(
                REMOTE.sub(lambda m, here=path.parent: os.path.relpath(mirror_path(m.group(0), mirror), here), text)
            )
    return tree


def render(
    target: str, components: tuple[str, ...] = (), images: dict[str, str] | None = None, mirror: Path | None = None
) -> list[dict]:
    """`kubectl kustomize` of kustomize/<target> (+ components), as a list of objects."""
    with tempfile.TemporaryDirectory(prefix="kustomize-") as tmp:
        tree = copy_tree(Path(tmp), mirror)
        path = tree / target
        if components or images:
            path = Path(tmp) / "wrapper"
            path.mkdir()
            spec = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"../kustomize/{target}"],
                "components": [f"../kustomize/components/{c}" for c in components],
            }
            if images:
                spec["images"] = [{"name": name, "newTag": tag} for name, tag in images.items()]
            (path / "kustomization.yaml").write_text(yaml.safe_dump(spec))
        proc = subprocess.run(
            [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode:
            raise AssertionError(f"kustomize {target} {components}: {proc.stderr.strip()}")
        return [doc for doc in map(parse, DOCUMENT.split(proc.stdout)) if doc]


# kustomize separates objects by a `---` line; inside a block scalar such a line is indented.
DOCUMENT = re.compile(r"^---[ \t]*$", re.M)


@functools.cache
def parse(text: str):
    """One object, parsed with libyaml and once per distinct text: the same upstream CRDs (about
    12 MB of YAML) are in most renders, and parsing them is most of a render's time. The objects
    are shared between renders, so callers must not change them."""
    return yaml.load(text, Loader=yaml.CSafeLoader)
