"""`average` and `stacking`: an ensemble of trained models as one Functional Keras model.

The members are nested models (shared, not copied) on the ensemble's inputs. How
their outputs combine depends on what they output (`kind`):

- `"logits"` (class scores before softmax, the Keras `from_logits=True`
  convention): the class probabilities are averaged, and the ensemble
  outputs their logarithm, the logits of the averaged distribution (its
  softmax is the average, its argmax the averaged vote);
- `"probabilities"` (a softmax output): the probabilities are averaged;
- `"values"` (regression, or a single score): the outputs are averaged.

Stacking (Wolpert 1992) fits a meta-learner on the members' predictions
for held-out samples (never the members' own training data): a
multinomial logistic regression over their class probabilities (a linear
regression over their values), fitted by scikit-learn's
`LogisticRegression` / `Ridge` (`meta="logistic"`, the default) or by Keras
(`meta="keras"`, no scikit-learn needed), and written into a `Dense` layer,
so the stacked ensemble is a Keras model whose softmax equals the fitted
meta-learner's `predict_proba`.
"""

import keras
import numpy as np

KINDS = ("logits", "probabilities", "values")
METAS = ("logistic", "keras")
INSTALL_HINT = 'pip install scikit-learn  (or meta="keras")'
_FLOOR = 1e-30  # probabilities below this are floored before the logarithm (no -inf logits)


class EnsembleError(ValueError):
    """Members that cannot form one ensemble, or a bad setting: names what was received."""


def kind_of(model):
    """What a classifier outputs, guessed from its last layer: `"probabilities"` after a softmax,
    `"values"` for a single output unit, else `"logits"`."""
    shape = model.outputs[0].shape
    if shape[-1] == 1:
        return "values"
    last = model.layers[-1] if model.layers else None
    activation = getattr(last, "activation", None)
    if isinstance(last, keras.layers.Softmax) or getattr(activation, "__name__", "") == "softmax":
        return "probabilities"
    return "logits"


def _signature(model):
    return ([tuple(t.shape[1:]) for t in model.inputs], [tuple(t.shape[1:]) for t in model.outputs])


def _check_members(models, kind):
    if isinstance(models, keras.Model) or not isinstance(models, (list, tuple)) or len(models) < 2:
        raise EnsembleError("an ensemble needs a list of at least 2 Keras models. "
                            f"Received: {type(models).__name__}" + (f" of {len(models)}" if isinstance(
                                models, (list, tuple)) else ""))
    for i, model in enumerate(models):
        if not isinstance(model, keras.Model):
            raise EnsembleError(f"ensemble member {i} is not a Keras model. Received: {type(model).__name__}")
        if not getattr(model, "inputs", None):
            raise EnsembleError(f"ensemble member {i} ({model.name!r}) has no graph (a subclassed model): "
                                "build it as a Functional or Sequential model")
        if len(model.outputs) != 1:
            raise EnsembleError(f"ensemble members must have one output; member {i} ({model.name!r}) has "
                                f"{len(model.outputs)}")
    first = _signature(models[0])
    for i, model in enumerate(models[1:], 1):
        if _signature(model) != first:
            raise EnsembleError(f"ensemble members must take the same inputs and give the same outputs: member 0 "
                                f"({models[0].name!r}) has inputs {first[0]} -> outputs {first[1]}, member {i} "
                                f"({model.name!r}) has {_signature(model)[0]} -> {_signature(model)[1]}")
    kinds = [kind_of(m) for m in models] if kind is None else [kind] * len(models)
    if kind is not None and kind not in KINDS:
        raise EnsembleError(f"kind must be one of {list(KINDS)} or None (guessed). Received: kind={kind!r}")
    if len(set(kinds)) != 1:
        raise EnsembleError(f"ensemble members output different kinds {kinds}: pass kind= to say which")
    return kinds[0]


def _inputs_and_members(models, name):
    """The ensemble's inputs (like member 0's) and each frozen member applied to them."""
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=f"{name}_input_{i}")
              for i, t in enumerate(models[0].inputs)]
    # The members are shared, not copied (nor frozen: a Distiller freezes its teacher itself). Two distinct
    # members of one name (two files of the same architecture) are each seen through a renamed Functional
    # view of the same layers, as a graph needs unique names.
    seen, outputs = {}, []
    for i, model in enumerate(models):
        if seen.setdefault(model.name, model) is not model:
            model = keras.Model(model.inputs if len(model.inputs) > 1 else model.inputs[0], model.outputs[0],
                                name=f"{model.name}_{i}")
        outputs.append(model(inputs if len(inputs) > 1 else inputs[0]))
    return inputs, outputs


def _as_probabilities(outputs, kind):
    if kind == "logits":
        return [keras.ops.softmax(o, axis=-1) for o in outputs]
    return outputs


def average(models, kind=None, name="ensemble_average"):
    """The members' averaged prediction as one Keras model (see the module docstring for `kind`).

    Args:
        models: 2 or more trained Keras models with the same inputs and one output of the same shape.
        kind: `"logits"`, `"probabilities"` or `"values"`; `None`: guessed from the members (`kind_of`).
        name: the model's name.

    Returns:
        A Functional `keras.Model` (the members frozen inside it): for logits members it outputs the
        logarithm of the averaged probabilities.

    Raises:
        EnsembleError: fewer than 2 models, a member that is not a Functional or Sequential Keras model,
            members with different input or output shapes, or a bad `kind`.

    Example:
    >>> teacher = keras_compress.ensemble.average([a, b, c])
    >>> keras_compress.finetune(student, x, y, FinetuneConfig(epochs=3), teacher=teacher)
    """
    kind = _check_members(models, kind)
    inputs, outputs = _inputs_and_members(models, name)
    mean = keras.layers.Average(name=f"{name}_mean")(_as_probabilities(outputs, kind))
    if kind == "logits":
        mean = keras.ops.log(keras.ops.maximum(mean, _FLOOR))
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], mean, name=name)


def _features(models, x, kind, batch_size):
    """The meta-learner's features of samples `x`: the members' probabilities (or values), side by side."""
    outputs = [np.asarray(m.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64) for m in models]
    if kind == "logits":
        outputs = [np.exp(o - o.max(axis=-1, keepdims=True)) / np.exp(o - o.max(axis=-1, keepdims=True)).sum(
            axis=-1, keepdims=True) for o in outputs]
    return np.concatenate([o.reshape(len(o), -1) for o in outputs], axis=1)


def _fit_meta(features, y, classes, kind, meta, seed):
    """`(kernel, bias)` of the meta-learner's Dense layer."""
    if meta == "logistic":
        try:
            from sklearn.linear_model import LogisticRegression, Ridge
        except ImportError:
            raise ImportError(f"stacking with meta='logistic' fits scikit-learn's LogisticRegression: "
                              f"{INSTALL_HINT}") from None
        if kind == "values":
            targets = y.reshape(len(y), -1)
            fitted = Ridge(alpha=1e-3).fit(features, targets)
            return (np.reshape(fitted.coef_, (targets.shape[1], features.shape[1])).T,
                    np.reshape(fitted.intercept_, (targets.shape[1],)))
        fitted = LogisticRegression(max_iter=2000, random_state=seed).fit(features, y)
        if len(fitted.classes_) != classes or not np.array_equal(fitted.classes_, np.arange(classes)):
            raise EnsembleError(f"stacking needs every class 0..{classes - 1} among the held-out labels. "
                                f"Received labels: {fitted.classes_.tolist()}")
        return fitted.coef_.T, fitted.intercept_
    keras.utils.set_random_seed(seed)
    dense = keras.Sequential([keras.Input((features.shape[1],)), keras.layers.Dense(classes)])
    loss = "mse" if kind == "values" else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    dense.compile(keras.optimizers.Adam(1e-2), loss)
    dense.fit(features.astype("float32"), y, epochs=100, batch_size=256, verbose=0)
    kernel, bias = dense.layers[-1].get_weights()
    return kernel, bias


def stacking(models, held_out, meta="logistic", kind=None, name="ensemble_stacking", batch_size=256, seed=0):
    """The members combined by a meta-learner fitted on their held-out predictions, as one Keras model.

    Args:
        models: 2 or more trained Keras models with the same inputs and one output of the same shape.
        held_out: `(x, y)` samples none of the members trained on (integer class labels, or targets for
            `"values"` members); the meta-learner is fitted on the members' predictions of them.
        meta: `"logistic"` (scikit-learn's `LogisticRegression`, or `Ridge` for values) or `"keras"`
            (a Dense layer fitted with Adam).
        kind: as for `average`.
        name: the model's name.
        batch_size: prediction batch size.
        seed: the meta-learner's seed.

    Returns:
        A Functional `keras.Model` that outputs the meta-learner's logits (its values, for `"values"`
        members); `model.meta_features` is not kept: the model is plain Keras.

    Raises:
        EnsembleError: as for `average`, and for held-out data whose labels miss a class or whose sample
            counts differ.
        ImportError: for `meta="logistic"` without scikit-learn.

    Example:
    >>> stacked = keras_compress.ensemble.stacking([a, b, c], (x_val, y_val))
    """
    kind = _check_members(models, kind)
    if meta not in METAS:
        raise EnsembleError(f"meta must be one of {list(METAS)}. Received: meta={meta!r}")
    if not isinstance(held_out, (tuple, list)) or len(held_out) != 2:
        raise EnsembleError("held_out must be (x, y) samples the members did not train on. "
                            f"Received: {type(held_out).__name__}")
    x, y = held_out
    y = np.asarray(y)
    count = len(x[0]) if isinstance(x, (list, tuple)) else len(x)
    if count != len(y) or count == 0:
        raise EnsembleError(f"held_out x and y must hold the same number of samples (> 0). "
                            f"Received: {count} and {len(y)}")
    outputs_per_member = int(np.prod(models[0].outputs[0].shape[1:]))
    if kind != "values":
        y = y.reshape(-1).astype("int64")
    kernel, bias = _fit_meta(_features(models, x, kind, batch_size), y, outputs_per_member, kind, meta, seed)
    inputs, outputs = _inputs_and_members(models, name)
    flat = [keras.layers.Flatten(name=f"{name}_flat_{i}")(o) if len(o.shape) > 2 else o
            for i, o in enumerate(_as_probabilities(outputs, kind))]
    joined = keras.layers.Concatenate(name=f"{name}_features")(flat)
    head = keras.layers.Dense(outputs_per_member, name=f"{name}_meta")
    result = head(joined)
    head.set_weights([np.asarray(kernel, dtype="float32"), np.asarray(bias, dtype="float32")])
    head.trainable = False
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], result, name=name)
