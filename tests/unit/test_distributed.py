"""TF_CONFIG as the training operator writes it, and what bad values do to the train job."""

from __future__ import annotations

import json

import pytest

from jobs.core.cli import JobError
from jobs.train.distributed import EXIT_PEER_LOST, Cluster, parse_tf_config, retryable, tf_config
from tests.helpers.jobs import assert_one_line_error, run_job


def operator_config(workers: int, index: int) -> str:
    """The exact shape the operator injects (pkg/controller.v1/tensorflow)."""
    return json.dumps(
        {
            "cluster": {"worker": [f"train-cnn-worker-{i}.fmnist.svc:2222" for i in range(workers)]},
            "task": {"type": "worker", "index": index},
            "environment": "cloud",
        }
    )


@pytest.mark.parametrize("text", [None, "", "  "])
def test_absent_tf_config_is_one_process(text):
    cluster = parse_tf_config(text)
    assert cluster == Cluster() and not cluster.distributed and cluster.is_chief


def test_operator_tf_config():
    first, second = parse_tf_config(operator_config(2, 0)), parse_tf_config(operator_config(2, 1))
    assert first.workers == second.workers == 2 and first.distributed
    assert first.is_chief and not second.is_chief
    assert second.name == "worker-1"


def test_explicit_chief_is_the_chief():
    config = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 0}}
    cluster = parse_tf_config(json.dumps(config))
    assert cluster.workers == 3 and not cluster.is_chief
    config["task"] = {"type": "chief", "index": 0}
    assert parse_tf_config(json.dumps(config)).is_chief


def test_local_tf_config_matches_the_operator_shape():
    text = tf_config(["localhost:1234", "localhost:1235"], 1)
    assert json.loads(text) == {
        "cluster": {"worker": ["localhost:1234", "localhost:1235"]},
        "task": {"type": "worker", "index": 1},
        "environment": "cloud",
    }
    assert parse_tf_config(text).task_index == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"task": {"type": "worker", "index": 0}}', "no 'cluster'"),
        ('{"cluster": {"worker": ["a:1"]}}', "no 'task'"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "task.type 'ps'"),
        ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}', "out of range"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}', "out of range"),
        ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "list of 'host:port'"),
        ('{"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}}', "list of 'host:port'"),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "not supported"),
        ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}', "exactly one address"),
    ],
)
def test_malformed_tf_config(text, message):
    with pytest.raises(JobError, match=message):
        parse_tf_config(text)


def test_train_with_malformed_tf_config_writes_nothing(ingested):
    where = ("--work-dir", ingested, "--run-id", "r", "--dataset", "synthetic")
    tf_config = '{"cluster": {"worker": ["a:1"]}, "task": {"index": 5}'
    proc = run_job("train", *where, "--model", "cnn", "--epochs", "1", TF_CONFIG=tf_config)
    assert_one_line_error(proc, "TF_CONFIG")
    assert proc.returncode == 1, "its own error: a TFJob with restartPolicy ExitCode fails, no retry"
    assert not (ingested / "runs").exists()


def test_train_unknown_model(ingested):
    proc = run_job("train", "--work-dir", ingested, "--run-id", "r", "--dataset", "synthetic", "--model", "resnet")
    assert_one_line_error(proc, "invalid choice: 'resnet'")
    assert proc.returncode == 2, "a usage error"
    assert not (ingested / "runs").exists()


def test_train_missing_dataset(work):
    proc = run_job("train", "--work-dir", work, "--run-id", "r", "--dataset", "synthetic", "--model", "cnn")
    assert_one_line_error(proc, "no dataset at", "ingest")
    assert proc.returncode == 1
    assert not work.exists()


@pytest.mark.parametrize(
    "returncode, retried",
    [(0, False), (1, False), (2, False), (127, False), (128, True), (EXIT_PEER_LOST, True), (255, True), (-9, True)],
)
def test_retryable_exits_are_those_restart_policy_exit_code_retries(returncode, retried):
    """The training operator's ExitCode policy recreates pods that exit 128-255 (a container
    killed by signal N exits 128+N; subprocess reports -N) and fails the job on 1-127."""
    assert retryable(returncode) is retried


def test_the_peer_lost_exit_is_retryable_and_not_a_signal():
    assert 128 <= EXIT_PEER_LOST <= 255 and retryable(EXIT_PEER_LOST)
    assert EXIT_PEER_LOST - 128 == 75, "EX_TEMPFAIL moved into the retryable range"
    assert EXIT_PEER_LOST > 128 + 64, "above every signal number, so never read as killed by a signal"


def test_lost_peers_and_aborted_collectives_are_transient_other_errors_are_not():
    import tensorflow as tf

    from jobs.train.distributed import transient

    lost = [tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError]
    own = [tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError, tf.errors.InternalError]
    assert all(transient(kind(None, None, "x")) for kind in [*lost, tf.errors.CancelledError])
    assert not any(transient(kind(None, None, "x")) for kind in own)
