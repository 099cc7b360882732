import ml_dtypes
import numpy as np
import pytest

from keras_compress.export import codec


def bits(array):
    array = np.asarray(array)
    return array.view(f"u{array.dtype.itemsize}")


def assert_bit_exact(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.array_equal(bits(a), bits(b))


def special_floats():
    """A 4x4 float32 tensor with NaN payloads, -0.0, infinities and denormals."""
    raw = np.array(
        [0x7FC00000, 0x7FC00001, 0xFFC12345, 0x7F800001,  # NaNs with payloads (one signalling)
         0x80000000, 0x00000000, 0x7F800000, 0xFF800000,  # -0.0, 0.0, +inf, -inf
         0x00000001, 0x80000001, 0x3F800000, 0x00000000,  # denormals, 1.0
         0x00000000, 0x80000000, 0x3F800000, 0xBF800000],
        np.uint32,
    )
    return raw.view(np.float32).reshape(4, 4)


def sparse_clustered(shape, density=0.1, clusters=16, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=clusters).astype(dtype)
    values = rng.choice(centroids, size=shape)
    return np.where(rng.random(shape) < density, values, 0).astype(dtype)


@pytest.mark.parametrize("width", range(1, 17))
def test_bit_packing_round_trips_at_every_width(width):
    rng = np.random.default_rng(width)
    for count in (0, 1, 7, 8, 9, 100):
        values = rng.integers(0, 2**width, count)
        values[:1] = 2**width - 1  # the largest value fits
        data = codec.pack_bits(values, width)
        assert len(data) == (count * width + 7) // 8
        np.testing.assert_array_equal(codec.unpack_bits(data, width, count), values)


def test_bit_packing_is_lsb_first_by_hand():
    assert codec.pack_bits(np.array([1, 2, 3, 0]), 2) == bytes([0b00111001])
    assert codec.pack_bits(np.array([[1, 0], [1, 1]]), 1) == bytes([0b1101])


def test_bit_packing_across_chunks_round_trips(monkeypatch):
    monkeypatch.setattr(codec, "_PACK_CHUNK", 16)
    values = np.random.default_rng(0).integers(0, 2**5, 101)
    np.testing.assert_array_equal(codec.unpack_bits(codec.pack_bits(values, 5), 5, 101), values)


@pytest.mark.parametrize("width, values", [(0, [1]), (17, [1]), (3, [8]), (3, [-1]), (3, [0.5])])
def test_bit_packing_rejects_bad_widths_and_values(width, values):
    with pytest.raises(ValueError):
        codec.pack_bits(np.array(values), width)


def test_unpacking_rejects_wrong_lengths_and_padding():
    with pytest.raises(ValueError, match="need 2 bytes"):
        codec.unpack_bits(b"\x00", 3, 5)
    with pytest.raises(ValueError, match="padding"):
        codec.unpack_bits(b"\xff", 3, 2)


@pytest.mark.parametrize("positions", [[], [0], [5], [0, 1, 2, 3], [0, 127, 128, 129, 300, 20000, 2**31]])
def test_gaps_round_trip(positions):
    size = (positions[-1] + 1) if positions else 1
    data = codec.encode_gaps(np.array(positions, np.int64))
    np.testing.assert_array_equal(codec.decode_gaps(data, len(positions), size), positions)


def test_gaps_are_varints_of_distance_minus_one_by_hand():
    assert codec.encode_gaps([0, 1, 5, 200]) == bytes([0, 0, 3, 0xC2, 0x01])


@pytest.mark.parametrize("positions", [[1, 1], [3, 2], [-1, 2]])
def test_gaps_reject_unsorted_or_negative_positions(positions):
    with pytest.raises(ValueError):
        codec.encode_gaps(np.array(positions))


@pytest.mark.parametrize(
    "data, count, size",
    [
        (b"\x00", 2, 10),           # too few varints
        (b"\x00\x00", 1, 10),       # trailing bytes
        (b"\x80", 1, 10),           # unterminated varint
        (b"\x09", 1, 9),            # position past the end
        (b"\x05\x05", 2, 10),       # running sum past the end
        (b"\x81\x00", 1, 300),      # non-canonical (trailing zero group)
        (b"\xff\xff\xff\xff\xff\x01", 1, 2**32),  # longer than any gap
        (b"\x00", 1, 0),            # more positions than elements
    ],
)
def test_gaps_decoder_rejects_malformed_bytes(data, count, size):
    with pytest.raises(ValueError):
        codec.decode_gaps(data, count, size)


@pytest.mark.parametrize("encoding", codec.ENCODINGS)
@pytest.mark.parametrize(
    "array",
    [
        special_floats(),
        np.zeros((4, 4), "float32"),
        np.array([[1.5]], "float32"),
        np.zeros((0, 4), "float32"),
        np.arange(-8, 8, dtype="int8").reshape(4, 4),
        np.arange(16, dtype="int64").reshape(4, 4) * 2**40,
        sparse_clustered((4, 4), density=0.5, dtype="float16"),
        sparse_clustered((4, 4), density=0.5).astype(ml_dtypes.bfloat16),
        np.eye(4, dtype=bool),
        np.float64(3.0),
    ],
    ids=["specials", "zeros", "single", "empty", "int8", "int64", "float16", "bfloat16", "bool", "scalar"],
)
def test_each_encoding_round_trips_bit_exactly(encoding, array):
    data = codec.encode(array, encoding)
    assert_bit_exact(codec.decode(data, encoding, array.shape, array.dtype), array)


def test_negative_zero_and_nan_payloads_are_distinct_codebook_entries():
    data = codec.encode(special_floats(), "codebook")
    (k,) = np.frombuffer(data[:4], "<u4")
    assert k == len(np.unique(bits(special_floats())))


def test_sparse_stores_negative_zero_as_a_non_zero():
    x = np.array([[0.0, -0.0], [0.0, 0.0]], "float32")
    data = codec.encode(x, "sparse")
    assert np.frombuffer(data[:8], "<u8")[0] == 1
    assert_bit_exact(codec.decode(data, "sparse", x.shape, "float32"), x)


@pytest.mark.parametrize("encoding", codec.ENCODINGS)
def test_decoders_reject_every_truncation_and_extension(encoding):
    x = sparse_clustered((4, 4), density=0.5)
    data = codec.encode(x, encoding)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            codec.decode(data[:cut], encoding, x.shape, x.dtype)
    with pytest.raises(ValueError):
        codec.decode(data + b"\x00", encoding, x.shape, x.dtype)


def test_codebook_decoder_rejects_out_of_range_indices():
    # k = 3 (2-bit indices) for 3 values; the last index, 3, is out of range.
    data = np.array([3], "<u4").tobytes() + np.zeros(3, "<u4").tobytes() + bytes([0b110100])
    with pytest.raises(ValueError, match="index 3"):
        codec.decode(data, "codebook", (3,), "float32")


def test_decoder_rejects_unknown_dtype_and_encoding():
    with pytest.raises(ValueError, match="dtype"):
        codec.decode(b"", "dense", (0,), "complex64")
    with pytest.raises(ValueError, match="encoding"):
        codec.decode(b"", "huffman", (0,), "float32")


def test_chooser_picks_sparse_codebook_for_a_sparse_clustered_tensor():
    x = sparse_clustered((100, 100), density=0.1, clusters=16)
    assert len(np.unique(x[x != 0])) == 16
    choice = codec.choose_encoding(x)
    assert choice.encoding == "sparse_codebook"
    assert_bit_exact(codec.decode(choice.data, choice.encoding, x.shape, x.dtype), x)
    # Positions at ~0.47 bits per element plus 4-bit indices: about 1 bit per element.
    assert choice.compressed_bytes < x.size / 8 * 1.3


def test_chooser_picks_dense_for_random_floats():
    x = np.random.default_rng(0).normal(size=(64, 64)).astype("float32")
    assert codec.choose_encoding(x).encoding == "dense"


def test_chooser_picks_codebook_for_a_dense_clustered_tensor():
    x = sparse_clustered((64, 64), density=1.0, clusters=4)
    assert codec.choose_encoding(x).encoding == "codebook"


def test_candidates_leave_out_codebooks_with_too_many_values(monkeypatch):
    monkeypatch.setattr(codec, "MAX_CODEBOOK_SIZE", 4)
    x = np.arange(16, dtype="float32").reshape(4, 4)
    assert codec.candidate_encodings(x) == ["dense", "sparse"]
    with pytest.raises(ValueError, match="distinct values"):
        codec.encode(x, "codebook")


def test_index_width():
    assert [codec.index_width(k) for k in (0, 1, 2, 3, 4, 5, 16, 17, 2**16)] == [0, 0, 1, 2, 2, 3, 4, 5, 16]


def test_dtype_names_round_trip():
    for name in codec.DTYPES:
        assert codec.dtype_name(codec.numpy_dtype(name)) == name
    with pytest.raises(ValueError):
        codec.numpy_dtype("object")
