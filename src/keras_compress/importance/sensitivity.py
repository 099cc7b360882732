"""Per-layer sensitivity to pruning, and per-layer targets derived from it."""

import re

import keras
import numpy as np

from keras_compress import evaluate
from keras_compress.core import walk
from keras_compress.ops import masks as mask_ops

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)


KINDS = ("sparsity", "bits", "clusters")
BITS = (8, 6, 4, 3, 2)
CLUSTERS = (64, 16, 8, 4, 2)


def _compressed(original, kind, value):
    """`original` pruned to sparsity `value`, quantized to `value` bits, or clustered to `value` values."""
    if kind == "sparsity":
        return original * keras.ops.convert_to_numpy(mask_ops.magnitude_mask(np.abs(original), value))
    if kind == "bits":
        from keras_compress.ops.fake_quant import fake_quant_weight

        axis = -1 if original.ndim >= 2 else None
        return keras.ops.convert_to_numpy(fake_quant_weight(original.astype(np.float32), int(value), axis))
    from keras_compress.clustering.config import ClusterConfig
    from keras_compress.ops.kmeans import cluster_segments

    # The config validates the count; the maths lives in ops, below every technique.
    config = ClusterConfig(num_clusters=int(value), init="linear", per_channel=False, preserve_sparsity=True)
    shared = cluster_segments(original, config.num_clusters, init=config.init, per_channel=config.per_channel,
                              preserve_sparsity=config.preserve_sparsity,
                              iterations=config.iterations, seed=config.seed)[2]
    return np.asarray(shared)


def _check_values(kind, values):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}. Received: kind={kind!r}")
    for v in values:
        if kind == "sparsity" and not 0.0 <= float(v) < 1.0:
            raise ValueError(f"sparsities must be in [0, 1). Received: {list(values)}")
        if kind == "bits" and (not isinstance(v, (int, np.integer)) or not 2 <= v <= 8):
            raise ValueError(f"bit widths must be ints in [2, 8]. Received: {list(values)}")
        if kind == "clusters" and (not isinstance(v, (int, np.integer)) or v < 2):
            raise ValueError(f"cluster counts must be ints >= 2. Received: {list(values)}")


def sensitivity(model, data, sparsities=SPARSITIES, layers=None, max_samples=2000, batch_size=256,
                kind="sparsity", score=None):
    """Accuracy versus sparsity (or bit width, or clusters) for each weight, the others intact.

    Each weight in turn is pruned one-shot by magnitude to each sparsity
    (`kind="sparsity"`), fake-quantized to each bit width (`"bits"`:
    symmetric, per output channel) or clustered to each number of shared
    values (`"clusters"`: linear init, k-means, zeros kept); the model is
    evaluated on (a subset of) `data`, and the weight is restored exactly.

    Args:
        model: a built Keras classifier.
        data: `(x, y)` validation data.
        sparsities: the values to try: sparsities in [0, 1), bit widths in
            [2, 8] or cluster counts >= 2 (defaults `SPARSITIES`, `BITS`,
            `CLUSTERS` by kind).
        layers: filter as for `prune`.
        max_samples: evaluate on at most this many samples.
        batch_size: evaluation batch size.
        kind: `"sparsity"`, `"bits"` or `"clusters"`.
        score: optional `fn(model, x, y) -> float`, higher is better (a
            user's metric, negated when lower is better); default: accuracy.

    Returns:
        `{"baseline": accuracy, "curves": {name: {value: accuracy}},
        "sizes": {name: number of weights}, "kind": kind}`, names as
        `importance.score`'s.

    Raises:
        ValueError: for an unknown kind, a value out of range, or nothing
            to compress.

    Example:
    >>> curves = keras_compress.importance.sensitivity(model, (x_val, y_val))
    >>> bits = keras_compress.importance.sensitivity(model, (x_val, y_val), kind="bits")
    """
    if kind != "sparsity" and sparsities is SPARSITIES:
        sparsities = BITS if kind == "bits" else CLUSTERS
    _check_values(kind, sparsities)
    x, y = np.asarray(data[0])[:max_samples], np.asarray(data[1])[:max_samples]
    chosen, _ = walk.find_weights(model, layers)
    if not chosen:
        raise ValueError(f"Model {model.name!r} has no prunable weights (layers={layers!r}).")
    if score is None:
        def score(m, x, y):
            return evaluate.keras_accuracy(m, x, y, batch_size)
    baseline = score(model, x, y)
    curves, sizes = {}, {}
    for ref in chosen:
        name = walk.weight_name(model, ref.variable)
        original = np.array(keras.ops.convert_to_numpy(ref.variable.value))
        sizes[name] = int(original.size)
        curves[name] = {}
        try:
            for s in sparsities:
                ref.variable.assign(_compressed(original, kind, s))
                key = float(s) if kind == "sparsity" else int(s)
                curves[name][key] = score(model, x, y)
        finally:
            ref.variable.assign(original)
    return {"baseline": baseline, "curves": curves, "sizes": sizes, "kind": kind}


def allocate(curves, sizes, baseline, target_sparsity, step=0.005, max_sparsity=0.995, bounds=None):
    """Per-weight sparsities meeting a global target with the least predicted loss.

    Greedy on the piecewise-linear sensitivity curves: repeatedly raise, by
    `step`, the sparsity of the weight whose predicted accuracy loss per
    removed parameter is smallest, until the global target is reached; the
    last raise is trimmed so that the weighted sparsity equals the target.

    Args:
        curves: `{name: {sparsity: accuracy}}` (from `sensitivity`).
        sizes: `{name: number of weights}`.
        baseline: accuracy at sparsity 0.
        target_sparsity: the global fraction of zeros over all these weights.
        step: grid step of the search.
        max_sparsity: no weight is pruned beyond this.
        bounds: optional `{name: (low, high)}`: a weight starts at `low` and
            is not raised past `high` (a search range, or `(v, v)` for a
            fixed value); others range over `[0, max_sparsity]`.

    Returns:
        `{name: sparsity}` with `sum(s * size) == target * sum(size)`.

    Raises:
        ValueError: if the target is outside what the bounds allow.
    """
    bounds = {name: tuple(map(float, bounds.get(name, (0.0, max_sparsity)))) for name in curves} \
        if bounds else {name: (0.0, max_sparsity) for name in curves}
    total = sum(sizes.values())
    least = sum(bounds[n][0] * sizes[n] for n in curves) / total
    most = sum(bounds[n][1] * sizes[n] for n in curves) / total
    if not least - 1e-9 <= target_sparsity <= most + 1e-9:
        raise ValueError(f"target_sparsity must be in [{least:.4g}, {most:.4g}] (the weights' bounds). "
                         f"Received: {target_sparsity}")

    def loss(name, s):
        points = sorted({0.0: baseline, **curves[name]}.items())
        xs, ys = zip(*points)
        return baseline - float(np.interp(s, xs, ys))

    needed = target_sparsity * total
    chosen = {name: bounds[name][0] for name in curves}
    removed = sum(chosen[n] * sizes[n] for n in curves)
    while removed < needed - 1e-9:
        best, best_cost = None, None
        for name, s in chosen.items():
            if s + 1e-12 >= bounds[name][1]:
                continue
            nxt = min(s + step, bounds[name][1])
            cost = (loss(name, nxt) - loss(name, s)) / ((nxt - s) * sizes[name])
            if best_cost is None or cost < best_cost:
                best, best_cost = name, cost
        if best is None:  # every weight at its bound (only rounding left)
            break
        nxt = min(chosen[best] + step, bounds[best][1])
        gain = (nxt - chosen[best]) * sizes[best]
        if removed + gain > needed:
            nxt = chosen[best] + (needed - removed) / sizes[best]
            gain = needed - removed
        chosen[best] = nxt
        removed += gain
    return chosen


def auto_layer_targets(model, data, target_sparsity, sparsities=SPARSITIES, layers=None, max_samples=2000):
    """Per-layer targets for `PruneConfig(layer_targets=...)` from sensitivity.

    Returns:
        `{regex matching exactly one weight: sparsity}`; with it every chosen
        weight is pruned to its own target and together they meet
        `target_sparsity` (to within one weight per tensor, from rounding).

    Example:
    >>> targets = keras_compress.importance.auto_layer_targets(model, (x_val, y_val), 0.95)
    >>> keras_compress.prune(model, keras_compress.PruneConfig(0.95, layer_targets=targets))
    """
    result = sensitivity(model, data, sparsities, layers, max_samples)
    plan = allocate(result["curves"], result["sizes"], result["baseline"], target_sparsity)
    return {f"(^|/){re.escape(name)}$": min(float(s), 0.999) for name, s in plan.items()}
