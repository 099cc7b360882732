"""The framing of a keras-compress archive: prefix, zstd frames, SHA-256 checksum.

Bytes in, bytes out: `_pack` assembles an archive from its header and raw
payload, `_unpack` checks the framing, sizes and checksum and gives them
back. The byte layout is in `keras_compress.export.archive`'s docstring;
`archive_writer` and `archive_reader` build on this.
"""

import hashlib
import json
import struct

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
