"""prune_channels -> distilled finetune -> prune -> quantize -> int8 LiteRT in one recipe, through the CLI."""

import json

import keras
import numpy as np
import pytest

import builders
import keras_compress as kc

pytestmark = pytest.mark.tensorflow

RECIPE = """\
steps:
  - prune_channels: {fraction: 0.5, round_to: 2}
  - finetune: {epochs: 1, batch_size: 64, learning_rate: 1.0e-3, teacher: original, temperature: 2.0}
  - prune: {target_sparsity: 0.5, schedule: constant}
  - finetune: {epochs: 1, batch_size: 64, learning_rate: 1.0e-4}
  - quantize: {calibration_samples: 128}
  - finetune: {epochs: 1, batch_size: 64, learning_rate: 1.0e-5}
  - export: {formats: [keras, float32, int8]}
"""


def test_structured_then_unstructured_then_qat_exports_a_smaller_int8_model(tmp_path, capsys):
    model_path = builders.trained_mnist_model_file(kc.zoo.mobilenet_v2_tiny, tmp_path, "mnv2.keras")
    code, out, report = builders.compress_with_recipe(model_path, RECIPE, tmp_path, 512)
    assert code == 0, capsys.readouterr().err
    step = report["meta"]["prune_channels"][0]
    assert report["meta"]["finetune"][0]["distilled_from"] == "mobilenet_v2_tiny"  # the narrowed student learnt from the original
    assert "distilled_from" not in report["meta"]["finetune"][1]
    assert step["groups_pruned"] >= 8 and step["macs_before"] > 3 * step["macs_after"]
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["model_int8.tflite"]["technique"].startswith("channels -50% + prune 50%")
    small = keras.saving.load_model(out / "model.keras")
    assert small.get_layer("stem").filters == 8 and small.get_layer("head").filters == 64
    assert kc.evaluate.macs(small)["total"] == step["macs_after"]
    kernel = small.get_layer("block1_expand").kernel.numpy()
    assert float(np.mean(kernel == 0)) == pytest.approx(0.5, abs=0.02)
    # Whole channels gone: the float32 file itself is a third of the baseline's (not only its gzip).
    assert rows["model_float32.tflite"]["raw_bytes"] < rows["baseline_float32.tflite"]["raw_bytes"] / 3
    assert rows["model_int8.tflite"]["raw_bytes"] < rows["model_float32.tflite"]["raw_bytes"]
    assert rows["model_float32.tflite"]["macs"] == step["macs_after"]
    assert rows["model_int8.tflite"]["litert_metric"] is not None


def test_a_subclassed_model_is_refused_before_anything_is_written(tmp_path, capsys):
    from keras_compress.cli.recipe import load_recipe
    from keras_compress.cli.runner import run_recipe

    model = builders.TinySubclassed()
    model(np.zeros((1, 16), "float32"))
    recipe = load_recipe("steps:\n  - prune_channels: {fraction: 0.5}\n")
    data = ((np.zeros((8, 16), "float32"), np.zeros(8, "int32")),) * 2
    with pytest.raises(ValueError, match=r"recipe step 1 \(prune_channels\): structured pruning needs"):
        run_recipe(model, recipe, data, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
