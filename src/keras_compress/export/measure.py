"""Measurements of a `.tflite` classifier: top-1 accuracy and median latency.

`ai_edge_litert` is imported when a measurement runs, not at import.
"""

from keras_compress.evaluate import _top1_accuracy
from keras_compress.export.interpreter import LiteRTModel, litert_predict


def litert_accuracy(path, x, y, batch_size=256):
    """Top-1 accuracy of a `.tflite` classifier on `(x, y)`.

    Args:
        path: the `.tflite` file.
        x: inputs, shape `(N, *input_shape)`.
        y: integer labels, shape `(N,)` or `(N, 1)`.
        batch_size: samples per invoke.

    Returns:
        The fraction of samples whose argmax output equals the label.

    Raises:
        FileNotFoundError: if `path` is not a file.
        ValueError: if `x` is empty or misshapen, or `x` and `y` differ in
            length.
        ImportError: if `ai_edge_litert` is not installed.

    Example:
    >>> keras_compress.export.litert_accuracy("runs/model_int8.tflite", x_test, y_test)
    0.9907
    """
    outputs = litert_predict(path, x, batch_size=batch_size)
    return _top1_accuracy(outputs, y)


def litert_latency(path, batch_size=1, runs=50, warmup=5, num_threads=None):
    """Median seconds per invoke of a `.tflite` model on random input.

    Args:
        path: the `.tflite` file.
        batch_size: samples per invoke.
        runs: timed invokes.
        warmup: untimed invokes first.
        num_threads: interpreter threads; `None` lets LiteRT choose.

    Returns:
        The median wall time of one `invoke()`, in seconds.

    Raises:
        FileNotFoundError: if `path` is not a file.
        ValueError: for bad counts, or an input shape with free sizes.
        ImportError: if `ai_edge_litert` is not installed.

    Example:
    >>> keras_compress.export.litert_latency("runs/model_int8.tflite", num_threads=1)
    0.000152
    """
    return LiteRTModel(path, num_threads=num_threads).latency(
        batch_size=batch_size, runs=runs, warmup=warmup
    )
