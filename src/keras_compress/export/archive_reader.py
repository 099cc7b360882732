"""Reading a keras-compress archive: `load`, which trusts nothing in the file.

Framing and checksum first (`archive_format._unpack`), then the header's
schema, then the weights' decoding, then the architecture rebuilt with
`safe_mode=True`. Anything wrong with the contents raises `ArchiveError`.
"""

import math
import os

import numpy as np

from keras_compress.export import codec
from keras_compress.export.archive_format import (
    _HEADER_KEYS,
    _WEIGHT_KEYS,
    DEFAULT_MAX_BYTES,
    ArchiveError,
    _unpack,
)


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
