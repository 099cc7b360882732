"""Readers of each data spec kind: built-in names, `.npz`, `.csv`, image folders, Python entry points."""

import csv
import importlib
import os

import numpy as np

from keras_compress.data.dataset import Dataset, from_pairs
from keras_compress.data.spec import DataError, fraction, number
from keras_compress.data.split import Split

IMAGE_FOLDER_BATCH = 32


def _common(spec):
    return {"test_fraction": spec.option("test_fraction", 0.2, fraction),
            "validation_fraction": spec.option("validation_fraction", 0.0, fraction),
            "seed": spec.option("seed", 0, int)}


def read_builtin(spec, model=None):
    from keras_compress import datasets

    train, test = datasets.load(spec.location)
    return from_pairs(spec.text, train, test, **_common(spec))


def read_npz(spec, model=None):
    try:
        archive = np.load(spec.location, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"data spec {spec.text!r}: cannot read {spec.location!r} as .npz: {error}") from None
    with archive:
        keys = sorted(archive.files)

        def get(option, default, required):
            names = spec.option(option, default)
            if names is None:
                return None
            found = [n for n in names.split(",") if n in archive.files]
            missing = [n for n in names.split(",") if n not in archive.files]
            if missing:
                if not required and option not in spec.options:
                    return None
                raise DataError(f"data spec {spec.text!r}: key(s) {missing} not in {spec.location!r}. "
                                f"Keys found: {keys}")
            arrays = [archive[n] for n in found]
            return arrays[0] if len(arrays) == 1 else arrays

        if "x" in spec.options:  # one pool of samples, split with the seed
            train = (get("x", None, True), get("y", "y", True))
            return from_pairs(spec.text, train, **_common(spec))
        train = (get("x_train", "x_train", True), get("y_train", "y_train", True))
        test = (get("x_test", "x_test", False), get("y_test", "y_test", False))
        validation = (get("x_validation", "x_validation", False), get("y_validation", "y_validation", False))
    test = test if test[0] is not None and test[1] is not None else None
    validation = validation if validation[0] is not None and validation[1] is not None else None
    return from_pairs(spec.text, train, test, validation, **_common(spec))


def _read_csv_file(spec, path, targets, features):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"data spec {spec.text!r}: cannot read {path!r}: {error}") from None
    if len(rows) < 2:
        raise DataError(f"data spec {spec.text!r}: {path!r} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    missing = [t for t in targets + (features or []) if t not in header]
    if missing:
        raise DataError(f"data spec {spec.text!r}: column(s) {missing} not in {path!r}. Columns found: {header}")
    feature_names = features or [h for h in header if h not in targets]
    if not feature_names:
        raise DataError(f"data spec {spec.text!r}: {path!r} has no feature columns besides the target")
    values = np.empty((len(rows) - 1, len(header)), np.float32)
    wanted = {header.index(n) for n in feature_names + targets}
    for i, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise DataError(f"data spec {spec.text!r}: {path!r} line {i + 2} has {len(row)} fields, "
                            f"the header has {len(header)}")
        for j in wanted:
            try:
                values[i, j] = float(row[j])
            except ValueError:
                raise DataError(f"data spec {spec.text!r}: {path!r} line {i + 2}, column {header[j]!r}: "
                                f"{row[j]!r} is not a number (features and targets must be numeric)") from None
    if not np.all(np.isfinite(values[:, sorted(wanted)])):
        raise DataError(f"data spec {spec.text!r}: {path!r} holds NaN or infinite values")
    x = values[:, [header.index(n) for n in feature_names]]
    y = values[:, [header.index(n) for n in targets]]
    return (x, y[:, 0] if len(targets) == 1 else y), feature_names


def read_csv(spec, model=None):
    target = spec.option("target")
    if not target:
        raise DataError(f"data spec {spec.text!r}: a CSV source needs ?target=COLUMN (the column to predict)")
    targets = [t.strip() for t in target.split(",")]
    features = spec.option("features")
    features = [f.strip() for f in features.split(",")] if features else None
    train, names = _read_csv_file(spec, spec.location, targets, features)
    test = None
    if spec.option("test"):
        test_path = spec.option("test")
        if not os.path.isfile(test_path):
            raise DataError(f"data spec {spec.text!r}: test file not found: {test_path!r}")
        test, _ = _read_csv_file(spec, test_path, targets, names)
    return from_pairs(spec.text, train, test, **_common(spec))


def _image_settings(spec, model):
    shape = None
    if model is not None and len(getattr(model, "inputs", []) or []) == 1:
        shape = tuple(model.inputs[0].shape[1:])
    size = spec.option("image_size")
    if size:
        try:
            height, width = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise DataError(f"data spec {spec.text!r}: image_size must be HxW, e.g. 224x224. "
                            f"Received: {size!r}") from None
    elif shape is not None and len(shape) == 3 and shape[0] and shape[1]:
        height, width = int(shape[0]), int(shape[1])
    else:
        raise DataError(f"data spec {spec.text!r}: the model's input size is not fixed; name it, e.g. "
                        "?image_size=224x224")
    channels = int(shape[2]) if shape is not None and len(shape) == 3 and shape[2] else 3
    color_mode = spec.option("color_mode") or {1: "grayscale", 3: "rgb", 4: "rgba"}.get(channels)
    if color_mode not in ("grayscale", "rgb", "rgba"):
        raise DataError(f"data spec {spec.text!r}: color_mode must be grayscale, rgb or rgba "
                        f"(the model has {channels} channels). Received: {color_mode!r}")
    return (height, width), color_mode


def _image_split(spec, folder, name, image_size, color_mode, batch_size, scale, **split_args):
    import keras

    try:
        dataset = keras.utils.image_dataset_from_directory(
            folder, labels="inferred", label_mode="int", color_mode=color_mode, image_size=image_size,
            batch_size=batch_size, shuffle=name == "train", seed=split_args.pop("seed", 0), verbose=False,
            **split_args)
    except (ValueError, OSError) as error:
        raise DataError(f"data spec {spec.text!r}: cannot read images from {folder!r}: {error}") from None
    datasets = list(dataset) if isinstance(dataset, (list, tuple)) else [dataset]
    class_names = getattr(datasets[0], "class_names", None)
    counts = [len(getattr(d, "file_paths", None) or []) or None for d in datasets]
    if scale != 1.0:
        datasets = [d.map(lambda x, y: (x * scale, y)) for d in datasets]

    def split_of(d, split_name, count):
        def factory():
            try:
                yield from d.as_numpy_iterator()
            except Exception as error:  # noqa: BLE001 - TensorFlow raises its own types on a bad image
                if type(error).__name__ in ("InvalidArgumentError", "UnknownError", "NotFoundError"):
                    raise DataError(f"data spec {spec.text!r}: an image in {folder!r} cannot be decoded: "
                                    f"{' '.join(str(error).split())[:300]}") from None
                raise

        return Split.from_batches(factory, name=split_name, keras_input=d, num_samples=count,
                                  rebatch=d.rebatch, source=f"data spec {spec.text!r}")

    names = (name, "test")
    return [split_of(d, n, c) for d, n, c in zip(datasets, names, counts)], class_names


def read_folder(spec, model=None):
    image_size, color_mode = _image_settings(spec, model)
    batch_size = spec.option("batch_size", IMAGE_FOLDER_BATCH, int)
    scale = spec.option("scale", 1.0, number)
    common = _common(spec)
    settings = {"image_size": image_size, "color_mode": color_mode, "batch_size": batch_size,
                "scale": float(scale)}
    root = spec.location
    if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
        (train,), names = _image_split(spec, os.path.join(root, "train"), "train", **settings)
        (test,), _ = _image_split(spec, os.path.join(root, "test"), "test", **settings)
        validation = None
        if os.path.isdir(os.path.join(root, "validation")):
            (validation,), _ = _image_split(spec, os.path.join(root, "validation"), "validation", **settings)
        splits = "as given (train/, test/ folders)"
    else:
        (train, test), names = _image_split(spec, root, "train", **settings, validation_split=common[
            "test_fraction"] or 0.2, subset="both", seed=common["seed"])
        validation = None
        splits = f"test {100 * (common['test_fraction'] or 0.2):g}% split off with seed {common['seed']}"
    return Dataset(spec.text, train, test, validation, splits, tuple(names or ()))


def _is_pair(value):
    return isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], tuple)


def _entry_split(spec, value, name, refetch):
    """One part an entry point returned, as a `Split`."""
    import keras

    source = f"data spec {spec.text!r}"
    if isinstance(value, Split):
        return value
    if _is_pair(value):
        return Split.from_arrays(*value, name=name, source=source)
    if isinstance(value, keras.utils.PyDataset):
        return Split.from_batches(lambda: (value[i] for i in range(value.num_batches or len(value))),
                                  name=name, keras_input=value, source=source)
    if type(value).__module__.startswith("tensorflow") and hasattr(value, "as_numpy_iterator"):
        return Split.from_batches(value.as_numpy_iterator, name=name, keras_input=value, source=source)
    if callable(value):
        return Split.from_batches(value, name=name, source=source)
    if hasattr(value, "__next__"):  # a generator object: call the entry point again for each pass
        return Split.from_batches(lambda: refetch(name), name=name, source=source)
    raise DataError(f"{source}: the {name} part is a {type(value).__name__}; allowed: (x, y) arrays, a "
                    "keras.utils.PyDataset, a tf.data.Dataset, a generator or a function returning one")


def read_entry(spec, model=None):
    module_name, _, function_name = spec.location.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise DataError(f"data spec {spec.text!r}: cannot import module {module_name!r}: {error}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise DataError(f"data spec {spec.text!r}: module {module_name!r} has no function {function_name!r}")
    kwargs = {k: number(v) for k, v in spec.options.items() if k not in ("test_fraction", "validation_fraction",
                                                                          "seed")}

    def call():
        try:
            return function(**kwargs)
        except Exception as error:  # noqa: BLE001 - the user's code: say whose error it is
            raise DataError(f"data spec {spec.text!r}: {spec.location}(**{kwargs}) raised "
                            f"{type(error).__name__}: {error}") from None

    value = call()
    if isinstance(value, Dataset):
        return value
    parts = None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"train", "test", "validation"})
        if unknown or "train" not in value:
            raise DataError(f"data spec {spec.text!r}: the returned dict must have keys 'train' and optionally "
                            f"'test', 'validation'. Received keys: {sorted(value)}")
        parts = value
    elif isinstance(value, tuple) and len(value) in (2, 3) and all(_is_pair(v) for v in value):
        parts = dict(zip(("train", "test") if len(value) == 2 else ("train", "validation", "test"), value))
    elif _is_pair(value):
        parts = {"train": value}
    else:
        parts = {"train": value}

    def refetch(name):
        again = call()
        return (again[name] if isinstance(again, dict) else again)

    if all(_is_pair(v) for v in parts.values()):
        return from_pairs(spec.text, parts["train"], parts.get("test"), parts.get("validation"), **_common(spec))
    if "test" not in parts:
        raise DataError(f"data spec {spec.text!r}: a stream cannot be split here; return "
                        "{'train': ..., 'test': ...} from the function")
    splits = {name: _entry_split(spec, part, name, refetch) for name, part in parts.items()}
    return Dataset(spec.text, splits["train"], splits["test"], splits.get("validation"), "as given")


READERS = {"builtin": read_builtin, "npz": read_npz, "csv": read_csv, "folder": read_folder, "entry": read_entry}
