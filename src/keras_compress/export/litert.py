"""LiteRT (TFLite) export, and (re-exported here) batched inference on the exported file.

Export goes through Keras's own `model.export(path, format="litert")`: what
this module adds is validation of everything before anything is written and
atomic writes. The converter settings of each format live in `converter`,
the route for the JAX backend (Keras converts to LiteRT under TensorFlow
only, so the model is saved and converted in a TensorFlow-backend
subprocess) in `subprocess_export`, the interpreter wrapper in `interpreter`
and the accuracy and latency measurements in `measure`; their public names
are importable from here too.

TensorFlow and `ai_edge_litert` are imported inside the functions that need
them; importing this module loads NumPy and Keras only.
"""

import contextlib
import os
import tempfile

import numpy as np

from keras_compress.export.config import LITERT_FORMATS

from keras_compress.core.samples import (  # noqa: F401 - the one checker, shared with QAT's calibration
    _checked_samples, _dtype_of, _input_names, _named_calibration)
from keras_compress.evaluate import _check_fits, _model_input_shape, _positive_int
# `_write_atomically` looks both converters up here, so a test can patch them on this module.
from keras_compress.export.converter import ConversionError, _convert_in_process, _Job  # noqa: F401 - ConversionError re-exported
from keras_compress.export.interpreter import LiteRTModel, litert_predict  # noqa: F401 - re-exported
from keras_compress.export.recurrent import unrolled
from keras_compress.export.measure import litert_accuracy, litert_latency  # noqa: F401 - re-exported
from keras_compress.export.subprocess_export import _convert_in_subprocess

FORMATS = LITERT_FORMATS  # one list, in export/config.py (recipes read it without TensorFlow)


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
        return _dtype_of(model.inputs[0])
    except (AttributeError, IndexError):
        return np.float32


def _calibration_samples(model, representative_data, num_calibration_samples):
    """Validates calibration data; returns its first samples, ready to feed (a dict by name for several inputs)."""
    num_calibration_samples = _positive_int(
        "num_calibration_samples", num_calibration_samples
    )
    if representative_data is not None and len(_input_names(model)) > 1:
        return _named_calibration(model, representative_data, num_calibration_samples)
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
    return _checked_samples(data, _model_input_shape(model), num_calibration_samples, _calibration_dtype(model),
                            "representative_data")


# --------------------------------------------------------------------------
# Writing


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


def flex_ops(path):
    """The TensorFlow ops (Flex) a `.tflite` file calls: names such as `"FlexTensorListReserve"`, sorted.

    Such a file runs only with the Select TensorFlow ops (Flex) delegate,
    not on the stock LiteRT interpreter. Empty for a file of builtin ops.

    Example:
    >>> keras_compress.export.flex_ops("runs/model_float32.tflite")
    []
    """
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.Model.GetRootAs(f.read(), 0)
    names = set()
    for i in range(model.OperatorCodesLength()):
        custom = model.OperatorCodes(i).CustomCode()
        if custom is not None and custom.decode("utf-8", "replace").startswith("Flex"):
            names.add(custom.decode("utf-8", "replace"))
    return sorted(names)


def _check_runs(job, temp_path, model):
    """Raises (and so writes nothing) when the stock LiteRT interpreter cannot load the file.

    The converter falls back to TensorFlow ops (Flex) where LiteRT has no
    builtin kernel, recurrent layers' TensorList loops above all: the file
    is written, but `ai_edge_litert`'s interpreter refuses it. A user should
    hear that at export, not on the device. With `select_tf_ops` the user
    asked for such a file: one that calls Flex ops is not checked here.
    """
    if job.select_tf_ops and flex_ops(temp_path):
        return
    try:
        runtime = LiteRTModel(temp_path)
        try:
            runtime.latency(batch_size=1, runs=1, warmup=0)  # one invoke: delegates prepare on the first
        except ValueError as error:
            if "static input shape" not in str(error):  # a free length: allocation was the check
                raise
    except (RuntimeError, ValueError) as error:
        from keras_compress.export.recurrent import recurrent_layers

        detail = " ".join(str(error).split())[:300]
        recurrent = [layer.name for layer in recurrent_layers(model)]
        hint = (
            f"Recurrent layers ({', '.join(recurrent)}) over a variable sequence length convert to TensorFlow "
            "ops it lacks: give the model a fixed sequence length (keras.Input((steps, features))), and export "
            "unrolls them into builtin ops." if recurrent else
            "Some op of the model has no builtin LiteRT kernel; strip the model (keras_compress.strip) before a "
            "float or PTQ export, so that no compression state is left in its calls."
        )
        raise ValueError(
            f"the {job.fmt} LiteRT file would not run on the LiteRT interpreter ({detail}). {hint} "
            "To write it anyway for a runtime with the Select TensorFlow ops (Flex) delegate, pass "
            "select_tf_ops=True (CLI: --select-tf-ops; recipe export step: select_tf_ops: true)."
        ) from None


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
        from keras_compress.clustering.api import shared_values_for_export

        # Recurrent layers over a fixed length (builtin ops, int8 kernels); nearest-centroid weights as constants.
        with unrolled(model), shared_values_for_export(model):
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
            _check_runs(job, temp_path, model)
        for job, temp_path in zip(jobs, temp_paths):
            os.replace(temp_path, job.path)
    finally:
        for temp_path in temp_paths:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temp_path)


def export_litert(model, path, fmt="float32", representative_data=None,
                  num_calibration_samples=256, int8_io=False, per_channel=True, select_tf_ops=False):
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
        per_channel: for calibrated `fmt="int8"`: one weight scale per
            output channel (the default, most accurate) or, with `False`,
            one per tensor. A model clustered per tensor keeps its
            `num_clusters` shared values as that many int8 values, which
            compresses better (LeNet-5 pruned and clustered: 16,977 gzip
            bytes against 20,676, at the same accuracy; BENCHMARKS, "Deep
            Compression"). A QAT model's scales are its `QATConfig`'s.
        select_tf_ops: let the converter use TensorFlow ops (Flex) where
            LiteRT has no builtin kernel (a recurrent layer over a variable
            sequence length, for one). Off by default: such a file needs the
            Select TensorFlow ops delegate, which the stock interpreter
            lacks, so export refuses it and says why. `flex_ops(path)` lists
            the TensorFlow ops a file calls.

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
    if not isinstance(per_channel, bool):
        raise ValueError(f"per_channel must be true or false. Received: per_channel={per_channel!r}")
    if not isinstance(select_tf_ops, bool):
        raise ValueError(f"select_tf_ops must be true or false. Received: select_tf_ops={select_tf_ops!r}")
    _check_model(model)
    calibration = None
    qat = _qat_job_settings(model, fmt)
    if not per_channel and (fmt != "int8" or qat):
        raise ValueError(
            "per_channel=False sets the weight scales of a calibrated int8 export; a QAT model's scales are "
            f"its QATConfig's (QATConfig(per_channel=False)), and other formats have none. Received: fmt={fmt!r}"
            + (", a QAT model" if qat else ""))
    if fmt == "int8" and not qat:
        calibration = _calibration_samples(model, representative_data, num_calibration_samples)
    _write_atomically(model, [_Job(fmt, path, calibration, bool(int8_io), qat, per_channel, select_tf_ops)])
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
