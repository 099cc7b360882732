"""What the CLI reads: the model file, the data spec and the metric, each failure one clear error."""

import os
import zipfile

EXIT_OK = 0  # a command's exit code on success (keras_compress.cli.main's too)
_MAX_MESSAGE = 1000


def _one_line(error):
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 40] + " ... (--traceback for the full message)"
    return text


def load_model(path):
    """Loads a `.keras` model for the CLI, turning every failure into a clear `ValueError`.

    Args:
        path: path to a `.keras` file, a keras-compress archive (`.kcar`), or
            an `.h5` file saved by Keras 2 (tf_keras) or Keras 3.

    Returns:
        The loaded `keras.Model` (not compiled).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: `cannot load model 'PATH': ...` if the file is a folder,
            not a Keras archive, truncated or otherwise unreadable, or does
            not hold a model.

    Example:
    >>> model = load_model("lenet5.keras")
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path!r}")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ValueError(
                f"cannot load model {path!r}: it is a TensorFlow SavedModel folder, which Keras 3 cannot load as a "
                "model. Save it as .keras (Keras 3) or .h5 (tf_keras: model.save('model.h5')) and pass that file")
        raise ValueError(f"cannot load model {path!r}: it is a folder, expected a .keras file")
    if path.endswith(".kcar"):
        from keras_compress.export import archive

        return archive.load(path)  # ArchiveError is a ValueError naming the problem
    # Keras reports a damaged archive as "File not found"; say what is wrong.
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(
            f"cannot load model {path!r}: not a .keras archive (not a zip file; is it truncated or "
            "another format?)"
        )
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many types on a bad archive
        hint = ""
        if path.endswith((".h5", ".hdf5")):
            hint = (" (an .h5 file from Keras 2 loads when its layers exist in Keras 3; a custom layer or a "
                    "tfmot wrapper does not: strip tfmot's wrappers in tf_keras first, or register the custom "
                    "class with keras.saving.register_keras_serializable)")
        raise ValueError(f"cannot load model {path!r}: {type(error).__name__}: {_one_line(error)}{hint}") from None
    if not isinstance(model, keras.Model):
        raise ValueError(f"cannot load model {path!r}: it holds a {type(model).__name__}, not a Keras model")
    return model


def load_data(spec, subset=None, model=None):
    """Loads the data a spec names for the CLI (`keras_compress.data.load`), cut to `subset` samples per split.

    Args:
        spec: a data spec: `mnist`, `fashion_mnist`, `FILE.npz`, `FILE.csv?target=COLUMN`, an image
            folder, or `package.module:function`.
        subset: keep the first `subset` samples of each split (quick runs), or `None`.
        model: the model the data is for (an image folder is sized for it).

    Returns:
        A `keras_compress.data.Dataset`.

    Raises:
        ValueError: on an unknown or malformed spec, or data that cannot be read.
        FileNotFoundError: if a built-in dataset cannot be found.

    Example:
    >>> data = load_data("mnist", subset=512)
    """
    from keras_compress import data

    return data.load(spec, model=model, subset=subset)


def _compile_config(args):
    from keras_compress import metrics

    return metrics.compile_config(args.model) if args.model.endswith(".keras") else None


def _metric(args, model=None, default=None):
    """The metric to measure: `--metric`, else `default` (a recipe's), else the model file's compile config."""
    from keras_compress import metrics

    return metrics.get(getattr(args, "metric", None) or default, model, compile_config=_compile_config(args),
                       higher_is_better=False if getattr(args, "lower_is_better", False) else None)


def _loss(args):
    """The loss saved in the model file's compile config (what fine-tuning uses), or `None`."""
    from keras_compress import metrics

    return metrics.loss_from_compile(_compile_config(args))


def _shown(metric, value):
    return f"{100 * value:.2f}%" if metric.percent else f"{value:.6g}"
