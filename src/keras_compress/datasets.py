"""Datasets, read offline wherever a copy can be found.

`load(name)` looks, in order, in Keras's cache (`$KERAS_HOME/datasets` or
`~/.keras/datasets`), in the folder named by `KERAS_COMPRESS_DATA`, and only
then lets Keras download the data. MNIST's npz is read directly with NumPy:
an offline copy whose zip bytes differ from Keras's (same arrays) fails
Keras's hash check, which would make `keras.datasets.mnist` try a download.
"""

import gzip
import os

import numpy as np

DATASETS = ("mnist", "fashion_mnist")
_FASHION_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)


def _search_dirs():
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    dirs = [("Keras cache", os.path.join(keras_home, "datasets"))]
    extra = os.environ.get("KERAS_COMPRESS_DATA")
    if extra:
        dirs.append(("KERAS_COMPRESS_DATA", extra))
    return dirs


def _read_idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def _from_mnist_npz(path):
    with np.load(path) as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


def _from_fashion_dir(folder):
    paths = [os.path.join(folder, name) for name in _FASHION_FILES]
    y_train = _read_idx(paths[0], 8)
    x_train = _read_idx(paths[1], 16).reshape(len(y_train), 28, 28)
    y_test = _read_idx(paths[2], 8)
    x_test = _read_idx(paths[3], 16).reshape(len(y_test), 28, 28)
    return (x_train, y_train), (x_test, y_test)


def _find(name):
    looked = []
    for label, folder in _search_dirs():
        if name == "mnist":
            path = os.path.join(folder, "mnist.npz")
            looked.append(f"{label}: {path}")
            if os.path.isfile(path):
                return _from_mnist_npz(path), looked
        else:
            sub = os.path.join(folder, "fashion-mnist")
            looked.append(f"{label}: {sub}/")
            if all(os.path.isfile(os.path.join(sub, f)) for f in _FASHION_FILES):
                return _from_fashion_dir(sub), looked
    return None, looked


def _normalise(arrays):
    (x_train, y_train), (x_test, y_test) = arrays

    def images(x):
        return (np.asarray(x, np.float32) / 255.0)[..., None]

    return (
        (images(x_train), np.asarray(y_train, np.int32)),
        (images(x_test), np.asarray(y_test, np.int32)),
    )


def load(name):
    """Loads a dataset as normalised arrays.

    Args:
        name: `"mnist"` or `"fashion_mnist"`.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: images as float32 in [0, 1]
        with a channel axis, shape `(N, 28, 28, 1)`; labels as int32.

    Raises:
        ValueError: if `name` is not a known dataset.
        FileNotFoundError: if no copy is found and the download fails; the
            message lists every place that was searched.

    Example:
    >>> (x, y), (x_test, y_test) = keras_compress.datasets.load("mnist")
    """
    key = str(name).replace("-", "_").lower()
    if key not in DATASETS:
        raise ValueError(
            f"Unknown dataset. Allowed: {list(DATASETS)}. Received: name={name!r}"
        )
    arrays, looked = _find(key)
    if arrays is not None:
        return _normalise(arrays)
    import keras

    try:
        arrays = getattr(keras.datasets, key).load_data()
    except Exception as error:  # any download failure: say where we looked
        places = "; ".join(looked) or "(no folders configured)"
        raise FileNotFoundError(
            f"Could not find dataset {key!r}. Looked in: {places}; then Keras's "
            f"download failed ({type(error).__name__}: {error}). Set "
            "KERAS_COMPRESS_DATA to a folder holding mnist.npz or "
            "fashion-mnist/*.gz."
        ) from None
    return _normalise(arrays)
