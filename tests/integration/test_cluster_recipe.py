"""prune -> cluster -> int8 in one recipe: zeros and codebooks survive export."""


import keras
import numpy as np
import pytest

import builders
import keras_compress as kc

pytestmark = pytest.mark.tensorflow

RECIPE = """\
steps:
  - prune: {target_sparsity: 0.8, schedule: constant}
  - finetune: {epochs: 1, batch_size: 64, learning_rate: 1.0e-4}
  - cluster: {num_clusters: 8, init: linear, per_channel: true}
  - finetune: {epochs: 1, batch_size: 64, learning_rate: 1.0e-4}
  - export: {formats: [keras, int8], calibration_samples: 64}
"""


def test_prune_cluster_int8_keeps_zeros_and_at_most_k_values_per_channel(tmp_path, capsys):
    model_path = builders.trained_mnist_model_file(kc.zoo.lenet_300_100, tmp_path, "mlp.keras")
    code, out, report = builders.compress_with_recipe(model_path, RECIPE, tmp_path, 512)
    assert code == 0, capsys.readouterr().err
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["model_int8.tflite"]["technique"] == "prune 80% + cluster 8 per channel"

    stripped = keras.saving.load_model(out / "model.keras")
    kernels = {layer.name: layer.kernel.numpy() for layer in stripped.layers if hasattr(layer, "kernel")}
    for kernel in kernels.values():
        assert float(np.mean(kernel == 0)) == pytest.approx(0.8, abs=0.01)
        for column in kernel.T:
            assert np.unique(column[column != 0]).size <= 8

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(out / "model_int8.tflite"))
    interpreter.allocate_tensors()
    checked = 0
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] != np.int8 or len(detail["shape"]) != 2 or detail["shape"][0] not in (300, 100, 10):
            continue
        try:
            weights = interpreter.get_tensor(detail["index"])  # (out, in) in LiteRT
        except ValueError:
            continue
        for row in weights:
            assert np.unique(row[row != 0]).size <= 8
        assert float(np.mean(weights == 0)) == pytest.approx(0.8, abs=0.01)
        checked += 1
    assert checked == 3  # every Dense kernel
