"""The JAX (and other backends') route to LiteRT: convert in a TensorFlow subprocess.

Keras converts to LiteRT under the TensorFlow backend only, so a model of
another backend is saved to a temporary `.keras` file (a QAT model without
its fake quantization, its trained ranges beside it), loaded again in a
`KERAS_BACKEND=tensorflow` subprocess and converted there by `converter`.
"""

import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from keras_compress.export.converter import ConversionError, _convert_in_process, _Job
from keras_compress.export.deps import _INSTALL_HINT

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
from keras_compress.export.subprocess_export import _child_main
_child_main(spec)
"""


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
        calibration = None
        if item["calibration"]:
            with np.load(item["calibration"]) as saved:
                calibration = dict(saved) if item.get("named") else saved["samples"]
        job = _Job(item["fmt"], item["path"], calibration, item["int8_io"], item["qat"], item["per_channel"],
                   item["select_tf_ops"])
        try:
            _convert_in_process(model, job, item["path"])
        except ConversionError as error:  # the parent raises it again, as a few lines
            with open(spec["error_path"], "w") as f:
                json.dump({"message": str(error), "log": error.converter_log}, f)
            sys.exit(3)


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
                        work, f"calibration{len(saved_calibration)}.npz"
                    )
                    named = isinstance(job.calibration, dict)
                    np.savez(saved_calibration[key], **(job.calibration if named else {"samples": job.calibration}))
                calibration_path = saved_calibration[key]
            spec_jobs.append({"fmt": job.fmt, "path": out_path, "qat": job.qat, "named": isinstance(
                job.calibration, dict), "calibration": calibration_path, "int8_io": job.int8_io,
                              "per_channel": job.per_channel, "select_tf_ops": job.select_tf_ops})
        spec = {
            "model": model_path,
            "qat": qat_spec,
            "jobs": spec_jobs,
            "package_root": _PACKAGE_ROOT,
            "error_path": os.path.join(work, "error.json"),
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
        if os.path.exists(spec["error_path"]):
            with open(spec["error_path"]) as f:
                refused = json.load(f)
            raise ConversionError(refused["message"], refused["log"])
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
