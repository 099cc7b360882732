"""The user's own data, metric and task through the CLI and `run_recipe`: CSV regression, an image folder,
a multi-input multi-output model, integer token inputs, a streamed dataset, `.h5` models."""

import json
import os

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress.cli.main import main
from keras_compress.cli.recipe import load_recipe
from keras_compress.cli.runner import run_recipe

pytestmark = pytest.mark.tensorflow  # LiteRT export

@pytest.fixture(scope="module")
def lenet_mnist():
    """A LeNet-5 trained one epoch on 2,000 MNIST images, with the arrays."""
    (x, y), (x_test, y_test) = kc.datasets.load("mnist")
    model = kc.zoo.lenet5()
    kc.zoo.train(model, x[:2000], y[:2000], epochs=1, verbose=0)
    return model, (x, y), (x_test, y_test)


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory, lenet_mnist):
    path = tmp_path_factory.mktemp("models") / "lenet5.keras"
    lenet_mnist[0].save(path)
    return str(path)


PRUNE_INT8 = """
steps:
  - prune: {target_sparsity: 0.8, end_step: auto}
  - finetune: {epochs: 30, batch_size: 32, learning_rate: 1.0e-3}
  - strip: {}
  - export: {formats: [float32, int8], calibration_samples: 128}
"""


def _diabetes_csv(tmp_path):
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    path = tmp_path / "diabetes.csv"
    header = [f"f{i}" for i in range(bunch.data.shape[1])] + ["target"]
    rows = np.column_stack([bunch.data * 20, bunch.target])
    np.savetxt(path, rows, delimiter=",", header=",".join(header), comments="", fmt="%.6f")
    return str(path), bunch


def _regressor(features):
    keras.utils.set_random_seed(0)  # unseeded, one CI draw in many landed at 11.7% against the 10% bound
    model = keras.Sequential([keras.Input((features,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)], name="mlp")
    model.compile(keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    return model


def test_cli_compresses_a_csv_regression_and_reports_mae_lower_is_better(tmp_path, capsys):
    csv_path, bunch = _diabetes_csv(tmp_path)
    spec = f"{csv_path}?target=target&test_fraction=0.25"
    data = kc.data.load(spec)
    model = _regressor(bunch.data.shape[1])
    x, y = data.train.take()
    model.fit(x, y, epochs=60, batch_size=32, verbose=0)
    model_path = tmp_path / "mlp.keras"
    model.save(model_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(PRUNE_INT8)
    out = tmp_path / "out"
    assert main(["compress", str(model_path), "--data", spec, "--recipe", str(recipe), "--out", str(out),
                 "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["metric"]["name"] == "mae" and report["metric"]["higher_is_better"] is False
    assert report["meta"]["splits"].startswith("test 25%") and report["meta"]["test_samples"] == 110
    rows = {r["name"]: r for r in report["rows"]}
    base = rows["baseline_float32.tflite"]["litert_metric"]
    assert 30 < base < 70  # a fitted MLP on diabetes: MAE ~ 40-45
    int8 = rows["model_int8.tflite"]
    assert int8["nonzero"] < 0.3 * int8["params"]
    assert abs(int8["litert_metric"] - base) / base < 0.10  # bench/user_data.py measures the 2% figure
    assert report["meta"]["finetune"][0]["loss"] == "mean_squared_error"  # fine-tuned with the model's own loss
    assert "Keras mae" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(out / "model_int8.tflite"), "--data", spec, "--metric", "mae"]) == 0
    printed = capsys.readouterr().out
    assert f"mae: {int8['litert_metric']:.6g}" in printed and "lower is better" in printed


def test_cli_compresses_from_an_image_folder_like_from_the_arrays(tmp_path, lenet_mnist):
    from PIL import Image

    model, (x_train, y_train), (x_test, y_test) = lenet_mnist
    for split, xs, ys in (("train", x_train[:300], y_train[:300]), ("test", x_test[:200], y_test[:200])):
        for i, (image, label) in enumerate(zip(xs, ys)):
            folder = tmp_path / "digits" / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8), "L").save(folder / f"{i}.png")
    model_path = tmp_path / "lenet.keras"
    model.save(model_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - export: {formats: [float32]}\n")
    out = tmp_path / "out"
    spec = f"{tmp_path / 'digits'}?scale=1/255"
    assert main(["compress", str(model_path), "--data", spec, "--recipe", str(recipe), "--out", str(out),
                 "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["classes"] == [str(c) for c in range(10)]
    assert report["meta"]["test_samples"] == 200 and report["meta"]["streaming"]
    expected = float(np.mean(np.argmax(model.predict(x_test[:200], verbose=0), -1) == y_test[:200]))
    base = next(r for r in report["rows"] if r["name"] == "baseline_float32.tflite")
    assert base["keras_metric"] == pytest.approx(expected, abs=0.006)  # PNG rounding moves at most one image
    assert base["litert_metric"] == pytest.approx(base["keras_metric"], abs=0.006)


def _two_in_two_out():
    image = keras.Input((6, 6, 1), name="image")
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    a = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    b = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(tokens))
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([image, tokens], [keras.layers.Dense(3, name="kind")(h),
                                          keras.layers.Dense(1, name="size")(h)], name="two_by_two")
    model.compile("adam", loss=["sparse_categorical_crossentropy", "mse"], metrics=[["accuracy"], ["mae"]])
    return model


def _two_by_two_data(n, seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, 6, 6, 1)).astype("float32")
    tokens = rng.integers(0, 20, (n, 5)).astype("int32")
    kind = (image.mean(axis=(1, 2, 3)) > 0).astype("int32") + (tokens[:, 0] > 10)
    return {"image": image, "tokens": tokens}, [kind, image.std(axis=(1, 2, 3))[:, None]]


def test_multi_input_multi_output_with_token_ids_through_prune_and_int8(tmp_path):
    model = _two_in_two_out()
    x, y = _two_by_two_data(512, 0)
    model.fit(x, y, epochs=3, verbose=0)
    data = kc.data.from_pairs("two inputs", (x, y), _two_by_two_data(128, 1))
    recipe = load_recipe(PRUNE_INT8.replace("target_sparsity: 0.8", "target_sparsity: 0.5"))
    report = run_recipe(model, recipe, data, tmp_path / "out", progress=False, latency_runs=3,
                        metric="mae@size")
    rows = {r.name: r for r in report.rows}
    assert report.metric["name"] == "mae" and report.metric["output"] == "size"
    for name in ("baseline_float32.tflite", "model_float32.tflite"):
        assert rows[name].litert_metric == pytest.approx(rows[name].keras_metric, rel=1e-3, abs=1e-4)
    int8 = rows["model_int8.tflite"]
    assert int8.litert_metric == pytest.approx(int8.keras_metric, rel=0.2, abs=0.02)
    runtime = kc.export.LiteRTModel(tmp_path / "out" / "model_int8.tflite")
    assert runtime.input_names == ["image", "tokens"]
    outputs = runtime.predict({"image": x["image"][:4], "tokens": x["tokens"][:4]})
    assert [o.shape for o in outputs] == [(4, 3), (4, 1)]  # in the Keras model's output order


def test_an_h5_file_loads_and_a_savedmodel_folder_is_one_clear_error(tmp_path, capsys):
    model = _regressor(3)
    model.fit(np.ones((8, 3)), np.ones(8), verbose=0)
    model.save(tmp_path / "legacy.h5")
    np.savez(tmp_path / "d.npz", x=np.ones((20, 3), "float32"), y=np.ones(20, "float32"))
    assert main(["evaluate", str(tmp_path / "legacy.h5"), "--data", str(tmp_path / "d.npz") + "?x=x&y=y",
                 "--metric", "mae"]) == 0
    assert "mae:" in capsys.readouterr().out
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    assert main(["evaluate", str(saved) + ".keras", "--data", "mnist"]) == 2
    from keras_compress.cli.main import load_model

    with pytest.raises(ValueError, match="SavedModel folder.*Save it as .keras"):
        load_model(str(saved))


TF_KERAS_WRITER = """
import sys, numpy as np, tf_keras
model = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(8, activation="relu"),
                             tf_keras.layers.Dense(1)])
model.compile("adam", loss="mse", metrics=["mae"])
model.fit(np.ones((8, 3)), np.ones(8), verbose=0)
model.save(sys.argv[1])
np.save(sys.argv[2], model.predict(np.arange(12.0).reshape(4, 3), verbose=0))
"""


def test_an_h5_file_written_by_keras_2_loads_and_predicts_the_same(tmp_path, capsys):
    import subprocess
    import sys

    h5, expected = tmp_path / "tf_keras.h5", tmp_path / "expected.npy"
    result = subprocess.run([sys.executable, "-c", TF_KERAS_WRITER, str(h5), str(expected)],
                            capture_output=True, text=True, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    from keras_compress.cli.main import load_model

    model = load_model(str(h5))
    np.testing.assert_allclose(model.predict(np.arange(12.0).reshape(4, 3), verbose=0), np.load(expected),
                               rtol=1e-5, atol=1e-6)
    np.savez(tmp_path / "d.npz", x=np.ones((20, 3), "float32"), y=np.ones(20, "float32"))
    assert main(["evaluate", str(h5), "--data", f"{tmp_path / 'd.npz'}?x=x&y=y", "--metric", "mae"]) == 0
    assert "mae:" in capsys.readouterr().out


def test_cli_bad_data_and_metric_are_one_line_exit_2(tmp_path, capsys, lenet_file):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - export: {formats: [float32]}\n")
    cases = [
        (["--data", "nowhere.csv?target=y"], "file not found: 'nowhere.csv'"),
        (["--data", "mnist", "--metric", "f2_typo"], "unknown metric 'f2_typo'"),
        (["--data", "os.path:nope_nope"], "has no function 'nope_nope'"),
    ]
    for extra, message in cases:
        out = tmp_path / "out"
        assert main(["compress", lenet_file, "--recipe", str(recipe), "--out", str(out), "--quiet", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists()
    labels = tmp_path / "labels.npz"
    x = np.zeros((4, 28, 28, 1), "float32")
    np.savez(labels, x_train=x, y_train=np.array([0, 1, 2, 12]), x_test=x, y_test=np.arange(4))
    assert main(["compress", lenet_file, "--recipe", str(recipe), "--out", str(tmp_path / "o"), "--quiet",
                 "--data", str(labels)]) == 2
    assert "labels go from 0 to 12" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_a_sequence_model_on_token_ids_through_the_cli_with_int8(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 50, (600, 16)).astype("int32")
    labels = np.any(tokens == 7, axis=1).astype("int32")  # a token's presence: ~28% positives
    np.savez(tmp_path / "text.npz", x=tokens, y=labels)
    inputs = keras.Input((16,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(50, 8)(inputs)
    h = keras.layers.Conv1D(16, 3, activation="relu")(h)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalMaxPooling1D()(h))
    model = keras.Model(inputs, outputs, name="text_cnn")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(tokens, labels, epochs=15, verbose=0)
    model.save(tmp_path / "text.keras")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(PRUNE_INT8.replace("epochs: 30", "epochs: 5"))
    out = tmp_path / "out"
    assert main(["compress", str(tmp_path / "text.keras"), "--data", f"{tmp_path / 'text.npz'}?x=x&y=y",
                 "--recipe", str(recipe), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["metric"]["name"] == "accuracy"
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["baseline_float32.tflite"]["litert_metric"] > 0.9  # well above the 72% majority class
    int8 = rows["model_int8.tflite"]  # calibrated on integer token ids
    assert int8["litert_metric"] == pytest.approx(int8["keras_metric"], abs=0.03)


def test_a_variable_length_rnn_through_a_recipe_with_select_tf_ops_gets_rows_that_say_flex(tmp_path):
    """Without `select_tf_ops` the recipe stops at its baseline (refused, with the way out); with it, every
    LiteRT row says the file needs the Flex delegate instead of measuring what the stock interpreter cannot run."""
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4), keras.layers.Dense(2)])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6, 3)).astype("float32"), rng.integers(0, 2, 64)
    data = kc.data.from_pairs("sequences", (x, y), (x[:16], y[:16]))
    steps = "steps:\n  - prune: {target_sparsity: 0.5}\n  - finetune: {epochs: 1}\n  - export: {formats: [keras, float32]"
    with pytest.raises(ValueError, match="select_tf_ops: true"):
        run_recipe(model, load_recipe(steps + "}\n"), data, tmp_path / "refused", progress=False, latency_runs=2,
                   metric="accuracy")
    assert not (tmp_path / "refused").exists()
    report = run_recipe(model, load_recipe(steps + ", select_tf_ops: true}\n"), data, tmp_path / "out",
                        progress=False, latency_runs=2, metric="accuracy")
    rows = {r.name: r for r in report.rows}
    for name in ("baseline_float32.tflite", "model_float32.tflite"):
        assert "needs the Select TensorFlow ops (Flex) delegate" in rows[name].notes
        assert rows[name].litert_metric is None and rows[name].raw_bytes > 0
    assert rows["model.keras"].keras_metric is not None
