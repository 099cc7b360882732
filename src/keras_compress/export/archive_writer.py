"""Writing a keras-compress archive: `save` and the checks that keep it loadable.

A model is refused here (with `ValueError`, before anything is written) if
`load` could not rebuild it in safe mode: Python lambdas and unregistered
custom classes. Each weight goes in its smallest `codec` encoding.
"""

import json
import os
import types

import numpy as np

from keras_compress.core.report import atomic_write
from keras_compress.export import codec
from keras_compress.export.archive_format import DEFAULT_LEVEL, _pack


def _level(level):
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= level <= 22:
        raise ValueError(f"level must be an integer in [1, 22]. Received: level={level!r}")
    return int(level)


def _is_keras_module(module):
    return isinstance(module, str) and module.startswith("keras")


def _check_loadable(config, where="model"):
    """Raises ValueError for what `load` could not rebuild in safe mode.

    Python lambdas (stored as bytecode) and classes or functions Keras
    cannot find in its registry: better refused when saving than shipped in
    an archive nobody can load.
    """
    import keras

    if isinstance(config, list):
        for item in config:
            _check_loadable(item, where)
        return
    if not isinstance(config, dict):
        return
    class_name = config.get("class_name")
    if "class_name" in config and "config" in config:
        module = config.get("module")
        inner = config.get("config")
        if class_name == "__lambda__":
            raise ValueError(
                f"{where} holds a Python lambda (a Lambda layer?), which archives refuse: "
                "loading it would run code from the file. Use a function registered with "
                "@keras.saving.register_keras_serializable() instead."
            )
        if class_name == "function" and isinstance(inner, str) and not _is_keras_module(module):
            # Registered functions are stored as "package>name"; Keras finds
            # them in its registry, and nothing else outside Keras.
            if keras.saving.get_registered_object(inner) is None:
                raise ValueError(_unregistered(inner, where))
        elif (isinstance(class_name, str) and not class_name.startswith("__")
              and class_name != "function" and "registered_name" in config
              and not _is_keras_module(module)):
            name = config.get("registered_name") or class_name
            if (keras.saving.get_registered_object(name) is None
                    and keras.saving.get_registered_object(class_name) is None):
                raise ValueError(_unregistered(class_name, where))
        if isinstance(class_name, str):
            where = f"{where} > {class_name}"
    for value in config.values():
        _check_loadable(value, where)


def _check_no_python_lambdas(model):
    """Raises ValueError if a layer holds a Python lambda (Lambda layer, activation).

    Keras stores lambdas as bytecode, which safe-mode loading refuses.
    """
    from keras_compress.core import walk

    for layer in walk.iter_layers(model):
        for attribute, value in vars(layer).items():
            if isinstance(value, types.FunctionType) and value.__name__ == "<lambda>":
                raise ValueError(
                    f"Layer {layer.name!r} holds a Python lambda ({attribute}), which archives "
                    "refuse: loading it would run code from the file. Use a named function "
                    "registered with @keras.saving.register_keras_serializable() instead."
                )


def _unregistered(name, where):
    return (
        f"{where}: {name!r} is not registered with Keras, so an archive of it could not be "
        "loaded. Decorate it with @keras.saving.register_keras_serializable()."
    )


def _weight_arrays(model):
    import keras

    arrays = []
    for variable in model.weights:
        array = np.asarray(keras.ops.convert_to_numpy(variable.value))
        try:
            codec.dtype_name(array.dtype)
        except ValueError as e:
            raise ValueError(f"Weight {variable.path!r} cannot be archived: {e}") from None
        arrays.append((variable.path, array))
    return arrays


def save(model, path, level=DEFAULT_LEVEL):
    """Writes `model` (architecture and weights) as a compact keras-compress archive.

    Each weight is stored in the encoding that compresses smallest (see
    `keras_compress.export.codec`): pruned and clustered weights shrink to
    their non-zero positions, a few-bit index per value and a codebook. The
    file is written atomically (a temp file beside `path`, then
    `os.replace`). Optimizer state and compile settings are not stored.

    Args:
        model: a built Keras model: Sequential, Functional, or subclassed
            with its class registered via
            `keras.saving.register_keras_serializable`.
        path: destination file; its folder must exist. `.kcar` by convention.
        level: zstd compression level, 1 (fast) to 22 (smallest).

    Returns:
        `dict(bytes=int, raw_bytes=int, tensors=list)`: the file size, the
        weights' in-memory size, and per weight its `path`, `shape`, `dtype`,
        `encoding`, `encoded_bytes` (before zstd) and `compressed_bytes` (zstd
        of that tensor alone, an estimate of its share of the file). Models
        whose weights exceed 4 GiB load only with a larger `max_bytes`.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if the model is not built, holds a Python lambda or an
            unregistered custom class, has a config that is not JSON
            serialisable or a weight of an unsupported dtype, or `level` is
            not in [1, 22]. Nothing is written then.
        OSError: if the file cannot be written (`path` is left untouched).

    Example:
    >>> info = keras_compress.export.archive.save(model, "lenet.kcar")
    >>> info["bytes"], info["tensors"][0]["encoding"]
    (18838, 'sparse_codebook')
    >>> model = keras_compress.export.archive.load("lenet.kcar")
    """
    import keras

    level = _level(level)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received: {type(model).__name__}")
    if not model.built:
        raise ValueError(
            f"save needs a built model: call it on data or build it first. Received: an "
            f"unbuilt {type(model).__name__} {model.name!r}"
        )
    _check_no_python_lambdas(model)
    try:
        architecture = dict(keras.saving.serialize_keras_object(model))
        architecture.pop("compile_config", None)
        json.dumps(architecture)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise ValueError(
            f"Model {model.name!r} has a config that is not JSON serialisable ({e}); make each "
            "layer's get_config() return plain values."
        ) from e
    _check_loadable(architecture, where=f"Model {model.name!r}")
    estimate_level = min(level, codec.DEFAULT_ESTIMATE_LEVEL)
    arrays = _weight_arrays(model)
    entries, chunks, tensors = [], [], []
    offset = 0
    for weight_path, array in arrays:
        choice = codec.choose_encoding(array, level=estimate_level)
        entry = {
            "path": weight_path,
            "shape": [int(d) for d in array.shape],
            "dtype": codec.dtype_name(array.dtype),
            "encoding": choice.encoding,
            "offset": offset,
            "length": len(choice.data),
        }
        entries.append(entry)
        chunks.extend(choice.parts)
        offset += len(choice.data)
        tensors.append({
            "path": weight_path,
            "shape": tuple(entry["shape"]),
            "dtype": entry["dtype"],
            "encoding": choice.encoding,
            "encoded_bytes": len(choice.data),
            "compressed_bytes": choice.compressed_bytes,
        })
    from keras_compress import __version__ as kc_version

    header = {
        "keras_version": keras.__version__,
        "keras_compress_version": kc_version,
        "architecture": architecture,
        "weights": entries,
    }
    data = _pack(header, chunks, level)  # each weight's streams: framed apart where that is smaller
    atomic_write(os.fspath(path), data)
    return {
        "bytes": len(data),
        "raw_bytes": sum(array.nbytes for _, array in arrays),
        "tensors": tensors,
    }
