"""Tiny models shared by the tests: every layer type and every model kind."""

import keras
import numpy as np
import pytest
from keras import layers


def seeded(seed=0):
    keras.utils.set_random_seed(seed)


# Each entry: name -> (input shape, layer factory, expected number of prunable weights)
LAYER_CASES = {
    "dense": ((16,), lambda: layers.Dense(8), 1),
    "conv1d": ((12, 4), lambda: layers.Conv1D(8, 3), 1),
    "conv2d": ((8, 8, 3), lambda: layers.Conv2D(8, 3), 1),
    "conv3d": ((6, 6, 6, 2), lambda: layers.Conv3D(4, 3), 1),
    "conv1d_transpose": ((12, 4), lambda: layers.Conv1DTranspose(8, 3), 1),
    "conv2d_transpose": ((8, 8, 3), lambda: layers.Conv2DTranspose(8, 3), 1),
    "conv3d_transpose": ((4, 4, 4, 2), lambda: layers.Conv3DTranspose(4, 3), 1),
    "separable_conv2d": ((8, 8, 4), lambda: layers.SeparableConv2D(8, 3), 2),
    "depthwise_conv2d": ((8, 8, 4), lambda: layers.DepthwiseConv2D(3, depth_multiplier=2), 1),
    "embedding": ((10,), lambda: layers.Embedding(50, 8), 1),
    "einsum_dense": ((6, 16), lambda: layers.EinsumDense("abc,cd->abd", output_shape=(6, 8), bias_axes="d"), 1),
}


def layer_model(case):
    """A Functional model around one layer of `LAYER_CASES`, built."""
    seeded()
    shape, factory, _ = LAYER_CASES[case]
    if case == "embedding":
        inputs = keras.Input(shape, dtype="int32")
    else:
        inputs = keras.Input(shape)
    x = factory()(inputs)
    outputs = layers.Dense(3)(layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def layer_input(case, n=8):
    shape = LAYER_CASES[case][0]
    rng = np.random.default_rng(0)
    if case == "embedding":
        return rng.integers(0, 50, (n, *shape)).astype("int32")
    return rng.normal(size=(n, *shape)).astype("float32")


def attention_model():
    seeded()
    inputs = keras.Input((6, 16))
    x = layers.MultiHeadAttention(num_heads=2, key_dim=8)(inputs, inputs)
    outputs = layers.Dense(3)(layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@keras.saving.register_keras_serializable(package="tests")
class TinySubclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = layers.Dense(32, activation="relu")
        self.out = layers.Dense(4)

    def call(self, x):
        return self.out(self.hidden(x))


def sequential():
    seeded()
    return keras.Sequential([keras.Input((16,)), layers.Dense(32, activation="relu"), layers.Dense(4)])


def functional():
    seeded()
    inputs = keras.Input((16,))
    x = layers.Dense(32, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, layers.Dense(4, name="out")(x))


def subclassed():
    seeded()
    model = TinySubclassed()
    model(np.zeros((1, 16), "float32"))
    return model


def nested():
    """A Sequential 'backbone' inside a Functional model, as in transfer learning."""
    seeded()
    backbone = keras.Sequential([keras.Input((16,)), layers.Dense(32, activation="relu", name="base_dense")], name="backbone")
    inputs = keras.Input((16,))
    return keras.Model(inputs, layers.Dense(4, name="head")(backbone(inputs)))


MODEL_KINDS = {"sequential": sequential, "functional": functional, "subclassed": subclassed, "nested": nested}


def dense_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = (x[:, :4].argmax(axis=1)).astype("int32")
    return x, y


def compile_tiny(model, lr=1e-2):
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def trained_mnist_model_file(build, tmp_path, name, samples=1024):
    """A zoo model trained one epoch on the first MNIST `samples`, saved as `tmp_path/name`."""
    import keras_compress as kc

    (x, y), _ = kc.datasets.load("mnist")
    model = build()
    kc.zoo.train(model, x[:samples], y[:samples], epochs=1, verbose=0)
    path = str(tmp_path / name)
    model.save(path)
    return path


def compress_with_recipe(model_path, recipe_text, tmp_path, subset):
    """Runs `keras-compress compress` on MNIST with an inline recipe.

    Returns:
        `(exit code, output folder, report dict or None)`.
    """
    import json

    from keras_compress.cli.main import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text)
    out = tmp_path / "out"
    code = main(["compress", str(model_path), "--data", "mnist", "--recipe", str(recipe), "--out", str(out),
                 "--subset", str(subset), "--quiet"])
    report_path = out / "report.json"
    return code, out, json.loads(report_path.read_text()) if report_path.exists() else None


def autodiff_gradient(fn, value):
    """The gradient of scalar `fn` at `value` by the backend's autodiff (TensorFlow or JAX)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        w = tf.Variable(value)
        with tf.GradientTape() as tape:
            out = fn(w)
        return np.asarray(tape.gradient(out, w))
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda w: fn(w))(value))
    pytest.skip(f"no autodiff helper for {backend}")
