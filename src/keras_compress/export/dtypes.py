"""The dtypes the keras-compress archive stores, and their tensors as raw bits.

The codec compares and stores values through an unsigned-integer view of the
same width (`_bits_view`), so NaN payloads and -0.0 survive a round trip.
Pure NumPy (`ml_dtypes`, a Keras dependency, for the 16- and 8-bit floats).
"""

import numpy as np

_UINT_VIEWS = {1: np.dtype("u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}
_NUMPY_DTYPES = (
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float16", "float32", "float64",
)
# Keras (through ml_dtypes, one of its dependencies) also has these.
_ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")
DTYPES = _NUMPY_DTYPES + _ML_DTYPES


def numpy_dtype(name):
    """The NumPy dtype (little-endian) of a dtype name from `DTYPES`.

    Args:
        name: a dtype name such as `"float32"`, `"int8"` or `"bfloat16"`.

    Returns:
        A `numpy.dtype`.

    Raises:
        ValueError: if `name` is not one of `DTYPES`.

    Example:
    >>> numpy_dtype("float16")
    dtype('float16')
    """
    if not isinstance(name, str) or name not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}. Received: dtype={name!r}")
    if name in _ML_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name).newbyteorder("<")


def dtype_name(dtype):
    """The `DTYPES` name of a NumPy dtype, or raises.

    Args:
        dtype: anything `numpy.dtype` accepts.

    Returns:
        The name, e.g. `"float32"`.

    Raises:
        ValueError: if the dtype is not one of `DTYPES` (complex, object,
            strings, ...).

    Example:
    >>> dtype_name(np.float32)
    'float32'
    """
    dtype = np.dtype(dtype)
    if dtype.name not in DTYPES:
        raise ValueError(
            f"dtype must be one of {list(DTYPES)}. Received: dtype={dtype.name!r}"
        )
    return dtype.name


def _bits_view(array):
    """The array's bits as a flat, little-endian unsigned-integer array."""
    array = np.asarray(array)
    dtype_name(array.dtype)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).reshape(-1).view(_UINT_VIEWS[array.dtype.itemsize])


def _from_bits(bits, dtype, shape):
    return bits.view(dtype).reshape(shape)
