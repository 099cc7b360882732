"""LiteRT (TFLite) export, and batched inference on the exported file.

Export goes through Keras's own `model.export(path, format="litert")`: what
this module adds is the converter settings of each format, validation of
everything before anything is written, atomic writes, and a route for the
JAX backend (Keras converts to LiteRT under TensorFlow only, so the model is
saved and converted in a TensorFlow-backend subprocess).

TensorFlow and `ai_edge_litert` are imported inside the functions that need
them; importing this module loads NumPy and Keras only.
"""

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

from keras_compress.evaluate import (
    _check_fits,
    _model_input_shape,
    _positive_int,
    _top1_accuracy,
)

FORMATS = ("float32", "float16", "dynamic_int8", "int8")
_INSTALL_HINT = 'Install it with: pip install "keras-compress[export]"'
_STDERR_TAIL_LINES = 25
# The folder holding the `keras_compress` package: the export subprocess must
# import this very copy, whatever is installed elsewhere.
_PACKAGE_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
_CHILD_PROGRAM = """
import json, sys
spec_path = sys.argv[1]
with open(spec_path) as f:
    spec = json.load(f)
sys.path.insert(0, spec["package_root"])
sys.path.extend(p for p in spec["sys_path"] if p not in sys.path)
from keras_compress.export.litert import _child_main
_child_main(spec)
"""


@dataclasses.dataclass(frozen=True)
class _Job:
    """One artifact to write: validated settings, calibration samples ready."""

    fmt: str
    path: str
    calibration: object = None  # np.ndarray of samples for "int8", else None
    int8_io: bool = False
    qat: bool = False  # "int8" from a QAT model: its trained ranges, no calibration


def _require(module_name, purpose):
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the `{module_name}` package, which could not be "
            f"imported ({error}). {_INSTALL_HINT}"
        ) from error


def _import_tensorflow():
    if "tensorflow" not in sys.modules:
        # TF's C++ logging reads this once, when TensorFlow loads.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return _require("tensorflow", "LiteRT export")


# --------------------------------------------------------------------------
# Validation


def _check_format(fmt):
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ValueError(
            f"Unknown LiteRT format. Allowed: {list(FORMATS)}. Received: fmt={fmt!r}"
        )


def _check_path(path):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(
            f"path must be a str or os.PathLike. Received: path={path!r}"
        ) from None
    if not isinstance(path, str) or not path.endswith(".tflite"):
        raise ValueError(
            f"A LiteRT artifact's path must end with '.tflite'. Received: path={path!r}"
        )
    if os.path.isdir(path):
        raise ValueError(f"path names a folder, not a file. Received: path={path!r}")
    return path


def _check_model(model):
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            "LiteRT export needs a keras.Model (Sequential, Functional or "
            f"subclassed). Received: {type(model).__name__}"
        )


def _calibration_dtype(model):
    # Integer inputs (token ids) are calibrated with integers; the rest with
    # float32, which is what the converter feeds a float model.
    try:
        dtype = np.dtype(str(model.inputs[0].dtype))
    except (AttributeError, IndexError, TypeError, ValueError):
        return np.float32
    return dtype if np.issubdtype(dtype, np.integer) else np.float32


def _calibration_samples(model, representative_data, num_calibration_samples):
    """Validates calibration data; returns its first samples, ready to feed."""
    num_calibration_samples = _positive_int(
        "num_calibration_samples", num_calibration_samples
    )
    if representative_data is None:
        raise ValueError(
            "fmt='int8' (full integer quantization) needs representative_data: "
            "typical inputs, shape (N, *input_shape), from which the converter "
            "measures activation ranges. Received: representative_data=None"
        )
    try:
        data = np.asarray(representative_data)
    except (TypeError, ValueError) as error:
        raise ValueError(
            "representative_data must be an array of samples, shape "
            f"(N, *input_shape). It could not be read as one: {error}"
        ) from None
    if data.ndim == 0 or data.size == 0:
        raise ValueError(
            "The calibration sample is empty: representative_data must hold at "
            "least 1 sample, shape (N, *input_shape) with N >= 1. "
            f"Received: representative_data.shape={data.shape}"
        )
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ValueError(
            "representative_data must be numeric (integer or floating point). "
            f"Received: representative_data.dtype={data.dtype}"
        )
    _check_fits(data.shape[1:], _model_input_shape(model), what="representative_data sample")
    data = data[:num_calibration_samples]
    finite = np.isfinite(data).reshape(len(data), -1).all(axis=1)
    if not finite.all():
        raise ValueError(
            "representative_data must be finite: "
            f"{int((~finite).sum())} of the {len(data)} calibration samples "
            f"hold NaN or inf (first: sample {int(np.argmin(finite))})."
        )
    return np.ascontiguousarray(data, dtype=_calibration_dtype(model))


# --------------------------------------------------------------------------
# Conversion


def _converter_kwargs(tf, job):
    """Keras forwards these to `tf.lite.TFLiteConverter` attributes."""
    if job.fmt == "float32":
        return {}
    kwargs = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if job.fmt == "float16":
        kwargs["target_spec"] = {"supported_types": [tf.float16]}
    elif job.fmt == "int8" and job.qat:
        # The graph carries fake-quantization ops with the trained ranges;
        # the converter makes each an int8 tensor with exactly that range.
        if job.int8_io:
            kwargs["inference_input_type"] = tf.int8
            kwargs["inference_output_type"] = tf.int8
    elif job.fmt == "int8":
        samples = job.calibration

        def representative_dataset():
            for i in range(len(samples)):
                yield [samples[i : i + 1]]

        kwargs["representative_dataset"] = representative_dataset
        kwargs["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
        if job.int8_io:
            kwargs["inference_input_type"] = tf.int8
            kwargs["inference_output_type"] = tf.int8
    return kwargs


@contextlib.contextmanager
def _quiet_tensorflow(tf):
    """Hides TensorFlow's chatter during a conversion; replays it on failure.

    The converter's C++ code writes to file descriptor 2 directly (e.g.
    "fully_quantize: 0, inference_type: 6, ..."), which neither Python's
    logging nor TF_CPP_MIN_LOG_LEVEL (read once, at import) can silence; so fd
    2 is pointed at a temporary file. Output of other threads in that window
    is held back the same way: a cost of doing it at the descriptor level.
    """
    logger = tf.get_logger()
    logger_level = logger.level
    logger.setLevel("ERROR")
    try:
        from absl import logging as absl_logging
    except ImportError:  # absl ships with TensorFlow; be safe anyway
        absl_logging = None
    if absl_logging is not None:
        absl_verbosity = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        with contextlib.ExitStack() as stack:
            try:
                saved_fd = os.dup(2)
            except OSError:  # no usable stderr (some embedded interpreters)
                saved_fd = None
            if saved_fd is None:
                yield
                return
            sink = stack.enter_context(tempfile.TemporaryFile())
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
            failed = False
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
                if failed:
                    sink.seek(0)
                    captured = sink.read()[-20000:]
                    if captured:
                        os.write(2, captured)
    finally:
        logger.setLevel(logger_level)
        if absl_logging is not None:
            absl_logging.set_verbosity(absl_verbosity)


def _convert_in_process(model, job, out_path):
    tf = _import_tensorflow()
    with _quiet_tensorflow(tf), _qat_mode(model, job):
        model.export(out_path, format="litert", verbose=False, **_converter_kwargs(tf, job))


@contextlib.contextmanager
def _qat_mode(model, job):
    """A QAT model exports its fake quantization for "int8", and its float
    (folded) self for the other formats."""
    from keras_compress.quantization import api as qat

    state = qat.get_state(model)
    if state is None:
        yield
    elif job.qat:
        state.exporting = True
        try:
            yield
        finally:
            state.exporting = False
    else:
        restore = qat.detach_for_saving(model)
        try:
            yield
        finally:
            restore()


def _import_modules_named_in(keras_path):
    """Imports the modules that define the custom objects of a saved model.

    A custom layer is found at load time only if the module registering it
    (`keras.saving.register_keras_serializable`) has been imported; the
    subprocess has imported nothing yet, so it imports what the config names.
    """
    with zipfile.ZipFile(keras_path) as archive:
        config = json.loads(archive.read("config.json"))
    modules = set()
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            module = node.get("module")
            if isinstance(module, str) and module.split(".")[0] not in {
                "keras", "builtins", "__main__",
            }:
                modules.add(module)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    for module in sorted(modules):
        # A module that fails to import is reported by load_model below,
        # with the name of the class it could not find.
        with contextlib.suppress(Exception):
            importlib.import_module(module)


def _call_once_if_subclassed(model):
    """Calls a reloaded subclassed model once on zeros of its build shape.

    Keras exports a subclassed model only once it has been called (that is
    how it learns the input signature); loading builds it but does not call
    it. Sequential and Functional models carry their inputs and need nothing.
    """
    import keras

    try:
        model.inputs
        return
    except AttributeError:
        pass
    input_shape = (model.get_build_config() or {}).get("input_shape")
    if not isinstance(input_shape, (list, tuple)) or not all(
        d is None or isinstance(d, int) for d in input_shape
    ):
        return  # nested or unknown input structure: let Keras's export report it
    shape = [1] + [1 if d is None else d for d in input_shape[1:]]
    model(keras.ops.zeros(shape, dtype=model.input_dtype), training=False)


def _child_main(spec):
    """Entry point of the TensorFlow-backend export subprocess."""
    import keras

    _import_modules_named_in(spec["model"])
    # safe_mode=False: the file was written a moment ago by our own parent.
    model = keras.saving.load_model(spec["model"], compile=False, safe_mode=False)
    _call_once_if_subclassed(model)
    # Float formats first: QAT (for "int8" from a QAT model) changes the model.
    for item in sorted(spec["jobs"], key=lambda item: item["qat"]):
        if item["qat"]:
            from keras_compress.quantization import api as qat
            from keras_compress.quantization.config import QATConfig

            if not qat.is_quantized(model):
                qat.quantize(model, QATConfig.from_dict(spec["qat"]["config"]))
                qat.set_quantization_ranges(model, spec["qat"]["ranges"])
        calibration = np.load(item["calibration"]) if item["calibration"] else None
        job = _Job(item["fmt"], item["path"], calibration, item["int8_io"], item["qat"])
        _convert_in_process(model, job, item["path"])


def _convert_in_subprocess(model, jobs, out_paths):
    import keras

    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError(
            "LiteRT export needs the `tensorflow` package (the converter), "
            f"which is not installed. {_INSTALL_HINT}"
        )
    backend = keras.backend.backend()
    with tempfile.TemporaryDirectory(prefix="keras_compress_export_") as work:
        model_path = os.path.join(work, "model.keras")
        qat_spec = _save_for_child(model, model_path)
        saved_calibration = {}
        spec_jobs = []
        for job, out_path in zip(jobs, out_paths):
            calibration_path = None
            if job.calibration is not None:
                key = id(job.calibration)
                if key not in saved_calibration:
                    saved_calibration[key] = os.path.join(
                        work, f"calibration{len(saved_calibration)}.npy"
                    )
                    np.save(saved_calibration[key], job.calibration)
                calibration_path = saved_calibration[key]
            spec_jobs.append({"fmt": job.fmt, "path": out_path, "qat": job.qat,
                              "calibration": calibration_path, "int8_io": job.int8_io})
        spec = {
            "model": model_path,
            "qat": qat_spec,
            "jobs": spec_jobs,
            "package_root": _PACKAGE_ROOT,
            # Appended in the child, so modules importable here (a user's
            # custom layers) are importable there without shadowing anything.
            "sys_path": [p for p in sys.path if p],
        }
        spec_path = os.path.join(work, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        env = dict(os.environ, KERAS_BACKEND="tensorflow",
                   # The converter needs no accelerator, and this process's
                   # backend may be holding it.
                   CUDA_VISIBLE_DEVICES="")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        result = subprocess.run(
            [sys.executable, "-c", _CHILD_PROGRAM, spec_path],
            env=env, capture_output=True, text=True, check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-_STDERR_TAIL_LINES:])
        raise RuntimeError(
            f"LiteRT export failed. Keras converts to LiteRT only under the "
            f"TensorFlow backend, so this {backend}-backend model was saved and "
            f"converted in a TensorFlow subprocess, which exited with code "
            f"{result.returncode}. Custom layers must be registered with "
            "keras.saving.register_keras_serializable in an importable module "
            "(not __main__) to load there. Last lines of its stderr:\n" + tail
        )


def _save_for_child(model, model_path):
    """Saves `model` for the TensorFlow subprocess; returns its QAT spec or None.

    A QAT model is saved without its fake quantization (folded, float) and
    its trained ranges travel beside it; the subprocess quantizes the loaded
    model again with the same config and sets those ranges.
    """
    from keras_compress.quantization import api as qat

    state = qat.get_state(model)
    if state is None:
        model.save(model_path)
        return None
    if callable(state.config.layers):
        raise ValueError(
            "A QAT model whose QATConfig.layers is a callable cannot be exported under "
            f"the {_backend_name()} backend (the TensorFlow subprocess needs the config "
            "as data): use a regex for layers, or export under TensorFlow."
        )
    spec = {"config": state.config.to_dict(), "ranges": qat.quantization_ranges(model)}
    restore = qat.detach_for_saving(model)
    try:
        model.save(model_path)
    finally:
        restore()
    return spec


def _backend_name():
    import keras

    return keras.backend.backend()


def _qat_job_settings(model, fmt):
    """For "int8" from a QAT model: no calibration, and every range observed."""
    from keras_compress.quantization import api as qat

    if fmt != "int8" or not qat.is_quantized(model):
        return False
    state = qat.get_state(model)
    if not state.config.deployable:
        raise ValueError(
            "This QAT model simulates "
            f"{state.config.weight_bits}-bit weights and {state.config.activation_bits}-bit "
            "activations; LiteRT stores int8 only, so it cannot be exported at that width. "
            "Export fmt='float32' (float weights on the coarse grid) or train with 8 bits."
        )
    qat.check_ranges_observed(model)
    return True


def _write_atomically(model, jobs):
    """Converts every job to a temporary file, then moves each into place.

    Temporary files sit beside their targets (so `os.replace` is atomic) and
    are removed whatever happens: a failure leaves no half-written artifact,
    and an existing file at a target path stays untouched.
    """
    import keras

    temp_paths = []
    try:
        for job in jobs:
            folder = os.path.dirname(os.path.abspath(job.path))
            os.makedirs(folder, exist_ok=True)
            fd, temp_path = tempfile.mkstemp(
                dir=folder, prefix=os.path.basename(job.path) + ".tmp-", suffix=".tflite"
            )
            os.close(fd)
            temp_paths.append(temp_path)
        if keras.backend.backend() == "tensorflow":
            for job, temp_path in zip(jobs, temp_paths):
                _convert_in_process(model, job, temp_path)
        else:
            _convert_in_subprocess(model, jobs, temp_paths)
        # mkstemp makes files readable by their owner only; give the artifact
        # the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        for job, temp_path in zip(jobs, temp_paths):
            if os.path.getsize(temp_path) == 0:
                raise RuntimeError(
                    f"The LiteRT converter wrote nothing for fmt={job.fmt!r}."
                )
            os.chmod(temp_path, 0o666 & ~umask)
        for job, temp_path in zip(jobs, temp_paths):
            os.replace(temp_path, job.path)
    finally:
        for temp_path in temp_paths:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temp_path)


def export_litert(model, path, fmt="float32", representative_data=None,
                  num_calibration_samples=256, int8_io=False):
    """Exports a Keras model to a LiteRT (`.tflite`) file.

    Formats:
    - `"float32"`: no quantization; outputs match Keras to float rounding.
    - `"float16"`: weights stored as float16 (half the size), computed in
      float32.
    - `"dynamic_int8"`: weights stored as int8, activations quantized on the
      fly; no calibration data needed.
    - `"int8"`: full integer quantization; weights and activations are int8,
      with activation ranges calibrated on `representative_data`. Inputs and
      outputs stay float32 unless `int8_io=True`. For a model prepared by
      `keras_compress.quantize` (QAT), the ranges learned in training are
      used instead and `representative_data` is not needed.

    Everything is validated before anything is written; the file is written
    to a temporary name and renamed into place, so a failure leaves no
    partial file. Under a backend other than TensorFlow, the model is saved
    and converted in a TensorFlow-backend subprocess.

    Args:
        model: a built `keras.Model`: Sequential, Functional or subclassed,
            with one input.
        path: where to write; must end with `.tflite`. Missing folders are
            created.
        fmt: one of `FORMATS`.
        representative_data: for `fmt="int8"`, typical inputs, shape
            `(N, *input_shape)`; ignored by the other formats.
        num_calibration_samples: how many of the first samples of
            `representative_data` calibrate `"int8"` (fed one at a time).
        int8_io: for `fmt="int8"` only: make the model's input and output
            tensors int8 too (for integer-only accelerators).
            `litert_predict` quantizes and dequantizes them for you.

    Returns:
        `path`, as a `str`.

    Raises:
        ValueError: for an unknown `fmt`, a path not ending with `.tflite`,
            `int8_io` without `fmt="int8"`, or, for `"int8"`, missing, empty,
            non-numeric, wrongly shaped or non-finite `representative_data`.
        TypeError: if `model` is not a `keras.Model`.
        ImportError: if TensorFlow is not installed.
        RuntimeError: if the TensorFlow subprocess (non-TensorFlow backends)
            fails; the message ends with its last stderr lines.

    Example:
    >>> (x, y), _ = keras_compress.datasets.load("mnist")
    >>> keras_compress.export.export_litert(
    ...     model, "runs/lenet5_int8.tflite", "int8", representative_data=x[:512])
    'runs/lenet5_int8.tflite'
    """
    path = _check_path(path)
    _check_format(fmt)
    num_calibration_samples = _positive_int("num_calibration_samples", num_calibration_samples)
    if int8_io and fmt != "int8":
        raise ValueError(
            "int8_io=True makes the input and output tensors int8, which only "
            f"full integer quantization does: use fmt='int8'. Received: fmt={fmt!r}"
        )
    _check_model(model)
    calibration = None
    qat = _qat_job_settings(model, fmt)
    if fmt == "int8" and not qat:
        calibration = _calibration_samples(model, representative_data, num_calibration_samples)
    _write_atomically(model, [_Job(fmt, path, calibration, bool(int8_io), qat)])
    return path


def export_all(model, out_dir, formats, representative_data=None, stem="model"):
    """Exports a model in several LiteRT formats at once.

    Writes `{out_dir}/{stem}_{fmt}.tflite` for each format. All formats are
    validated first, and every file is moved into place only once all have
    converted. Under a non-TensorFlow backend a single subprocess converts
    them all.

    Args:
        model: a built, single-input `keras.Model`.
        out_dir: the folder to write into (created if missing).
        formats: format names from `FORMATS` (or one name as a `str`).
        representative_data: calibration inputs, required when `formats`
            includes `"int8"` (its first 256 samples are used).
        stem: the file-name prefix.

    Returns:
        `dict` mapping each format to the path written, in `formats` order.

    Raises:
        ValueError: for an empty or unknown format, a bad `stem`, or bad
            calibration data (see `export_litert`).
        TypeError: if `model` is not a `keras.Model`.
        ImportError: if TensorFlow is not installed.
        RuntimeError: if the TensorFlow subprocess fails.

    Example:
    >>> paths = keras_compress.export.export_all(
    ...     model, "runs/lenet5", keras_compress.export.FORMATS, representative_data=x[:512])
    >>> paths["int8"]
    'runs/lenet5/model_int8.tflite'
    """
    if isinstance(formats, str):
        formats = (formats,)
    formats = list(dict.fromkeys(formats))
    if not formats:
        raise ValueError(f"formats must name at least one of {list(FORMATS)}. Received: formats=[]")
    for fmt in formats:
        _check_format(fmt)
    if not isinstance(stem, str) or not stem or os.sep in stem or (os.altsep and os.altsep in stem):
        raise ValueError(
            f"stem must be a non-empty file name without folders. Received: stem={stem!r}"
        )
    out_dir = os.fspath(out_dir)
    _check_model(model)
    calibration = None
    qat = _qat_job_settings(model, "int8") if "int8" in formats else False
    if "int8" in formats and not qat:
        calibration = _calibration_samples(model, representative_data, 256)
    jobs = [
        _Job(fmt, os.path.join(out_dir, f"{stem}_{fmt}.tflite"),
             calibration if fmt == "int8" else None, False, qat and fmt == "int8")
        for fmt in formats
    ]
    _write_atomically(model, jobs)
    return {job.fmt: job.path for job in jobs}


# --------------------------------------------------------------------------
# Inference


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
