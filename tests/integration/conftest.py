"""Shared by the search and tracking tests: a tiny trained classifier, its data and a one-parameter space."""

import keras
import numpy as np
import pytest

import keras_compress as kc

SPACE = """
recipe:
  steps:
    - prune: {target_sparsity: "${sparsity}", schedule: constant}
    - finetune: {epochs: 1, batch_size: 64, learning_rate: 1.0e-3}
    - strip: {}
    - export: {formats: [int8], calibration_samples: 64}
parameters:
  sparsity: {low: 0.2, high: 0.9}
"""


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    (x, y), (x_test, y_test) = kc.datasets.load("mnist")
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu", name="fc1"),
                              keras.layers.Dense(10, name="fc2")], name="tiny")
    kc.zoo.train(model, x[:2000], y[:2000], epochs=2, verbose=0)
    model.save(folder / "tiny.keras")
    np.savez(folder / "data.npz", x_train=x[:512], y_train=y[:512], x_test=x_test[:256], y_test=y_test[:256])
    (folder / "space.yaml").write_text(SPACE)
    return folder


