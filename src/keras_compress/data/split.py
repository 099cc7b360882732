"""A split of a dataset, held as arrays or read batch by batch.

`Split` is what every consumer of data in keras-compress reads (fine-tuning,
calibration, sensitivity, Keras and LiteRT evaluation): `batches()` to go
through it, `take(n)` for the first `n` samples as arrays, `fit_kwargs()` for
`model.fit`. A split built from arrays slices them; a streaming split
(a `keras.utils.PyDataset`, a `tf.data.Dataset`, a generator function) is
never materialised whole: only `take(n)` gathers, and only `n` samples.

Inputs and targets may be structures: one array, a list of arrays (one per
model input or output, in order) or a dict by input or output name.
"""

import itertools

import numpy as np


def map_structure(fn, value):
    """`fn` applied to every array of a structure of arrays (array, list, tuple or dict)."""
    if isinstance(value, dict):
        return {key: map_structure(fn, item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_structure(fn, item) for item in value)
    return fn(value)


def leaves(value):
    """The arrays of a structure, in order (dicts by insertion order)."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


def structure_length(value):
    """Number of samples of a structure of arrays (the first array's length)."""
    first = leaves(value)
    if not first:
        raise ValueError("an empty structure holds no samples. Received: an empty list or dict")
    return len(first[0])


def _concat(parts):
    first = parts[0]
    if isinstance(first, dict):
        return {key: _concat([p[key] for p in parts]) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_concat([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate([np.asarray(p) for p in parts])


def _as_numpy(value):
    return map_structure(lambda a: np.asarray(a), value)


def _pair(item, source):
    """(x, y) of one batch as a source yields it: `(x, y)`, `(x, y, weights)` or `x` alone."""
    if isinstance(item, tuple) and len(item) in (2, 3):
        return _as_numpy(item[0]), None if item[1] is None else _as_numpy(item[1])
    if isinstance(item, dict) and "x" in item:
        return _as_numpy(item["x"]), _as_numpy(item["y"]) if "y" in item else None
    if isinstance(item, (np.ndarray, list, dict)):
        return _as_numpy(item), None
    raise ValueError(
        f"{source} must yield batches (x, y), (x, y, sample_weight) or x alone. "
        f"Received: a {type(item).__name__}"
    )


class Split:
    """One split (train, validation or test) of a dataset.

    Build it with `Split.from_arrays(x, y)` or `Split.from_batches(factory)`.

    Attributes:
        name: `"train"`, `"validation"` or `"test"`.
        num_samples: samples in the split, or `None` when a stream does not say.
        streaming: whether the split is read batch by batch from a source.

    Example:
    >>> split = Split.from_arrays(x_test, y_test, name="test")
    >>> for x, y in split.batches(256): ...
    >>> x_calibration, _ = split.take(256)
    """

    def __init__(self, name, *, x=None, y=None, factory=None, num_samples=None, keras_input=None,
                 rebatch=None, source="data"):
        self.name = name
        self._x, self._y = x, y
        self._factory = factory
        self._keras_input = keras_input  # what model.fit may take as it is (a PyDataset, a tf.data.Dataset)
        self._rebatch = rebatch  # batch_size -> that input in batches of batch_size, where the source allows
        self.num_samples = num_samples
        self.source = source

    @classmethod
    def from_arrays(cls, x, y=None, name="train", source="arrays"):
        """A split over arrays (or structures of arrays) held in memory.

        Raises:
            ValueError: if inputs and targets hold different numbers of samples, or none.
        """
        x = _as_numpy(x)
        y = None if y is None else _as_numpy(y)
        count = structure_length(x)
        for leaf in leaves(x) + ([] if y is None else leaves(y)):
            if len(leaf) != count:
                raise ValueError(
                    f"{source}: every input and target array of the {name} split must hold the same "
                    f"number of samples. Received lengths {[len(a) for a in leaves(x)]} (inputs) and "
                    f"{[] if y is None else [len(a) for a in leaves(y)]} (targets)"
                )
        if count == 0:
            raise ValueError(f"{source}: the {name} split holds no samples")
        return cls(name, x=x, y=y, num_samples=count, source=source)

    @classmethod
    def from_batches(cls, factory, name="train", num_samples=None, keras_input=None, rebatch=None,
                     source="stream"):
        """A split read batch by batch: `factory()` returns a fresh iterator of batches each time.

        Args:
            factory: a callable returning an iterable of `(x, y)` batches.
            name: the split's name.
            num_samples: samples in the split when known.
            keras_input: an object `model.fit` takes as it is (a PyDataset or tf.data.Dataset), if any.
            rebatch: `rebatch(batch_size)` returns `keras_input` in batches of that size (an image folder),
                so fine-tuning takes the recipe's batch size; without it a stream's own batches are used.
            source: how the data was named (for errors).
        """
        return cls(name, factory=factory, num_samples=num_samples, keras_input=keras_input, rebatch=rebatch,
                   source=source)

    @property
    def streaming(self):
        return self._factory is not None

    def __repr__(self):
        kind = "streaming" if self.streaming else "arrays"
        return f"Split({self.name!r}, {kind}, num_samples={self.num_samples})"

    def batches(self, batch_size=256):
        """Yields `(x, y)` NumPy batches; a stream's own batches, or `batch_size` slices of arrays."""
        if not self.streaming:
            for start in range(0, self.num_samples, batch_size):
                chunk = slice(start, start + batch_size)
                yield (map_structure(lambda a: a[chunk], self._x),
                       None if self._y is None else map_structure(lambda a: a[chunk], self._y))
            return
        count = 0
        for item in self._factory():
            x, y = _pair(item, self.source)
            count += structure_length(x)
            yield x, y
        if count == 0:
            raise ValueError(f"{self.source}: the {self.name} split yielded no samples")
        if self.num_samples is None:
            self.num_samples = count

    def take(self, n=None):
        """The first `n` samples (all when `None`) as `(x, y)` arrays.

        Example:
        >>> x_calibration, _ = split.take(256)
        """
        if not self.streaming:
            if n is None:
                return self._x, self._y
            chunk = slice(0, n)
            return (map_structure(lambda a: a[chunk], self._x),
                    None if self._y is None else map_structure(lambda a: a[chunk], self._y))
        xs, ys, count = [], [], 0
        for x, y in self.batches():
            xs.append(x)
            ys.append(y)
            count += structure_length(x)
            if n is not None and count >= n:
                break
        x = _concat(xs)
        y = None if ys[0] is None else _concat(ys)
        if n is not None:
            x = map_structure(lambda a: a[:n], x)
            y = None if y is None else map_structure(lambda a: a[:n], y)
        return x, y

    def last(self, n):
        """The last `n` samples of an in-memory split, or the first `n` of a stream (held-out scoring)."""
        if self.streaming:
            return self.take(n)
        chunk = slice(max(0, self.num_samples - n), None)
        return (map_structure(lambda a: a[chunk], self._x),
                None if self._y is None else map_structure(lambda a: a[chunk], self._y))

    def first_batch(self):
        """The first batch `(x, y)`: what shape and dtype checks read."""
        return next(iter(self.batches(32)))

    def count_batches(self, batch_size):
        """Batches one pass yields (for `steps_per_epoch`); counted by a pass over a stream that does not say."""
        if not self.streaming or (self._rebatch is not None and self.num_samples is not None):
            return -(-self.num_samples // batch_size)
        return sum(1 for _ in self._factory())

    def fit_kwargs(self, batch_size):
        """Keyword arguments for `model.fit` that read this split (batch by batch for a stream).

        Example:
        >>> model.fit(**split.fit_kwargs(128), epochs=2)
        """
        if not self.streaming:
            return {"x": self._x, "y": self._y, "batch_size": batch_size, "shuffle": True}
        if self._rebatch is not None:
            return {"x": self._rebatch(batch_size)}
        if self._keras_input is not None:
            return {"x": self._keras_input}
        steps = self.count_batches(batch_size)

        def forever():
            while True:
                for item in self._factory():
                    yield _pair(item, self.source)

        return {"x": forever(), "steps_per_epoch": steps}

    def subset(self, n):
        """A split of the first `n` samples (a stream is read only that far)."""
        if not self.streaming:
            x, y = self.take(n)
            return Split.from_arrays(x, y, name=self.name, source=self.source)
        factory = self._factory

        def head():
            count = 0
            for item in factory():
                x, y = _pair(item, self.source)
                left = n - count
                if left <= 0:
                    return
                size = structure_length(x)
                if size > left:
                    x = map_structure(lambda a: a[:left], x)
                    y = None if y is None else map_structure(lambda a: a[:left], y)
                count += min(size, left)
                yield x, y

        total = n if self.num_samples is None else min(n, self.num_samples)
        return Split.from_batches(head, name=self.name, num_samples=total, source=self.source)


def split_arrays(x, y, fractions, seed, source):
    """Shuffles `(x, y)` with `seed` and cuts it into parts of the given fractions (the rest is the first part).

    Returns:
        A list of `(x, y)` pairs, one per fraction plus the first (remainder) part.
    """
    count = structure_length(x)
    order = np.random.default_rng(seed).permutation(count)
    sizes = [int(round(f * count)) for f in fractions]
    if sum(sizes) >= count or any(s < 1 for s in sizes):
        raise ValueError(
            f"{source}: cannot split {count} samples into fractions {list(fractions)} and keep every part "
            "non-empty"
        )
    bounds = list(itertools.accumulate([count - sum(sizes)] + sizes))
    parts, start = [], 0
    for end in bounds:
        index = order[start:end]
        parts.append((map_structure(lambda a: a[index], x),
                      None if y is None else map_structure(lambda a: a[index], y)))
        start = end
    return parts
