import hashlib
import json
import os
import struct
import subprocess
import sys

import builders
import keras
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers

from keras_compress import zoo
from keras_compress.export import archive, archive_format, codec, header_dictionary
from keras_compress.export.archive import ArchiveError

# database=None: no .hypothesis folder in the repository.
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SLOW = settings(FUZZ, max_examples=100)  # each example rebuilds a Keras model


def bits(array):
    array = np.asarray(array)
    return array.view(f"u{array.dtype.itemsize}")


def assert_same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(bits(x), bits(y))


def sparsify(model, density=0.05, clusters=16, seed=0):
    """Deep-Compression-like weights: `density` non-zeros from `clusters` values per tensor."""
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        centroids = rng.normal(size=clusters).astype(w.dtype)
        values = rng.choice(centroids, size=w.shape)
        if w.ndim >= 2:
            w = np.where(rng.random(w.shape) < density, values, 0).astype(w.dtype)
        else:  # biases and BN statistics: a few clusters, every element set
            w = np.abs(values) if w.size else w
        weights.append(w)
    model.set_weights(weights)
    return model


def tiny():
    builders.seeded()
    return keras.Sequential([keras.Input((4,)), layers.Dense(3, name="d")], name="tiny")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("archives")


@pytest.fixture(scope="module")
def tiny_archive(folder):
    path = folder / "tiny.kcar"
    archive.save(tiny(), path)
    return path.read_bytes()


def load_bytes(folder, data, name="probe.kcar"):
    path = folder / name
    path.write_bytes(data)
    return archive.load(path)


def assert_refused(folder, data, match=None):
    with pytest.raises(ArchiveError, match=match):
        load_bytes(folder, data)


# Round trips


@pytest.mark.parametrize("name", zoo.MODELS)
def test_zoo_models_round_trip_bit_exactly(name, folder):
    model = sparsify(zoo.build(name), density=0.1)
    path = folder / f"{name}.kcar"
    info = archive.save(model, path, level=3)
    loaded = archive.load(path)
    assert_same_weights(model, loaded)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    x = np.random.default_rng(0).normal(size=(2, *zoo.INPUT_SHAPE)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert info["bytes"] == os.path.getsize(path)
    assert len(info["tensors"]) == len(model.weights)
    assert info["raw_bytes"] == 4 * model.count_params()
    # 10% of weights from 16 clusters: indices and positions, far below float32.
    assert info["bytes"] < info["raw_bytes"] / 10
    kernels = [t for t in info["tensors"] if len(t["shape"]) >= 2 and np.prod(t["shape"]) >= 1000]
    assert {t["encoding"] for t in kernels} == {"sparse_codebook"}


def test_random_weights_round_trip_and_stay_dense(folder):
    model = zoo.lenet5()
    info = archive.save(model, folder / "random.kcar", level=1)
    assert_same_weights(model, archive.load(folder / "random.kcar"))
    # Random floats do not compress: no codebook, and within a few percent of raw.
    # (For a small tensor "sparse" with all-zero gaps can tie "dense" after zstd.)
    assert {t["encoding"] for t in info["tensors"] if t["path"].endswith("kernel")} <= {"dense", "sparse"}
    assert info["bytes"] > 0.85 * info["raw_bytes"]


@pytest.mark.parametrize("kind", sorted(builders.MODEL_KINDS))
def test_every_model_kind_round_trips(kind, folder):
    model = builders.MODEL_KINDS[kind]()
    archive.save(model, folder / f"{kind}.kcar")
    loaded = archive.load(folder / f"{kind}.kcar")
    assert type(loaded) is type(model)
    assert_same_weights(model, loaded)
    x = builders.dense_data(4)[0]
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_float16_batchnorm_and_int8_weights_round_trip(folder):
    builders.seeded()
    model = keras.Sequential([
        keras.Input((8,)),
        layers.Dense(6, dtype="float16", name="half"),
        layers.BatchNormalization(dtype="float16", name="bn"),
        layers.Dense(4, name="q"),
    ])
    model.layers[-1].quantize("int8")
    weights = [np.random.default_rng(i).normal(size=w.shape).astype(w.dtype) if w.dtype != "int8"
               else np.random.default_rng(i).integers(-127, 128, w.shape).astype("int8")
               for i, w in enumerate(model.get_weights())]
    model.set_weights(weights)
    assert {w.dtype for w in model.weights} == {"float16", "float32", "int8"}
    info = archive.save(model, folder / "mixed.kcar")
    loaded = archive.load(folder / "mixed.kcar")
    assert_same_weights(model, loaded)
    assert {t["dtype"] for t in info["tensors"]} == {"float16", "float32", "int8"}
    assert any("moving_variance" in t["path"] for t in info["tensors"])
    x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_nan_payloads_and_negative_zero_survive(folder):
    model = tiny()
    kernel = np.zeros((4, 3), "float32")
    kernel.view(np.uint32)[0, :] = [0x7FC00001, 0x80000000, 0xFFC12345]
    model.set_weights([kernel, np.array([-0.0, 0.0, 1.0], "float32")])
    archive.save(model, folder / "specials.kcar")
    assert_same_weights(model, archive.load(folder / "specials.kcar"))


def test_saving_is_deterministic(folder):
    model = tiny()
    archive.save(model, folder / "a.kcar")
    archive.save(model, folder / "b.kcar")
    assert (folder / "a.kcar").read_bytes() == (folder / "b.kcar").read_bytes()


def test_sparse_clustered_lenet_300_100_is_under_a_fortieth_of_float32(folder):
    model = sparsify(zoo.lenet_300_100(), density=0.05, clusters=16)
    for w in model.get_weights():
        assert len(np.unique(w[w != 0])) <= 16
    params = model.count_params()
    info = archive.save(model, folder / "lenet_300_100_sparse.kcar")
    assert info["bytes"] < 4 * params / 40, info["bytes"]
    assert_same_weights(model, archive.load(folder / "lenet_300_100_sparse.kcar"))


def test_format_2_frames_streams_apart_and_is_smaller_than_format_1(folder):
    model = sparsify(zoo.lenet_300_100(), density=0.03, clusters=16)
    info = archive.save(model, folder / "v2.kcar")
    data = (folder / "v2.kcar").read_bytes()
    header, payload = archive._unpack(data)
    v1 = archive._pack_raw(json.dumps(header, separators=(",", ":")).encode(), payload, level=19, version=1)
    (folder / "v1.kcar").write_bytes(v1)
    assert_same_weights(model, archive.load(folder / "v1.kcar"))  # format 1 files still load
    assert_same_weights(model, archive.load(folder / "v2.kcar"))
    # Gap varints and indices in frames apart (the small biases and codebooks join a neighbour).
    _, _, header_z, _, _, _ = archive._PREFIX.unpack_from(data, 0)
    frames, _ = archive_format._read_varint(data, archive._PREFIX.size + header_z, "test")
    assert frames >= 3
    assert info["bytes"] < 0.95 * len(v1), (info["bytes"], len(v1))


def test_the_header_dictionary_is_the_format_constant():
    # Changing these bytes would make every format 2 archive unreadable.
    assert hashlib.sha256(header_dictionary._TEXT.encode("utf-8")).hexdigest() == header_dictionary.SHA256
    assert header_dictionary.SHA256.startswith("82a4195b1f79fef7")


def frame_table(*pairs):
    return archive_format._varint(len(pairs)) + b"".join(
        archive_format._varint(stored) + archive_format._varint(raw) for stored, raw in pairs)


@pytest.mark.parametrize("region, declared, match", [
    (frame_table((5, 5)) + b"abcd", 5, "frame table declares"),  # one stored byte missing
    (frame_table((5, 5)) + b"abcdef", 5, "frame table declares"),  # one too many
    (frame_table((6, 5)) + b"abcdef", 5, "6 stored bytes for 5"),  # stored beyond raw
    (frame_table((5, 5), (1, 2)) + b"abcdef", 5, "the payload declares 5"),  # raw beyond the payload
    (frame_table((5, 5)) + b"abcde", 6, "frame table declares"),  # the frames' raw sizes fall short
    (archive_format._varint(2**40) + b"abc", 3, "cannot fit"),
    (b"\xff" * 11, 3, "truncated or longer than 64 bits"),
    (frame_table((0, 0)), 0, "0 stored bytes"),
])
def test_hostile_frame_tables_are_refused(folder, tiny_archive, region, declared, match):
    assert_refused(folder, bomb_archive(tiny_archive, region, declared), match)


def test_archive_works_without_tensorflow_under_jax(folder):
    # Keras's serializer imports TensorFlow whenever it is installed (to
    # recognise tf.TensorShape), so the subprocess hides it: archives must
    # work on a machine that has only JAX, and importing keras_compress's
    # archive module must not need TensorFlow.
    path = folder / "jax.kcar"
    code = (
        "import sys; sys.modules['tensorflow'] = None;"
        "import keras, numpy as np;"
        "from keras_compress.export import archive;"
        "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]);"
        f"archive.save(m, {str(path)!r}); n = archive.load({str(path)!r});"
        "assert all(np.array_equal(a, b) for a, b in zip(m.get_weights(), n.get_weights()));"
        "assert keras.backend.backend() == 'jax'"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# Saving refuses what could not be loaded, and writes atomically


def no_temp_files(folder):
    return [name for name in os.listdir(folder) if name.endswith(".tmp")] == []


def lambda_model():
    return keras.Sequential([keras.Input((4,)), layers.Lambda(lambda x: x * 2), layers.Dense(2)])


@keras.saving.register_keras_serializable(package="keras_compress_tests")
class OpaqueConfig(layers.Layer):
    def get_config(self):
        return {**super().get_config(), "thing": object()}


class Unregistered(layers.Layer):
    def call(self, x):
        return x


@pytest.mark.parametrize(
    "layer, match",
    [
        (lambda: layers.Lambda(lambda x: x * 2), "lambda"),
        (OpaqueConfig, "JSON"),
        (Unregistered, "not registered"),
        (lambda: layers.Dense(2, activation=lambda x: x), "lambda"),
    ],
    ids=["lambda_layer", "unserialisable_config", "unregistered_class", "lambda_activation"],
)
def test_unloadable_model_is_refused_and_leaves_no_file(tmp_path, layer, match):
    model = keras.Sequential([keras.Input((4,)), layer()])
    target = tmp_path / "model.kcar"
    target.write_bytes(b"previous")
    with pytest.raises(ValueError, match=match):
        archive.save(model, target)
    assert target.read_bytes() == b"previous"
    assert no_temp_files(tmp_path)


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        archive.save(tiny(), tmp_path / "model.kcar")
    assert os.listdir(tmp_path) == []


def test_save_validates_its_arguments(tmp_path):
    unbuilt = keras.Sequential([layers.Dense(2)])
    with pytest.raises(ValueError, match="built"):
        archive.save(unbuilt, tmp_path / "m.kcar")
    with pytest.raises(ValueError, match="level"):
        archive.save(tiny(), tmp_path / "m.kcar", level=0)
    with pytest.raises(TypeError, match="keras.Model"):
        archive.save(layers.Dense(2), tmp_path / "m.kcar")
    assert os.listdir(tmp_path) == []


# Loading refuses everything else with ArchiveError, and only ArchiveError


def test_loading_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        archive.load(tmp_path / "absent.kcar")


def test_other_files_are_not_archives(folder):
    assert_refused(folder, b"PK\x03\x04 a .keras zip", "not a keras-compress archive")
    assert_refused(folder, b"", "not a keras-compress archive")


def test_newer_version_is_refused_clearly(folder, tiny_archive):
    header, payload = archive._unpack(tiny_archive)
    newer = archive._pack_raw(json.dumps(header).encode(), payload, version=3)
    assert_refused(folder, newer, r"unsupported version 3 \(this reader supports up to 2\)")


def test_every_flipped_byte_is_caught(folder, tiny_archive):
    positions = sorted(set(range(0, 40)) | set(range(40, len(tiny_archive), 7)) | {len(tiny_archive) - 1})
    for position in positions:
        corrupt = bytearray(tiny_archive)
        corrupt[position] ^= 0x10
        assert_refused(folder, bytes(corrupt))


def test_flipped_payload_byte_is_a_checksum_mismatch(folder, tiny_archive):
    corrupt = bytearray(tiny_archive)
    corrupt[-40] ^= 1
    assert_refused(folder, bytes(corrupt), "checksum mismatch")


def test_every_truncation_is_caught(folder, tiny_archive):
    for cut in sorted(set(range(0, 64)) | set(range(64, len(tiny_archive), 5))):
        assert_refused(folder, tiny_archive[:cut], "truncated|not a keras-compress archive")
    assert_refused(folder, tiny_archive + b"\x00", "trailing")


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_are_refused(folder, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, int(rng.integers(0, 4000)), dtype=np.uint8).tobytes()
    assert_refused(folder, data)
    assert_refused(folder, archive.MAGIC + b"\x01\x00" + data)


# Valid checksum, hostile header


def repack(tiny_archive, edit=None, payload=None, header_bytes=None):
    header, original_payload = archive._unpack(tiny_archive)
    if edit is not None:
        edit(header)
    if header_bytes is None:
        header_bytes = json.dumps(header).encode()
    return archive._pack_raw(header_bytes, original_payload if payload is None else payload, level=1)


def set_weight(index, **values):
    def edit(header):
        header["weights"][index].update(values)
    return edit


def one_value_codebook():
    return struct.pack("<I", 1) + struct.pack("<f", 1.0)


HOSTILE_HEADERS = {
    "huge_shape_codebook": (set_weight(0, shape=[2**20, 2**20], encoding="codebook"), "too many elements"),
    "shape_over_max_bytes": (set_weight(0, shape=[2**29, 4], dtype="float64", encoding="codebook"), "max_bytes"),
    "negative_offset": (set_weight(0, offset=-4), "offset"),
    "offset_past_payload": (set_weight(1, offset=10**6), "offset"),
    "length_past_payload": (set_weight(1, length=10**6, encoding="codebook"), "run past"),
    "unknown_dtype": (set_weight(0, dtype="object"), "unknown dtype"),
    "unknown_encoding": (set_weight(0, encoding="pickle"), "unknown encoding"),
    "negative_dim": (set_weight(0, shape=[-4, 3]), "shape"),
    "float_dim": (set_weight(0, shape=[4.0, 3]), "shape"),
    "bool_dim": (set_weight(0, shape=[True, 3]), "shape"),
    "string_shape": (set_weight(0, shape="4,3"), "shape"),
    "dense_length_mismatch": (set_weight(0, shape=[5, 3]), "cannot hold"),
    "wrong_shape_for_model": (set_weight(1, shape=[1, 3], offset=48), "architecture builds|corrupt"),
    "extra_key": (set_weight(0, code="print(1)"), "exactly the keys"),
    "weights_not_list": (lambda h: h.update(weights={}), "must be a list"),
    "missing_weight": (lambda h: h["weights"].pop(), "cover"),
    "missing_architecture": (lambda h: h.pop("architecture"), "lacks"),
    "architecture_not_object": (lambda h: h.update(architecture="Sequential"), "architecture"),
    "architecture_is_a_layer": (
        lambda h: h.update(architecture=keras.saving.serialize_keras_object(layers.Dense(3))),
        "not a Keras model",
    ),
    "arbitrary_module": (
        lambda h: h.update(architecture={"module": "os", "class_name": "system", "config": {"command": "touch pwned"},
                                         "registered_name": None}),
        "could not rebuild",
    ),
    "lambda_layer": (
        lambda h: h.update(
            architecture=json.loads(json.dumps(keras.saving.serialize_keras_object(lambda_model()))),
        ),
        "could not rebuild",
    ),
    "not_a_keras_config": (lambda h: h.update(architecture={"a": [[[[[[]]]]]]}), "not a Keras model"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_hostile_header_with_valid_checksum_is_refused(folder, tiny_archive, case):
    edit, match = HOSTILE_HEADERS[case]
    assert_refused(folder, repack(tiny_archive, edit), match)


@pytest.mark.parametrize(
    "header_bytes, match",
    [
        (b"{not json", "JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
        (b'{"weights": [], "architecture": {}, "keras_version": 1, "keras_compress_version": "0"}', "string"),
    ],
    ids=["bad_json", "bad_utf8", "not_object", "deeply_nested", "wrong_type"],
)
def test_malformed_header_json_is_refused(folder, tiny_archive, header_bytes, match):
    assert_refused(folder, repack(tiny_archive, header_bytes=header_bytes), match)


def test_lambda_layer_archive_is_refused_by_safe_mode(folder, tiny_archive):
    def edit(header):
        header["architecture"] = json.loads(json.dumps(keras.saving.serialize_keras_object(lambda_model())))
    assert_refused(folder, repack(tiny_archive, edit), "Lambda")


def test_corrupt_weight_bytes_are_refused(folder, tiny_archive):
    header, payload = archive._unpack(tiny_archive)
    header["weights"][1].update(encoding="codebook", length=len(one_value_codebook()) + 1)
    header["weights"][0]["length"] = 48
    data = archive._pack(header, payload[:48] + one_value_codebook() + b"\x00", level=1)
    assert_refused(folder, data, "weight 1 .* is corrupt")


def bomb_archive(tiny_archive, frame, declared):
    """The tiny archive's header with `frame` as its payload region (the frame table included)."""
    body = tiny_archive[:archive._PREFIX.size]
    magic, version, header_z, header_len, _, _ = archive._PREFIX.unpack(body)
    header = tiny_archive[archive._PREFIX.size:archive._PREFIX.size + header_z]
    prefix = archive._PREFIX.pack(magic, version, header_z, header_len, len(frame), declared)
    body = prefix + header + frame
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("content_size", [True, False])
def test_decompression_bomb_fails_cleanly(folder, tiny_archive, content_size):
    params = zstandard.ZstdCompressionParameters.from_level(
        3, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=content_size)
    frame = zstandard.ZstdCompressor(compression_params=params).compress(b"\0" * (256 * 2**20))  # 256 MiB in ~8 KB
    assert len(frame) < 2**16
    region = frame_table((len(frame), 10000)) + frame  # a frame table that says 10,000 bytes
    match = "declares 268435456 bytes" if content_size else "does not decompress|decompresses to"
    assert_refused(folder, bomb_archive(tiny_archive, region, declared=10000), match)


def test_payload_over_max_bytes_is_refused(folder, tiny_archive):
    path = folder / "small.kcar"
    path.write_bytes(tiny_archive)
    with pytest.raises(ArchiveError, match="max_bytes"):
        archive.load(path, max_bytes=10)


def test_constant_tensor_of_huge_declared_shape_is_refused_before_decoding(folder, tiny_archive):
    header, payload = archive._unpack(tiny_archive)
    header["weights"] = [{"path": "x", "shape": [2**31], "dtype": "float64", "encoding": "codebook",
                          "offset": 0, "length": 12}]
    data = archive._pack(header, struct.pack("<I", 1) + struct.pack("<d", 1.0), level=1)
    assert_refused(folder, data, "max_bytes")


# Fuzzing: only ArchiveError escapes


@FUZZ
@given(data=st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(folder, data):
    assert_refused(folder, data)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255),
                                st.sampled_from(["flip", "delete", "insert", "cut"])), min_size=1, max_size=4))
def test_fuzz_mutated_archive(folder, tiny_archive, edits):
    data = bytearray(tiny_archive)
    for position, value, kind in edits:
        position %= len(data) + 1
        if kind == "flip" and position < len(data):
            data[position] ^= value
        elif kind == "delete":
            del data[position:position + value % 8 + 1]
        elif kind == "insert":
            data[position:position] = bytes([value])
        else:
            data = data[:position]
    if bytes(data) != tiny_archive:
        assert_refused(folder, bytes(data))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def load_or_archive_error(folder, data):
    try:
        model = load_bytes(folder, data)
    except ArchiveError:
        return
    assert isinstance(model, keras.Model)


@FUZZ_SLOW
@given(key=st.sampled_from(["path", "shape", "dtype", "encoding", "offset", "length"]),
       index=st.integers(0, 1), value=JSON_VALUES)
def test_fuzz_hostile_weight_entries_with_valid_checksum(folder, tiny_archive, key, index, value):
    load_or_archive_error(folder, repack(tiny_archive, set_weight(index, **{key: value})))


@FUZZ_SLOW
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       encoding=st.sampled_from(codec.ENCODINGS))
def test_fuzz_hostile_payload_with_valid_checksum(folder, tiny_archive, edits, encoding):
    header, _ = archive._unpack(tiny_archive)
    model = tiny()
    chunks = [codec.encode(w, encoding) for w in model.get_weights()]
    payload = bytearray(b"".join(chunks))
    for position, value in edits:
        payload[position % len(payload)] = value
    offset = 0
    for entry, chunk in zip(header["weights"], chunks):
        entry.update(encoding=encoding, offset=offset, length=len(chunk))
        offset += len(chunk)
    load_or_archive_error(folder, archive._pack(header, bytes(payload), level=1))
