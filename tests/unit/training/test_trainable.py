"""Freezing and unfreezing by name, inside a frozen nested backbone (transfer learning)."""

import keras
import numpy as np
import pytest

from keras_compress.cli.recipe import load_recipe
from keras_compress.core.steps import RecipeError
from keras_compress.training import FinetuneConfig, TrainableConfig, finetune, set_trainable


def transfer():
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="b1"),
                                 keras.layers.BatchNormalization(name="b1_bn"), keras.layers.Conv2D(4, 3, name="b2"),
                                 keras.layers.BatchNormalization(name="b2_bn"),
                                 keras.layers.GlobalAveragePooling2D(name="pool")], name="backbone")
    backbone.trainable = False
    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(backbone(inputs)), name="transfer")


def trainable_paths(model):
    return sorted(v.path for v in model.trainable_variables)


def test_unfreezing_the_last_block_of_a_frozen_backbone_trains_only_it_and_the_head():
    model = transfer()
    assert trainable_paths(model) == ["head/bias", "head/kernel"]
    assert set_trainable(model, TrainableConfig(layers="b2")) == ["b2"]  # its BatchNormalization keeps its state
    assert trainable_paths(model) == ["backbone/b2/bias", "backbone/b2/kernel", "head/bias", "head/kernel"]
    backbone = model.get_layer("backbone")
    assert not backbone.get_layer("b1").trainable and not backbone.get_layer("b2_bn").trainable
    before = {v.path: np.array(v) for v in model.weights}
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype("float32")
    finetune(model, x, np.zeros(64, "int64"), FinetuneConfig(epochs=1, batch_size=16, learning_rate=1e-2))
    after = {v.path: np.array(v) for v in model.weights}
    changed = sorted(p for p in before if not np.array_equal(before[p], after[p]))
    assert changed == ["backbone/b2/bias", "backbone/b2/kernel", "head/bias", "head/kernel"]


def test_batchnorm_is_unfrozen_only_when_asked_and_layers_can_be_frozen_again():
    model = transfer()
    assert sorted(set_trainable(model, TrainableConfig(layers="b2", batchnorm=True))) == ["b2", "b2_bn"]
    assert "backbone/b2_bn/gamma" in trainable_paths(model)
    set_trainable(model, TrainableConfig(layers="head|b2", trainable=False, batchnorm=True))
    assert trainable_paths(model) == []


def test_a_regex_that_matches_nothing_is_one_clear_error():
    with pytest.raises(ValueError, match=r"layers='block_9' matches no layer of model 'transfer'.*'b1'"):
        set_trainable(transfer(), TrainableConfig(layers="block_9"))
    with pytest.raises(RecipeError, match="'trainable' must be true or false"):
        load_recipe("steps:\n  - trainable: {layers: b2, trainable: 3}\n")
    with pytest.raises(ValueError, match="not a valid regex"):
        TrainableConfig(layers="b2(")


def test_finetuning_recalibrates_trainable_batchnorm_and_leaves_frozen_ones():
    model = transfer()
    set_trainable(model, TrainableConfig(layers="b2", batchnorm=True))  # b2_bn trainable, b1_bn frozen
    backbone = model.get_layer("backbone")
    frozen_before = np.array(backbone.get_layer("b1_bn").moving_mean)
    x = np.random.default_rng(1).normal(loc=3.0, size=(256, 8, 8, 1)).astype("float32")
    record = finetune(model, x, np.zeros(256, "int64"), FinetuneConfig(epochs=1, batch_size=32, learning_rate=1e-9))
    assert record["batchnorm_recalibrated"] == 1
    np.testing.assert_array_equal(np.array(backbone.get_layer("b1_bn").moving_mean), frozen_before)
    # b2_bn's moving mean is now the average batch mean of its input over the first 20 batches (within float error).
    features = keras.Model(backbone.inputs, backbone.get_layer("b2").output)
    expected = np.mean([np.asarray(features(x[k * 32:(k + 1) * 32])).mean(axis=(0, 1, 2)) for k in range(8)], axis=0)
    np.testing.assert_allclose(np.array(backbone.get_layer("b2_bn").moving_mean), expected, rtol=1e-4, atol=1e-5)
    off = finetune(transfer(), x, np.zeros(256, "int64"),
                   FinetuneConfig(epochs=1, batch_size=32, recalibrate_batchnorm=False))
    assert "batchnorm_recalibrated" not in off
