"""`finetune`: train a compressed model with every callback its techniques need."""

import time

from keras_compress.core import state as core_state
from keras_compress.training.config import FinetuneConfig


def finetune(model, x, y=None, config=None, *, teacher=None, verbose=0, loss=None, callbacks=None):
    """Fine-tunes `model` on `(x, y)` with Adam, keeping its compression state working.

    Each technique the model carries (pruning's mask schedule, clustering's
    re-assignment) adds the callback it registered, so the caller does not
    need to know what was applied. The model is compiled with `loss` (the
    task's: mean squared error for a regression), by default for
    classification (sparse categorical cross-entropy on logits, accuracy).

    Args:
        model: a Keras model, possibly pruned, clustered or prepared for QAT.
        x, y: training samples and targets; or a `keras_compress.data.Split`
            as `x` (with `y=None`), read batch by batch when it streams.
        loss: a Keras loss (name, config or instance), or `None` for
            classification on logits.
        config: a `FinetuneConfig` (default: one epoch at 1e-4).
        teacher: a Keras model to distil from (`training.distill`, with the
            config's `temperature` and `distillation_weight`), or `None`.
        verbose: Keras's `fit` verbosity.
        callbacks: more Keras callbacks for `fit` (e.g. `keras_compress.tracking.callback()`).

    Returns:
        A dict: `epochs`, `batch_size`, `learning_rate`, `steps_per_epoch`,
        one boolean per registered technique (whether it was active), and,
        when anything trained, `seconds`, `final_loss` and `final_accuracy`.

    Raises:
        TypeError: if `config` is not a `FinetuneConfig`.

    Example:
    >>> model = keras_compress.prune(model, keras_compress.PruneConfig(0.8))
    >>> keras_compress.training.finetune(model, x, y, FinetuneConfig(epochs=2))["pruning"]
    True
    """
    from keras_compress import zoo

    config = FinetuneConfig() if config is None else config
    if not isinstance(config, FinetuneConfig):
        raise TypeError(f"config must be a FinetuneConfig. Received: {type(config).__name__}")
    from keras_compress.data import Split

    if isinstance(x, Split):
        fit_kwargs = x.fit_kwargs(config.batch_size) if config.epochs else {}
        steps = fit_kwargs.get("steps_per_epoch") or (
            x.count_batches(config.batch_size) if not x.streaming or x.num_samples is None else
            config.steps_per_epoch(x.num_samples))
    else:
        fit_kwargs = {"x": x, "y": y, "batch_size": config.batch_size}
        steps = config.steps_per_epoch(len(x))
    record = {"epochs": config.epochs, "batch_size": config.batch_size,
              "learning_rate": config.learning_rate, "steps_per_epoch": steps,
              **core_state.active_techniques(model)}
    if config.epochs == 0:
        return record
    extra = callbacks
    trainee = model
    if teacher is not None:
        from keras_compress.training.distill import distill

        trainee, callbacks = distill(model, teacher, temperature=config.temperature,
                                     distillation_weight=config.distillation_weight,
                                     learning_rate=config.learning_rate)
        record["distilled_from"] = teacher.name
    else:
        if loss is None:
            zoo.compile_for_classification(model, config.learning_rate)
        else:
            import keras

            model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss)
            record["loss"] = loss if isinstance(loss, str) else (
                getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__)
        callbacks = list(core_state.training_callbacks(model).values())
    start = time.perf_counter()
    callbacks = callbacks + list(extra or ())
    history = trainee.fit(**fit_kwargs, epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    record["seconds"] = round(time.perf_counter() - start, 2)
    for key in ("loss", "accuracy"):
        if history.history.get(key):
            record[f"final_{key}"] = float(history.history[key][-1])
    if config.recalibrate_batchnorm:
        record["batchnorm_recalibrated"] = _recalibrate(model, x, config.batch_size)
    return record


def _recalibrate(model, x, batch_size):
    """Re-measures the trainable BatchNormalizations' statistics on the first 20 training batches."""
    from keras_compress.data import Split
    from keras_compress.training.batchnorm import recalibrate_batchnorm

    count = 20 * batch_size
    samples = x.take(count)[0] if isinstance(x, Split) else x
    if isinstance(samples, dict):  # inputs by name: in the model's input order
        from keras_compress.core.samples import _input_names

        samples = [samples[name] for name in _input_names(model)]
    samples = [a[:count] for a in samples] if isinstance(samples, (list, tuple)) else samples[:count]
    return recalibrate_batchnorm(model, samples, batch_size=batch_size, frozen=False)
