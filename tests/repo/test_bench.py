"""`make bench` cannot rot: its quick mode runs every measurement path at tiny sizes, and the
pieces that turn timings into figures are checked directly. Nothing here asserts a speed."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import accuracy, cli, client, e2e, report, results, training
from jobs.core.cli import JobError
from tests.helpers import ROOT
from tests.helpers.jobs import job_env

# --- the quick mode, end to end --------------------------------------------------------------


@pytest.mark.slow
def test_quick_bench_runs_every_section_and_writes_results(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", out, "--work-dir", tmp_path / "no-data"],
        cwd=ROOT,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    [path] = out.glob("bench-*.json")
    report = json.loads(path.read_text())
    assert (out / path.name.replace(".json", ".md")).read_text().strip() in proc.stdout
    assert "| figure | median | min – max | n | unit | target |" in proc.stdout

    assert report["settings"]["quick"] is True
    assert report["machine"]["cores"] >= 1 and report["machine"]["memory_gib"] > 0
    assert report["machine"]["cpu_model"]
    for package in ("python", "tensorflow", "tf-keras", "mlflow"):
        assert report["versions"][package], package
    assert set(report["sections"]) == set(cli.SECTIONS) - {"input"}  # input runs inside training

    figures = report["figures"]
    for key in (
        "train.single",
        "train.multi",
        "input.pipeline",
        "serve.inproc.throughput32",
        "serve.throughput.c1",
        "serve.throughput.c8",
        "serve.throughput.c32",
        "serve.throughput_ratio.c32",
        "serve.load.c32.p99",
        "serve.cpu.c32",  # the server's CPU time per request, read from /proc
    ):
        assert figures[key]["median"] > 0, key
    for key in ("train.fit.single", "train.fit.multi", "train.fit.efficiency", "train.unpinned.efficiency"):
        assert figures[key]["median"] > 0, key
    for key in ("train.efficiency", "input.headroom", "serve.ratio1.p50", "serve.ratio32.p50"):
        assert figures[key]["median"] > 0, key
        assert "target" in figures[key] or key.startswith("serve.ratio")
    for part in ("compute", "allreduce", "allreduce_bf16", "custom", "loop", "loop_bf16", "fit", "fit_spe"):
        assert figures[f"split.{part}"]["median"] > 0, part
    for where in ("server", "inproc"):
        for n in (1, 32):
            p50, p99 = figures[f"serve.{where}{n}.p50"]["median"], figures[f"serve.{where}{n}.p99"]["median"]
            assert 0 < p50 <= p99, (where, n)
    assert figures["serve.errors.c32"]["samples"] == [0.0]
    # the baseline ran in its own process with the local server's TensorFlow threads
    assert figures["serve.inproc.threads"]["median"] >= 1
    for figure in figures.values():  # one repeat: each summary is its single sample
        if figure["n"]:
            assert figure["n"] == 1 and figure["min"] == figure["median"] == figure["max"]

    stages = [key.removeprefix("e2e.stage.") for key in figures if key.startswith("e2e.stage.")]
    assert {"ingest", "train:cnn", "evaluate", "promote", "wait-serving", "smoke"} <= set(stages)
    rows = [proc.stdout.index(f"| end to end stage: {s} |") for s in ("ingest", "train:cnn", "evaluate", "smoke")]
    assert rows == sorted(rows), "stages out of pipeline order in the table"
    assert figures["e2e.outside"]["median"] >= 0  # the wall time holds every stage
    assert 0 <= figures["e2e.accuracy.cnn"]["median"] <= 1
    # The plain Keras baseline beside the run, on the same data and steps.
    baseline = figures["e2e.accuracy.baseline"]["median"]
    assert 0 <= baseline <= 1 and "2 steps of 64" in figures["e2e.accuracy.baseline"]["label"]
    difference = figures["e2e.accuracy.vs_baseline.cnn"]["median"]
    assert difference == pytest.approx(100 * (figures["e2e.accuracy.cnn"]["median"] - baseline))
    assert figures["accuracy.real"]["text"] == "not available"


# --- the pieces ----------------------------------------------------------------------------


def test_figures_summarise_as_median_min_max_and_check_targets():
    figures = results.Figures()
    for value in (0.5, 0.9, 0.7):
        figures.add("eff", "efficiency", "ratio", value, target=">= 0.8")
    figures.add("lat", "latency", "ms", 1.5, target="<= 2")
    figures.text("acc", "accuracy", "not available", target=">= 0.91")
    summary = figures.as_json()
    assert summary["eff"] | {"samples": None} == {
        "label": "efficiency",
        "unit": "ratio",
        "n": 3,
        "samples": None,
        "median": 0.7,
        "min": 0.5,
        "max": 0.9,
        "target": ">= 0.8",
        "met": False,
    }
    assert summary["lat"]["met"] is True
    assert summary["acc"]["met"] is None and summary["acc"]["n"] == 0

    markdown = results.table(summary)
    assert markdown.splitlines()[0].startswith("| figure | median")
    assert "| efficiency | 0.700 | 0.500 – 0.900 | 3 | ratio | >= 0.8 ✘ missed |" in markdown
    assert "| latency | 1.50 | 1.50 – 1.50 | 1 | ms | <= 2 ✔ |" in markdown
    assert "| accuracy | not available |" in markdown


def test_training_throughput_leaves_out_the_warm_up_epoch():
    history = {
        "epochs": [
            {"epoch": 0, "seconds": 10.0, "images_per_second": 100.0},
            {"epoch": 1, "seconds": 1.0, "images_per_second": 1000.0},
            {"epoch": 2, "seconds": 3.0, "images_per_second": 2000.0},
        ]
    }
    assert training.train_throughput(history) == pytest.approx((1000 + 6000) / 4)
    with pytest.raises(JobError, match="warm-up"):
        training.train_throughput({"epochs": history["epochs"][:1]})


def test_each_variant_is_measured_in_alternating_order_against_its_own_single_process():
    """Every repeat trains jobs.train as it runs now (pinned), the same loop unpinned and the
    previous implementation (fit); the order is reversed every other repeat; each efficiency is
    a multi ÷ single from that repeat, the unpinned one against the same loop's single run."""
    first, second = training.order(0), training.order(1)
    expected = [("custom", "single"), ("custom", "multi"), ("unpinned", "multi"), ("fit", "single"), ("fit", "multi")]
    assert first == expected and second == expected[::-1]
    assert training.VARIANTS == {"custom": ("custom", True), "unpinned": ("custom", False), "fit": ("fit", False)}
    figures = results.Figures()
    for custom, unpinned, fit in ((9000.0, 7000.0, 6000.0), (10000.0, 8000.0, 5000.0)):
        measured = {
            "custom": {"single": 10000.0, "multi": custom},
            "unpinned": {"multi": unpinned},
            "fit": {"single": 10000.0, "multi": fit},
        }
        training.add_training(figures, measured, 2)
    assert figures.items["train.efficiency"].samples == [0.9, 1.0]
    assert figures.items["train.efficiency"].target == ">= 0.8"
    assert figures.items["train.unpinned.efficiency"].samples == [0.7, 0.8]
    assert figures.items["train.fit.efficiency"].samples == [0.6, 0.5]
    assert "Keras fit" in figures.items["train.fit.efficiency"].label
    assert "pinned" in figures.items["train.multi"].label


def test_stages_come_in_pipeline_order():
    stages = {
        "evaluate": 3.0,
        "ingest": 1.0,
        "promote": 1.0,
        "smoke": 1.0,
        "train:dropout": 9.0,
        "train:cnn": 5.0,
        "wait-serving": 2.0,
    }
    assert [name for name, _ in e2e.ordered_stages(stages)] == [
        "ingest",
        "train:cnn",
        "train:dropout",
        "evaluate",
        "promote",
        "wait-serving",
        "smoke",
    ]


def test_real_data_is_found_only_where_it_is(tmp_path, small_data):
    from jobs.core.paths import Work
    from jobs.ingest import data

    work = Work(tmp_path / "work")
    assert accuracy.real_data(work) is None
    data.write(small_data, work.dataset("synthetic"), {"name": "synthetic"})
    assert accuracy.real_data(work) is None  # synthetic data is not Fashion-MNIST

    data.write(small_data, work.dataset("fashion_mnist"), {"name": "fashion_mnist", "via": "tensorflow-datasets"})
    dataset, prepare, extra = accuracy.real_data(work)
    assert dataset == "fashion_mnist" and extra == []
    target = Work(tmp_path / "bench")
    prepare(target)
    assert data.load(target.dataset("fashion_mnist"))["train"].images.shape == small_data["train"].images.shape


class _Handler(BaseHTTPRequestHandler):
    """A stand-in server: predictions on the right path, a 500 elsewhere, keep-alive."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        ok = self.path == "/v1/models/fmnist:predict"
        body = b'{"predictions": [1]}' if ok else b'{"error": "no"}'
        self.send_response(200 if ok else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_load_generator_sends_exactly_the_bounded_count_and_counts_errors(fake_server):
    bodies = [client.predict_body([b"x"])]
    ok, errors, seconds, times = asyncio.run(client.load(fake_server, "fmnist", bodies, 8, 50, timeout=60))
    assert (ok, errors) == (50, 0) and seconds > 0
    assert len(times) == 50 and all(0 < t < seconds * 1000 for t in times)
    ok, errors, _, times = asyncio.run(client.load(fake_server, "other", bodies, 4, 12, timeout=60))
    assert (ok, errors, times) == (0, 12, [])


def test_latency_keeps_one_connection_and_reports_failures(fake_server):
    async def measure(model):
        connection = client.Connection(fake_server, model)
        try:
            return await client.latencies_ms(connection, b"{}", 5), connection.opened
        finally:
            connection.close()

    times, opened = asyncio.run(measure("fmnist"))
    assert len(times) == 5 and all(t > 0 for t in times)
    assert opened == 1  # keep-alive: no reconnect per request (3 warm-up + 5 timed)
    with pytest.raises(JobError, match="500"):
        asyncio.run(measure("other"))
    with pytest.raises(JobError, match="http://"):
        client.Connection("https://127.0.0.1:1", "fmnist")


# --- the docs' table -------------------------------------------------------------------------

FIXTURE = {
    "date": "2026-11-27T12:00:00+0000",
    "machine": {
        "cpu_model": "Test CPU",
        "cores": 2,
        "usable_cpus": 2,
        "memory_gib": 8.0,
        "os": "Linux-test",
        "load_average_at_start": [0.5, 0.4, 0.3],
        "load_average_at_end": [1.5, 1.0, 0.5],
    },
    "versions": {
        "python": "3.11.7",
        "tensorflow": "2.20.0",
        "tf-keras": "2.20.1",
        "mlflow": "3.17.2",
        "commit": "abc1234",
    },
    "settings": {"quick": False, "sections": list(cli.SECTIONS)},
    "sections": {},
    "seconds": 442.0,
    "figures": {
        "train.efficiency": {
            "label": "multi-worker scaling efficiency (multi ÷ single)",
            "unit": "ratio",
            "n": 3,
            "samples": [0.482, 0.529, 0.536],
            "median": 0.529,
            "min": 0.482,
            "max": 0.536,
            "target": ">= 0.8",
            "met": False,
        },
        "train.single": {
            "label": "training, 1 process on all cores",
            "unit": "images/s",
            "n": 3,
            "samples": [11551.0, 11619.0, 13169.0],
            "median": 11619.0,
            "min": 11551.0,
            "max": 13169.0,
        },
        "accuracy.real": {
            "label": "real Fashion-MNIST test accuracy, best candidate",
            "unit": "",
            "n": 0,
            "samples": [],
            "target": ">= 0.91",
            "met": None,
            "text": "not available",
        },
    },
}

GENERATED = f"""\
{report.BEGIN}
From `bench-20261127-120000.json`, measured by `make bench` at commit abc1234; regenerate with `make bench-docs`.

2026-11-27, Test CPU, 2 cores (2 usable), 8.0 GiB, Linux-test; Python 3.11.7, TensorFlow 2.20.0, \
tf-keras 2.20.1, MLflow 3.17.2; load average 0.5 at start, 1.5 at end; 442 s in all

| figure | median | min – max | n | unit | target |
|---|---:|---:|---:|---|---|
| multi-worker scaling efficiency (multi ÷ single) | 0.529 | 0.482 – 0.536 | 3 | ratio | >= 0.8 ✘ missed |
| training, 1 process on all cores | 11,619 | 11,551 – 13,169 | 3 | images/s |  |
| real Fashion-MNIST test accuracy, best candidate | not available |  |  |  | >= 0.91 |

{report.END}"""


def _write_results(folder, stamp, payload):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"bench-{stamp}.json").write_text(json.dumps(payload, ensure_ascii=False))


def test_the_docs_table_is_generated_from_the_newest_full_run(tmp_path):
    """make bench-docs: the newest full run (a later quick one is skipped) goes between the
    marker lines, in the results file's figure order; the rest of the file is kept; --check."""
    out = tmp_path / "results"
    _write_results(out, "20261127-120000", FIXTURE)
    _write_results(out, "20261128-090000", FIXTURE | {"settings": {"quick": True, "sections": list(cli.SECTIONS)}})
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\nbefore\n\n{report.BEGIN}\nold table\n{report.END}\n\nafter\n")
    argv = ["--results", str(out), "--docs", str(docs)]

    with pytest.raises(JobError, match="make bench-docs"):
        report.main([*argv, "--check"])
    assert report.main(argv) == 0
    assert docs.read_text() == f"# Benchmarks\n\nbefore\n\n{GENERATED}\n\nafter\n"
    assert report.main([*argv, "--check"]) == 0  # a second run changes nothing

    with pytest.raises(JobError, match="no full benchmark run"):
        report.main(["--results", str(tmp_path / "none"), "--docs", str(docs)])


def test_the_committed_docs_table_has_the_generated_shape():
    """docs/benchmarks.md holds one generated block: its source line, the machine line, the
    table head and rows of six cells; README links to it instead of carrying a copy."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    lines = report.current_block(text).splitlines()
    assert lines[0] == report.BEGIN and lines[-1] == report.END
    assert re.fullmatch(r"From .+ at commit \S+; regenerate with `make bench-docs`\.", lines[1]), lines[1]
    assert lines[2] == "" and re.match(r"\d{4}-\d\d-\d\d, .+ cores .+ s in all$", lines[3]), lines[3]
    assert tuple(lines[5:7]) == results.TABLE_HEAD
    rows = lines[7:-2]
    assert rows and lines[-2] == ""
    assert all(row.startswith("| ") and row.count(" | ") == 5 and row.endswith("|") for row in rows), rows
    assert report.replace_block(text, report.current_block(text)) == text

    readme = (ROOT / "README.md").read_text()
    assert "(docs/benchmarks.md)" in readme
    assert results.TABLE_HEAD[0] not in readme


def test_the_profile_split_keeps_the_request_path_and_names_each_stage():
    """bench.profile on py-spy's collapsed stacks: start-up and waits are left out, each sample
    goes to the innermost stage it is in, and the flame graph is well-formed SVG."""
    import xml.etree.ElementTree as ElementTree

    from bench import profile

    loop = (
        "thread (11): MainThread;main (jobs/serving/cli.py:255);run (uvloop/__init__.py:92);"
        "Runner.run (asyncio/runners.py:118)"
    )
    worker = "thread (12): predict-0;Thread.run (threading.py:982);Scheduler._loop (jobs/serving/batching.py:255)"
    collapsed = "\n".join(
        [
            f"{loop};App._call (jobs/serving/app.py:212);encode_predict (jobs/serving/response.py:90);"
            "codes (jobs/serving/floats.py:116) 5",
            f"{loop};App._call (jobs/serving/app.py:212);Signals.observe (jobs/serving/signals.py:120) 2",
            f"{loop} 4",  # uvloop's own C code: the loop and its sockets
            f"{loop};EpollSelector.select (selectors.py:468) 50",  # waiting: left out
            f"{worker};Scheduler._run (jobs/serving/batching.py:280);call (jobs/serving/servable.py:200);"
            "BaseSession._Callable.__call__ (tensorflow/python/client/session.py:1510) 3",
            f"{worker};Condition.wait (threading.py:327) 40",  # waiting: left out
            "thread (11): MainThread;main (jobs/serving/cli.py:201);_find_and_load (<frozen importlib>:1) 99",
        ]
    )
    assert profile.split(collapsed) == {
        ("event loop thread", "encode the answer"): 5,
        ("event loop thread", "prediction signals"): 2,
        ("event loop thread", "event loop, sockets (uvloop, asyncio)"): 4,
        ("signature threads", "model call"): 3,
    }
    kept = profile.request_path(collapsed)
    assert len(kept.splitlines()) == 4 and kept.startswith(("MainThread;", "predict-0;"))
    table = profile.render(profile.split(collapsed), rate=100, requests=10)
    assert "| event loop thread | encode the answer | 35.7 | 5.000 |" in table
    root = ElementTree.fromstring(profile.flame_graph(kept, "a <title> & more"))
    titles = [element.text for element in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(title.startswith("Signals.observe (jobs/serving/signals.py:120) (14.3 %)") for title in titles)
