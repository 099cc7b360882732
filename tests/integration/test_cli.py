"""The `keras-compress` command line, end to end, on a tiny LeNet-5 and MNIST subsets."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import layers

import keras_compress as kc
from keras_compress.cli import recipe as recipe_module
from keras_compress.cli.main import demo_baseline, main
from keras_compress.core.report import Report

pytestmark = pytest.mark.tensorflow

TRAIN_SAMPLES = 512
GOOD_RECIPE = """\
steps:
  - prune: {target_sparsity: 0.75, schedule: polynomial, initial_sparsity: 0.5,
            end_step: auto, frequency: 1}
  - finetune: {epochs: 1, batch_size: 64, learning_rate: 1.0e-4}
  - export: {formats: [keras, float32, int8], calibration_samples: 64}
"""


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory):
    """A LeNet-5 trained for one epoch on 512 MNIST images, saved as .keras."""
    (x, y), _ = kc.datasets.load("mnist")
    model = kc.zoo.lenet5()
    kc.zoo.train(model, x[:TRAIN_SAMPLES], y[:TRAIN_SAMPLES], epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("models") / "lenet5.keras"
    model.save(path)
    return str(path)


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def save_model(model, path):
    model.save(path)
    return str(path)


def the_one_error_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("keras-compress: error: "), err
    assert "Traceback" not in err
    return lines[0]


def compress(model, recipe, out, *extra):
    metric = () if "--metric" in extra else ("--metric", "accuracy")  # the test models are not compiled
    return main(["compress", model, "--data", "mnist", "--recipe", recipe, "--out", str(out),
                 "--subset", "256", "--quiet", *metric, *extra])


def no_leftovers(folder):
    """No hidden work folders or temp files left beside the output."""
    return [name for name in os.listdir(folder) if name.startswith(".")]


def test_a_missing_model_file_is_one_line_and_writes_nothing(tmp_path, capsys):
    recipe = write(tmp_path / "r.yaml", GOOD_RECIPE)
    assert compress(str(tmp_path / "nope.keras"), recipe, tmp_path / "out") == 2
    assert "model file not found" in the_one_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_model_file_is_one_line_and_writes_nothing(tmp_path, capsys, lenet_file, damage):
    model = tmp_path / "bad.keras"
    if damage == "garbage":
        model.write_bytes(os.urandom(4096))
    else:
        data = open(lenet_file, "rb").read()
        model.write_bytes(data[: len(data) // 2])
    recipe = write(tmp_path / "r.yaml", GOOD_RECIPE)
    assert compress(str(model), recipe, tmp_path / "out") == 2
    assert f"cannot load model '{model}'" in the_one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_model_with_nothing_to_prune_is_one_line_and_writes_nothing(tmp_path, capsys):
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Rescaling(2.0), layers.Flatten()],
                             name="no_kernels")
    path = save_model(model, tmp_path / "rescaling.keras")
    recipe = write(tmp_path / "r.yaml", GOOD_RECIPE)
    assert compress(path, recipe, tmp_path / "out") == 2
    line = the_one_error_line(capsys)
    assert "recipe step 1 (prune)" in line and "no prunable weights" in line
    assert not (tmp_path / "out").exists()
    assert not no_leftovers(tmp_path)


def test_sparsity_one_is_one_line_and_writes_nothing(tmp_path, capsys, lenet_file):
    recipe = write(tmp_path / "r.yaml", """\
        steps:
          - prune: {target_sparsity: 1.0}
          - export: {formats: [float32]}
    """)
    assert compress(lenet_file, recipe, tmp_path / "out") == 2
    line = the_one_error_line(capsys)
    assert "recipe step 1 (prune)" in line and "target_sparsity" in line and "[0, 1)" in line
    assert not (tmp_path / "out").exists()


def test_an_unknown_step_is_one_line_and_leaves_an_existing_out_dir_alone(tmp_path, capsys, lenet_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old run")
    recipe = write(tmp_path / "r.yaml", """\
        steps:
          - prune: {target_sparsity: 0.5}
          - distill: {teacher: big}
    """)
    assert compress(lenet_file, recipe, out) == 2
    assert "recipe step 2: unknown step 'distill'" in the_one_error_line(capsys)
    assert os.listdir(out) == ["keep.txt"]


def test_data_that_does_not_fit_the_model_is_one_line_and_writes_nothing(tmp_path, capsys):
    model = keras.Sequential([keras.Input((32, 32, 3)), layers.Flatten(), layers.Dense(10)], name="cifar_like")
    path = save_model(model, tmp_path / "cifar_like.keras")
    recipe = write(tmp_path / "r.yaml", GOOD_RECIPE)
    assert compress(path, recipe, tmp_path / "out") == 2
    line = the_one_error_line(capsys)
    assert "does not fit" in line and "(32, 32, 3)" in line and "(28, 28, 1)" in line
    assert not (tmp_path / "out").exists()


def test_a_missing_recipe_file_is_one_line(tmp_path, capsys, lenet_file):
    assert compress(lenet_file, str(tmp_path / "nope.yaml"), tmp_path / "out") == 2
    assert "recipe file not found" in the_one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_failure_midway_leaves_nothing_half_written(tmp_path, capsys, lenet_file, monkeypatch):
    from keras_compress.export import litert

    def failing_export(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(litert, "export_litert", failing_export)
    recipe = write(tmp_path / "r.yaml", GOOD_RECIPE)
    assert compress(lenet_file, recipe, tmp_path / "out") == 2
    assert "converter crashed" in the_one_error_line(capsys)
    assert not (tmp_path / "out").exists()
    assert not no_leftovers(tmp_path)


def test_compress_writes_artifacts_and_a_report_with_the_expected_rows(tmp_path, capsys, lenet_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an older run")
    recipe = write(tmp_path / "r.yaml", GOOD_RECIPE)
    assert compress(lenet_file, recipe, out) == 0
    printed = capsys.readouterr().out
    assert "model_int8.tflite" in printed and "Ratio" in printed

    assert sorted(os.listdir(out)) == [
        "baseline_float32.tflite", "model.keras", "model_float32.tflite", "model_int8.tflite",
        "report.html", "report.json", "report.md", "size_vs_accuracy.png"]
    assert not no_leftovers(tmp_path)
    data = json.loads((out / "report.json").read_text())
    rows = {row["name"]: row for row in data["rows"]}
    assert list(rows) == ["baseline_float32.tflite", "model.keras", "model_float32.tflite", "model_int8.tflite"]
    assert [rows[name]["fmt"] for name in rows] == ["float32", "keras", "float32", "int8"]
    assert rows["baseline_float32.tflite"]["technique"] == "baseline"
    assert rows["model_int8.tflite"]["technique"] == "prune 75%"
    assert rows["baseline_float32.tflite"]["ratio"] == pytest.approx(1.0)
    assert rows["model_float32.tflite"]["ratio"] > 2.0  # zeros gzip away
    assert rows["model_int8.tflite"]["ratio"] > rows["model_float32.tflite"]["ratio"]
    for row in rows.values():
        assert 0.0 <= row["keras_metric"] <= 1.0
        assert row["raw_bytes"] > 0 and row["gzip_bytes"] > 0
        assert row["params"] == 431_080
    for name in ("baseline_float32.tflite", "model_float32.tflite", "model_int8.tflite"):
        assert 0.0 <= rows[name]["litert_metric"] <= 1.0
        assert rows[name]["latency_b1_ms"] > 0 and rows[name]["latency_b32_ms"] > 0
    assert rows["model_float32.tflite"]["nonzero"] < 0.3 * 431_080
    assert rows["model_float32.tflite"]["litert_metric"] == pytest.approx(
        rows["model_float32.tflite"]["keras_metric"], abs=0.01)
    assert data["meta"]["data"] == "mnist" and data["meta"]["test_samples"] == 256
    assert data["metric"] == {"name": "accuracy", "kind": "keras", "higher_is_better": True, "percent": True}
    assert data["meta"]["prune"][0]["config"]["end_step"] == round(2 / 3 * 4)  # 256 / 64 = 4 steps
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert Report.read(out).rows[-1].name == "model_int8.tflite"
    stripped = keras.saving.load_model(out / "model.keras")
    assert float(np.mean(stripped.get_layer("fc1").kernel.numpy() == 0)) == pytest.approx(0.75, abs=0.01)


def test_export_then_evaluate_a_tflite_file(tmp_path, capsys, lenet_file):
    path = str(tmp_path / "sub" / "lenet5_float32.tflite")
    assert main(["export", lenet_file, "--format", "float32", "--out", path]) == 0
    assert os.path.isfile(path)
    capsys.readouterr()
    assert main(["evaluate", path, "--data", "mnist", "--subset", "128"]) == 2
    assert "--metric accuracy" in the_one_error_line(capsys)  # a .tflite file keeps no compile config
    assert main(["evaluate", path, "--data", "mnist", "--subset", "128", "--metric", "accuracy"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy:" in printed and "on 128 test samples of mnist" in printed and "bytes" in printed


def test_evaluate_a_keras_file_prints_accuracy_size_and_params(capsys, lenet_file):
    assert main(["evaluate", lenet_file, "--data", "mnist", "--subset", "128"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy:" in printed and "431,080" in printed


def test_int8_export_without_data_is_one_line(tmp_path, capsys, lenet_file):
    assert main(["export", lenet_file, "--format", "int8", "--out", str(tmp_path / "m.tflite")]) == 2
    assert "needs --data" in the_one_error_line(capsys)
    assert not os.listdir(tmp_path)


def test_per_tensor_int8_export_on_the_cli(tmp_path, capsys, lenet_file):
    from ai_edge_litert.interpreter import Interpreter

    path = tmp_path / "pt.tflite"
    assert main(["export", lenet_file, "--format", "int8", "--data", "mnist", "--subset", "64", "--per-tensor",
                 "--calibration-samples", "32", "--out", str(path)]) == 0
    kernels = [d for d in Interpreter(model_path=str(path)).get_tensor_details()
               if d["dtype"] == np.int8 and len(d["shape"]) >= 2 and "MatMul" in d["name"]]
    assert kernels and all(len(d["quantization_parameters"]["scales"]) == 1 for d in kernels)
    capsys.readouterr()
    assert main(["export", lenet_file, "--format", "float32", "--per-tensor", "--out", str(tmp_path / "f.tflite")]) == 2
    assert "--per-tensor needs --format int8" in the_one_error_line(capsys)


def test_usage_errors_return_two(capsys):
    assert main(["compress"]) == 2
    assert main(["export", "m.keras", "--format", "int4", "--out", "m.tflite"]) == 2
    capsys.readouterr()


def test_demo_baseline_is_trained_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_COMPRESS_CACHE", str(tmp_path / "cache"))
    (x, y), (x_test, y_test) = kc.datasets.load("mnist")
    data = (x[:128], y[:128]), (x_test[:128], y_test[:128])
    model, path = demo_baseline(epochs=1, data=data, subset=128, progress=False)
    assert os.path.basename(path) == f"lenet5-mnist-e1-s128-{keras.backend.backend()}.keras"
    assert os.listdir(tmp_path / "cache") == [os.path.basename(path)]
    mtime = os.path.getmtime(path)
    again, again_path = demo_baseline(epochs=1, data=data, subset=128, progress=False)
    assert again_path == path and os.path.getmtime(path) == mtime
    np.testing.assert_allclose(again.predict(x_test[:8], verbose=0), model.predict(x_test[:8], verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_recipe_formats_mirror_the_litert_formats():
    from keras_compress.export import litert

    assert recipe_module.LITERT_FORMATS == litert.FORMATS


def test_python_dash_m_runs_the_cli():
    env = dict(os.environ, KERAS_BACKEND="numpy")
    result = subprocess.run([sys.executable, "-m", "keras_compress", "--help"],
                            capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    for command in ("compress", "evaluate", "export", "demo"):
        assert command in result.stdout


def test_archive_export_then_evaluate_and_a_corrupt_archive_is_one_line(tmp_path, capsys, lenet_file):
    out = tmp_path / "m.kcar"
    assert main(["export", lenet_file, "--format", "archive", "--out", str(out)]) == 0
    assert out.stat().st_size < os.path.getsize(lenet_file)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", "mnist", "--subset", "256", "--metric", "accuracy"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy:" in printed and "params" in printed.lower()
    out.write_bytes(out.read_bytes()[:-10])
    assert main(["evaluate", str(out), "--data", "mnist", "--subset", "256", "--metric", "accuracy"]) == 2
    assert "truncated" in the_one_error_line(capsys)


def test_analyze_writes_figures_and_targets_that_meet_the_sparsity(tmp_path, capsys, lenet_file):
    out = tmp_path / "analysis"
    code = main(["analyze", lenet_file, "--data", "mnist", "--out", str(out), "--samples", "256",
                 "--target-sparsity", "0.9"])
    assert code == 0, capsys.readouterr().err
    for name in ("importance_histograms.png", "channel_heatmap.png", "sensitivity.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "analysis.json").read_text())
    params = sum(w["params"] for w in summary["weights"])
    pruned = sum(w["params"] * w["suggested_target"] for w in summary["weights"])
    assert pruned == pytest.approx(0.9 * params, rel=1e-3)
    assert "suggested target" in (out / "analysis.md").read_text()
    assert main(["analyze", lenet_file, "--data", "mnist", "--out", str(tmp_path / "x"),
                 "--target-sparsity", "1.5"]) == 2
    assert not (tmp_path / "x").exists()
