"""The keras-compress archive (`.kcar`): a compact, safe-to-load model file.

A pruned, weight-shared model stored the Deep Compression way: each weight
in the smallest of `codec.ENCODINGS` (dense, codebook, sparse positions,
sparse positions + codebook), the whole payload entropy-coded with zstd.
Loading never runs code from the file: the architecture is Keras's own JSON
config, rebuilt with `safe_mode=True` (no pickle, no Python lambdas).

File layout (integers little-endian):

    offset  size  field
    0       4     magic b"KCAR"
    4       2     u16 format version (1)
    6       4     u32 header length, compressed (H)
    10      4     u32 header length, decompressed
    14      8     u64 payload length, compressed (P)
    22      8     u64 payload length, decompressed
    30      H     header: zstd frame of UTF-8 JSON
    30+H    P     payload: zstd frame of the weights' encodings, end to end
    30+H+P  32    SHA-256 of every byte before it

The header JSON holds `keras_version`, `keras_compress_version`, the
architecture (`keras.saving.serialize_keras_object(model)` without its
compile config) and `weights`: one entry per `model.weights` variable, in
order, with its `path`, `shape`, `dtype`, `encoding`, and the `offset` and
`length` of its bytes in the decompressed payload (contiguous, from 0).

Only NumPy, Keras and `zstandard` are imported: no TensorFlow, so archives
are written and read under every Keras backend.
"""

import hashlib
import json
import math
import os
import struct
import types

import numpy as np

from keras_compress.core.report import atomic_write
from keras_compress.export import codec

MAGIC = b"KCAR"
FORMAT_VERSION = 1
DEFAULT_LEVEL = 19
# Reading refuses archives that would decompress (or decode) to more than
# this many bytes unless told otherwise: a 30 KB file must not ask for 4 TB.
DEFAULT_MAX_BYTES = 2**32
# Headers are a model's config and a table of weights: megabytes at most.
MAX_HEADER_BYTES = 64 * 2**20
_PREFIX = struct.Struct("<4sHIIQQ")
_VERSION_END = 6
_CHECKSUM_BYTES = 32
_WEIGHT_KEYS = ("path", "shape", "dtype", "encoding", "offset", "length")
_HEADER_KEYS = ("keras_version", "keras_compress_version", "architecture", "weights")
_INSTALL_HINT = "Install it with: pip install zstandard"


class ArchiveError(ValueError):
    """A file is not a valid keras-compress archive (or cannot be loaded safely).

    The only exception `load` raises for a file's contents, whatever they
    are: truncated, corrupt, from a newer format version, hostile.

    Example:
    >>> try:
    ...     keras_compress.export.archive.load("model.keras")
    ... except keras_compress.export.archive.ArchiveError as e:
    ...     print(e)
    model.keras: not a keras-compress archive (it does not start with b'KCAR')
    """


def _zstandard():
    try:
        import zstandard
    except ImportError as e:  # pragma: no cover - zstandard is a dependency
        raise ImportError(f"keras-compress archives need the zstandard package. {_INSTALL_HINT}") from e
    return zstandard


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


def _pack(header, payload, level=DEFAULT_LEVEL):
    """Assembles archive bytes from a header dict and the raw payload."""
    header_json = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if len(header_json) > MAX_HEADER_BYTES:
        raise ValueError(
            f"The model's config and weight table take {len(header_json)} bytes of JSON; archives "
            f"hold at most {MAX_HEADER_BYTES}."
        )
    return _pack_raw(header_json, payload, level)


def _pack_raw(header_json, payload, level=DEFAULT_LEVEL, version=FORMAT_VERSION):
    """Assembles archive bytes from header bytes (any bytes) and the raw payload."""
    compressor = _zstandard().ZstdCompressor(level=level)
    header_z = compressor.compress(header_json)
    payload_z = compressor.compress(payload)
    body = (
        _PREFIX.pack(MAGIC, version, len(header_z), len(header_json), len(payload_z), len(payload))
        + header_z
        + payload_z
    )
    return body + hashlib.sha256(body).digest()


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
        chunks.append(choice.data)
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
    data = _pack(header, b"".join(chunks), level)
    atomic_write(os.fspath(path), data)
    return {
        "bytes": len(data),
        "raw_bytes": sum(array.nbytes for _, array in arrays),
        "tensors": tensors,
    }


def _unpack(data, max_bytes=DEFAULT_MAX_BYTES):
    """Checks an archive's framing and checksum; returns (header dict, raw payload)."""
    if len(data) < _VERSION_END:
        if MAGIC.startswith(bytes(data[:4])) and data:
            raise ArchiveError(f"truncated: {len(data)} bytes is shorter than any archive")
        raise ArchiveError(f"not a keras-compress archive (it does not start with {MAGIC!r})")
    if data[:4] != MAGIC:
        raise ArchiveError(f"not a keras-compress archive (it does not start with {MAGIC!r})")
    (version,) = struct.unpack_from("<H", data, 4)
    if not 1 <= version <= FORMAT_VERSION:
        raise ArchiveError(
            f"unsupported version {version} (this reader supports up to {FORMAT_VERSION}); "
            "upgrade keras-compress to read it"
        )
    if len(data) < _PREFIX.size + _CHECKSUM_BYTES:
        raise ArchiveError(f"truncated: {len(data)} bytes is shorter than any archive")
    _, _, header_z, header_len, payload_z, payload_len = _PREFIX.unpack_from(data, 0)
    expected = _PREFIX.size + header_z + payload_z + _CHECKSUM_BYTES
    if len(data) < expected:
        raise ArchiveError(f"truncated: the archive declares {expected} bytes but has {len(data)}")
    if len(data) > expected:
        raise ArchiveError(
            f"{len(data) - expected} unexpected trailing bytes after the archive's {expected}"
        )
    body_end = expected - _CHECKSUM_BYTES
    if hashlib.sha256(data[:body_end]).digest() != bytes(data[body_end:]):
        raise ArchiveError("checksum mismatch: the file is corrupt (or was changed after saving)")
    if header_len > MAX_HEADER_BYTES:
        raise ArchiveError(f"header of {header_len} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
    if payload_len > max_bytes:
        raise ArchiveError(
            f"payload of {payload_len} bytes exceeds max_bytes={max_bytes}; pass a larger "
            "max_bytes to load it if you trust the file"
        )
    header_start = _PREFIX.size
    header_bytes = _decompress(data[header_start:header_start + header_z], header_len, "header")
    payload = _decompress(data[header_start + header_z:body_end], payload_len, "payload")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ArchiveError(f"header is not valid UTF-8 JSON: {e}") from None
    return header, payload


def _decompress(frame, size, what):
    """Decompresses one zstd frame to exactly `size` bytes, never more."""
    zstandard = _zstandard()
    try:
        # zstandard allocates a frame's declared content size whatever
        # max_output_size says, so a declared size must match first; for a
        # frame that omits it, max_output_size bounds the output. Either way
        # a bomb fails here before it allocates more than `size` bytes.
        declared = zstandard.frame_content_size(frame)
        if declared not in (-1, size):
            raise ArchiveError(f"{what} frame declares {declared} bytes, not the archive's {size}")
        out = zstandard.ZstdDecompressor().decompress(
            frame, max_output_size=max(size, 1), allow_extra_data=False
        )
    except zstandard.ZstdError as e:
        raise ArchiveError(f"{what} does not decompress to its declared {size} bytes: {e}") from None
    if len(out) != size:
        raise ArchiveError(f"{what} decompresses to {len(out)} bytes, not its declared {size}")
    return out


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_header(header, payload_len, max_bytes):
    if not isinstance(header, dict):
        raise ArchiveError(f"header must be a JSON object. Received: {type(header).__name__}")
    missing = [key for key in _HEADER_KEYS if key not in header]
    if missing:
        raise ArchiveError(f"header lacks key(s) {missing}")
    if not isinstance(header["architecture"], dict):
        raise ArchiveError("header 'architecture' must be a JSON object (a Keras config)")
    for key in ("keras_version", "keras_compress_version"):
        if not isinstance(header[key], str):
            raise ArchiveError(f"header {key!r} must be a string")
    weights = header["weights"]
    if not isinstance(weights, list):
        raise ArchiveError("header 'weights' must be a list")
    offset = 0
    decoded_bytes = 0
    for i, entry in enumerate(weights):
        itemsize, elements = _validate_entry(i, entry)
        where = f"weight {i} ({entry['path'][:200]!r})"
        if entry["offset"] != offset:
            raise ArchiveError(
                f"{where}: offset {entry['offset']} should be {offset} (weights are stored end to end)"
            )
        offset += entry["length"]
        if offset > payload_len:
            raise ArchiveError(
                f"{where}: bytes [{entry['offset']}, {offset}) run past the {payload_len}-byte payload"
            )
        decoded_bytes += elements * itemsize
        if decoded_bytes > max_bytes:
            raise ArchiveError(
                f"{where}: the weights decode to more than max_bytes={max_bytes} bytes; pass a "
                "larger max_bytes to load it if you trust the file"
            )
    if offset != payload_len:
        raise ArchiveError(f"the weights cover {offset} bytes of the {payload_len}-byte payload")


def _validate_entry(i, entry):
    """Checks one weight entry's types and values; returns (itemsize, element count)."""
    if not isinstance(entry, dict) or sorted(entry) != sorted(_WEIGHT_KEYS):
        raise ArchiveError(f"weight {i}: must be an object with exactly the keys {list(_WEIGHT_KEYS)}")
    if not isinstance(entry["path"], str):
        raise ArchiveError(f"weight {i}: 'path' must be a string")
    where = f"weight {i} ({entry['path'][:200]!r})"
    shape = entry["shape"]
    if not isinstance(shape, list) or len(shape) > 64 or not all(_is_int(d) and d >= 0 for d in shape):
        raise ArchiveError(f"{where}: 'shape' must be a list of at most 64 non-negative integers")
    if entry["dtype"] not in codec.DTYPES:
        raise ArchiveError(
            f"{where}: unknown dtype {str(entry['dtype'])[:50]!r}; allowed: {list(codec.DTYPES)}"
        )
    if entry["encoding"] not in codec.ENCODINGS:
        raise ArchiveError(
            f"{where}: unknown encoding {str(entry['encoding'])[:50]!r}; allowed: {list(codec.ENCODINGS)}"
        )
    for key in ("offset", "length"):
        if not _is_int(entry[key]) or entry[key] < 0:
            raise ArchiveError(f"{where}: {key!r} must be a non-negative integer")
    elements = math.prod(shape)
    if elements >= codec.MAX_ELEMENTS:
        raise ArchiveError(f"{where}: shape {shape} has too many elements")
    itemsize = codec.numpy_dtype(entry["dtype"]).itemsize
    if entry["encoding"] == "dense" and entry["length"] != elements * itemsize:
        raise ArchiveError(f"{where}: {entry['length']} bytes cannot hold a dense {entry['dtype']} {shape}")
    return itemsize, elements


def _decode_weights(weights, payload):
    arrays = []
    for i, entry in enumerate(weights):
        start = entry["offset"]
        try:
            arrays.append(codec.decode(
                payload[start:start + entry["length"]], entry["encoding"], entry["shape"], entry["dtype"]
            ))
        except (ValueError, MemoryError) as e:  # codec errors are ValueErrors
            raise ArchiveError(f"weight {i} ({entry['path'][:200]!r}) is corrupt: {e}") from None
    return arrays


def _rebuild(architecture):
    import keras

    try:
        model = keras.saving.deserialize_keras_object(architecture, safe_mode=True)
    except RecursionError:
        raise ArchiveError("could not rebuild the model: its architecture is nested too deeply") from None
    except Exception as e:  # deserialising arbitrary configs can fail in any way
        raise ArchiveError(f"could not rebuild the model from the archive's architecture: {e}") from None
    if not isinstance(model, keras.Model):
        raise ArchiveError(f"the archive's architecture is a {type(model).__name__}, not a Keras model")
    return model


def _read(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load needs an existing file. Received: path={path!r}")
    with open(path, "rb") as f:
        return f.read()


def load(path, *, max_bytes=DEFAULT_MAX_BYTES):
    """Reads a keras-compress archive back into a Keras model, bit-exactly.

    Checks everything before trusting anything: magic, format version,
    lengths against the file size, the SHA-256 checksum, the header's schema
    (shapes, dtypes, encodings, offsets), the decompressed sizes (bounded by
    `max_bytes`, so decompression bombs fail cheaply), then rebuilds the
    architecture with `keras.saving.deserialize_keras_object(safe_mode=True)`
    (no pickle; Python lambdas refused) and sets the decoded weights.

    Args:
        path: an archive written by `save`.
        max_bytes: the most bytes the payload may decompress to, and the
            weights decode to (default 4 GiB).

    Returns:
        A new Keras model with the archived architecture and weights.

    Raises:
        FileNotFoundError: if `path` is not an existing file.
        ArchiveError: for anything wrong with the file's contents (not an
            archive, newer format version, truncated, corrupt, hostile
            header, architecture that cannot be rebuilt safely, weights that
            do not fit the architecture), and nothing else.

    Example:
    >>> model = keras_compress.export.archive.load("lenet.kcar")
    >>> model.predict(x_test[:8])
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative integer. Received: max_bytes={max_bytes!r}")
    data = _read(path)
    try:
        return _load_bytes(data, int(max_bytes))
    except ArchiveError as e:
        raise ArchiveError(f"{os.fspath(path)}: {e}") from None
    except Exception as e:  # a last net: reading a file must fail only with ArchiveError
        raise ArchiveError(f"{os.fspath(path)}: unreadable archive ({type(e).__name__}: {e})") from None


def _load_bytes(data, max_bytes=DEFAULT_MAX_BYTES):
    header, payload = _unpack(data, max_bytes)
    _validate_header(header, len(payload), max_bytes)
    arrays = _decode_weights(header["weights"], payload)
    model = _rebuild(header["architecture"])
    variables = model.weights
    if len(variables) != len(arrays):
        raise ArchiveError(
            f"the archive holds {len(arrays)} weights but its architecture builds {len(variables)}"
        )
    for i, (variable, array) in enumerate(zip(variables, arrays)):
        if tuple(variable.shape) != array.shape or str(variable.dtype) != array.dtype.name:
            raise ArchiveError(
                f"weight {i} ({header['weights'][i]['path'][:200]!r}) is {array.dtype.name} "
                f"{list(array.shape)} in the archive but the architecture builds "
                f"{variable.dtype} {list(variable.shape)} ({variable.path})"
            )
    try:
        model.set_weights(arrays)
    except Exception as e:  # a backend refusing a value; shapes and dtypes were checked
        raise ArchiveError(f"could not set the archived weights: {e}") from None
    return model
