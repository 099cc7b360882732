"""Named weights: an importance score for every parameter, keyed by its path.

`score(model, (x, y), method)` returns `{variable path: array of that
variable's shape}` for every trainable variable. Any of them can drive
pruning: `prune(model, config, scores=scores)`.
"""

import keras
import numpy as np

from keras_compress.core.gradients import loss_gradients
from keras_compress.core.walk import weight_name

METHODS = ("magnitude", "taylor", "fisher", "obd")
HESSIANS = ("hutchinson", "fisher")


def _batches(x, y, batch_size, max_batches):
    count = -(-len(x) // batch_size)
    if max_batches is not None:
        count = min(count, max_batches)
    for i in range(count):
        yield x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]


def _default_loss(model):
    loss = getattr(model, "loss", None)
    if loss is not None and callable(loss):
        return loss
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def score(model, data=None, method="taylor", loss=None, batch_size=128, max_batches=None,
          hessian="hutchinson", hessian_samples=1, seed=0):
    """Importance of every trainable parameter, keyed by variable path.

    Methods:
        - `"magnitude"`: `|w|` (needs no data);
        - `"taylor"`: first-order Taylor, `|w * g|` per batch, averaged over
          batches (Molchanov et al.);
        - `"fisher"`: diagonal empirical Fisher, the mean of squared
          mini-batch gradients;
        - `"obd"`: Optimal Brain Damage's saliency `0.5 * H_ii * w**2`, with
          the Hessian diagonal estimated by Hutchinson's method (`E[v * Hv]`
          over Rademacher `v`; `Hv` by a central difference of gradients) or
          by the Fisher approximation (`hessian="fisher"`).

    Args:
        model: a built Keras model.
        data: `(x, y)` arrays; labels are needed by every method but magnitude.
        method: one of `METHODS`.
        loss: a Keras loss; default the model's compiled loss, else sparse
            categorical cross-entropy on logits.
        batch_size: batch size for the gradients.
        max_batches: use at most this many batches (default: all the data).
        hessian: `"hutchinson"` or `"fisher"`, for `"obd"`.
        hessian_samples: Rademacher probes per batch for Hutchinson.
        seed: seed of the probes.

    Returns:
        `{name: float32 array shaped like the variable}` for every trainable
        variable, where the name is the variable's path within the model
        (`"fc1/kernel"`; nested models keep their own name: `"backbone/conv/kernel"`).

    Raises:
        ValueError: on an unknown method or Hessian estimate, a model with no
            trainable variables, or data without labels for a method that
            needs a loss.

    Example:
    >>> scores = keras_compress.importance.score(model, (x[:10000], y[:10000]), "taylor")
    >>> scores["fc1/kernel"].shape
    (800, 500)
    """
    if method not in METHODS:
        raise ValueError(f"Unknown importance method. Allowed: {list(METHODS)}. Received: method={method!r}")
    if hessian not in HESSIANS:
        raise ValueError(f"hessian must be one of {list(HESSIANS)}. Received: hessian={hessian!r}")
    variables = list(model.trainable_variables)
    if not variables:
        raise ValueError(f"Model {model.name!r} has no trainable variables to score.")
    weights = [np.asarray(keras.ops.convert_to_numpy(v.value), np.float32) for v in variables]
    paths = [weight_name(model, v) for v in variables]
    if method == "magnitude":
        return {p: np.abs(w) for p, w in zip(paths, weights)}
    if not isinstance(data, (tuple, list)) or len(data) != 2 or data[1] is None:
        raise ValueError(
            f"method={method!r} needs labelled data (x, y) to compute a loss. "
            f"Received: data of type {type(data).__name__}"
        )
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"data must hold as many labels as inputs, at least one. Received: {len(x)} inputs, {len(y)} labels")
    loss_fn = _default_loss(model) if loss is None else loss
    totals = [np.zeros_like(w) for w in weights]
    rng = np.random.default_rng(seed)
    num_batches = 0
    for xb, yb in _batches(x, y, batch_size, max_batches):
        num_batches += 1
        if method == "obd" and hessian == "hutchinson":
            for _ in range(hessian_samples):
                for total, h in zip(totals, _hutchinson_diagonal(model, variables, weights, xb, yb, loss_fn, rng)):
                    total += h / hessian_samples
            continue
        grads = loss_gradients(model, xb, yb, loss_fn, variables)
        for total, w, g in zip(totals, weights, grads):
            total += np.abs(w * g) if method == "taylor" else g * g
    means = [t / num_batches for t in totals]
    if method == "obd":
        # A Hutchinson estimate of H_ii can come out negative from probe
        # noise; near a minimum the true diagonal is >= 0, so clip.
        means = [0.5 * np.maximum(h, 0.0) * w * w for h, w in zip(means, weights)]
    return {p: m.astype(np.float32) for p, m in zip(paths, means)}


def _hutchinson_diagonal(model, variables, weights, x, y, loss_fn, rng, epsilon=1e-3):
    """One Rademacher probe: `v * Hv`, with `Hv` from a central gradient difference."""
    probes = [rng.choice(np.array([-1.0, 1.0], np.float32), size=w.shape) for w in weights]
    try:
        for v, w, p in zip(variables, weights, probes):
            v.assign(w + epsilon * p)
        plus = loss_gradients(model, x, y, loss_fn, variables)
        for v, w, p in zip(variables, weights, probes):
            v.assign(w - epsilon * p)
        minus = loss_gradients(model, x, y, loss_fn, variables)
    finally:
        for v, w in zip(variables, weights):
            v.assign(w)
    return [p * (gp - gm) / (2 * epsilon) for p, gp, gm in zip(probes, plus, minus)]


def aggregate(scores, by="layer"):
    """Sums scores per layer (`{layer path: float}`) or per output channel.

    Args:
        scores: output of `score`.
        by: `"layer"` (mean over every parameter of every variable of a
            layer) or `"channel"` (`{variable path: mean over all but the last axis}`,
            for variables of rank >= 2).

    Returns:
        A dict as described.

    Raises:
        ValueError: if `by` is not "layer" or "channel".
    """
    if by == "layer":
        sums, counts = {}, {}
        for path, values in scores.items():
            layer = path.rsplit("/", 1)[0]
            sums[layer] = sums.get(layer, 0.0) + float(np.sum(values))
            counts[layer] = counts.get(layer, 0) + values.size
        return {layer: sums[layer] / counts[layer] for layer in sums}
    if by == "channel":
        return {path: values.reshape(-1, values.shape[-1]).mean(axis=0)
                for path, values in scores.items() if values.ndim >= 2}
    raise ValueError(f"by must be 'layer' or 'channel'. Received: by={by!r}")
