"""Measurement: accuracy, parameter counts and artifact sizes.

Keras and NumPy only, so it runs on every backend; the LiteRT counterparts
(`litert_accuracy`, `litert_latency`) live in `keras_compress.export`.
"""

import gzip
import os

import numpy as np


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    return int(value)


def _model_input_shape(model):
    """Per-sample input shape (batch axis dropped) of a model, or None.

    None when the model has no symbolic inputs (a subclassed model) or more
    than one input: there is then nothing single to check against.
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1:
        return None
    return tuple(inputs[0].shape[1:])


def _check_fits(sample_shape, expected_shape, what="data"):
    """Raises ValueError unless `sample_shape` fits `expected_shape`.

    Both exclude the batch axis; `None` in `expected_shape` matches any size.
    """
    if expected_shape is None:
        return
    sample_shape = tuple(int(d) for d in sample_shape)
    expected_shape = tuple(None if d is None else int(d) for d in expected_shape)
    fits = len(sample_shape) == len(expected_shape) and all(
        e is None or e == d for d, e in zip(sample_shape, expected_shape)
    )
    if not fits:
        raise ValueError(
            f"{what} shape {sample_shape} does not fit the model's input shape "
            f"{expected_shape} (batch axis excluded). Reshape the data, e.g. "
            "x[..., None] to add a channel axis."
        )


def _as_labels(y, num_samples):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer)
                           or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(
            "y must hold integer class labels, shape (N,) or (N, 1). "
            f"Received: y.shape={y.shape}, y.dtype={y.dtype}"
        )
    if len(y) != num_samples:
        raise ValueError(
            f"x and y must hold the same number of samples. "
            f"Received: len(x)={num_samples}, len(y)={len(y)}"
        )
    return y


def _top1_accuracy(outputs, y):
    """Fraction of rows of `outputs` whose argmax equals the label in `y`."""
    outputs = np.asarray(outputs)
    labels = _as_labels(y, len(outputs))
    if len(labels) == 0:
        raise ValueError("Accuracy needs at least one sample. Received: 0 samples")
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))


def keras_accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy of a Keras classifier on `(x, y)`.

    Args:
        model: a Keras model whose output's last axis holds one score (logit
            or probability) per class.
        x: inputs, shape `(N, *input_shape)`.
        y: integer labels, shape `(N,)` or `(N, 1)`.
        batch_size: samples per forward pass.

    Returns:
        The fraction of samples whose argmax output equals the label, a float
        in [0, 1].

    Raises:
        ValueError: if a sample's shape does not fit the model's input shape,
            if `x` and `y` differ in length, if there are no samples or if
            `batch_size` is not a positive integer.

    Example:
    >>> (x, y), (x_test, y_test) = keras_compress.datasets.load("mnist")
    >>> keras_compress.evaluate.keras_accuracy(model, x_test, y_test)
    0.9912
    """
    batch_size = _positive_int("batch_size", batch_size)
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"x must have a batch axis. Received: x.shape={x.shape}")
    _check_fits(x.shape[1:], _model_input_shape(model))
    labels = _as_labels(y, len(x))
    if len(x) == 0:
        raise ValueError("Accuracy needs at least one sample. Received: 0 samples")
    outputs = model.predict(x, batch_size=batch_size, verbose=0)
    return _top1_accuracy(outputs, labels)


def count_parameters(model):
    """Counts a model's parameters and how many of them are non-zero.

    Every weight counts, trainable or not (BatchNormalization statistics
    included); optimizer slots, metrics and random-seed state do not.

    Args:
        model: a built Keras model (or layer).

    Returns:
        `dict(total=int, nonzero=int)`: the number of scalars in
        `model.weights` and how many of them are exactly non-zero.

    Raises:
        ValueError: if the model is not built (its weights do not exist yet).

    Example:
    >>> keras_compress.evaluate.count_parameters(keras_compress.zoo.lenet5())
    {'total': 431080, 'nonzero': 431080}
    """
    if not getattr(model, "built", True):
        raise ValueError(
            "count_parameters needs a built model: call it on data or build it "
            f"first. Received: an unbuilt {type(model).__name__}"
        )
    import keras

    total = 0
    nonzero = 0
    for weight in model.weights:
        values = keras.ops.convert_to_numpy(weight.value)
        total += int(values.size)
        nonzero += int(np.count_nonzero(values))
    return {"total": total, "nonzero": nonzero}


def sizes(path):
    """Size of a file on disk and gzipped (level 9), in bytes.

    The gzip size is a deterministic proxy for what a sparse or clustered
    artifact costs to ship: it is computed in memory with `mtime=0`, so the
    same file always gives the same number.

    Args:
        path: a file (e.g. a `.tflite` or `.keras` artifact).

    Returns:
        `dict(raw_bytes=int, gzip_bytes=int)`.

    Raises:
        FileNotFoundError: if `path` is not an existing file.

    Example:
    >>> keras_compress.evaluate.sizes("runs/model_int8.tflite")
    {'raw_bytes': 452528, 'gzip_bytes': 301847}
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sizes needs an existing file. Received: path={path!r}")
    with open(path, "rb") as f:
        data = f.read()
    return {
        "raw_bytes": len(data),
        "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0)),
    }


def macs(model):
    """Multiply-accumulates per sample of `model`, per layer and in total (see `core.macs.macs`).

    Example:
    >>> keras_compress.evaluate.macs(keras_compress.zoo.lenet5())["total"]
    2293000
    """
    from keras_compress.core.macs import macs as count

    return count(model)
