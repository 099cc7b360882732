"""Importance-weighted weight penalties, in `keras.ops`.

A parameter that matters little to the loss is pushed towards zero harder
than one that matters much: each term of the L1 (or L2) penalty is weighted
by the inverse of the parameter's normalised importance. After training, a
magnitude criterion then finds the unimportant weights already small.
"""

from keras import ops

NORMS = ("l1", "l2")


def importance_coefficients(scores, epsilon=0.1):
    """Per-parameter penalty weights from importance scores, with mean 1.

    `c = 1 / (s / mean(s) + epsilon)`, then divided by its own mean, so a
    penalty strength means the same as for a plain L1/L2 penalty. A tensor
    whose scores are all zero gets coefficients of 1.

    Args:
        scores: non-negative importance scores, any shape.
        epsilon: floor of the normalised importance (bounds the largest
            coefficient at about `1 / epsilon` times the mean).

    Returns:
        A float32 tensor of `scores`' shape.
    """
    scores = ops.abs(ops.cast(ops.convert_to_tensor(scores), "float32"))
    mean = ops.mean(scores)
    normalised = ops.where(mean > 0, scores / ops.maximum(mean, 1e-30), ops.ones_like(scores))
    coefficients = 1.0 / (normalised + epsilon)
    return coefficients / ops.mean(coefficients)


def weighted_penalty(weight, coefficients, norm="l1"):
    """`sum(c * |w|)` for "l1", `sum(c * w**2)` for "l2"."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}. Received: norm={norm!r}")
    weight = ops.convert_to_tensor(weight)
    coefficients = ops.cast(coefficients, weight.dtype)
    term = ops.abs(weight) if norm == "l1" else ops.square(weight)
    return ops.sum(coefficients * term)


def group_lasso(weight, axis=-1):
    """Group lasso over the slices of `weight` along `axis`: the sum of each slice's L2 norm.

    Pushes whole filters (output channels) to zero together, which is what
    structured pruning then removes.

    Args:
        weight: a tensor.
        axis: the axis whose indices are the groups (a kernel's output channels: -1).

    Returns:
        A scalar tensor.

    Example:
    >>> float(group_lasso(np.array([[3.0, 0.0], [4.0, 0.0]])))
    5.0
    """
    from keras import ops

    moved = ops.moveaxis(weight, axis, 0)
    flat = ops.reshape(moved, (ops.shape(moved)[0], -1))
    return ops.sum(ops.sqrt(ops.sum(ops.square(flat), axis=1) + 1e-12))
