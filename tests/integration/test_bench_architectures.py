"""bench/architectures.py (issue #19's coverage table) on two small keras.applications architectures."""

import json
import os
import sys

import keras
import numpy as np
import pytest

import keras_compress as kc

pytestmark = pytest.mark.tensorflow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))

import architectures  # noqa: E402


@pytest.mark.parametrize("name, overrides", [("MobileNet", {"alpha": 0.25}),
                                             ("MobileNetV3Small", {"alpha": 0.75, "minimalistic": True})])
def test_a_small_architecture_goes_through_every_stage_to_the_interpreter(name, overrides, tmp_path):
    keras.utils.set_random_seed(0)
    model = architectures.build_application(name, **overrides)
    row = architectures.pipeline(model, str(tmp_path), samples=32)
    assert row["reason"] is None and row["stage"] == "interpreter", row
    assert set(row["seconds"]) == set(architectures.COLUMNS)
    assert 0 < row["seconds"]["converter"] < row["seconds"]["export int8"]
    assert 0 < row["own_share"] < 1 and row["int8_bytes"] > 0
    # The int8 file computes what the Keras QAT model does: a random network is chaotic (half a pixel of input
    # noise flips some of its argmaxes), so the int8 file is held to the model's own stability, not to 1.
    assert 0 < row["stability"] <= 1 and row["classes"] >= 3, row
    assert row["agreement"] >= row["stability"] - 0.1 and row["relative_difference"] < 0.25, row


def test_stability_is_the_models_own_agreement_under_half_a_pixel():
    inputs = keras.Input((4, 4, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()([pooled, keras.ops.full_like(pooled, 127.5)]))
    steady = np.full((64, 4, 4, 1), 200.0, "float32")  # the mean is far above 127.5: no noise flips it
    assert architectures.stability(model, steady) == 1.0
    tied = np.full((64, 4, 4, 1), 127.5, "float32")  # every mean sits on the tie: the noise decides each argmax
    assert 0.2 < architectures.stability(model, tied) < 0.8
    assert architectures.stability(model, tied.astype("int32")) is None


def test_a_failing_stage_is_a_row_with_its_reason_not_a_traceback(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("clustering refused this\nsecond line\n  File 'x.py', line 1")

    monkeypatch.setattr(kc, "cluster", refuse)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inputs))))
    row = architectures.pipeline(model, str(tmp_path), samples=16)
    assert row["stage"] == "save/load"
    assert row["reason"] == "cluster: ValueError: clustering refused this"
    assert "qat" not in row["seconds"] and "agreement" not in row
    out = tmp_path / "rows"
    out.mkdir()
    architectures._append(str(out / "coverage.jsonl"), dict(row, model="tiny"))
    table = architectures.markdown(architectures.read_rows(str(out / "coverage.jsonl")))
    assert "| tiny |" in table and "cluster: ValueError: clustering refused this |" in table
    assert "0 of 1 through to the stock interpreter" in table
    assert json.loads((out / "coverage.jsonl").read_text())["stage"] == "save/load"


def test_random_inputs_fit_each_input_kind():
    ids, mask = keras.Input((4,), dtype="int32", name="token_ids"), keras.Input((4,), dtype="int32", name="padding_mask")
    model = keras.Model({"token_ids": ids, "padding_mask": mask},
                        keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(128, 2)(ids))))
    x = architectures.random_inputs(model, 5)
    assert set(x) == {"token_ids", "padding_mask"} and (x["padding_mask"] == 1).all()
    assert x["token_ids"].dtype == np.int32 and 0 < x["token_ids"].min() and x["token_ids"].max() < 128


def test_a_trained_network_goes_through_with_the_accuracy_of_each_artifact(tmp_path):
    """`--train-steps`: Fashion-MNIST resized to the model's input, trained, then the pipeline on real labels."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for filters in (8, 16):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same")(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    data = architectures.image_data(model, 32 * 80)
    x_train, y_train, x_test, y_test = data
    assert x_train.shape == (2560, 32, 32, 3) and x_test.shape == (256, 32, 32, 3)
    assert 0 <= x_train.min() and 200 < x_train.max() <= 255 and len(np.unique(y_test)) == 10
    architectures.train(model, x_train, y_train, 80)
    row = architectures.pipeline(model, str(tmp_path), data=data)
    assert row["stage"] == "interpreter", row
    assert row["float_accuracy"] > 0.6, row  # a tenth is chance; 0.78 measured
    assert abs(row["int8_accuracy"] - row["qat_accuracy"]) <= 0.02 and row["agreement"] >= 0.97, row
    table = architectures.markdown([dict(row, model="tiny")])
    assert f"{100 * row['float_accuracy']:.1f} / {100 * row['qat_accuracy']:.1f} /" in table
    text = keras.Input((4,), dtype="int32")
    assert architectures.image_data(keras.Model(text, keras.layers.Embedding(8, 2)(text)), 8) is None
