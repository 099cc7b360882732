"""prune -> QAT -> int8 through the CLI: zeros kept, trained ranges exported, report rows."""


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
  - quantize: {calibration_samples: 128}
  - finetune: {epochs: 1, batch_size: 64, learning_rate: 1.0e-4}
  - export: {formats: [keras, float32, int8]}
"""


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    (x, y), _ = kc.datasets.load("mnist")
    keras.utils.set_random_seed(0)
    model = kc.zoo.bn_cnn()
    kc.zoo.train(model, x[:2048], y[:2048], epochs=1, verbose=0)
    path = str(tmp_path_factory.mktemp("m") / "bn_cnn.keras")
    model.save(path)
    return path


def test_prune_then_qat_recipe_exports_int8_with_zeros_and_a_report(tmp_path, capsys, model_path):
    code, out, report = builders.compress_with_recipe(model_path, RECIPE, tmp_path, 1024)
    assert code == 0, capsys.readouterr().err
    rows = {r["name"]: r for r in report["rows"]}
    int8 = rows["model_int8.tflite"]
    assert int8["technique"] == "prune 80% + QAT w8a8"
    assert "ranges learned in QAT" in int8["notes"]
    # The LiteRT model agrees with the fake-quantized Keras model it came from.
    assert abs(int8["litert_metric"] - int8["keras_metric"]) <= 0.002
    treatments = {r["layer"]: r["treatment"] for r in report["meta"]["quantize"][0]["layers"]}
    assert treatments["bn1"] == "folded into conv1"

    stripped = keras.saving.load_model(out / "model.keras")
    kernel = stripped.get_layer("fc1").kernel.numpy()
    assert float(np.mean(kernel == 0)) == pytest.approx(0.8, abs=0.01)

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(out / "model_int8.tflite"))
    interpreter.allocate_tensors()
    sparse = [d for d in interpreter.get_tensor_details()
              if d["dtype"] == np.int8 and tuple(d["shape"]) == (128, kernel.shape[0])]
    assert sparse, "fc1's int8 weights not found"
    assert float(np.mean(interpreter.get_tensor(sparse[0]["index"]) == 0)) >= 0.79


def test_four_bit_qat_says_why_no_int8_artifact(tmp_path, capsys, model_path):
    code, out, report = builders.compress_with_recipe(
        model_path, "steps:\n  - quantize: {weight_bits: 4, calibration_samples: 64}\n"
        "  - finetune: {epochs: 1, batch_size: 64}\n  - export: {formats: [keras, int8]}\n", tmp_path, 256)
    assert code == 0, capsys.readouterr().err
    assert not (out / "model_int8.tflite").exists()
    assert "cannot be stored at that width" in report["meta"]["artifacts not written"][0]
    assert "cannot be stored at that width" in (out / "report.md").read_text()
