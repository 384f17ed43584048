"""The script the cluster CI job runs beside its second pipeline, with fake cluster tools:
hack/kill-worker.sh kills a training worker from the host and waits until the operator has
recreated it."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.cluster.test_scripts import run_without_tools, with_tools


def fake(bin_dir: Path, name: str, body: str) -> None:
    (bin_dir / name).write_text(f"#!{shutil.which('bash')}\n{body}\n")
    (bin_dir / name).chmod(0o755)


def test_kill_worker_kills_one_of_the_newest_jobs_workers_and_sees_it_recreated(tmp_path):
    with_tools(tmp_path, "grep", "sleep", "tail", "head")
    state = tmp_path / "killed"
    calls = tmp_path / "calls.log"
    fake(
        tmp_path / "bin",
        "kubectl",
        f'echo "kubectl $*" >> {calls}\n'
        'case "$*" in\n'
        '  "version --client -o yaml") echo \'  minor: "35"\' ;;\n'
        '  "get tfjobs"*) printf "tfjob.kubeflow.org/%s\\n" fmnist-e2e-old-cnn fmnist-e2e-abcde-dropout ;;\n'
        f'  "get pods"*) if [[ -f {state} ]]; then printf "uid-1\\nuid-3\\n"; else printf "uid-1\\nuid-2\\n"; fi ;;\n'
        "esac",
    )
    fake(tmp_path / "bin", "pgrep", f'echo "pgrep $*" >> {calls}\necho 4242\necho 4343')
    fake(tmp_path / "bin", "sudo", f'echo "sudo $*" >> {calls}\n: > {state}')
    proc = run_without_tools(tmp_path, "hack/kill-worker.sh", WAIT_TIMEOUT="10s", TRAIN_FIRST="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = calls.read_text()
    assert "pgrep -f jobs.train .*--run-id fmnist-e2e-abcde .*--model dropout( |$)" in log
    assert "sudo kill -KILL 4242" in log
    assert "recreated the killed worker of fmnist-e2e-abcde-dropout" in proc.stdout
