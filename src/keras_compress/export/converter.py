"""The TensorFlow LiteRT converter: its settings per format, run in this process.

Keras's own `model.export(path, format="litert")` does the conversion; this
module gives it the `tf.lite.TFLiteConverter` settings of each format, puts
a QAT model in the right mode, and keeps TensorFlow's chatter off stderr
unless the conversion fails. It runs only under the TensorFlow backend:
`subprocess_export` brings other backends' models here, and `litert`
validates and writes the files.

TensorFlow is imported inside the functions that need it.
"""

import contextlib
import dataclasses
import os
import sys
import tempfile

from keras_compress.export.deps import _import_tensorflow


@dataclasses.dataclass(frozen=True)
class _Job:
    """One artifact to write: validated settings, calibration samples ready."""

    fmt: str
    path: str
    calibration: object = None  # np.ndarray of samples for "int8" (a dict by input name for several), else None
    int8_io: bool = False
    qat: bool = False  # "int8" from a QAT model: its trained ranges, no calibration
    per_channel: bool = True  # PTQ "int8": one weight scale per output channel (False: one per tensor)
    select_tf_ops: bool = False  # TensorFlow ops (Flex) allowed where LiteRT has no builtin kernel


def _converter_kwargs(tf, job):
    """Keras forwards these to `tf.lite.TFLiteConverter` attributes."""
    kwargs = _format_kwargs(tf, job)
    if job.select_tf_ops:
        spec = dict(kwargs.get("target_spec", {}))
        builtins = spec.get("supported_ops", [tf.lite.OpsSet.TFLITE_BUILTINS])
        spec["supported_ops"] = [*builtins, tf.lite.OpsSet.SELECT_TF_OPS]
        kwargs["target_spec"] = spec
    return kwargs


def _format_kwargs(tf, job):
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
            if isinstance(samples, dict):  # several inputs: by the signature's (Keras's) input names
                for i in range(len(next(iter(samples.values())))):
                    yield {name: values[i : i + 1] for name, values in samples.items()}
                return
            for i in range(len(samples)):
                yield [samples[i : i + 1]]

        kwargs["representative_dataset"] = representative_dataset
        kwargs["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
        if not job.per_channel:
            kwargs["_experimental_disable_per_channel"] = True
        if job.int8_io:
            kwargs["inference_input_type"] = tf.int8
            kwargs["inference_output_type"] = tf.int8
    return kwargs


class ConversionError(RuntimeError):
    """The LiteRT converter refused a model: the message says why in a few lines.

    `converter_log` holds what TensorFlow wrote during the conversion (its
    last 20,000 characters) and `__cause__` the converter's own exception.
    """

    def __init__(self, message, converter_log=""):
        super().__init__(message)
        self.converter_log = converter_log


def _without_location(reason):
    """Drops MLIR's leading `loc(...)` (nested parentheses) from a diagnostic."""
    if not reason.startswith("loc("):
        return reason
    depth = 0
    for i, char in enumerate(reason[3:], start=3):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return reason[i + 1:].lstrip(": ").strip()
    return reason


def _summary(error, log=""):
    """The converter's reasons, without MLIR locations and stack dumps: its `error:` lines, else its first line."""
    reasons = []
    for line in f"{error}\n{log}".splitlines():
        if "error:" not in line:
            continue
        reason = _without_location(line.split("error:", 1)[1].strip())
        if reason and reason not in reasons:
            reasons.append(reason)
    if not reasons:
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        reasons = [first or type(error).__name__]
    shown = "; ".join(reason[:300] for reason in reasons[:3])
    return shown + (f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else "")


@contextlib.contextmanager
def _quiet_tensorflow(tf, log):
    """Hides TensorFlow's chatter during a conversion; on failure, keeps it in `log` (a list).

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
                    log.append(sink.read()[-20000:].decode("utf-8", "replace"))
    finally:
        logger.setLevel(logger_level)
        if absl_logging is not None:
            absl_logging.set_verbosity(absl_verbosity)


def _convert_in_process(model, job, out_path):
    """Converts with Keras's `model.export`; a converter failure becomes a `ConversionError` of a few lines."""
    tf = _import_tensorflow()
    log = []
    try:
        with _quiet_tensorflow(tf, log), _qat_mode(model, job):
            model.export(out_path, format="litert", verbose=False, **_converter_kwargs(tf, job))
    except (KeyboardInterrupt, ImportError):
        raise
    except Exception as error:  # noqa: BLE001 - the converter raises many types (ConverterError, ValueError, ...)
        text = "".join(log)
        raise ConversionError(f"The LiteRT converter could not convert the model to fmt={job.fmt!r}: "
                              f"{_summary(error, text)}", text) from error


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
