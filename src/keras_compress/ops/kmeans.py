"""One-dimensional k-means for weight sharing, in `keras.ops`.

Weights are clustered as scalars: each tensor (or each output channel) gets
a codebook of `k` shared values. Functions take a 1-D tensor of the values
to cluster (for sparsity-preserving clustering, the non-zero weights only).
"""

import numpy as np
from keras import ops
from keras import random as krandom

INITS = ("linear", "density", "kmeans++", "random")


def init_centroids(values, k, method="kmeans++", seed=0):
    """Initial centroids for `values` (1-D).

    Args:
        values: 1-D tensor, at least one element.
        k: number of centroids, >= 1.
        method: `"linear"` (evenly spaced between min and max; Deep
            Compression's choice, which keeps the rare large weights),
            `"density"` (quantiles: more centroids where weights are dense),
            `"kmeans++"` (D^2 sampling) or `"random"` (k values drawn from
            `values`).
        seed: seed for the random methods.

    Returns:
        A float32 tensor of shape `(k,)`, sorted.

    Raises:
        ValueError: on an unknown method or `k < 1`.

    Example:
    >>> init_centroids(np.array([0.0, 1.0, 2.0, 3.0]), 2, "linear")
    [0., 3.]
    """
    if method not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}. Received: init={method!r}")
    if int(k) < 1:
        raise ValueError(f"num_clusters must be >= 1. Received: num_clusters={k}")
    values = ops.cast(ops.reshape(values, (-1,)), "float32")
    n = values.shape[0]
    if method == "linear":
        low, high = ops.min(values), ops.max(values)
        if k == 1:
            return ops.reshape((low + high) / 2.0, (1,))
        return low + (high - low) * ops.linspace(0.0, 1.0, k)
    if method == "density":
        ranks = ops.cast((ops.arange(k, dtype="float32") + 0.5) / k * n, "int32")
        return ops.take(ops.sort(values), ops.minimum(ranks, n - 1))
    generator = krandom.SeedGenerator(seed)
    if method == "random":
        picks = krandom.randint((k,), 0, n, seed=generator)
        return ops.sort(ops.take(values, picks))
    # k-means++: each new centroid drawn with probability proportional to D^2.
    first = krandom.randint((1,), 0, n, seed=generator)
    centroids = ops.take(values, first)
    for _ in range(1, k):
        distance = ops.min(ops.square(values[:, None] - centroids[None, :]), axis=1)
        total = ops.sum(distance)
        uniform = krandom.uniform((), seed=generator) * total
        index = ops.minimum(ops.sum(ops.cast(ops.cumsum(distance) < uniform, "int32")), n - 1)
        centroids = ops.concatenate([centroids, ops.reshape(ops.take(values, index), (1,))])
    return ops.sort(centroids)


def assign(values, centroids):
    """Index of the nearest centroid for each value (int32, shape of `values`)."""
    distance = ops.abs(ops.expand_dims(values, -1) - centroids)
    return ops.cast(ops.argmin(distance, axis=-1), "int32")


def kmeans(values, centroids, iterations=10):
    """Lloyd's algorithm in 1-D from `centroids`; empty clusters keep theirs.

    Returns:
        `(centroids, assignments)`.

    Example:
    >>> kmeans(np.array([0.0, 0.1, 1.0, 1.1]), np.array([0.0, 1.0]))[0]
    [0.05, 1.05]
    """
    values = ops.cast(ops.reshape(values, (-1,)), "float32")
    centroids = ops.cast(centroids, "float32")
    k = centroids.shape[0]
    labels = assign(values, centroids)
    for _ in range(int(iterations)):
        sums = ops.segment_sum(values, labels, num_segments=k)
        counts = ops.segment_sum(ops.ones_like(values), labels, num_segments=k)
        centroids = ops.where(counts > 0, sums / ops.maximum(counts, 1.0), centroids)
        labels = assign(values, centroids)
    return centroids, labels


def shared_values(weights, segments, counts):
    """Replaces each weight by the mean of its segment (cluster).

    The maths of centroid fine-tuning without wrapper layers: after an
    optimizer step moved every member of a cluster, the cluster's shared
    value becomes the mean of its members. Segment `len(counts) - 1` is the
    pruned-zero segment and stays exactly 0.

    Args:
        weights: tensor of any shape.
        segments: int32 tensor of the same number of elements: each weight's
            segment (cluster, offset by channel for per-channel codebooks).
        counts: float32 `(num_segments,)`, members per segment (constant).

    Returns:
        A tensor shaped like `weights`.
    """
    flat = ops.reshape(weights, (-1,))
    num_segments = counts.shape[0]
    sums = ops.segment_sum(flat, ops.reshape(segments, (-1,)), num_segments=num_segments)
    means = sums / ops.maximum(ops.cast(counts, flat.dtype), 1.0)
    zero_last = ops.concatenate([ops.ones((num_segments - 1,), flat.dtype), ops.zeros((1,), flat.dtype)])
    return ops.reshape(ops.take(means * zero_last, ops.reshape(segments, (-1,))), weights.shape)


def nearest_values(weights, centroids, mask=None):
    """Each weight replaced by its nearest centroid, with gradients for both.

    The scheme of tfmot's clustering: the weights stay float ("latent") and
    every call takes each one's nearest centroid, so a weight moves to
    another cluster when training carries it across a midpoint. The
    gradient reaches each centroid as the sum of its members' gradients and
    each latent weight unchanged (straight through).

    Args:
        weights: the latent weights, any shape.
        centroids: `(k,)`, one codebook for the tensor, or `(C, k)`, one per
            output channel (the last axis of `weights`, of size C).
        mask: optional 0/1 tensor like `weights`; weights at 0 stay exactly 0.

    Returns:
        A tensor like `weights`, each value one of its codebook's centroids
        (or 0 where masked).

    Example:
    >>> nearest_values(np.array([0.1, 0.9, 0.4]), np.array([0.0, 1.0]))
    [0., 1., 0.]
    """
    centroids = ops.cast(centroids, weights.dtype)
    labels = ops.stop_gradient(assign(weights, centroids))
    if len(centroids.shape) == 1:
        chosen = ops.take(centroids, labels)
    else:
        chosen = ops.sum(ops.one_hot(labels, centroids.shape[-1], dtype=weights.dtype) * centroids, axis=-1)
    # The zero first: chosen + (w - w) is exactly `chosen`; (chosen + w) - w is not.
    out = chosen + (weights - ops.stop_gradient(weights))
    return out if mask is None else out * ops.cast(mask, weights.dtype)


def cluster_segments(weight, num_clusters, init="kmeans++", per_channel=False, preserve_sparsity=True,
                     iterations=10, seed=0):
    """Clusters one weight tensor into shared values: k-means per tensor or per output channel.

    The maths of weight sharing, apart from any model: clustering
    (`ClusterConfig`'s fields) and sensitivity analysis both call it.

    Args:
        weight: tensor of any shape (rank >= 1).
        num_clusters: shared values per codebook (`k`).
        init: centroid initialisation (`INITS`).
        per_channel: one codebook per output channel (last axis) instead of
            one for the tensor.
        preserve_sparsity: exact zeros take no centroid and stay zero.
        iterations: Lloyd iterations after initialisation.
        seed: seed for the random initialisations (channel `c` uses `seed + c`).

    Returns:
        `(segments, counts, shared)`: int32 NumPy array shaped like `weight`
        (each weight's cluster, offset by `channel * num_clusters` when per
        channel; the last segment, `num_clusters * channels`, holds the
        pruned zeros), float32 NumPy array of members per segment, and the
        clustered tensor (`shared_values`).

    Raises:
        ValueError: on an unknown `init` (from `init_centroids`).

    Example:
    >>> segments, counts, shared = cluster_segments(np.array([[0.0, 0.1], [1.0, 1.1]]), 2, "linear")
    >>> shared
    [[0., 0.1], [1.05, 1.05]]
    """
    values = np.asarray(ops.convert_to_numpy(weight), np.float32)
    k = num_clusters
    channels = values.shape[-1] if per_channel else 1
    matrix = values.reshape(-1, channels)
    num_segments = k * channels + 1
    segments = np.full(matrix.shape, num_segments - 1, np.int32)
    for channel in range(channels):
        column = matrix[:, channel]
        keep = column != 0 if preserve_sparsity else np.ones(column.shape, bool)
        members = column[keep]
        if members.size == 0:
            continue
        clusters = min(k, members.size)
        centroids = init_centroids(members, clusters, init, seed=seed + channel)
        _, labels = kmeans(members, centroids, iterations)
        segments[keep, channel] = np.asarray(ops.convert_to_numpy(labels)) + channel * k
    segments = segments.reshape(values.shape)
    counts = np.bincount(segments.reshape(-1), minlength=num_segments).astype(np.float32)
    shared = shared_values(values, segments, counts)
    return segments, counts, shared
