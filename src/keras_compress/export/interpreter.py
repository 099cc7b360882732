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


def _signature_order(name):
    """Sort key of a signature tensor name: `output_10` after `output_9`."""
    head, _, tail = name.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (name, -1)


def _signature_indices(interpreter):
    """{name: tensor index} of the inputs and outputs of a file's only signature, or `None`.

    The signature runner is dropped before returning: while it lives, the
    interpreter refuses to allocate tensors again (it holds their buffers).
    """
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        return None
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    inputs = {name: d["index"] for name, d in runner.get_input_details().items()}
    outputs = {name: d["index"] for name, d in runner.get_output_details().items()}
    del runner
    return inputs, outputs


class LiteRTModel:
    """A `.tflite` file in a LiteRT interpreter, with batched NumPy inference.

    Float inputs are quantized for an int8 input tensor, and int8 outputs
    dequantized, with the tensors' own scale and zero point, so a model
    exported with `int8_io=True` is used like any other. A model with
    several inputs takes a dict by input name (the Keras input names, kept
    in the file's signature) or a list in `input_names` order; several
    outputs come back as a list in the Keras model's output order.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads; `None` lets LiteRT choose.

    Raises:
        FileNotFoundError: if `path` is not a file.
        ValueError: if `num_threads` is not a positive integer.
        ImportError: if `ai_edge_litert` is not installed.

    Example:
    >>> runtime = keras_compress.export.LiteRTModel("runs/model_int8.tflite")
    >>> runtime.predict(x_test[:8]).shape
    (8, 10)
    >>> LiteRTModel("two_inputs.tflite").predict({"image": images, "meta": features})
    """

    def __init__(self, path, num_threads=None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No LiteRT model file at path={path!r}")
        if num_threads is not None:
            num_threads = _positive_int("num_threads", num_threads)
        self._module = _require("ai_edge_litert.interpreter", "LiteRT inference")
        self.path = path
        self._num_threads = num_threads
        self.xnnpack = True  # False once XNNPACK refused the graph and the builtin kernels run it
        self.fallback_reason = None
        self._interpreter = self._make_interpreter()
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        by_index = {d["index"]: d for d in inputs + outputs}
        named = _signature_indices(self._interpreter)
        if named is not None:
            named_in, named_out = named
            self._inputs = [(name, by_index[named_in[name]]) for name in sorted(named_in)]
            self._outputs = [(name, by_index[named_out[name]]) for name in sorted(named_out, key=_signature_order)]
        else:  # no signature: the tensors' own names and order
            self._inputs = [(d["name"].split(":")[0], d) for d in inputs]
            self._outputs = [(d["name"].split(":")[0], d) for d in outputs]
        self._input = self._inputs[0][1]
        self._shapes = None  # the input shapes last allocated by `_set_input_shapes`
        with quiet.native_stderr_filtered():
            self._interpreter.allocate_tensors()

    def _make_interpreter(self, default_delegates=True):
        kwargs = {"model_path": self.path, "num_threads": self._num_threads}
        if not default_delegates:
            kwargs["experimental_op_resolver_type"] = self._module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        # The interpreter announces its XNNPACK delegate on stderr: quiet on the CLI.
        with quiet.native_stderr_filtered():
            return self._module.Interpreter(**kwargs)

    def _run(self, feeds):
        """Sets each input (`[(detail, array)]`) and invokes once.

        XNNPACK, the interpreter's default CPU delegate, prepares its part of
        the graph on the first invoke and refuses some int8 graphs there
        (an unrolled LSTM's gate arithmetic: "failed to create XNNPACK
        runtime"). The file is still valid LiteRT: it is then run on the
        interpreter's own builtin kernels (`xnnpack` becomes False and
        `fallback_reason` says why), as a runtime without XNNPACK would.
        """
        for detail, values in feeds:
            self._interpreter.set_tensor(detail["index"], values)
        try:
            self._interpreter.invoke()
        except RuntimeError as error:
            if not self.xnnpack or "XNNPACK" not in str(error):
                raise
            self.xnnpack = False
            self.fallback_reason = " ".join(str(error).split())[:200]
            self._interpreter = self._make_interpreter(default_delegates=False)
            self._shapes = None
            self._set_input_shapes([values for _, values in feeds])
            for detail, values in feeds:
                self._interpreter.set_tensor(detail["index"], values)
            self._interpreter.invoke()

    def __repr__(self):
        return (
            f"LiteRTModel({self.path!r}, inputs={self.input_names}, input_shape={self.input_shape}, "
            f"input_dtype={np.dtype(self.input_dtype).name})"
        )

    @property
    def input_names(self):
        """The inputs' names (the Keras model's input names), in the order a list of inputs is read."""
        return [name for name, _ in self._inputs]

    @property
    def output_names(self):
        """The outputs' names in the file's signature (`output_0`, ... in the Keras model's order)."""
        return [name for name, _ in self._outputs]

    @staticmethod
    def _shape_of(detail):
        return tuple(None if d < 0 else int(d) for d in detail["shape_signature"][1:])

    @property
    def input_shape(self):
        """Per-sample shape of the (first) input (batch axis dropped); `None` for a free size."""
        return self._shape_of(self._input)

    @property
    def input_dtype(self):
        """The (first) input tensor's NumPy dtype (`np.float32`, or `np.int8` for int8 I/O)."""
        return self._input["dtype"]

    @property
    def interpreter(self):
        """The underlying `ai_edge_litert.interpreter.Interpreter`."""
        return self._interpreter

    def _fixed_batch(self):
        batch = int(self._input["shape_signature"][0])
        return batch if batch > 0 else None

    def _set_input_shapes(self, arrays):
        """Resizes the input tensors to the arrays' shapes, only when they change (allocation costs)."""
        shapes = [tuple(values.shape) for values in arrays]
        if shapes == self._shapes:
            return
        for (_, detail), shape in zip(self._inputs, shapes):
            self._interpreter.resize_tensor_input(detail["index"], list(shape))
        self._interpreter.allocate_tensors()
        self._shapes = shapes

    @staticmethod
    def _quantize(values, detail):
        dtype = detail["dtype"]
        if _is_integer(dtype) and not _is_integer(values.dtype):
            scale, zero_point = detail["quantization"]
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

    def _arrays(self, x):
        """The inputs as a list in `input_names` order, each checked against its tensor's shape."""
        names = self.input_names
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(f"inputs {missing} missing: this LiteRT model takes {names}. "
                                 f"Received keys: {sorted(x)}")
            arrays = [np.asarray(x[n]) for n in names]
        elif isinstance(x, (list, tuple)):
            if len(x) != len(names):
                raise ValueError(f"this LiteRT model takes {len(names)} input(s) {names}. Received: {len(x)}")
            arrays = [np.asarray(a) for a in x]
        else:
            if len(names) != 1:
                raise ValueError(f"this LiteRT model takes {len(names)} inputs {names}: pass a dict by name "
                                 "or a list in that order")
            arrays = [np.asarray(x)]
        for array, (_, detail) in zip(arrays, self._inputs):
            if array.ndim == 0 or len(array) == 0:
                raise ValueError(f"x must hold at least one sample. Received: x.shape={array.shape}")
            _check_fits(array.shape[1:], self._shape_of(detail))
        if len({len(a) for a in arrays}) != 1:
            raise ValueError(f"every input must hold the same number of samples. Received: "
                             f"{[len(a) for a in arrays]}")
        return arrays

    def predict(self, x, batch_size=256):
        """Runs the model on `x` in batches; returns float outputs.

        Args:
            x: inputs, shape `(N, *input_shape)`, N >= 1; for several inputs a dict by
                name or a list in `input_names` order.
            batch_size: samples per invoke. A model exported with a fixed
                batch size uses that size instead (padding the last batch).

        Returns:
            `np.ndarray` of shape `(N, ...)` (float32, int8 outputs
            dequantized); a list of them, in the Keras model's order, for a multi-output model.

        Raises:
            ValueError: if `x` is empty or a sample does not fit the input
                shape, or `batch_size` is not a positive integer.

        Example:
        >>> LiteRTModel("runs/model_float32.tflite").predict(x_test, batch_size=128)
        """
        batch_size = _positive_int("batch_size", batch_size)
        arrays = self._arrays(x)
        fixed_batch = self._fixed_batch()
        if fixed_batch:
            batch_size = fixed_batch
        total = len(arrays[0])
        results = [[] for _ in self._outputs]
        for start in range(0, total, batch_size):
            chunks = [a[start : start + batch_size] for a in arrays]
            count = len(chunks[0])
            if fixed_batch and count < fixed_batch:
                chunks = [np.concatenate([c, np.zeros((fixed_batch - count, *c.shape[1:]), c.dtype)])
                          for c in chunks]
            self._set_input_shapes(chunks)
            self._run([(detail, self._quantize(chunk, detail)) for chunk, (_, detail) in zip(chunks, self._inputs)])
            for result, (_, detail) in zip(results, self._outputs):
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
        rng = np.random.default_rng(0)
        samples = []
        for name, detail in self._inputs:
            shape = self._shape_of(detail)
            if None in shape:
                raise ValueError(
                    "latency needs a static input shape besides the batch axis. "
                    f"Received: input {name!r} of shape {shape}"
                )
            shape = (self._fixed_batch() or batch_size, *shape)
            dtype = detail["dtype"]
            if not _is_integer(dtype):
                sample = rng.standard_normal(shape).astype(dtype)
            elif detail["quantization"][0]:
                info = np.iinfo(dtype)
                sample = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
            else:  # integer ids (e.g. tokens): zeros are always in range
                sample = np.zeros(shape, dtype)
            samples.append(sample)
        self._set_input_shapes(samples)
        self._run([(detail, sample) for sample, (_, detail) in zip(samples, self._inputs)])  # XNNPACK or not
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
        path: the `.tflite` file.
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
