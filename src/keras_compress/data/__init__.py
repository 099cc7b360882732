"""A user's data from one spec string: the CLI's `--data`, a recipe's `data:`, and `load` in Python.

    >>> data = keras_compress.data.load("table.csv?target=price")
    >>> data = keras_compress.data.load("photos/", model=model)      # sized and coloured for the model
    >>> data = keras_compress.data.load("mypackage.data:load_splits?n=1000")

A `Dataset` holds `train`, `test` and (when given) `validation` `Split`s. A
split from files or arrays is held in memory; one from a `PyDataset`, a
`tf.data.Dataset` or a generator is read batch by batch everywhere
(fine-tuning, calibration, evaluation), never materialised whole. See
`keras_compress.data.spec` for the syntax.
"""

from keras_compress.data.dataset import Dataset, as_dataset, from_pairs
from keras_compress.data.spec import BUILTIN, HELP, DataError, Spec, parse
from keras_compress.data.split import Split

__all__ = ["BUILTIN", "HELP", "DataError", "Dataset", "Spec", "Split", "as_dataset", "from_pairs", "load",
           "parse"]


def load(spec, model=None, subset=None):
    """Reads the data a spec names.

    Args:
        spec: a data spec string (`keras_compress.data.spec`), or a `Dataset` (returned as it is).
        model: the model the data is for; an image folder takes its image size and colour mode from it.
        subset: keep only the first `subset` samples of each split (quick runs), or `None`.

    Returns:
        A `Dataset`.

    Raises:
        DataError: (a `ValueError`) for an unknown or malformed spec, a missing file, key or column, a
            non-numeric CSV value, an image that cannot be decoded, or an entry point that does not
            exist or raises; the message names the spec and what was found.
        FileNotFoundError: a built-in dataset with no copy found.

    Example:
    >>> data = keras_compress.data.load("diabetes.csv?target=target&test_fraction=0.25")
    >>> data.train.num_samples, data.test.num_samples
    (332, 110)
    """
    from keras_compress.data.sources import READERS

    if isinstance(spec, Dataset):
        dataset = spec
    else:
        parsed = parse(spec)
        dataset = READERS[parsed.kind](parsed, model)
    if subset:
        dataset = dataset.subset(int(subset))
    return dataset
