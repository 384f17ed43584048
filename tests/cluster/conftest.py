"""Fixtures for the offline checks of the Kubernetes path (kustomize/, workflows/, infra/).

Rendering needs the pinned upstream bases: from $UPSTREAM_MIRROR when set, else from the
network; with neither, every test that needs them is skipped with the reason."""

from __future__ import annotations

import concurrent.futures
import os
import re

import pytest

from tests.cluster import render, workflow

# What `make image` tags and hack/deploy.sh substitutes for the jobs image in a render.
SAMPLE_TAG = "0123456789ab"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cluster/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def upstream():
    try:
        return render.source()
    except render.Unavailable as err:
        pytest.skip(f"cannot render the kustomizations: {err}")


# (name, kustomization, components): every kustomization, and the overlay with each component.
TARGETS = (
    [(t, t, ()) for t in render.KUSTOMIZATIONS]
    + [(f"overlays/local+{c}", "overlays/local", (c,)) for c in render.COMPONENTS]
    + [("overlays/local+all", "overlays/local", render.COMPONENTS)]
    + [("overlays/cluster+gpu", "overlays/cluster", ("gpu",))]
)


@pytest.fixture(scope="session")
def rendered(upstream) -> dict[str, list[dict]]:
    """Every target, rendered once for the session (kubectl runs side by side, one per CPU)."""

    def one(target: str, components: tuple[str, ...]) -> list[dict]:
        images = {"fmnist-jobs": SAMPLE_TAG} if components else None
        return render.render(target, components, images=images, mirror=upstream)

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {name: pool.submit(one, target, components) for name, target, components in TARGETS}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="session")
def overlay(rendered) -> list[dict]:
    return rendered["overlays/local"]


@pytest.fixture(scope="session")
def crds(rendered) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the OpenAPI v3 schema of that served version, from the rendered
    upstream CRDs (addons/argo-crds, and the training operator's overlay)."""
    out = {}
    for doc in rendered["addons/argo-crds"] + rendered["addons/training-operator"]:
        if doc["kind"] == "CustomResourceDefinition":
            for version in doc["spec"]["versions"]:
                if version.get("served"):
                    key = (f"{doc['spec']['group']}/{version['name']}", doc["spec"]["names"]["kind"])
                    out[key] = version["schema"]["openAPIV3Schema"]
    return out


@pytest.fixture(scope="session")
def wf() -> dict:
    return workflow.load()


@pytest.fixture(scope="session")
def rollback_wf() -> dict:
    return workflow.load(workflow.ROLLBACK)


@pytest.fixture(scope="session")
def k8s_version() -> str:
    """The Kubernetes minor of the pinned k3s image in infra/k3d.yaml, e.g. '1.35'."""
    text = (render.ROOT / "infra" / "k3d.yaml").read_text()
    m = re.search(r"^image:\s*rancher/k3s:v(\d+)\.(\d+)\.\d+-k3s\d+(@sha256:[0-9a-f]{64})?\s*$", text, re.M)
    assert m, "infra/k3d.yaml must pin `image: rancher/k3s:vX.Y.Z-k3sN`"
    return f"{m[1]}.{m[2]}"
