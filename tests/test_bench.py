"""`make bench` cannot rot: its quick mode runs every measurement path at tiny sizes, and the
pieces that turn timings into figures are checked directly. Nothing here asserts a speed."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import run_job

from jobs import bench

# --- the quick mode, end to end --------------------------------------------------------------


@pytest.mark.slow
def test_quick_bench_runs_every_section_and_writes_results(tmp_path):
    out = tmp_path / "results"
    proc = run_job("bench", "--quick", "--out", out, "--work-dir", tmp_path / "no-data", timeout=600)
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
    assert set(report["sections"]) == set(bench.SECTIONS) - {"input"}  # input runs inside training

    figures = report["figures"]
    for key in (
        "train.single",
        "train.multi",
        "input.pipeline",
        "serve.inproc.throughput32",
        "serve.throughput.c1",
        "serve.throughput.c8",
        "serve.throughput.c32",
    ):
        assert figures[key]["median"] > 0, key
    for key in ("train.efficiency", "input.headroom", "serve.ratio1.p50", "serve.ratio32.p50"):
        assert figures[key]["median"] > 0, key
        assert "target" in figures[key] or key.startswith("serve.ratio")
    for part in ("compute", "allreduce", "custom", "fit", "fit_spe"):
        assert figures[f"split.{part}"]["median"] > 0, part
    for where in ("server", "inproc"):
        for n in (1, 32):
            p50, p99 = figures[f"serve.{where}{n}.p50"]["median"], figures[f"serve.{where}{n}.p99"]["median"]
            assert 0 < p50 <= p99, (where, n)
    assert figures["serve.errors.c32"]["samples"] == [0.0]
    for figure in figures.values():  # one repeat: each summary is its single sample
        if figure["n"]:
            assert figure["n"] == 1 and figure["min"] == figure["median"] == figure["max"]

    stages = [key.removeprefix("e2e.stage.") for key in figures if key.startswith("e2e.stage.")]
    assert {"ingest", "train:cnn", "evaluate", "promote", "wait-serving", "smoke"} <= set(stages)
    rows = [proc.stdout.index(f"| end to end stage: {s} |") for s in ("ingest", "train:cnn", "evaluate", "smoke")]
    assert rows == sorted(rows), "stages out of pipeline order in the table"
    assert figures["e2e.outside"]["median"] >= 0  # the wall time holds every stage
    assert 0 <= figures["e2e.accuracy.cnn"]["median"] <= 1
    assert figures["accuracy.real"]["text"] == "not available"


# --- the pieces ----------------------------------------------------------------------------


def test_figures_summarise_as_median_min_max_and_check_targets():
    figures = bench.Figures()
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

    markdown = bench.table(summary)
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
    assert bench.train_throughput(history) == pytest.approx((1000 + 6000) / 4)
    with pytest.raises(bench.JobError, match="warm-up"):
        bench.train_throughput({"epochs": history["epochs"][:1]})


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
    assert [name for name, _ in bench.ordered_stages(stages)] == [
        "ingest",
        "train:cnn",
        "train:dropout",
        "evaluate",
        "promote",
        "wait-serving",
        "smoke",
    ]


def test_real_data_is_found_only_where_it_is(tmp_path, small_data):
    from jobs import data
    from jobs.paths import Work

    work = Work(tmp_path / "work")
    assert bench.real_data(work) is None
    data.write(small_data, work.dataset("synthetic"), {"name": "synthetic"})
    assert bench.real_data(work) is None  # synthetic data is not Fashion-MNIST

    data.write(small_data, work.dataset("fashion_mnist"), {"name": "fashion_mnist", "via": "tensorflow-datasets"})
    dataset, prepare, extra = bench.real_data(work)
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
    bodies = [bench.predict_body([b"x"])]
    ok, errors, seconds = asyncio.run(bench._load(fake_server, "fmnist", bodies, 8, 50, timeout=60))
    assert (ok, errors) == (50, 0) and seconds > 0
    ok, errors, _ = asyncio.run(bench._load(fake_server, "other", bodies, 4, 12, timeout=60))
    assert (ok, errors) == (0, 12)


def test_http_client_keeps_one_connection_and_reports_failures(fake_server):
    client = bench.Http(fake_server)
    call = bench.http_predict(client, "fmnist")
    for _ in range(3):
        call(b"{}")
    first = client._sock
    call(b"{}")
    assert client._sock is first  # keep-alive: no reconnect per request
    with pytest.raises(bench.JobError, match="500"):
        bench.http_predict(client, "other")(b"{}")
    client.close()
    with pytest.raises(bench.JobError, match="http://"):
        bench.Http("https://127.0.0.1:1")
