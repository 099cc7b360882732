"""Data specs: each kind from small files written here, splits, streams, and every bad input."""

import os
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_compress import data as kd
from keras_compress.data import DataError


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return str(path)


def test_npz_default_keys_as_given(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.ones((6, 3)), y_train=np.arange(6), x_test=np.zeros((2, 3)), y_test=np.arange(2))
    data = kd.load(str(path))
    assert data.splits == "as given"
    assert (data.train.num_samples, data.test.num_samples) == (6, 2)
    x, y = data.test.take()
    assert np.all(x == 0) and list(y) == [0, 1]


def test_npz_named_keys_a_list_of_inputs_and_a_seeded_split(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, a=np.arange(20.0).reshape(10, 2), b=np.arange(10.0)[:, None], labels=np.arange(10))
    data = kd.load(f"{path}?x=a,b&y=labels&test_fraction=0.3&seed=4")
    x, y = data.train.take()
    assert isinstance(x, list) and len(x) == 2 and data.test.num_samples == 3
    assert np.array_equal(x[0][:, 0] / 2, y)  # inputs and targets shuffled together
    again = kd.load(f"{path}?x=a,b&y=labels&test_fraction=0.3&seed=4")
    assert np.array_equal(again.test.take()[1], data.test.take()[1])
    assert "seed 4" in data.describe()["splits"] and "test 30%" in data.describe()["splits"]
    with pytest.raises(DataError, match=r"\['nope'\].*Keys found: \['a', 'b', 'labels'\]"):
        kd.load(f"{path}?x=a&y=nope")


def test_csv_reads_numeric_features_and_a_named_target(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["a", "b", "price"], [(i, 2 * i, 3 * i) for i in range(10)])
    data = kd.load(f"{path}?target=price&test_fraction=0.2")
    x, y = data.train.take()
    assert x.shape == (8, 2) and x.dtype == np.float32
    assert np.array_equal(y, 3 * x[:, 0])
    test = write_csv(tmp_path / "test.csv", ["b", "a", "price"], [(2, 1, 3)])
    given = kd.load(f"{path}?target=price&test={test}")
    assert given.splits == "as given" and given.test.take()[0].tolist() == [[1.0, 2.0]]  # columns by name


@pytest.mark.parametrize("spec_suffix, rows, message", [
    ("?target=price", [("1", "x", "3")], r"line 2, column 'b': 'x' is not a number"),
    ("?target=cost", [("1", "2", "3")], r"column\(s\) \['cost'\] not in .*Columns found: \['a', 'b', 'price'\]"),
    ("", [("1", "2", "3")], r"needs \?target=COLUMN"),
    ("?target=price", [("1", "2")], r"line 2 has 2 fields"),
    ("?target=price", [("1", "nan", "3")], r"NaN or infinite"),
])
def test_csv_bad_input_is_one_clear_error(tmp_path, spec_suffix, rows, message):
    path = write_csv(tmp_path / "t.csv", ["a", "b", "price"], rows)
    with pytest.raises(DataError, match=message):
        kd.load(path + spec_suffix)


@pytest.mark.parametrize("spec, message", [
    ("cifar10", "not a known kind"),
    ("missing.npz", "file not found"),
    ("missing.csv?target=y", "file not found"),
    ("mnist?bogus", "not key=value"),
    ("mnist?image_size=3x3", r"unknown option\(s\) \['image_size'\]"),
    ("", "non-empty string"),
])
def test_bad_specs_name_the_spec(spec, message):
    with pytest.raises(DataError, match=message):
        kd.load(spec)


def _write_images(folder, classes=2, per_class=5, size=8, channels=1):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        os.makedirs(folder / f"class_{c}", exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
            mode = "L" if channels == 1 else "RGB"
            Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(folder / f"class_{c}" / f"{i}.png")


def _model(shape):
    return keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(2)])


def test_image_folder_sized_and_coloured_for_the_model_and_split_with_a_seed(tmp_path):
    _write_images(tmp_path / "photos", size=8, channels=3)
    data = kd.load(f"{tmp_path / 'photos'}?test_fraction=0.2&scale=1/255", model=_model((6, 6, 1)))
    assert data.class_names == ("class_0", "class_1")
    assert (data.train.num_samples, data.test.num_samples) == (8, 2)
    assert data.train.streaming
    x, y = data.train.take()
    assert x.shape == (8, 6, 6, 1) and 0.0 <= x.min() and x.max() <= 1.0  # resized, grayscale, scaled
    assert sorted(np.concatenate([y, data.test.take()[1]]).tolist()) == [0] * 5 + [1] * 5
    batches = data.train.fit_kwargs(3)["x"]  # fine-tuning takes the recipe's batch size, not the folder's
    assert [len(b[0]) for b in batches.as_numpy_iterator()] == [3, 3, 2] and data.train.count_batches(3) == 3
    rgb = kd.load(str(tmp_path / "photos"), model=_model((8, 8, 3)))
    assert rgb.train.take(1)[0].shape == (1, 8, 8, 3) and rgb.train.take(1)[0].max() > 1.0


def test_image_folder_with_train_and_test_subfolders_is_taken_as_given(tmp_path):
    _write_images(tmp_path / "root" / "train", per_class=3)
    _write_images(tmp_path / "root" / "test", per_class=2)
    data = kd.load(str(tmp_path / "root"), model=_model((8, 8, 1)))
    assert data.splits.startswith("as given")
    assert (data.train.num_samples, data.test.num_samples) == (6, 4)


def test_an_image_that_cannot_be_decoded_is_a_clear_error(tmp_path):
    _write_images(tmp_path / "photos", per_class=2)
    (tmp_path / "photos" / "class_0" / "broken.png").write_bytes(b"not a png at all")
    data = kd.load(str(tmp_path / "photos"), model=_model((8, 8, 1)))
    with pytest.raises(DataError, match="cannot be decoded"):
        for split in (data.train, data.test):
            split.take()


@pytest.fixture
def entry_module(tmp_path, monkeypatch):
    (tmp_path / "user_data.py").write_text(textwrap.dedent("""
        import numpy as np
        import keras

        PASSES = {"n": 0}

        def pairs(n=10):
            x = np.arange(n * 2, dtype="float32").reshape(n, 2)
            return x, x[:, 0] * 2

        class Batches(keras.utils.PyDataset):
            def __init__(self, n, batch):
                super().__init__()
                self.n, self.batch = n, batch
            def __len__(self):
                return -(-self.n // self.batch)
            def __getitem__(self, i):
                PASSES["n"] += 1
                start = i * self.batch
                count = min(self.batch, self.n - start)
                x = np.full((count, 2), i, "float32")
                return x, np.zeros((count,), "float32")

        def streams(n=100, batch=10):
            return {"train": Batches(n, batch), "test": Batches(n // 2, batch)}

        def generators():
            def gen():
                for i in range(3):
                    yield np.ones((4, 2), "float32") * i, np.zeros(4, "float32")
            return {"train": gen, "test": gen()}

        def broken():
            raise RuntimeError("the disk is gone")

        def one_stream():
            return Batches(10, 5)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_data"
    sys.modules.pop("user_data", None)


def test_entry_point_arrays_are_split_with_the_seed_and_take_keyword_options(entry_module):
    data = kd.load(f"{entry_module}:pairs?n=20&test_fraction=0.25")
    assert (data.train.num_samples, data.test.num_samples) == (15, 5)
    x, y = data.test.take()
    assert np.array_equal(y, x[:, 0] * 2)


def test_a_pydataset_is_read_batch_by_batch_and_only_as_far_as_needed(entry_module):
    import user_data

    data = kd.load(f"{entry_module}:streams?n=100&batch=10")
    assert data.train.streaming and data.describe()["streaming"]
    user_data.PASSES["n"] = 0
    x, _ = data.train.take(25)
    assert x.shape == (25, 2) and user_data.PASSES["n"] == 3  # three batches of ten, no more
    sizes = [len(x) for x, _ in data.test.batches()]
    assert sizes == [10] * 5 and data.test.num_samples == 50
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    history = model.fit(**data.train.fit_kwargs(32), epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1
    assert data.subset(15).train.take()[0].shape == (15, 2)


def test_generators_stream_and_a_generator_object_is_re_made_for_each_pass(entry_module):
    data = kd.load(f"{entry_module}:generators")
    for _ in range(2):  # the second pass calls the entry point again
        assert sum(len(x) for x, _ in data.test.batches()) == 12
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    kwargs = data.train.fit_kwargs(4)
    assert kwargs["steps_per_epoch"] == 3
    model.fit(**kwargs, epochs=2, verbose=0)


@pytest.mark.parametrize("location, message", [
    ("user_data:broken", r"raised RuntimeError: the disk is gone"),
    ("user_data:nothing", "has no function 'nothing'"),
    ("no_such_module_here:f", "cannot import module"),
    ("user_data:one_stream", r"a stream cannot be split here"),
])
def test_entry_point_errors_name_the_spec(entry_module, location, message):
    with pytest.raises(DataError, match=message):
        kd.load(location)


def test_legacy_array_pairs_become_a_dataset_and_bad_ones_are_refused():
    x = np.zeros((4, 2))
    data = kd.as_dataset(((x, np.arange(4)), (x[:2], np.arange(2))))
    assert data.test.num_samples == 2 and data.splits == "as given"
    with pytest.raises(ValueError, match="same number of samples"):
        kd.as_dataset(((x, np.arange(3)), (x, np.arange(4))))
    with pytest.raises(ValueError, match="must be a keras_compress.data.Dataset"):
        kd.as_dataset("mnist")
