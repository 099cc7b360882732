"""A `.tflite` file in a LiteRT interpreter: batched NumPy inference.

`ai_edge_litert` is imported when a `LiteRTModel` is made, not at import.
"""

import os
import time

import numpy as np

from keras_compress.evaluate import _check_fits, _positive_int
from keras_compress.core import quiet
from keras_compress.export.deps import _require


def _is_integer(dtype):
    return np.issubdtype(np.dtype(dtype), np.integer)


class LiteRTModel:
    """A `.tflite` file in a LiteRT interpreter, with batched NumPy inference.

    Float inputs are quantized for an int8 input tensor, and int8 outputs
    dequantized, with the tensors' own scale and zero point, so a model
    exported with `int8_io=True` is used like any other.

    Args:
        path: the `.tflite` file; single-input models.
        num_threads: interpreter threads; `None` lets LiteRT choose.

    Raises:
        FileNotFoundError: if `path` is not a file.
        ValueError: if the model has more than one input, or `num_threads`
            is not a positive integer.
        ImportError: if `ai_edge_litert` is not installed.

    Example:
    >>> runtime = keras_compress.export.LiteRTModel("runs/model_int8.tflite")
    >>> runtime.predict(x_test[:8]).shape
    (8, 10)
    """

    def __init__(self, path, num_threads=None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No LiteRT model file at path={path!r}")
        if num_threads is not None:
            num_threads = _positive_int("num_threads", num_threads)
        interpreter_module = _require("ai_edge_litert.interpreter", "LiteRT inference")
        self.path = path
        # The interpreter announces its XNNPACK delegate on stderr: quiet on the CLI.
        with quiet.native_stderr_filtered():
            self._interpreter = interpreter_module.Interpreter(
                model_path=path, num_threads=num_threads
            )
        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1:
            raise ValueError(
                "LiteRTModel supports models with one input. "
                f"Received: {len(inputs)} inputs in {path!r}"
            )
        self._input = inputs[0]
        self._outputs = self._interpreter.get_output_details()
        with quiet.native_stderr_filtered():
            self._interpreter.allocate_tensors()

    def __repr__(self):
        return (
            f"LiteRTModel({self.path!r}, input_shape={self.input_shape}, "
            f"input_dtype={np.dtype(self.input_dtype).name})"
        )

    @property
    def input_shape(self):
        """Per-sample input shape (batch axis dropped); `None` for a free size."""
        return tuple(None if d < 0 else int(d) for d in self._input["shape_signature"][1:])

    @property
    def input_dtype(self):
        """The input tensor's NumPy dtype (`np.float32`, or `np.int8` for int8 I/O)."""
        return self._input["dtype"]

    @property
    def interpreter(self):
        """The underlying `ai_edge_litert.interpreter.Interpreter`."""
        return self._interpreter

    def _fixed_batch(self):
        batch = int(self._input["shape_signature"][0])
        return batch if batch > 0 else None

    def _set_input_shape(self, shape):
        if tuple(self._interpreter.get_input_details()[0]["shape"]) != tuple(shape):
            self._interpreter.resize_tensor_input(self._input["index"], list(shape))
            self._interpreter.allocate_tensors()

    def _quantize(self, values):
        dtype = self._input["dtype"]
        if _is_integer(dtype) and not _is_integer(values.dtype):
            scale, zero_point = self._input["quantization"]
            if scale:
                values = np.round(values / scale + zero_point)
            info = np.iinfo(dtype)
            values = np.clip(values, info.min, info.max)
        return np.ascontiguousarray(values, dtype=dtype)

    @staticmethod
    def _dequantize(values, detail):
        scale, zero_point = detail["quantization"]
        if _is_integer(values.dtype) and scale:
            return (values.astype(np.float32) - zero_point) * np.float32(scale)
        if np.issubdtype(values.dtype, np.floating):
            return values.astype(np.float32, copy=False)
        return values

    def predict(self, x, batch_size=256):
        """Runs the model on `x` in batches; returns float outputs.

        Args:
            x: inputs, shape `(N, *input_shape)`, N >= 1.
            batch_size: samples per invoke. A model exported with a fixed
                batch size uses that size instead (padding the last batch).

        Returns:
            `np.ndarray` of shape `(N, ...)` (float32, int8 outputs
            dequantized); a list of them for a multi-output model.

        Raises:
            ValueError: if `x` is empty or a sample does not fit the input
                shape, or `batch_size` is not a positive integer.

        Example:
        >>> LiteRTModel("runs/model_float32.tflite").predict(x_test, batch_size=128)
        """
        batch_size = _positive_int("batch_size", batch_size)
        x = np.asarray(x)
        if x.ndim == 0 or len(x) == 0:
            raise ValueError(f"x must hold at least one sample. Received: x.shape={x.shape}")
        _check_fits(x.shape[1:], self.input_shape)
        fixed_batch = self._fixed_batch()
        if fixed_batch:
            batch_size = fixed_batch
        results = [[] for _ in self._outputs]
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            count = len(chunk)
            if fixed_batch and count < fixed_batch:
                padding = np.zeros((fixed_batch - count, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            self._set_input_shape(chunk.shape)
            self._interpreter.set_tensor(self._input["index"], self._quantize(chunk))
            self._interpreter.invoke()
            for result, detail in zip(results, self._outputs):
                values = self._interpreter.get_tensor(detail["index"])[:count]
                result.append(self._dequantize(values, detail))
        outputs = [np.concatenate(result) for result in results]
        return outputs[0] if len(outputs) == 1 else outputs

    def latency(self, batch_size=1, runs=50, warmup=5):
        """Median seconds per invoke on random input of the model's shape.

        Args:
            batch_size: samples per invoke (ignored by a fixed-batch model).
            runs: timed invokes.
            warmup: untimed invokes first.

        Returns:
            The median wall time of one `invoke()`, in seconds.

        Raises:
            ValueError: for non-positive `batch_size` or `runs`, negative
                `warmup`, or an input shape with free sizes besides the batch.

        Example:
        >>> LiteRTModel("runs/model_int8.tflite", num_threads=1).latency(runs=100)
        0.000152
        """
        batch_size = _positive_int("batch_size", batch_size)
        runs = _positive_int("runs", runs)
        if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
            raise ValueError(f"warmup must be a non-negative integer. Received: warmup={warmup!r}")
        if None in self.input_shape:
            raise ValueError(
                "latency needs a static input shape besides the batch axis. "
                f"Received: input_shape={self.input_shape}"
            )
        shape = (self._fixed_batch() or batch_size, *self.input_shape)
        rng = np.random.default_rng(0)
        dtype = self._input["dtype"]
        if not _is_integer(dtype):
            sample = rng.standard_normal(shape).astype(dtype)
        elif self._input["quantization"][0]:
            info = np.iinfo(dtype)
            sample = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        else:  # integer ids (e.g. tokens): zeros are always in range
            sample = np.zeros(shape, dtype)
        self._set_input_shape(shape)
        self._interpreter.set_tensor(self._input["index"], sample)
        for _ in range(int(warmup)):
            self._interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self._interpreter.invoke()
            times.append(time.perf_counter() - start)
        return float(np.median(times))


def litert_predict(path, x, batch_size=256):
    """Runs a `.tflite` model on `x`; returns float outputs.

    Args:
        path: the `.tflite` file (single input).
        x: inputs, shape `(N, *input_shape)`.
        batch_size: samples per invoke; the last batch may be smaller.

    Returns:
        `np.ndarray` (float32; int8 outputs dequantized), shape `(N, ...)`.

    Raises:
        FileNotFoundError: if `path` is not a file.
        ValueError: if `x` is empty or does not fit the model's input shape.
        ImportError: if `ai_edge_litert` is not installed.

    Example:
    >>> logits = keras_compress.export.litert_predict("runs/model_int8.tflite", x_test)
    """
    return LiteRTModel(path).predict(x, batch_size=batch_size)
