"""`layer_targets: auto` in a recipe: sensitivity-derived per-layer targets meet the global sparsity."""

import keras
import pytest

import builders
import keras_compress as kc

pytestmark = pytest.mark.tensorflow


def test_auto_targets_recipe_meets_the_global_sparsity(tmp_path, capsys):
    (x, y), _ = kc.datasets.load("mnist")
    keras.utils.set_random_seed(0)
    model = kc.zoo.lenet_300_100()
    kc.zoo.train(model, x[:2048], y[:2048], epochs=2, verbose=0)
    model_path = str(tmp_path / "mlp.keras")
    model.save(model_path)
    code, out, report = builders.compress_with_recipe(
        model_path, "steps:\n  - prune: {target_sparsity: 0.9, schedule: constant, layer_targets: auto}\n"
        "  - finetune: {epochs: 1, batch_size: 64}\n  - export: {formats: [keras]}\n", tmp_path, 1024)
    assert code == 0, capsys.readouterr().err
    targets = report["meta"]["prune"][0]["config"]["layer_targets"]
    assert len(targets) == 3 and len(set(targets.values())) > 1  # per layer, not uniform
    stripped = keras.saving.load_model(out / "model.keras")
    kernels = [layer.kernel.numpy() for layer in stripped.layers if hasattr(layer, "kernel")]
    zeros = sum(int((k == 0).sum()) for k in kernels)
    assert abs(zeros - 0.9 * sum(k.size for k in kernels)) <= len(kernels)
