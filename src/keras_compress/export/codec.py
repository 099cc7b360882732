"""Tensor encodings of the keras-compress archive: pure NumPy, bit-exact.

Deep Compression (Han et al., 2016) stores a pruned, weight-shared layer as
the relative positions of its non-zeros, each non-zero's cluster index at the
bit width the cluster count needs, the codebook, and an entropy coder on top.
This module holds those pieces, each a function of NumPy arrays:

- `pack_bits` / `unpack_bits`: unsigned integers at 1..16 bits each;
- `encode_gaps` / `decode_gaps`: sorted positions as LEB128 varints of the
  gaps between them;
- `encode` / `decode`: one tensor in one of `ENCODINGS`;
- `choose_encoding`: the encoding whose zstd-compressed size is smallest.

The dtypes and their bit views live in `dtypes`, the gap varints in
`positions`; their public names are importable from here too.

Everything works on the tensor's bits: values are compared through an
unsigned-integer view of the same width, so NaN payloads and -0.0 survive a
round trip, and "zero" means "all bits zero" (-0.0 is stored as a non-zero).

Byte layouts (all integers little-endian; `n` is the tensor's element count,
`s` its item size, `w(k)` is 0 for k <= 1 else ceil(log2(k))):

- `dense`: the `n * s` bytes of the values.
- `codebook`: u32 `k`, `k * s` bytes of distinct values, then each element's
  codebook index, `pack_bits` at `w(k)` bits.
- `sparse`: u64 `nnz`, u64 `g`, `g` bytes of `encode_gaps(positions)`, then
  the `nnz * s` bytes of the non-zero values.
- `sparse_codebook`: u64 `nnz`, u64 `g`, the `g` gap bytes, u32 `k`, `k * s`
  bytes of distinct non-zero values, then each non-zero's index at `w(k)`
  bits.

Decoders validate every count and length and raise `ValueError` on anything
the encoders would not have written, so they are safe on untrusted bytes.
"""

import math
import struct
from typing import NamedTuple

import numpy as np

from keras_compress.export.dtypes import (  # noqa: F401 - DTYPES and dtype_name re-exported
    _UINT_VIEWS,
    DTYPES,
    _bits_view,
    _from_bits,
    dtype_name,
    numpy_dtype,
)
from keras_compress.export.positions import MAX_ELEMENTS, _check_count, decode_gaps, encode_gaps

ENCODINGS = ("dense", "codebook", "sparse", "sparse_codebook")
# Codebook indices are bit-packed at up to 16 bits.
MAX_CODEBOOK_SIZE = 2**16
MAX_BIT_WIDTH = 16
# Values packed per step: keeps the (values x 16) bit matrix near 16 MiB.
_PACK_CHUNK = 2**20
# The level `choose_encoding` compresses candidates at: the ranking barely
# changes above it, and level 19 is 20-40x slower (0.25-0.6 s per MB).
DEFAULT_ESTIMATE_LEVEL = 9

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class Choice(NamedTuple):
    """What `choose_encoding` picked: the encoding, its bytes, their zstd size, its streams."""

    encoding: str
    data: bytes
    compressed_bytes: int
    parts: tuple = ()


def _check_width(width):
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not (
        1 <= width <= MAX_BIT_WIDTH
    ):
        raise ValueError(
            f"width must be an integer in [1, {MAX_BIT_WIDTH}]. Received: width={width!r}"
        )
    return int(width)


def index_width(k):
    """Bits per codebook index for a codebook of `k` entries: 0 if k <= 1.

    Example:
    >>> [index_width(k) for k in (1, 2, 3, 16, 17, 65536)]
    [0, 1, 2, 4, 5, 16]
    """
    return 0 if k <= 1 else (int(k) - 1).bit_length()


def pack_bits(values, width):
    """Packs unsigned integers into `width` bits each, least significant bit first.

    Value `i` occupies bits `[i * width, (i + 1) * width)` of the output, bit
    `j` of a byte being `(byte >> j) & 1`; the last byte is zero-padded.

    Args:
        values: integers in `[0, 2**width)`, any shape (flattened in C order).
        width: bits per value, 1 to 16.

    Returns:
        `bytes` of length `ceil(len(values) * width / 8)`.

    Raises:
        ValueError: if `width` is not in [1, 16], `values` is not an integer
            array or holds a value outside `[0, 2**width)`.

    Example:
    >>> pack_bits(np.array([1, 2, 3, 0]), 2).hex()
    '39'
    >>> unpack_bits(b"\\x39", 2, 4)
    array([1, 2, 3, 0], dtype=uint16)
    """
    width = _check_width(width)
    values = np.asarray(values).reshape(-1)
    if values.size and values.dtype.kind not in "ui":
        raise ValueError(
            f"values must be an integer array. Received: values.dtype={values.dtype}"
        )
    if values.size and (values.min() < 0 or values.max() >= 2**width):
        raise ValueError(
            f"values must be in [0, 2**{width}) to pack at width={width}. Received: values in "
            f"[{values.min()}, {values.max()}]"
        )
    values = values.astype("<u2")
    if width == 16:
        return values.tobytes()
    if width == 8:
        return values.astype(np.uint8).tobytes()
    chunks = []
    # Chunks hold a multiple of 8 values, so each packs to whole bytes.
    for start in range(0, values.size, _PACK_CHUNK):
        chunk = values[start:start + _PACK_CHUNK]
        bits = np.unpackbits(chunk.view(np.uint8).reshape(-1, 2), axis=1, bitorder="little")
        chunks.append(np.packbits(bits[:, :width], bitorder="little").tobytes())
    return b"".join(chunks)


def unpack_bits(data, width, count):
    """Unpacks `count` unsigned integers of `width` bits each (`pack_bits`'s inverse).

    Args:
        data: the packed bytes.
        width: bits per value, 1 to 16.
        count: how many values to read.

    Returns:
        A `uint16` array of shape `(count,)`.

    Raises:
        ValueError: if `width` or `count` is invalid, if `data` does not hold
            exactly `ceil(count * width / 8)` bytes or if its padding bits are
            not zero.

    Example:
    >>> unpack_bits(pack_bits(np.arange(5), 3), 3, 5)
    array([0, 1, 2, 3, 4], dtype=uint16)
    """
    width = _check_width(width)
    count = _check_count("count", count)
    data = bytes(data)
    expected = (count * width + 7) // 8
    if len(data) != expected:
        raise ValueError(
            f"{count} values of {width} bits need {expected} bytes. Received: {len(data)} bytes"
        )
    raw = np.frombuffer(data, np.uint8)
    if width == 16:
        return raw.view("<u2").astype(np.uint16)
    if width == 8:
        return raw.astype(np.uint16)
    if count * width % 8 and raw[-1] >> (count * width % 8):
        raise ValueError("Packed data has non-zero padding bits: it was not written by pack_bits")
    out = np.empty(count, np.uint16)
    bytes_per_chunk = _PACK_CHUNK * width // 8
    for chunk_index, start in enumerate(range(0, count, _PACK_CHUNK)):
        n = min(_PACK_CHUNK, count - start)
        chunk = raw[chunk_index * bytes_per_chunk:][: (n * width + 7) // 8]
        bits = np.unpackbits(chunk, count=n * width, bitorder="little").reshape(n, width)
        padded = np.zeros((n, 16), np.uint8)
        padded[:, :width] = bits
        out[start:start + n] = np.packbits(padded, axis=1, bitorder="little").view("<u2")[:, 0]
    return out


def _checked_bits(array):
    bits = _bits_view(array)
    if bits.size >= MAX_ELEMENTS:
        raise ValueError(f"Tensors must have fewer than {MAX_ELEMENTS} elements. Received: {bits.size}")
    return bits


def _codebook_parts(unique_bits, indices):
    """(u32 k + the codebook, the packed indices)."""
    width = index_width(unique_bits.size)
    packed = pack_bits(indices, width) if width else b""
    return _U32.pack(unique_bits.size) + unique_bits.tobytes(), packed


def _read_codebook(data, offset, view, count, what):
    """Reads u32 k, the codebook and `count` indices; returns values and end offset."""
    if len(data) < offset + _U32.size:
        raise ValueError(f"{what}: truncated before the codebook size")
    (k,) = _U32.unpack_from(data, offset)
    offset += _U32.size
    if k > MAX_CODEBOOK_SIZE or (k == 0 and count) or k > max(count, 1):
        raise ValueError(f"{what}: invalid codebook size {k} for {count} values")
    book_end = offset + k * view.itemsize
    width = index_width(k)
    expected_end = book_end + (count * width + 7) // 8
    if len(data) != expected_end:
        raise ValueError(
            f"{what}: expected {expected_end} bytes for a {k}-entry codebook and {count} "
            f"indices. Received: {len(data)} bytes"
        )
    book = np.frombuffer(data[offset:book_end], view)
    if width == 0:
        indices = np.zeros(count, np.uint16)
    else:
        indices = unpack_bits(data[book_end:], width, count)
        if indices.size and int(indices.max()) >= k:
            raise ValueError(f"{what}: codebook index {int(indices.max())} >= codebook size {k}")
    return book[indices]


def _read_positions(data, size, what):
    header = 2 * _U64.size
    if len(data) < header:
        raise ValueError(f"{what}: truncated before the position counts")
    nnz, gap_bytes = _U64.unpack_from(data, 0), _U64.unpack_from(data, _U64.size)
    nnz, gap_bytes = nnz[0], gap_bytes[0]
    if nnz > size or gap_bytes > len(data) - header:
        raise ValueError(f"{what}: {nnz} non-zeros in {gap_bytes} position bytes do not fit")
    positions = decode_gaps(data[header:header + gap_bytes], nnz, size)
    return positions, header + gap_bytes


def encode(array, encoding):
    """Encodes a tensor in one of `ENCODINGS` (layouts in the module docstring).

    Args:
        array: a NumPy array whose dtype is one of `DTYPES`.
        encoding: `"dense"`, `"codebook"`, `"sparse"` or `"sparse_codebook"`.

    Returns:
        `bytes`; `decode(data, encoding, array.shape, array.dtype)` gives the
        same bits back.

    Raises:
        ValueError: if the encoding or dtype is unknown, the array has
            `MAX_ELEMENTS` elements or more, or a codebook encoding is asked
            for more than `MAX_CODEBOOK_SIZE` distinct values.

    Example:
    >>> x = np.array([[0, 0.5], [0, 0.5]], "float32")
    >>> data = encode(x, "codebook")
    >>> np.array_equal(decode(data, "codebook", x.shape, x.dtype), x)
    True
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {list(ENCODINGS)}. Received: encoding={encoding!r}")
    return b"".join(encode_parts(array, encoding))


def encode_parts(array, encoding):
    """`encode`'s bytes as their streams: positions, codebook, indices or values.

    Their concatenation is `encode(array, encoding)`. The archive compresses
    streams apart where that is smaller: zstd's entropy tables fit one kind
    of statistics at a time (LeNet-5's fc1: 8,303 bytes with the gap
    varints and the indices in one frame, 7,669 in two).

    Example:
    >>> [len(p) for p in encode_parts(np.eye(4, dtype="float32"), "sparse_codebook")]
    [20, 8, 1]
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {list(ENCODINGS)}. Received: encoding={encoding!r}")
    bits = _checked_bits(array)
    if encoding == "codebook" and not bits.size:
        return _codebook_parts(bits[:0], bits[:0].astype(np.int64))
    for _, parts in _candidates(bits, only=encoding):
        return list(parts)


def _check_codebook_size(k, asked=True):
    """Raises for too many distinct values when a codebook encoding was asked for by name."""
    if asked and k > MAX_CODEBOOK_SIZE:
        raise ValueError(
            f"A codebook encoding needs at most {MAX_CODEBOOK_SIZE} distinct values. Received: {k}"
        )


def decode(data, encoding, shape, dtype):
    """Decodes `encode`'s bytes back to an array, validating every length.

    Args:
        data: the encoded bytes.
        encoding: one of `ENCODINGS`.
        shape: the tensor's shape (a sequence of non-negative ints).
        dtype: the tensor's dtype (a `DTYPES` name or NumPy dtype).

    Returns:
        A new, writable NumPy array of `shape` and `dtype`.

    Raises:
        ValueError: if the encoding, shape or dtype is invalid, or `data` is
            not exactly what `encode` writes for that shape and dtype.

    Example:
    >>> x = np.eye(4, dtype="float32")
    >>> np.array_equal(decode(encode(x, "sparse"), "sparse", (4, 4), "float32"), x)
    True
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {list(ENCODINGS)}. Received: encoding={encoding!r}")
    dtype = numpy_dtype(dtype if isinstance(dtype, str) else np.dtype(dtype).name)
    shape = tuple(_check_count("shape entry", d) for d in shape)
    size = math.prod(shape)
    if size >= MAX_ELEMENTS:
        raise ValueError(f"Tensors must have fewer than {MAX_ELEMENTS} elements. Received: shape={shape}")
    view = _UINT_VIEWS[dtype.itemsize]
    data = bytes(data)
    what = f"{encoding} tensor of shape {shape}"
    if encoding == "dense":
        if len(data) != size * dtype.itemsize:
            raise ValueError(f"{what}: expected {size * dtype.itemsize} bytes. Received: {len(data)}")
        return _from_bits(np.frombuffer(data, view).copy(), dtype, shape)
    if encoding == "codebook":
        return _from_bits(_read_codebook(data, 0, view, size, what), dtype, shape)
    positions, offset = _read_positions(data, size, what)
    bits = np.zeros(size, view)
    if encoding == "sparse":
        values_bytes = positions.size * view.itemsize
        if len(data) - offset != values_bytes:
            raise ValueError(
                f"{what}: expected {values_bytes} bytes of values. Received: {len(data) - offset}"
            )
        bits[positions] = np.frombuffer(data[offset:], view)
    else:
        bits[positions] = _read_codebook(data, offset, view, positions.size, what)
    return _from_bits(bits, dtype, shape)


def _candidates(bits, only=None):
    """Yields `(encoding, parts)` for every encoding that applies to `bits` (or just `only`)."""
    def wanted(name):
        return only is None or only == name

    if wanted("dense"):
        yield "dense", (bits.tobytes(),)
    if bits.size and wanted("codebook"):
        unique, indices = np.unique(bits, return_inverse=True)
        _check_codebook_size(unique.size, only)
        if unique.size <= MAX_CODEBOOK_SIZE:
            yield "codebook", _codebook_parts(unique, indices.reshape(-1))
    if not (wanted("sparse") or wanted("sparse_codebook")):
        return
    positions = np.flatnonzero(bits)
    gaps = encode_gaps(positions)
    head = _U64.pack(positions.size) + _U64.pack(len(gaps)) + gaps
    values = bits[positions]
    if wanted("sparse"):
        yield "sparse", (head, values.tobytes())
    if wanted("sparse_codebook"):
        unique, indices = np.unique(values, return_inverse=True)
        _check_codebook_size(unique.size, only)
        if unique.size <= MAX_CODEBOOK_SIZE:
            yield "sparse_codebook", (head, *_codebook_parts(unique, indices.reshape(-1)))


def candidate_encodings(array):
    """The encodings `array` can use, in `ENCODINGS` order.

    `dense` and `sparse` always apply; `codebook` when the array is not empty
    and has at most `MAX_CODEBOOK_SIZE` distinct bit patterns, and
    `sparse_codebook` when its non-zeros have at most that many.

    Args:
        array: a NumPy array whose dtype is one of `DTYPES`.

    Returns:
        A list of encoding names.

    Raises:
        ValueError: if the dtype is unsupported or the array is too large.

    Example:
    >>> candidate_encodings(np.zeros((4, 4), "float32"))
    ['dense', 'codebook', 'sparse', 'sparse_codebook']
    """
    return [name for name, _ in _candidates(_checked_bits(array), only=None)]


def choose_encoding(array, level=DEFAULT_ESTIMATE_LEVEL):
    """Encodes `array` every applicable way; keeps the smallest after zstd.

    Each candidate is compressed alone with zstd at `level`: an estimate of
    what it adds to an archive's payload (compressed as one frame, usually at
    a higher level). Ties go to the earlier encoding in `ENCODINGS`.

    Args:
        array: a NumPy array whose dtype is one of `DTYPES`.
        level: zstd level of the estimate, 1 to 22.

    Returns:
        A `Choice(encoding, data, compressed_bytes)`.

    Raises:
        ValueError: if the dtype is unsupported, the array is too large, or
            `level` is not an integer in [1, 22].
        ImportError: if `zstandard` is not installed.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> choose_encoding(rng.normal(size=(64, 64)).astype("float32")).encoding
    'dense'
    """
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= level <= 22:
        raise ValueError(f"level must be an integer in [1, 22]. Received: level={level!r}")
    import zstandard

    compressor = zstandard.ZstdCompressor(level=int(level))
    best = None
    for encoding, parts in _candidates(_checked_bits(array)):
        data = b"".join(parts)
        size = len(compressor.compress(data))
        if best is None or size < best.compressed_bytes:
            best = Choice(encoding, data, size, tuple(parts))
    return best
