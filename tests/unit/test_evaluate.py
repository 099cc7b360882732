"""Tests of keras_compress.evaluate: accuracy, parameter counts, file sizes.

Backend-neutral (Keras + NumPy only): runs under TensorFlow and JAX alike.
"""

import gzip
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_compress import evaluate


def _identity_model(kind, features=3):
    """A model whose output equals its input, so its argmax is known."""
    dense = keras.layers.Dense(features, use_bias=False, kernel_initializer="identity")
    if kind == "sequential":
        model = keras.Sequential([keras.Input((features,)), dense])
    elif kind == "functional":
        inputs = keras.Input((features,))
        model = keras.Model(inputs, dense(inputs))
    else:

        class Identity(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = dense

            def call(self, x):
                return self.dense(x)

        model = Identity()
        model(np.zeros((1, features), np.float32))
    return model


# argmax of rows: 0, 1, 2, 0. Labels get three of four right.
_X = np.array([[5, 1, 0], [0, 2, 1], [0, 1, 3], [1, 0, 0]], np.float32)
_Y = np.array([0, 1, 2, 2])


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_keras_accuracy_counts_argmax_matches(kind):
    model = _identity_model(kind)
    assert evaluate.keras_accuracy(model, _X, _Y) == pytest.approx(0.75)


def test_keras_accuracy_does_not_depend_on_batch_size():
    model = _identity_model("sequential")
    x = np.tile(_X, (5, 1))
    y = np.tile(_Y, 5)
    assert evaluate.keras_accuracy(model, x, y, batch_size=3) == pytest.approx(0.75)


def test_keras_accuracy_accepts_column_labels():
    model = _identity_model("sequential")
    assert evaluate.keras_accuracy(model, _X, _Y[:, None]) == pytest.approx(0.75)


def test_keras_accuracy_names_both_shapes_on_mismatch():
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    x = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"\(4, 4\) does not fit .* \(4, 4, 1\)"):
        evaluate.keras_accuracy(model, x, np.zeros(2, int))


@pytest.mark.parametrize(
    "x, y, message",
    [
        (_X, _Y[:3], "same number of samples"),
        (_X[:0], _Y[:0], "at least one sample"),
        (_X, np.zeros((4, 3)), "integer class labels"),
    ],
)
def test_keras_accuracy_rejects_bad_data(x, y, message):
    with pytest.raises(ValueError, match=message):
        evaluate.keras_accuracy(_identity_model("sequential"), x, y)


def test_keras_accuracy_rejects_a_zero_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        evaluate.keras_accuracy(_identity_model("sequential"), _X, _Y, batch_size=0)


def test_count_parameters_counts_exact_zeros():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    kernel = np.arange(12, dtype=np.float32).reshape(4, 3)  # one zero
    kernel[1] = 0.0  # three more
    bias = np.array([0.0, 1e-30, -2.0], np.float32)  # a tiny value is not zero
    model.layers[0].set_weights([kernel, bias])
    assert evaluate.count_parameters(model) == {"total": 15, "nonzero": 10}


def test_count_parameters_includes_non_trainable_weights():
    # BatchNormalization(3): gamma=1 and variance=1 (trainable and not) are
    # non-zero; beta=0 and mean=0 are zero.
    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    assert evaluate.count_parameters(model) == {"total": 12, "nonzero": 6}


def test_count_parameters_ignores_random_seed_state():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5), keras.layers.Dense(2)])
    assert evaluate.count_parameters(model)["total"] == 10


def test_count_parameters_rejects_an_unbuilt_model():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="built"):
        evaluate.count_parameters(model)


def test_sizes_reports_raw_and_deterministic_gzip_bytes(tmp_path):
    data = bytes(range(256)) * 40 + bytes(4096)
    path = tmp_path / "artifact.bin"
    path.write_bytes(data)
    result = evaluate.sizes(path)
    assert result["raw_bytes"] == len(data)
    assert result["gzip_bytes"] == len(gzip.compress(data, compresslevel=9, mtime=0))
    assert result["gzip_bytes"] < result["raw_bytes"]
    assert evaluate.sizes(str(path)) == result


def test_sizes_of_a_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        evaluate.sizes(tmp_path / "missing.tflite")


def test_importing_evaluate_and_export_does_not_load_tensorflow():
    code = (
        "import sys, keras_compress.evaluate, keras_compress.export; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'ai_edge_litert')]; "
        "assert not heavy, heavy"
    )
    # The NumPy backend ships with Keras, so no backend pulls TensorFlow in.
    env = dict(os.environ, KERAS_BACKEND="numpy")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
