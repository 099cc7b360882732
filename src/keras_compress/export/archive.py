"""The keras-compress archive (`.kcar`): a compact, safe-to-load model file.

A pruned, weight-shared model stored the Deep Compression way: each weight
in the smallest of `codec.ENCODINGS` (dense, codebook, sparse positions,
sparse positions + codebook), entropy-coded with zstd stream by stream.
Loading never runs code from the file: the architecture is Keras's own JSON
config, rebuilt with `safe_mode=True` (no pickle, no Python lambdas).

File layout (integers little-endian):

    offset  size  field
    0       4     magic b"KCAR"
    4       2     u16 format version (2; 1 is still read)
    6       4     u32 header length, compressed (H)
    10      4     u32 header length, decompressed
    14      8     u64 payload length, compressed (P)
    22      8     u64 payload length, decompressed
    30      H     header: zstd frame of UTF-8 JSON (format 2: magicless, coded
                  against `header_dictionary`)
    30+H    P     payload: format 1, one zstd frame of the weights' encodings end
                  to end; format 2, a frame table (LEB128 varints: the frame
                  count, then each frame's stored and raw length) and the
                  frames: magicless zstd frames without a content size, or the
                  raw bytes where stored == raw length. The frames' raw bytes,
                  end to end, are the weights' encodings.
    30+H+P  32    SHA-256 of every byte before it

The header JSON holds `keras_version`, `keras_compress_version`, the
architecture (`keras.saving.serialize_keras_object(model)` without its
compile config) and `weights`: one entry per `model.weights` variable, in
order, with its `path`, `shape`, `dtype`, `encoding`, and the `offset` and
`length` of its bytes in the decompressed payload (contiguous, from 0).

Framing lives in `archive_format`, `save` in `archive_writer`, `load` in
`archive_reader`; every name is importable from here.

Only NumPy, Keras and `zstandard` are imported: no TensorFlow, so archives
are written and read under every Keras backend.
"""

# Re-exported: the format's constants and error, the framing helpers the tests
# build archives with, and the two verbs.
from keras_compress.export.archive_format import (  # noqa: F401
    _PREFIX,
    DEFAULT_LEVEL,
    DEFAULT_MAX_BYTES,
    FORMAT_VERSION,
    MAGIC,
    MAX_HEADER_BYTES,
    ArchiveError,
    _pack,
    _pack_raw,
    _unpack,
)
from keras_compress.export.archive_reader import load  # noqa: F401
from keras_compress.export.archive_writer import save  # noqa: F401
