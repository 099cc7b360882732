"""`cluster`: weight sharing for Keras 3 with no wrapper layers.

Each chosen weight tensor is replaced by `num_clusters` shared values (per
tensor or per output channel). Training keeps it shared without wrapper
layers: the layer's call computes with each weight's cluster mean (a weight
view, `core.calls`), so every member of a cluster receives the cluster's
mean gradient and any optimizer, Adam included, gives all members the same
step: each shared value trains as one parameter (the centroid gradient of
Deep Compression, over the cluster's size). The weight's `constraint` then
sets each weight to its cluster's mean after every step, which keeps the
values exactly shared. Pruned zeros form a segment of their own that stays
exactly zero. With `train_centroids=False` only the constraint acts: each
weight takes its own optimizer step and the cluster averages them.
"""

import contextlib
import dataclasses
import functools

import keras
import numpy as np
from keras import ops

from keras_compress.clustering.config import ClusterConfig
from keras_compress.core import calls, variables, walk
from keras_compress.core.state import (
    SHARE, attach, detach, register_stripper, reset_compiled_functions, states_for_training,
)
from keras_compress.ops import kmeans as km
from keras_compress.pruning import api as pruning_api

_STATE_ATTR = "_keras_compress_clustering"
_VIEW_KEY = "clustering"


class SharedValueConstraint:
    """Sets every weight to its cluster's mean, after the wrapped constraint."""

    def __init__(self, segments, counts, inner=None):
        self.segments = segments
        self.counts = counts
        self.inner = inner

    def __call__(self, weight):
        if self.inner is not None:
            weight = self.inner(weight)
        return km.shared_values(weight, self.segments, self.counts)


@dataclasses.dataclass
class ClusteredWeight:
    ref: walk.WeightRef
    segments: keras.Variable  # int32, shape of the weight
    counts: keras.Variable  # float32, (num_segments,)
    inner_constraint: object
    # assignment="nearest": trainable codebook (k,) or (channels, k), 0/1 mask of kept weights.
    centroids: keras.Variable | None = None
    mask: keras.Variable | None = None
    # `ClusterConfig.zero_cluster`: 0/1 factors, 0 at each codebook's centroid pinned to zero.
    keep: np.ndarray | None = None

    @property
    def variable(self):
        return self.ref.variable


@dataclasses.dataclass
class ClusteringState:
    config: ClusterConfig
    weights: list
    skipped: list
    step: int = 0
    needs_retrace: bool = True


def get_state(model):
    """The `ClusteringState` attached to `model` by `cluster`, or None."""
    return getattr(model, _STATE_ATTR, None)


def is_clustered(model):
    """Whether `model` (or a model inside it) is being clustered and not stripped."""
    return any(get_state(layer) is not None for layer in walk.iter_layers(model))


def segments_for(weight, config):
    """Clusters one weight tensor as `config` says (`ops.kmeans.cluster_segments`).

    Args:
        weight: tensor of any shape.
        config: a `ClusterConfig`.

    Returns:
        `(segments, counts, shared)`: int32 segment of each weight (cluster,
        offset by channel when per channel; the last segment holds pruned
        zeros), float32 members per segment, and the clustered tensor.

    Example:
    >>> segments, counts, shared = segments_for(layer.kernel, ClusterConfig(num_clusters=8))
    """
    return km.cluster_segments(
        weight, config.num_clusters, init=config.init, per_channel=_per_channel(config, weight),
        preserve_sparsity=_preserves_sparsity(config, weight), iterations=config.iterations, seed=config.seed,
    )


def _per_channel(config, weight):
    """Per-channel codebooks for kernels only: a bias vector has one value per channel."""
    return config.per_channel and len(weight.shape) >= 2


def _preserves_sparsity(config, weight):
    """Zeros are pruned weights in kernels only: a bias's zeros (its initial value) train like any value."""
    return config.preserve_sparsity and len(weight.shape) >= 2


def _bias_rule(variable):
    """`walk.default_rule`, and a layer's bias vector too (`ClusterConfig(biases=True)`)."""
    reason = walk.default_rule(variable)
    if reason == walk.SKIP_LOW_RANK and variable.name == "bias" and len(variable.shape) == 1:
        return None
    return reason


def _recluster(state):
    for clustered in state.weights:
        segments, counts, shared = segments_for(clustered.variable.value, state.config)
        clustered.segments.assign(segments)
        clustered.counts.assign(counts)
        clustered.variable.assign(shared)


def cluster(model, config=None, layers=None):
    """Replaces each chosen weight tensor by a few shared values, in place.

    Chooses weights as `prune` does (trainable floating-point variables of
    rank >= 2, or what a layer's `get_clusterable_weights()` returns), runs
    k-means on each (zeros left out when `preserve_sparsity`), and sets each
    weight to its centroid. Train with `ClusteringCallback()` to fine-tune
    the shared values, then call `keras_compress.strip`.

    Args:
        model: a built Keras model of any kind. Strip pruning first.
        config: a `ClusterConfig` (default 16 clusters, k-means++).
        layers: `None`, a regex on layer names / variable paths, or a
            callable `layer -> bool`.

    Returns:
        The same model. After `strip`, each clustered tensor holds at most
        `num_clusters` distinct values per codebook (plus zero).

    Raises:
        TypeError: if `config` is not a `ClusterConfig`.
        ValueError: if the model is not built, is still being pruned or
            clustered, or has no clusterable weights. The model is untouched.

    Example:
    >>> kc.cluster(model, kc.ClusterConfig(num_clusters=16, init="linear"))
    >>> model.fit(x, y, callbacks=[kc.ClusteringCallback()])
    >>> kc.strip(model)
    """
    config = ClusterConfig() if config is None else config
    if not isinstance(config, ClusterConfig):
        raise TypeError(f"config must be a ClusterConfig. Received: config={config!r}")
    if pruning_api.is_pruned(model) or is_clustered(model):
        raise ValueError(
            f"Model {model.name!r} is still being pruned or clustered: call keras_compress.strip(model) "
            "first (prune -> strip -> cluster)."
        )
    chosen, skipped = walk.find_weights(model, layers, hook="get_clusterable_weights",
                                        rule=_bias_rule if config.biases else walk.default_rule,
                                        include_frozen=config.include_frozen)
    if not chosen:
        raise ValueError(
            f"Model {model.name!r} has no clusterable weights (layers={layers!r}): clusterable weights "
            "are trainable floating-point variables of rank >= 2 or those a layer's "
            "get_clusterable_weights() returns."
        )
    prepared = []
    for ref in chosen:
        segments, counts, shared = segments_for(ref.variable.value, config)
        prepared.append((ref, segments, counts, shared))
    weights = []
    for ref, segments, counts, shared in prepared:
        seg_var = keras.Variable(segments, trainable=False, dtype="int32", name=ref.variable.name + "_segments")
        count_var = keras.Variable(counts, trainable=False, dtype="float32", name=ref.variable.name + "_counts")
        clustered = ClusteredWeight(ref, seg_var, count_var, ref.variable.constraint)
        if config.assignment == "nearest":
            _start_nearest(clustered, segments, counts, shared, config)
            weights.append(clustered)
            continue
        ref.variable.assign(shared)
        if config.reassign_every is None:
            ref.variable.constraint = SharedValueConstraint(seg_var, count_var, clustered.inner_constraint)
            if config.train_centroids:
                calls.add_view(ref.layer, ref.variable, _VIEW_KEY, functools.partial(_cluster_means, clustered))
        weights.append(clustered)
    attach(model, _STATE_ATTR, ClusteringState(config, weights, skipped))
    if config.assignment == "nearest":
        _fresh_optimizer(model)
    reset_compiled_functions(model)
    return model


def _centroid_table(segments, counts, shared, config):
    """The codebook k-means gave: `(k,)`, or `(channels, k)` per channel.

    A cluster left empty repeats a filled one of its codebook (it can
    never be any weight's nearest before that one).
    """
    k = config.num_clusters
    per_channel = _per_channel(config, shared)
    channels = shared.shape[-1] if per_channel else 1
    means = np.zeros(k * channels + 1, np.float32)
    means[np.asarray(segments).reshape(-1)] = np.asarray(shared).reshape(-1)
    table = means[:-1].reshape(channels, k)
    filled = np.asarray(counts)[:-1].reshape(channels, k) > 0
    for row, keep in zip(table, filled):
        row[~keep] = row[keep][0] if keep.any() else 0.0
    return table if per_channel else table[0]


def _start_nearest(clustered, segments, counts, shared, config):
    ref = clustered.ref
    table = _centroid_table(segments, counts, shared, config)
    name = ref.variable.name
    clustered.centroids = variables.add_variable(ref.layer, f"{name}_centroids", table, trainable=True)
    if _preserves_sparsity(config, ref.variable):
        kept = np.asarray(ops.convert_to_numpy(ref.variable.value)) != 0
        if not kept.all():
            clustered.mask = keras.Variable(kept.astype(np.float32), trainable=False, name=f"{name}_mask")
            if config.zero_cluster:
                rows = table.reshape(-1, table.shape[-1])
                keep = np.ones_like(rows)
                keep[np.arange(len(rows)), np.argmin(np.abs(rows), axis=-1)] = 0.0
                clustered.keep = keep.reshape(table.shape)
                clustered.centroids.assign(table * clustered.keep)
    # The weight keeps its float value (the latent weight); the call sees its nearest centroid.
    calls.add_view(ref.layer, ref.variable, _VIEW_KEY, functools.partial(_nearest, clustered))


def _codebook(clustered):
    """The centroids a weight chooses from; one held at zero (no gradient) with `zero_cluster`."""
    centroids = clustered.centroids.value
    if clustered.keep is not None:
        centroids = centroids * ops.cast(clustered.keep, centroids.dtype)
    return centroids


def _nearest(clustered, value):
    mask = None if clustered.mask is None else clustered.mask.value
    return km.nearest_values(value, _codebook(clustered), mask)


def _fresh_optimizer(model):
    """An optimizer built before the centroids existed cannot update them: replace it."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        model.optimizer = optimizer.__class__.from_config(optimizer.get_config())


def _freeze_nearest(clustered, config):
    """Turns a nearest-centroid weight into fixed assignments (its current ones)."""
    ref = clustered.ref
    value = ops.convert_to_tensor(ref.variable.value)
    labels = np.asarray(ops.convert_to_numpy(km.assign(value, ops.cast(_codebook(clustered), value.dtype))))
    k = config.num_clusters
    per_channel = _per_channel(config, labels)
    at_zero = np.zeros(labels.shape, bool)
    if clustered.keep is not None:  # the members of a centroid pinned at zero join the pruned zeros
        pinned = np.argmin(clustered.keep.reshape(-1, k), axis=-1)
        at_zero = labels == (pinned if per_channel else pinned[0])
    if per_channel:
        labels = labels + np.arange(labels.shape[-1]) * k
    num_segments = int(clustered.counts.shape[0])
    if clustered.mask is not None:
        kept = np.asarray(ops.convert_to_numpy(clustered.mask.value)) > 0
        labels = np.where(kept & ~at_zero, labels, num_segments - 1)
    segments = labels.astype(np.int32)
    counts = np.bincount(segments.reshape(-1), minlength=num_segments).astype(np.float32)
    _end_nearest(clustered)
    clustered.segments.assign(segments)
    clustered.counts.assign(counts)
    ref.variable.constraint = SharedValueConstraint(clustered.segments, clustered.counts,
                                                    clustered.inner_constraint)
    if config.train_centroids:
        calls.add_view(ref.layer, ref.variable, _VIEW_KEY, functools.partial(_cluster_means, clustered))


def _end_nearest(clustered):
    """Writes each weight's nearest centroid into it; removes the codebook and the view."""
    variable, layer = clustered.variable, clustered.ref.layer
    variable.assign(_nearest(clustered, ops.convert_to_tensor(variable.value)))
    calls.remove_views(layer, _VIEW_KEY)
    variables.remove_variables([(layer, clustered.centroids)])
    clustered.centroids = clustered.mask = clustered.keep = None


def _cluster_means(clustered, value):
    # Read at call time: `split_clusters_by_channel` replaces the counts.
    return km.shared_values(value, clustered.segments.value, clustered.counts.value)


def _clustered_weights(model):
    """`(layer, state, clustered)` for every clustered weight in `model`, nested models included."""
    for layer in walk.iter_layers(model):
        state = get_state(layer)
        if state is not None:
            for clustered in state.weights:
                yield layer, state, clustered


@contextlib.contextmanager
def shared_values_for_export(model):
    """Within: each nearest-centroid weight holds its current centroids and computes with them as they are.

    For export: the converter cannot evaluate a nearest-centroid search over
    a large kernel (it would stay as TensorFlow ops the interpreter cannot
    run), and a file saved for the export subprocess holds the variables, not
    the views. Afterwards the latent weights and the searches are back, so
    training goes on as before.
    """
    swapped = []
    try:
        for _, _, clustered in _clustered_weights(model):
            if clustered.centroids is None:
                continue
            variable = clustered.variable
            latent = np.array(ops.convert_to_numpy(variable.value))  # a copy: the variable changes below
            variable.assign(_nearest(clustered, ops.convert_to_tensor(latent)))
            old = calls.swap_view(clustered.ref.layer, variable, _VIEW_KEY, _as_is)
            swapped.append((clustered, latent, old))
        yield
    finally:
        for clustered, latent, old in reversed(swapped):
            clustered.variable.assign(latent)
            calls.swap_view(clustered.ref.layer, clustered.variable, _VIEW_KEY, old)


def _as_is(value):
    return value


def fix_assignments(model, variables=None):
    """Freezes the current assignments of those `variables` (None: all) clustered with `assignment="nearest"`.

    For QAT (cluster-preserving QAT, as tfmot's PCQAT): the int8 converter
    cannot evaluate a nearest-centroid search over a large kernel, while a
    fixed assignment is a segment mean it folds. Their centroids keep
    training. Returns how many weights were frozen.
    """
    wanted = None if variables is None else {id(v) for v in variables}
    frozen = 0
    for layer, state, clustered in list(_clustered_weights(model)):
        if (wanted is None or id(clustered.variable) in wanted) and clustered.centroids is not None:
            _freeze_nearest(clustered, state.config)
            reset_compiled_functions(layer)
            frozen += 1
    return frozen


def split_clusters_by_channel(model, variable, channel_index):
    """Gives each (cluster, channel) pair of a clustered `variable` its own shared value.

    For a weight whose channels are about to be scaled by different factors
    (a BatchNormalization folded into its kernel by `quantize`): a cluster
    spanning channels no longer holds one value, and averaging it would undo
    the fold. After the split each channel keeps at most `num_clusters`
    values (its scaled centroids), which is what a per-channel int8 kernel
    stores anyway. Pruned zeros stay one segment, exactly zero.

    Args:
        model: the clustered model (its state, or a layer's, holds `variable`).
        variable: the clustered variable.
        channel_index: int array shaped like `variable`: each weight's channel.

    Returns:
        True if `variable` is clustered in `model` (and was split), else False.
    """
    for _, state, clustered in _clustered_weights(model):
        if clustered.variable is variable:
            if clustered.centroids is not None:
                _freeze_nearest(clustered, state.config)
            _split(clustered, np.asarray(channel_index))
            return True
    return False


def _split(clustered, channel_index):
    segments = np.asarray(ops.convert_to_numpy(clustered.segments.value)).astype(np.int64)
    zero_segment = int(clustered.counts.shape[0]) - 1
    channels = int(channel_index.max()) + 1
    combined = segments * channels + np.broadcast_to(channel_index, segments.shape)
    is_zero = segments == zero_segment
    _, new = np.unique(np.where(is_zero, -1, combined), return_inverse=True)
    new = new.reshape(segments.shape)
    if is_zero.any():
        new = new - 1  # -1 sorted first: the zeros' segment, moved to the end below
    num_segments = int(new.max()) + 2 if new.size else 1
    new = np.where(is_zero, num_segments - 1, new).astype(np.int32)
    counts = np.bincount(new.reshape(-1), minlength=num_segments).astype(np.float32)
    count_var = keras.Variable(counts, trainable=False, dtype="float32", name=clustered.counts.name)
    clustered.segments.assign(new)
    old_counts, clustered.counts = clustered.counts, count_var
    constraint = clustered.variable.constraint
    while constraint is not None:
        if isinstance(constraint, SharedValueConstraint) and constraint.counts is old_counts:
            constraint.counts = count_var
        constraint = getattr(constraint, "inner", None)


@register_stripper(order=SHARE)
def strip(model):
    """Removes clustering state: shares values a last time, restores constraints.

    It runs after QAT has unwrapped the constraints it wrapped and before QAT puts the shared values on
    the int8 grid (`core.state`'s orders)."""
    for layer in walk.iter_layers(model):
        state = get_state(layer)
        if state is None:
            continue
        if state.config.reassign_every is not None:
            _recluster(state)
        for clustered in state.weights:
            variable = clustered.variable
            if clustered.centroids is not None:
                _end_nearest(clustered)
            else:
                variable.assign(km.shared_values(variable.value, clustered.segments.value,
                                                 clustered.counts.value))
            variable.constraint = clustered.inner_constraint
            calls.remove_views(clustered.ref.layer, _VIEW_KEY)
        detach(layer, _STATE_ATTR)
        reset_compiled_functions(layer)
    reset_compiled_functions(model)
    return model


def clustering_summary(model):
    """Per clustered variable: path, shape and distinct values now (zero counted)."""
    rows = []
    for layer in walk.iter_layers(model):
        state = get_state(layer)
        if state is None:
            continue
        for clustered in state.weights:
            values = np.asarray(ops.convert_to_numpy(clustered.variable.value))
            rows.append({"path": clustered.ref.path, "shape": values.shape,
                         "distinct": int(np.unique(values).size), "num_clusters": state.config.num_clusters})
    return rows


class ClusteringCallback(keras.callbacks.Callback):
    """Keeps clustering on track during `fit`.

    With nearest assignments (the default) or fixed ones, the shared values
    are maintained inside the compiled train step; the callback only makes
    sure that step was traced with the clustering state. With `reassign_every=N`
    it re-runs k-means on the freely trained weights every N steps.

    Example:
    >>> model.fit(x, y, callbacks=[keras_compress.ClusteringCallback()])
    """

    def __init__(self):
        super().__init__()
        self._states = []

    def on_train_begin(self, logs=None):
        self._states = states_for_training(self.model, get_state, "ClusteringCallback", "cluster")

    def on_train_batch_begin(self, batch, logs=None):
        due = []
        for state in self._states:
            every = state.config.reassign_every
            if every is not None and state.step > 0 and state.step % every == 0:
                due.append(state)
            state.step += 1
        if due:
            _ = self.model  # on JAX this syncs the training state into the variables
            for state in due:
                _recluster(state)
