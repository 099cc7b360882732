"""The user's metric: what every report row measures, for the Keras model and each LiteRT artifact.

    >>> metric = keras_compress.metrics.get(None, model)          # what the model was compiled with
    >>> metric = keras_compress.metrics.get("mae")                 # a Keras metric by name
    >>> metric = keras_compress.metrics.get("auc@churn")           # on the output named "churn"
    >>> metric = keras_compress.metrics.get("mypkg.scores:f1")     # f1(y_true, y_pred) -> float
    >>> metric = keras_compress.metrics.get("mypkg.rl:mean_return")  # mean_return(predict) -> float
    >>> metric.score(keras_compress.metrics.keras_predictor(model), data.test)

A metric knows whether higher or lower is better (`lost` is positive when
the artifact is worse either way). A function of `(y_true, y_pred)` sees
every prediction of the split at once; a task metric (one argument)
receives a batch predictor, `predict(x) -> y`, and measures what it likes
(an RL policy's mean return). Keras metrics are updated batch by batch.
"""

import importlib
import inspect
import json
import os
import zipfile

import numpy as np

# Keras metric and loss class names whose value is better when lower.
_LOWER_WORDS = ("error", "crossentropy", "hinge", "poisson", "divergence", "logcosh", "log_cosh", "huber",
                "loss", "mse", "mae", "mape", "msle", "kld")
_PERCENT_WORDS = ("accuracy", "auc", "precision", "recall", "iou", "acc")
_ACCURACY_NAMES = ("accuracy", "acc")
HELP = ("a Keras metric name (accuracy, sparse_top_k_categorical_accuracy, auc, mse, mae, ...), NAME@OUTPUT for "
        "one output of a multi-output model, or package.module:function taking (y_true, y_pred) or (predict)")


class MetricError(ValueError):
    """A metric that cannot be found, resolved or computed."""


def _lower_is_better(name):
    key = name.lower().replace(" ", "_")
    return any(word in key for word in _LOWER_WORDS)


def _percent(name):
    key = name.lower()
    return any(word in key for word in _PERCENT_WORDS) and not _lower_is_better(name)


def _accuracy_for(y_true, y_pred):
    """The accuracy `compile(metrics=["accuracy"])` would pick for these shapes."""
    import keras

    if y_pred.ndim == 1 or y_pred.shape[-1] == 1:
        return keras.metrics.BinaryAccuracy()
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == y_pred.shape[-1]:
        return keras.metrics.CategoricalAccuracy()
    return keras.metrics.SparseCategoricalAccuracy()


class Metric:
    """A named score with a direction.

    Attributes:
        name: as shown in the report (`"accuracy"`, `"mae"`, `"mean_return"`).
        higher_is_better: whether a larger value is better.
        percent: whether the report shows it in % (accuracies, AUC).
        kind: `"keras"` (a Keras metric), `"function"` (of `y_true, y_pred`) or `"task"` (of a predictor).
        output: the output it reads (index or name) of a multi-output model, or `None` for the only one.

    Example:
    >>> metric = Metric.keras("mae")
    >>> metric.lost(reference=2.0, value=2.5)
    0.5
    """

    def __init__(self, name, *, kind, higher_is_better=True, percent=False, build=None, function=None,
                 output=None):
        self.name = name
        self.kind = kind
        self.higher_is_better = bool(higher_is_better)
        self.percent = bool(percent)
        self.output = output
        self._build = build  # (y_true, y_pred) -> a fresh keras.metrics.Metric
        self._function = function

    def __repr__(self):
        direction = "higher" if self.higher_is_better else "lower"
        return f"Metric({self.name!r}, kind={self.kind!r}, {direction} is better)"

    @classmethod
    def keras(cls, identifier, output=None):
        """A Keras metric (or loss, measured as a metric) from a name or its serialized config."""
        import keras

        if isinstance(identifier, str) and identifier.lower() in _ACCURACY_NAMES:
            return cls("accuracy", kind="keras", percent=True, build=_accuracy_for, output=output)
        try:
            probe = keras.metrics.get(identifier)
        except (ValueError, TypeError):
            probe = None
        if probe is None:
            try:
                loss = keras.losses.get(identifier)
            except (ValueError, TypeError):
                loss = None
            if loss is None:
                raise MetricError(f"unknown metric {identifier!r}: {HELP}") from None
            name = getattr(loss, "name", None) or getattr(loss, "__name__", str(identifier))
            return cls(name, kind="keras", higher_is_better=False, output=output,
                       build=lambda yt, yp: keras.metrics.MeanMetricWrapper(loss, name=name))
        config = identifier

        def build(y_true, y_pred):
            metric = keras.metrics.get(config)
            if not isinstance(metric, keras.metrics.Metric):  # a plain function
                metric = keras.metrics.MeanMetricWrapper(metric)
            return metric

        name = identifier if isinstance(identifier, str) else (
            getattr(probe, "name", None) or getattr(probe, "__name__", "metric"))
        return cls(name, kind="keras", higher_is_better=not _lower_is_better(type(probe).__name__ + name),
                   percent=_percent(type(probe).__name__ + name), build=build, output=output)

    def describe(self):
        """The report's statement of the metric."""
        return {"name": self.name, "kind": self.kind, "higher_is_better": self.higher_is_better,
                "percent": self.percent, **({"output": self.output} if self.output is not None else {})}

    def lost(self, reference, value):
        """How much worse `value` is than `reference` (positive = worse), in the metric's own units."""
        if reference is None or value is None:
            return None
        return (reference - value) if self.higher_is_better else (value - reference)

    def _select(self, outputs, output_names):
        if isinstance(outputs, dict):
            if self.output is None:
                return next(iter(outputs.values()))
            return outputs[self.output] if self.output in outputs else list(outputs.values())[
                output_names.index(self.output)]
        if isinstance(outputs, (list, tuple)):
            if self.output is None:
                return outputs[0]
            index = self.output if isinstance(self.output, int) else output_names.index(self.output)
            return outputs[index]
        return outputs

    def _target(self, y, output_names):
        if y is None:
            raise MetricError(f"metric {self.name!r} needs targets, but the data has none")
        return np.asarray(self._select(y, output_names))

    def score(self, predict, split=None, batch_size=256, output_names=()):
        """The metric of a predictor on a split.

        Args:
            predict: `predict(x) -> outputs` for one batch (`keras_predictor`, or a `LiteRTModel`'s `predict`).
            split: a `keras_compress.data.Split` (not needed by a task metric).
            batch_size: samples per batch of an in-memory split.
            output_names: the model's output names, to find `output` by name.

        Returns:
            The score, a float.

        Raises:
            MetricError: if the metric raises or returns something that is not a finite number.
        """
        output_names = list(output_names)
        if self.kind == "task":
            return self._checked(lambda: self._function(predict))
        if split is None:
            raise MetricError(f"metric {self.name!r} needs data to score on")
        if self.kind == "function":
            trues, preds = [], []
            for x, y in split.batches(batch_size):
                trues.append(self._target(y, output_names))
                preds.append(np.asarray(self._select(predict(x), output_names)))
            y_true, y_pred = np.concatenate(trues), np.concatenate(preds)
            return self._checked(lambda: self._function(y_true, y_pred))
        metric = None
        for x, y in split.batches(batch_size):
            y_true = self._target(y, output_names)
            y_pred = np.asarray(self._select(predict(x), output_names))
            if metric is None:
                metric = self._build(y_true, y_pred)
            metric.update_state(y_true, y_pred)
        return self._checked(lambda: metric.result())

    def _checked(self, compute):
        import keras

        try:
            value = compute()
            value = float(keras.ops.convert_to_numpy(value)) if not isinstance(value, (int, float)) else float(value)
        except MetricError:
            raise
        except Exception as error:  # noqa: BLE001 - a user's function: say whose error it is
            raise MetricError(f"metric {self.name!r} raised {type(error).__name__}: {error}") from None
        if not np.isfinite(value):
            raise MetricError(f"metric {self.name!r} returned {value}, not a finite number")
        return value


def _from_entry(text, output, higher_is_better):
    module_name, _, function_name = text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise MetricError(f"metric {text!r}: cannot import module {module_name!r}: {error}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise MetricError(f"metric {text!r}: module {module_name!r} has no function {function_name!r}")
    return from_function(function, name=function_name, output=output, higher_is_better=higher_is_better)


def from_function(function, name=None, output=None, higher_is_better=None):
    """A metric from a Python function: `f(y_true, y_pred) -> float`, or a task metric `f(predict) -> float`.

    The direction is `higher_is_better`, else the function's `higher_is_better` attribute, else higher.
    """
    try:
        parameters = [p for p in inspect.signature(function).parameters.values()
                      if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        parameters = [None, None]
    if len(parameters) not in (1, 2):
        raise MetricError(f"metric function {getattr(function, '__name__', function)!r} must take (y_true, y_pred) "
                          f"or (predict). Received a function of {len(parameters)} required arguments")
    if higher_is_better is None:
        higher_is_better = getattr(function, "higher_is_better", True)
    name = name or getattr(function, "__name__", "metric")
    return Metric(name, kind="task" if len(parameters) == 1 else "function", function=function,
                  higher_is_better=higher_is_better, percent=getattr(function, "percent", False), output=output)


def compile_config(path):
    """The `compile_config` saved in a `.keras` file (loss and metrics), or `None`."""
    if not (isinstance(path, (str, os.PathLike)) and zipfile.is_zipfile(path)):
        return None
    with zipfile.ZipFile(path) as archive:
        try:
            config = json.loads(archive.read("config.json"))
        except (KeyError, ValueError):
            return None
    return config.get("compile_config") or None


def _first_metric(metrics):
    if isinstance(metrics, dict):
        for output, value in metrics.items():
            found = _first_metric(value)
            if found is not None:
                return found[0], output if found[1] is None else found[1]
        return None
    if isinstance(metrics, (list, tuple)):
        for index, value in enumerate(metrics):
            if isinstance(value, (list, tuple, dict)) and not (isinstance(value, dict) and "class_name" in value):
                found = _first_metric(value)
                if found is not None:
                    return found[0], index if found[1] is None else found[1]
            elif value is not None:
                return value, None
        return None
    return (metrics, None) if metrics is not None else None


def from_compile(config):
    """The metric a model was compiled with: its first metric, else its loss; `None` without either."""
    if not config:
        return None
    found = _first_metric(config.get("metrics"))
    if found is not None:
        return Metric.keras(found[0], output=found[1])
    loss = config.get("loss")
    if loss is None:
        return None
    if isinstance(loss, (list, tuple)):
        loss = loss[0]
    if isinstance(loss, dict) and "class_name" not in loss:
        loss = next(iter(loss.values()))
    return Metric.keras(loss)


def loss_from_compile(config):
    """The loss a compile config names, deserialized (a list or dict of them for several outputs), or `None`."""
    import keras

    loss = (config or {}).get("loss")
    if loss is None:
        return None
    if isinstance(loss, dict) and "class_name" not in loss:
        return {name: keras.losses.get(item) for name, item in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [keras.losses.get(item) for item in loss]
    return keras.losses.get(loss)


def _model_compile_config(model):
    try:
        return model.get_compile_config() if getattr(model, "compiled", False) else None
    except Exception:  # noqa: BLE001 - a model whose compile state cannot be serialized
        return None


def get(identifier=None, model=None, compile_config=None, higher_is_better=None):
    """Resolves the metric to measure.

    Args:
        identifier: `None` (the model's compiled metric, else its loss), a Keras metric name or
            `NAME@OUTPUT`, `package.module:function`, a Python function, a `keras.metrics.Metric`, or a
            `Metric` (returned as it is).
        model: the model (its compile config is read when `identifier` is `None`).
        compile_config: a compile config read from the `.keras` file (`compile_config(path)`), used
            before the model's own.
        higher_is_better: the direction of a function metric (else its `higher_is_better` attribute).

    Returns:
        A `Metric`.

    Raises:
        MetricError: for an unknown name or entry point, or when `identifier` is `None` and the model was
            never compiled (the message says how to name a metric).

    Example:
    >>> keras_compress.metrics.get("mae").higher_is_better
    False
    """
    import keras

    if isinstance(identifier, Metric):
        return identifier
    if identifier is None:
        metric = from_compile(compile_config) or (from_compile(_model_compile_config(model)) if model else None)
        if metric is None:
            raise MetricError(
                "the model has no compile config (loss or metrics) to measure with, and no metric was named: "
                "pass --metric NAME on the command line, metric: NAME in the recipe, or metric=... in Python "
                f"({HELP})")
        return metric
    if isinstance(identifier, keras.metrics.Metric):
        config = keras.metrics.serialize(identifier)
        return Metric.keras(config)
    if callable(identifier):
        return from_function(identifier, higher_is_better=higher_is_better)
    if not isinstance(identifier, str) or not identifier:
        raise MetricError(f"a metric must be a name or a function: {HELP}. Received: {identifier!r}")
    name, _, output = identifier.partition("@")
    output = (int(output) if output.isdigit() else output) if output else None
    if ":" in name:
        return _from_entry(name, output, higher_is_better)
    return Metric.keras(name, output=output)


def keras_predictor(model):
    """`predict(x)` of a Keras model on one batch: NumPy outputs (a list or dict for several)."""
    import keras

    def predict(x):
        outputs = model.predict_on_batch(x)  # Keras's compiled predict function, one batch
        if isinstance(outputs, dict):
            return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}
        if isinstance(outputs, (list, tuple)):
            return [keras.ops.convert_to_numpy(v) for v in outputs]
        return keras.ops.convert_to_numpy(outputs)

    return predict


def output_names(model):
    """The model's output names (for `NAME@OUTPUT`), or `()`."""
    try:
        return tuple(getattr(model, "output_names", None) or [t.name.split("/")[0] for t in model.outputs])
    except (AttributeError, ValueError):
        return ()


__all__ = ["HELP", "Metric", "MetricError", "compile_config", "from_compile", "from_function", "get",
           "keras_predictor", "loss_from_compile", "output_names"]
