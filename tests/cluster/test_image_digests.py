"""Third-party images by digest: hack/images.txt names every third-party image the install, the
jobs image's build and the k3d cluster use, and every render carries each one as it says (the
tag, and `@sha256:...` beside it once resolved). `hack/image-digests.sh` writes the pins
(apply), looks digests up (resolve) and checks them (check); the registry is a fake `docker`
here, which answers `docker buildx imagetools inspect` the way Docker's CLI prints it (a
`Digest:` line for the index or manifest the reference names)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cluster.test_policy import all_containers, pod_specs
from tests.helpers import ROOT

DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")
# The renders that are applied as they are (hack/deploy.sh): the overlays, and the training
# operator on its own (OVERLAY=cluster).
APPLIED = [
    "overlays/local",
    "overlays/local+all",
    "overlays/local-nodes",
    "overlays/cluster",
    "overlays/cluster+gpu",
    "addons/training-operator",
]
OURS = "fmnist-jobs"


def pins() -> dict[str, tuple[str, str]]:
    """image:tag -> (digest or '-', the file that pins it)."""
    out = {}
    for line in (ROOT / "hack" / "images.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            image, digest, where = line.split()
            out[image] = (digest, where)
    return out


def used(rendered) -> dict[str, set[str]]:
    """image:tag -> every way it is written, over the applied renders and the other pins."""
    found: dict[str, set[str]] = {}

    def add(ref: str) -> None:
        found.setdefault(DIGEST.sub("", ref), set()).add(ref)

    for name in APPLIED:
        for _, spec in pod_specs(rendered[name]):
            for c in all_containers(spec):
                if not c["image"].split(":")[0].endswith(OURS):
                    add(c["image"])
                for arg in c.get("args", []):
                    if arg.startswith("--executor-image="):
                        add(arg.split("=", 1)[1])
    for match in re.findall(r"^FROM\s+(\S+)", (ROOT / "infra" / "Dockerfile").read_text(), re.M):
        add(match)
    add(yaml.safe_load((ROOT / "infra" / "k3d.yaml").read_text())["image"])
    return found


def test_every_third_party_image_is_listed_and_every_listed_one_used(rendered):
    listed, seen = pins(), used(rendered)
    assert set(seen) == set(listed), f"unlisted: {set(seen) - set(listed)}; unused: {set(listed) - set(seen)}"
    for image, (digest, where) in listed.items():
        assert digest == "-" or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
        assert (ROOT / where).exists(), f"{image}: {where}"


def test_each_image_is_written_as_the_list_says(rendered):
    seen = used(rendered)
    for image, (digest, _) in pins().items():
        wanted = image if digest == "-" else f"{image}@{digest}"
        assert seen[image] == {wanted}, f"{image}: {seen[image]} (run hack/image-digests.sh apply)"


def fake_registry(tmp: Path, known: dict[str, str]) -> Path:
    """A `docker` whose registry holds `known` (image:tag -> digest)."""
    bin_dir = tmp / "fake-bin"
    bin_dir.mkdir()
    table = tmp / "registry.txt"
    table.write_text("".join(f"{ref} {digest}\n" for ref, digest in known.items()))
    (bin_dir / "docker").write_text(
        f"""#!{shutil.which("bash")}
[[ "$1" == info ]] && exit 0
[[ "$1 $2 $3" == "buildx imagetools inspect" ]] || exit 2
ref=$4
if [[ "$ref" == *@sha256:* ]]; then
  digest=$(awk -v repo="${{ref%@*}}" -v d="${{ref#*@}}" 'index($1, repo) == 1 && $2 == d {{ print $2 }}' {table})
else
  digest=$(awk -v ref="$ref" '$1 == ref {{ print $2 }}' {table})
fi
[[ -n "$digest" ]] || {{ echo "ERROR: $ref: not found" >&2; exit 1; }}
printf 'Name:      %s\\nMediaType: application/vnd.oci.image.index.v1+json\\nDigest:    %s\\n' "$ref" "$digest"
"""
    )
    (bin_dir / "docker").chmod(0o755)
    return bin_dir


@pytest.fixture
def repo(tmp_path) -> Path:
    """The files the script reads and writes, in a copy."""
    copy = tmp_path / "repo"
    for part in ("hack", "kustomize", "infra"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("node_modules"))
    return copy


def run(repo: Path, bin_dir: Path | None, *argv: str) -> subprocess.CompletedProcess:
    path = f"{bin_dir}:/usr/bin:/bin" if bin_dir else "/usr/bin:/bin"
    return subprocess.run(
        ["bash", "hack/image-digests.sh", *argv],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path, "HOME": str(repo), "VENV": "/nonexistent"},
    )


def snapshot(repo: Path) -> dict[str, str]:
    return {str(p.relative_to(repo)): p.read_text() for p in sorted(repo.rglob("*")) if p.is_file()}


def test_apply_changes_nothing_the_files_are_in_step(repo):
    before = snapshot(repo)
    proc = run(repo, None, "apply")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(repo) == before


def digests_for(images) -> dict[str, str]:
    return {image: "sha256:" + f"{i:x}".rjust(4, "a") * 16 for i, image in enumerate(images, start=1)}


def test_resolve_pins_every_file_and_check_passes(repo, tmp_path):
    known = digests_for(pins())
    bin_dir = fake_registry(tmp_path, known)
    proc = run(repo, bin_dir, "resolve")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    listed = (repo / "hack" / "images.txt").read_text()
    for image, digest in known.items():
        assert f"{image} {digest} " in listed
    component = yaml.safe_load((repo / "kustomize/components/image-digests/kustomization.yaml").read_text())
    assert {(e["name"], e["digest"]) for e in component["images"]} == {
        (image, known[image]) for image, (_, where) in pins().items() if where == "kustomize/components/image-digests"
    }
    assert (
        f"FROM python:3.11.14-slim-bookworm@{known['python:3.11.14-slim-bookworm']}"
        in (repo / "infra" / "Dockerfile").read_text()
    )
    assert f"rancher/k3s:v1.35.2-k3s1@{known['rancher/k3s:v1.35.2-k3s1']}" in (repo / "infra/k3d.yaml").read_text()
    argo = (repo / "kustomize/addons/argo/kustomization.yaml").read_text()
    assert f"--executor-image=quay.io/argoproj/argoexec:v4.1.2@{known['quay.io/argoproj/argoexec:v4.1.2']}" in argo
    check = run(repo, bin_dir, "check")
    assert check.returncode == 0, check.stderr
    # A second resolve against the same registry changes nothing.
    before = snapshot(repo)
    assert run(repo, bin_dir, "resolve").returncode == 0 and snapshot(repo) == before


def test_check_fails_on_an_unresolved_image_and_a_missing_digest(repo, tmp_path):
    known = digests_for(pins())
    bin_dir = fake_registry(tmp_path, known)
    listed = repo / "hack" / "images.txt"
    text = listed.read_text()
    text = re.sub(r"^(tensorflow/serving:2\.20\.0) \S+", r"\1 -", text, flags=re.M)
    text = re.sub(r"^(quay\.io/argoproj/argocli:v4\.1\.2) \S+", r"\1 sha256:" + "0" * 64, text, flags=re.M)
    others = [i for i in known if i not in ("tensorflow/serving:2.20.0", "quay.io/argoproj/argocli:v4.1.2")]
    for image in others:
        text = re.sub(rf"^({re.escape(image)}) \S+", rf"\1 {known[image]}", text, flags=re.M)
    listed.write_text(text)
    proc = run(repo, bin_dir, "check")
    assert proc.returncode == 1
    assert f"unresolved: tensorflow/serving:2.20.0 (its tag points at {known['tensorflow/serving:2.20.0']} now)" in (
        proc.stderr
    )
    assert "missing: quay.io/argoproj/argocli:v4.1.2@sha256:" + "0" * 64 in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: images without a digest that exists")


def test_bad_usage_is_one_line(repo):
    proc = run(repo, None, "sideways")
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: usage: hack/image-digests.sh resolve|apply|check (got 'sideways')"
