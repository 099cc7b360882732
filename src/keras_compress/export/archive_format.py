"""The framing of a keras-compress archive: prefix, zstd frames, SHA-256 checksum.

Bytes in, bytes out: `_pack` assembles an archive from its header and raw
payload (or the payload's streams), `_unpack` checks the framing, sizes and
checksum and gives them back. The byte layout is in
`keras_compress.export.archive`'s docstring; `archive_writer` and
`archive_reader` build on this. Format 1 (one zstd frame for the payload,
a plain zstd header) is still read; format 2 is written.
"""

import hashlib
import json
import struct

MAGIC = b"KCAR"
FORMAT_VERSION = 2
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
# Format 2 merges adjacent payload streams into one frame only while the frame stays below this size
# and compresses no larger than the streams apart; larger streams are frames of their own.
_MERGE_LIMIT = 2**16
_ESTIMATE_LEVEL = 9


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
    """Assembles archive bytes from a header dict and the raw payload (bytes, or a list of its streams)."""
    header_json = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if len(header_json) > MAX_HEADER_BYTES:
        raise ValueError(
            f"The model's config and weight table take {len(header_json)} bytes of JSON; archives "
            f"hold at most {MAX_HEADER_BYTES}."
        )
    return _pack_raw(header_json, payload, level)


def _compressor(level, version=FORMAT_VERSION, dictionary=None):
    zstandard = _zstandard()
    if version == 1:
        return zstandard.ZstdCompressor(level=level)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False, write_checksum=False,
        write_dict_id=False)
    return zstandard.ZstdCompressor(compression_params=params, dict_data=dictionary)


def _header_dictionary():
    from keras_compress.export.header_dictionary import dictionary

    return dictionary()


def _pack_raw(header_json, payload, level=DEFAULT_LEVEL, version=FORMAT_VERSION):
    """Assembles archive bytes from header bytes (any bytes) and the raw payload (bytes or streams)."""
    parts = [payload] if isinstance(payload, (bytes, bytearray, memoryview)) else list(payload)
    raw_len = sum(len(part) for part in parts)
    if version == 1:
        header_z = _compressor(level, 1).compress(header_json)
        payload_z = _compressor(level, 1).compress(b"".join(parts))
    else:
        header_z = _compressor(level, version, _header_dictionary()).compress(header_json)
        payload_z = _frames(_group(parts, level), level, version)
    body = (
        _PREFIX.pack(MAGIC, version, len(header_z), len(header_json), len(payload_z), raw_len)
        + header_z
        + payload_z
    )
    return body + hashlib.sha256(body).digest()


def _group(parts, level):
    """Adjacent streams joined while one frame of them is no larger than separate frames."""
    estimate = _compressor(min(level, _ESTIMATE_LEVEL))

    def size(data):
        return min(len(estimate.compress(data)), len(data)) + 2 * _varint_bytes(len(data))

    groups, current, current_size = [], b"", 0
    for part in (bytes(p) for p in parts if len(p)):
        part_size = size(part)
        if current and len(current) + len(part) <= _MERGE_LIMIT:
            joined = size(current + part)
            if joined <= current_size + part_size:
                current, current_size = current + part, joined
                continue
        if current:
            groups.append(current)
        current, current_size = part, part_size
    if current:
        groups.append(current)
    return groups


def _frames(groups, level, version):
    """The frame table (varint count, then stored and raw length of each) and the frames.

    A frame is its group's zstd frame (magicless, no content size) when that
    is smaller, else the group's bytes as they are: stored == raw length
    means stored raw.
    """
    compressor = _compressor(level, version)
    table, frames = [_varint(len(groups))], []
    for group in groups:
        frame = compressor.compress(group)
        frame = frame if len(frame) < len(group) else group
        table += [_varint(len(frame)), _varint(len(group))]
        frames.append(frame)
    return b"".join(table) + b"".join(frames)


def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _varint_bytes(value):
    return max(1, -(-int(value).bit_length() // 7))


def _read_varint(data, offset, what):
    value, shift = 0, 0
    while offset < len(data) and shift < 64:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
    raise ArchiveError(f"{what}: a length in the frame table is truncated or longer than 64 bits")


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
    dictionary = None if version == 1 else _header_dictionary()
    header_bytes = _decompress(data[header_start:header_start + header_z], header_len, "header", version,
                               dictionary)
    region = data[header_start + header_z:body_end]
    if version == 1:
        payload = _decompress(region, payload_len, "payload", version)
    else:
        payload = _read_frames(region, payload_len, version)
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ArchiveError(f"header is not valid UTF-8 JSON: {e}") from None
    return header, payload


def _read_frames(region, payload_len, version):
    """Format 2's payload: the frame table checked against the region and the declared size first."""
    count, offset = _read_varint(region, 0, "payload")
    if count > len(region):
        raise ArchiveError(f"payload: {count} frames cannot fit in {len(region)} bytes")
    sizes, stored_total, raw_total = [], 0, 0
    for i in range(count):
        stored, offset = _read_varint(region, offset, "payload")
        raw, offset = _read_varint(region, offset, "payload")
        stored_total, raw_total = stored_total + stored, raw_total + raw
        if stored == 0 or stored > raw or raw_total > payload_len:
            raise ArchiveError(
                f"payload frame {i}: {stored} stored bytes for {raw} (the payload declares {payload_len})")
        sizes.append((stored, raw))
    if offset + stored_total != len(region) or raw_total != payload_len:
        raise ArchiveError(
            f"payload: the frame table declares {stored_total} stored bytes for {raw_total}, the archive "
            f"{len(region) - offset} for {payload_len}")
    out = []
    for i, (stored, raw) in enumerate(sizes):
        frame = region[offset:offset + stored]
        offset += stored
        out.append(bytes(frame) if stored == raw else _decompress(frame, raw, f"payload frame {i}", version))
    return b"".join(out)


def _decompress(frame, size, what, version, dictionary=None):
    """Decompresses one zstd frame (format 1: standard; 2: magicless) to exactly `size` bytes, never more."""
    zstandard = _zstandard()
    try:
        # zstandard allocates a frame's declared content size whatever
        # max_output_size says, so a declared size must match first; for a
        # frame that omits it, max_output_size bounds the output. Either way
        # a bomb fails here before it allocates more than `size` bytes.
        if version == 1:
            declared = zstandard.frame_content_size(frame)
            decompressor = zstandard.ZstdDecompressor()
        else:
            magicless = zstandard.FORMAT_ZSTD1_MAGICLESS
            declared = zstandard.get_frame_parameters(frame, format=magicless).content_size
            declared = -1 if declared == zstandard.CONTENTSIZE_UNKNOWN else declared
            decompressor = zstandard.ZstdDecompressor(dict_data=dictionary, format=magicless)
        if declared not in (-1, size):
            raise ArchiveError(f"{what} frame declares {declared} bytes, not the archive's {size}")
        out = decompressor.decompress(frame, max_output_size=max(size, 1), allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise ArchiveError(f"{what} does not decompress to its declared {size} bytes: {e}") from None
    if len(out) != size:
        raise ArchiveError(f"{what} decompresses to {len(out)} bytes, not its declared {size}")
    return out
