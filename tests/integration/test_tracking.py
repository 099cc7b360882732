"""MLflow tracking: a compression run and a search logged to a local SQLite store and to a real
`mlflow server` on 127.0.0.1, registry versions, and a store that does not answer."""

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from keras_compress.cli.main import main

pytestmark = pytest.mark.tensorflow  # the runs export LiteRT
from mlflow.tracking import MlflowClient  # noqa: E402 - the tracking extra, installed by `make dev`

RECIPE = "steps:\n  - prune: {target_sparsity: 0.5, schedule: constant}\n  - finetune: {epochs: 1}\n" \
         "  - strip: {}\n  - export: {formats: [float32, int8], calibration_samples: 64}\n"


def compress(tiny, out, uri, *extra):
    recipe = out.parent / "r.yaml"
    recipe.write_text(RECIPE)
    return main(["compress", str(tiny / "tiny.keras"), "--data", str(tiny / "data.npz"), "--recipe", str(recipe),
                 "--out", str(out), "--quiet", "--track", "--tracking-uri", uri, *extra])


def check_run(client, run_id, out):
    run = client.get_run(run_id)
    assert run.data.params["step1.prune.target_sparsity"] == "0.5"
    assert run.data.params["metric"] == "accuracy" and run.data.tags["backend"] == "tensorflow"
    report = json.loads((out / "report.json").read_text())
    int8 = next(r for r in report["rows"] if r["name"] == "model_int8.tflite")
    assert run.data.metrics["model_int8.tflite.litert_metric"] == pytest.approx(int8["litert_metric"])
    assert run.data.metrics["model_int8.tflite.gzip_bytes"] == int8["gzip_bytes"]
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.json", "report.html", "model_int8.tflite"} <= names


def test_compress_logs_to_a_local_sqlite_store_and_registers_versions(tiny, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert compress(tiny, tmp_path / "a", uri, "--register", "tiny-int8") == 0
    run_id = capsys.readouterr().out.split("run ")[-1].split(",")[0].strip()
    client = MlflowClient(uri)
    check_run(client, run_id, tmp_path / "a")
    assert client.get_run(run_id).info.artifact_uri.startswith(str(tmp_path / "mlartifacts"))  # beside the db
    assert compress(tiny, tmp_path / "b", uri, "--register", "tiny-int8") == 0
    versions = sorted(client.search_model_versions("name='tiny-int8'"), key=lambda v: int(v.version))
    assert [int(v.version) for v in versions] == [1, 2]
    assert float(versions[0].tags["gzip_bytes"]) > 0 and versions[0].run_id == run_id


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1, ready once it says it is listening (its log is read, not polled)."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = threading.Event()

    def read_log():  # keeps draining the pipe so the server never blocks on it
        for line in server.stdout:
            if "running on" in line.lower() or "listening at" in line.lower():
                ready.set()

    threading.Thread(target=read_log, daemon=True).start()
    try:
        assert ready.wait(timeout=90), "mlflow server did not start within 90 s"
        url = f"http://127.0.0.1:{port}"
        urllib.request.urlopen(f"{url}/health", timeout=10)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_compress_and_search_log_to_a_real_tracking_server(tiny, tmp_path, capsys, mlflow_server):
    assert compress(tiny, tmp_path / "a", mlflow_server) == 0
    run_id = capsys.readouterr().out.split("run ")[-1].split(",")[0].strip()
    client = MlflowClient(mlflow_server)
    check_run(client, run_id, tmp_path / "a")
    assert main(["search", str(tiny / "tiny.keras"), "--data", str(tiny / "data.npz"), "--space",
                 str(tiny / "space.yaml"), "--trials", "2", "--out", str(tmp_path / "s"), "--quiet", "--track",
                 "--tracking-uri", mlflow_server, "--register", "tiny-best"]) == 0
    experiment = client.get_experiment_by_name("keras-compress")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "search keras-compress")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children if r.info.run_name.startswith("trial")) == ["trial 0", "trial 1"]
    assert "best_trial" in parent.data.tags and parent.data.tags["registered"] == "tiny-best v1"
    assert "best_recipe.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_a_tracking_server_that_does_not_answer_is_one_line_before_anything_runs(tiny, tmp_path, capsys):
    port = _free_port()  # nothing listens there
    assert compress(tiny, tmp_path / "a", f"http://127.0.0.1:{port}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the MLflow tracking store" in err[0], err
    assert not os.path.exists(tmp_path / "a")


def test_a_keras_callback_logs_every_fine_tuning_epoch(tmp_path):
    import keras
    import mlflow
    import numpy as np

    import keras_compress as kc
    from keras_compress import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    try:
        callback = tracking.callback(uri, experiment="callback-test", run_name="finetune")
        kc.finetune(model, x, np.zeros(64, "int64"), kc.training.FinetuneConfig(epochs=3, batch_size=16),
                    callbacks=[callback])
        run_id = mlflow.active_run().info.run_id
    finally:
        mlflow.end_run()
    history = MlflowClient(uri).get_metric_history(run_id, "loss")
    assert len(history) == 3 and history[-1].value < history[0].value
