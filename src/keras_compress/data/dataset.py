"""`Dataset`: the train, validation and test splits of a user's data, and how they were made."""

import dataclasses

from keras_compress.data.split import Split, split_arrays


@dataclasses.dataclass
class Dataset:
    """A user's data: train and test splits (a validation split when given), each a `Split`.

    Attributes:
        spec: the data spec it was read from (or `"arrays"`).
        train, test: the splits fine-tuning/calibration and every measurement read.
        validation: a validation split, or `None`.
        splits: how the splits were made, e.g. `"as given"` or `"test 20% split off with seed 0"`.
        class_names: class names of an image folder, else `None`.

    Example:
    >>> data = keras_compress.data.load("table.csv?target=price")
    >>> data.describe()["splits"]
    'test 20% split off with seed 0'
    """

    spec: str
    train: Split
    test: Split
    validation: Split | None = None
    splits: str = "as given"
    class_names: tuple | None = None

    def describe(self):
        """What the report states about the data: spec, sample counts, how the splits were made."""
        out = {"data": self.spec, "splits": self.splits,
               "train_samples": self.train.num_samples, "test_samples": self.test.num_samples}
        if self.validation is not None:
            out["validation_samples"] = self.validation.num_samples
        if self.train.streaming or self.test.streaming:
            out["streaming"] = True
        if self.class_names:
            out["classes"] = list(self.class_names)
        return out

    def subset(self, n):
        """The same data cut to the first `n` samples of each split (quick runs)."""
        return dataclasses.replace(
            self, train=self.train.subset(n), test=self.test.subset(n),
            validation=None if self.validation is None else self.validation.subset(n),
            splits=f"{self.splits}; first {n} samples of each split")


def from_pairs(spec, train, test=None, validation=None, *, test_fraction=0.2, validation_fraction=0.0,
               seed=0, source=None):
    """A `Dataset` from `(x, y)` array pairs; missing test/validation splits are split off `train` with `seed`.

    Raises:
        ValueError: if a split is malformed or the fractions leave a part empty.
    """
    source = source or f"data spec {spec!r}"
    cuts, notes = [], []
    if test is None:
        cuts.append(("test", test_fraction))
        notes.append(f"test {100 * test_fraction:g}%")
    if validation is None and validation_fraction:
        cuts.append(("validation", validation_fraction))
        notes.append(f"validation {100 * validation_fraction:g}%")
    parts = {"test": test, "validation": validation}
    if cuts:
        pieces = split_arrays(*train, [f for _, f in cuts], seed, source)
        train = pieces[0]
        for (name, _), piece in zip(cuts, pieces[1:]):
            parts[name] = piece
    splits = "as given" if not cuts else f"{' and '.join(notes)} split off the training data with seed {seed}"
    made = {name: Split.from_arrays(*pair, name=name, source=source)
            for name, pair in (("train", train), *parts.items()) if pair is not None}
    return Dataset(spec, made["train"], made["test"], made.get("validation"), splits)


def as_dataset(data, spec="arrays"):
    """`data` as a `Dataset`: a `Dataset` as it is, or `((x_train, y_train), (x_test, y_test))` arrays.

    Raises:
        ValueError: if `data` is neither.

    Example:
    >>> as_dataset(keras_compress.datasets.load("mnist")).test.num_samples
    10000
    """
    if isinstance(data, Dataset):
        return data
    try:
        train, test = data
        train, test = tuple(train), tuple(test)
        if len(train) != 2 or len(test) != 2:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(
            "data must be a keras_compress.data.Dataset (from keras_compress.data.load) or "
            f"((x_train, y_train), (x_test, y_test)). Received: {type(data).__name__}"
        ) from None
    return from_pairs(spec, train, test)
