import gzip
import os

import numpy as np
import pytest

from keras_compress import datasets


def write_mnist(folder, n=6):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, "mnist.npz"),
             x_train=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), y_train=np.arange(n) % 10,
             x_test=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), y_test=np.array([1, 2]))


def write_fashion(folder, n=5):
    sub = os.path.join(folder, "fashion-mnist")
    os.makedirs(sub, exist_ok=True)
    for prefix, count in (("train", n), ("t10k", 3)):
        with gzip.open(os.path.join(sub, f"{prefix}-labels-idx1-ubyte.gz"), "wb") as f:
            f.write(b"\0" * 8 + bytes(range(count)))
        with gzip.open(os.path.join(sub, f"{prefix}-images-idx3-ubyte.gz"), "wb") as f:
            f.write(b"\0" * 16 + bytes([255]) * (count * 784))


@pytest.fixture
def no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path


def test_mnist_is_read_from_the_folder_named_by_the_variable(no_cache, monkeypatch):
    write_mnist(no_cache / "data")
    monkeypatch.setenv("KERAS_COMPRESS_DATA", str(no_cache / "data"))
    (x, y), (xt, yt) = datasets.load("mnist")
    assert x.shape == (6, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int32 and list(yt) == [1, 2]


def test_keras_cache_comes_first(no_cache, monkeypatch):
    write_mnist(no_cache / "keras_home" / "datasets", n=4)
    write_mnist(no_cache / "data", n=6)
    monkeypatch.setenv("KERAS_COMPRESS_DATA", str(no_cache / "data"))
    (x, _), _ = datasets.load("mnist")
    assert len(x) == 4


def test_fashion_mnist_idx_files_are_read(no_cache, monkeypatch):
    write_fashion(no_cache / "data")
    monkeypatch.setenv("KERAS_COMPRESS_DATA", str(no_cache / "data"))
    (x, y), (xt, yt) = datasets.load("fashion-mnist")
    assert x.shape == (5, 28, 28, 1) and float(x.max()) == 1.0
    assert list(y) == [0, 1, 2, 3, 4] and xt.shape == (3, 28, 28, 1)


def test_missing_data_names_every_place_it_looked(no_cache, monkeypatch):
    monkeypatch.setenv("KERAS_COMPRESS_DATA", str(no_cache / "empty"))
    import keras

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(FileNotFoundError) as info:
        datasets.load("mnist")
    message = str(info.value)
    assert str(no_cache / "keras_home" / "datasets") in message
    assert str(no_cache / "empty") in message and "no network" in message


def test_unknown_dataset_is_rejected():
    with pytest.raises(ValueError, match="Unknown dataset. Allowed: \\['mnist', 'fashion_mnist'\\]"):
        datasets.load("cifar10")
