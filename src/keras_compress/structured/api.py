"""`prune_channels`: remove whole channels and return a smaller plain Keras model.

Planning reads the channel groups (`core/channels.py`), ranks each group's
channels by importance and chooses which to keep; building serialises the
model, narrows each producer's `filters`/`units` (and a channel-last
Reshape's target), deserialises a new model of the same layer types and
copies the kept slices of every weight into it. The input model is never
changed.
"""

import dataclasses
import math
import os
import re

import keras
import numpy as np

from keras_compress.core import macs as macs_lib
from keras_compress.core.channels import ChannelGraph, expand
from keras_compress.structured.config import DATA_IMPORTANCES, ChannelPruneConfig

_OUT_KEYS = {"Dense": "units", "Embedding": "output_dim"}  # everything else that makes channels: "filters"
_TRANSPOSE = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
_DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
_SEPARABLE = ("SeparableConv1D", "SeparableConv2D")
_NORMALIZATION = ("BatchNormalization", "LayerNormalization")
_BISECTION_STEPS = 12


def _class(layer):
    return type(layer).__name__


def _in_axis(layer, variable_name):
    """The axis of `variable_name` that runs over `layer`'s input channels, or None."""
    name = _class(layer)
    if name in _NORMALIZATION:
        return 0
    if name in _DEPTHWISE:
        return {"kernel": -2, "depthwise_kernel": -2, "bias": 0}.get(variable_name)
    if name in _SEPARABLE:
        return {"depthwise_kernel": -2, "pointwise_kernel": -2}.get(variable_name)
    if name in _TRANSPOSE:
        return {"kernel": -1}.get(variable_name)
    return {"kernel": -2}.get(variable_name)


def _out_axis(layer, variable_name):
    """The axis of `variable_name` that runs over `layer`'s output channels, or None."""
    name = _class(layer)
    if name == "Embedding":
        return {"embeddings": -1}.get(variable_name)
    if name in _TRANSPOSE:
        return {"kernel": -2, "bias": 0}.get(variable_name)
    if name in _SEPARABLE:
        return {"pointwise_kernel": -1, "bias": 0}.get(variable_name)
    if name in _DEPTHWISE or name in _NORMALIZATION:
        return None
    return {"kernel": -1, "bias": 0}.get(variable_name)


def _short_name(variable):
    return variable.name.split("/")[-1].split(":")[0]


def _per_index(values, axis, power):
    """Sum of |w|**power over every axis but `axis`: one number per index of `axis`."""
    moved = np.moveaxis(np.abs(np.asarray(values, np.float64)) ** power, axis, 0)
    return moved.reshape(moved.shape[0], -1).sum(axis=1)


def _gather(rows, member, size):
    """Per-channel sums of a member's per-index `rows`, through its offset and tiling."""
    table = rows.reshape(member.tile, member.width)
    return table[:, member.offset: member.offset + size].sum(axis=0)


def group_scores(group, importance="l1", rng=None, weight_scores=None):
    """Importance of each channel of a group: larger is kept first.

    Args:
        group: a `core.channels.Group`.
        importance: `"l1"`, `"l2"`, `"bn_scale"`, `"random"`, `"taylor"`,
            `"fisher"` or a callable `group -> scores` (see `ChannelPruneConfig`).
        rng: a NumPy `Generator` for `"random"`.
        weight_scores: for `"taylor"` and `"fisher"`, `importance.score`'s
            `{variable path: per-weight scores}`, summed over each channel's weights.

    Returns:
        A float64 array of `group.size` scores.

    Example:
    >>> group_scores(ChannelGraph(model).groups()[0], "l2")
    array([...])
    """
    if callable(importance):
        scores = np.asarray(importance(group), np.float64)
        if scores.shape != (group.size,):
            raise ValueError(f"importance callable must return {group.size} scores for group {group.name!r}. "
                             f"Received shape: {scores.shape}")
        return scores
    if importance == "random":
        return (rng or np.random.default_rng(0)).random(group.size)
    if importance == "bn_scale":
        scores = np.zeros(group.size)
        found = False
        for member in group.members:
            if member.role == "chan" and _class(member.layer) == "BatchNormalization" and member.layer.scale:
                scores += _gather(np.abs(np.asarray(member.layer.gamma)), member, group.size)
                found = True
        if found:
            return scores
        importance = "l1"  # no BatchNormalization in the group: magnitude instead
    power = 2 if importance == "l2" else 1
    scores = np.zeros(group.size)
    for member in group.members:
        # Trainable weights only: a BatchNormalization's moving statistics say nothing of importance.
        for variable in member.layer.trainable_weights:
            values = variable
            if weight_scores is not None:
                values = weight_scores.get(variable.path)
                if values is None:
                    continue
            name = _short_name(variable)
            if member.role == "out":
                axis = _out_axis(member.layer, name)
                if axis is not None:
                    scores += _per_index(values, axis, power)
            else:
                axis = _in_axis(member.layer, name)
                if axis is not None:
                    scores += _gather(_per_index(values, axis, power), member, group.size)
    return scores


@dataclasses.dataclass
class ChannelPlan:
    """Which channels of which groups `prune_channels` keeps, and what that saves.

    Attributes:
        graph: the `ChannelGraph` read from the model.
        groups: every group (prunable or not).
        keep: `{id(group dim): sorted kept channel indices}` for groups that shrink.
        fraction: the share of channels removed from each prunable group
            (`{id(group dim): share}` when allocated by sensitivity).
        curves: with `allocation="sensitivity"`, `{group name: [(fraction, accuracy)]}`.
        macs_before, macs_after: the model's MACs per sample, before and after.
    """

    graph: ChannelGraph
    groups: list
    keep: dict
    fraction: object
    macs_before: int
    macs_after: int
    curves: dict | None = None

    def summary(self):
        """A JSON-able summary: counts of groups pruned and left whole (by reason), MACs, each group."""
        whole = {}
        for group in self.groups:
            for reason in group.reasons[:1]:
                key = reason.split(": ", 1)[-1] if ": " in reason else reason
                whole[key] = whole.get(key, 0) + 1
        rows = [{"group": g.name, "channels": g.size,
                 "kept": len(self.keep.get(id(g.dim), range(g.size))),
                 "layers": g.layers(), "left whole because": g.reasons[0] if g.reasons else None}
                for g in self.groups]
        fraction = self.fraction
        if isinstance(fraction, dict):  # per group (allocation='sensitivity'): by group name
            fraction = {g.name: fraction.get(id(g.dim), 0.0) for g in self.groups if g.prunable}
        return {"fraction": fraction, "groups": len(self.groups),
                "groups_pruned": sum(id(g.dim) in self.keep for g in self.groups),
                "groups_left_whole": sum(not g.prunable for g in self.groups),
                "left_whole_by_reason": whole,
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "macs_ratio": self.macs_before / self.macs_after if self.macs_after else None,
                "rows": rows}


def channel_groups(model):
    """Lists the channel groups of `model`: members, channel count, whether prunable and why not.

    Args:
        model: a Sequential or Functional Keras model (nested models read through).

    Returns:
        A list of dicts: `name`, `channels`, `prunable`, `reasons`, `layers`
        (each member layer once) and `producers` (the layers that make the channels).

    Raises:
        ValueError: for a subclassed model (no graph to read).

    Example:
    >>> [g["name"] for g in keras_compress.channel_groups(model) if g["prunable"]]
    ['conv1', 'conv2', 'fc1']
    """
    return [{"name": g.name, "channels": g.size, "prunable": g.prunable, "reasons": list(g.reasons),
             "layers": g.layers(), "producers": g.layers("out")}
            for g in ChannelGraph(model).groups()]


def _keep_count(size, fraction, config):
    keep = size - math.floor(fraction * size + 1e-9)
    keep = min(size, math.ceil(keep / config.round_to) * config.round_to)
    return max(keep, min(config.min_channels, size))


def _choose(groups, scores, fraction, config):
    """`{id(dim): kept indices}`; `fraction` is one share for every group or `{id(dim): share}`."""
    keep = {}
    for group in groups:
        if not group.prunable:
            continue
        share = fraction.get(id(group.dim), 0.0) if isinstance(fraction, dict) else fraction
        count = _keep_count(group.size, share, config)
        if count < group.size:
            order = np.argsort(-scores[id(group.dim)], kind="stable")
            keep[id(group.dim)] = np.sort(order[:count])
    return keep


def _ratio(layout, keep):
    if layout is None:
        return 1.0
    total = layout.width * layout.tile
    return len(expand(layout, keep)) / total if total else 1.0


def _macs_after(graph, keep, base):
    """The model's MACs with `keep` applied, from each layer's own count and its kept shares."""
    total = 0.0
    for layer in graph.model_layers:
        count = base.get(layer.name)
        if not count:
            continue
        r_in = _ratio(graph.inputs_of.get(id(layer)), keep)
        out_dim = graph.outputs_of.get(id(layer))
        r_out = len(keep[id(out_dim.root())]) / out_dim.root().size if out_dim is not None and id(out_dim.root()) in keep else 1.0
        if _class(layer) in _SEPARABLE:
            depth = int(np.prod(layer.kernel_size))
            share = depth / (depth + layer.filters)  # the depthwise part of the separable's MACs
            total += count * (share * r_in + (1 - share) * r_in * r_out)
        else:
            total += count * r_in * r_out
    return int(round(total))


def plan_channels(model, config=None, data=None):
    """Decides which channels `prune_channels` removes, without building anything.

    Args:
        model: a Sequential or Functional Keras model.
        config: a `ChannelPruneConfig` (default: half of each group's channels, by L1).
        data: `(x, y)` for the data-driven importances (`"taylor"`, `"fisher"`).

    Returns:
        A `ChannelPlan`.

    Raises:
        TypeError: if `config` is not a `ChannelPruneConfig`.
        ValueError: for a subclassed model, an `exclude` that matches no
            layer, or a `macs_target` that cannot be met.

    Example:
    >>> plan = plan_channels(model, ChannelPruneConfig(fraction=0.5))
    >>> plan.summary()["macs_ratio"]
    3.4
    """
    config = ChannelPruneConfig() if config is None else config
    if not isinstance(config, ChannelPruneConfig):
        raise TypeError(f"config must be a ChannelPruneConfig. Received: {type(config).__name__}")
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a Keras model. Received: {type(model).__name__}")
    graph = ChannelGraph(model)
    groups = graph.groups()
    if config.exclude is not None:
        pattern = re.compile(config.exclude)
        if not any(pattern.search(layer.name) for layer in graph.model_layers):
            raise ValueError(f"exclude={config.exclude!r} matches no layer of model {model.name!r}")
        for group in groups:
            if any(pattern.search(name) for name in group.layers("out")):
                group.reasons.append(f"excluded by exclude={config.exclude!r}")
    rng = np.random.default_rng(config.seed)
    weight_scores = None
    if config.importance in DATA_IMPORTANCES:
        if data is None:
            raise ValueError(f"importance={config.importance!r} is measured on data: pass data=(x, y) "
                             "(a few thousand training samples).")
        from keras_compress.importance import score

        weight_scores = score(model, data, method=config.importance)
    scores = {id(g.dim): group_scores(g, config.importance, rng, weight_scores) for g in groups if g.prunable}
    base = macs_lib.macs(model)
    before = base["total"]
    fraction, curves = config.fraction, None
    if config.allocation == "sensitivity":
        if data is None:
            raise ValueError("allocation='sensitivity' measures each group's accuracy curve: pass data=(x, y) "
                             "(held-out samples with integer labels).")
        from keras_compress.structured.allocation import sensitivity_fractions

        def build(keep):
            return build_pruned(model, ChannelPlan(graph, groups, keep, 0.0, before, before))

        fraction, curves = sensitivity_fractions(model, graph, groups, scores, config, data, base["layers"],
                                                 before, _choose, _macs_after, build)
    elif config.macs_target is not None:
        fraction = _fraction_for_macs(graph, groups, scores, config, base["layers"], before)
    elif config.params_target is not None:
        fraction = _fraction_for_params(model, graph, groups, scores, config, before)
    elif config.latency_target is not None:
        fraction = _fraction_for_latency(model, graph, groups, scores, config, before)
    keep = _choose(groups, scores, fraction, config)
    return ChannelPlan(graph, groups, keep, fraction, before, _macs_after(graph, keep, base["layers"]), curves)


def _fraction_for_macs(graph, groups, scores, config, base, before):
    return _fraction_for_budget(
        lambda fraction: _macs_after(graph, _choose(groups, scores, fraction, config), base),
        before, config.macs_target, "macs_target", "MACs", groups, config)


def _fraction_for_params(model, graph, groups, scores, config, before_macs):
    """The uniform fraction that keeps at most `params_target` of the parameters (each step builds the model)."""
    def params_at(fraction):
        keep = _choose(groups, scores, fraction, config)
        return build_pruned(model, ChannelPlan(graph, groups, keep, fraction, before_macs, before_macs)).count_params()

    return _fraction_for_budget(params_at, model.count_params(), config.params_target, "params_target",
                                "parameters", groups, config)


def _fraction_for_latency(model, graph, groups, scores, config, before_macs):
    """The uniform fraction whose built model's measured LiteRT batch-1 latency fits `latency_target`."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="keras_compress_latency_") as work:
        def latency_at(fraction):
            if fraction == 0.0:
                return measure_latency(model, work, config.latency_runs)
            keep = _choose(groups, scores, fraction, config)
            pruned = build_pruned(model, ChannelPlan(graph, groups, keep, fraction, before_macs, before_macs))
            return measure_latency(pruned, work, config.latency_runs)

        return _fraction_for_budget(latency_at, latency_at(0.0), config.latency_target, "latency_target",
                                    "batch-1 latency", groups, config)


def measure_latency(model, work_dir, runs):
    """Median seconds of one batch-1 invoke of `model` as a float32 `.tflite` (one interpreter thread)."""
    from keras_compress.export.litert import export_litert
    from keras_compress.export.measure import litert_latency

    path = export_litert(model, os.path.join(work_dir, "probe.tflite"))
    return litert_latency(path, batch_size=1, runs=runs, warmup=10, num_threads=1)


def _fraction_for_budget(measure_at, total, target, name, what, groups, config):
    """The smallest uniform fraction whose `measure_at(fraction)` keeps at most `target` of `total`."""
    upper = config.fraction if config.fraction > 0 else 0.95
    if measure_at(upper) > target * total:
        raise ValueError(
            f"{name}={target} cannot be met: removing {upper:.0%} of every prunable group's "
            f"channels keeps {measure_at(upper) / total:.1%} of the {what} ({sum(g.prunable for g in groups)} of "
            f"{len(groups)} groups can be pruned). Raise fraction or {name}.")
    return _bisect(lambda f: measure_at(f) <= target * total, upper)


def _bisect(fits, upper):
    """The smallest uniform fraction in [0, upper] that `fits` (the budget), to `_BISECTION_STEPS` halvings."""
    low, high = 0.0, upper
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return high


def _edit_config(serialized, model, changes):
    """Applies `{id(layer): {key: value}}` to a serialised model's layer configs (nested models too)."""
    config = serialized["config"]
    for entry in config.get("layers", []):
        entry.pop("build_config", None)  # the old shapes; layers build from their new inputs
        name = entry.get("config", {}).get("name")
        try:
            layer = model.get_layer(name)
        except ValueError:
            continue  # Sequential's InputLayer
        if isinstance(layer, keras.Model):
            _edit_config(entry, layer, changes)
        elif id(layer) in changes:
            entry["config"].update(changes[id(layer)])


def _pairs(old, new):
    for layer in old.layers:
        twin = new.get_layer(layer.name)
        if isinstance(layer, keras.Model):
            yield from _pairs(layer, twin)
        else:
            yield layer, twin


def _sliced(layer, variable, in_index, out_index):
    value = np.asarray(variable)
    name = _short_name(variable)
    if in_index is not None and (axis := _in_axis(layer, name)) is not None:
        value = np.take(value, in_index, axis=axis)
    if out_index is not None and (axis := _out_axis(layer, name)) is not None:
        value = np.take(value, out_index, axis=axis)
    return value


def build_pruned(model, plan):
    """Builds the smaller model a `ChannelPlan` describes, with the kept weights copied.

    Returns:
        A new plain Keras model (same class and layer types, same names).
    """
    graph, keep = plan.graph, plan.keep
    changes = {}
    for layer in graph.model_layers:
        out_dim = graph.outputs_of.get(id(layer))
        if out_dim is not None and id(out_dim.root()) in keep:
            changes[id(layer)] = {_OUT_KEYS.get(_class(layer), "filters"): len(keep[id(out_dim.root())])}
        layout = graph.reshapes.get(id(layer))
        if layout is not None and any(id(d.root()) in keep for d in layout.dims()):
            target = list(layer.target_shape)
            target[-1] = len(expand(layout, keep))
            changes[id(layer)] = {"target_shape": tuple(target)}
    serialized = keras.saving.serialize_keras_object(model)
    serialized.pop("compile_config", None)
    _edit_config(serialized, model, changes)
    new = keras.saving.deserialize_keras_object(serialized)
    for old_layer, new_layer in _pairs(model, new):
        if not old_layer.weights:
            continue
        layout = graph.inputs_of.get(id(old_layer))
        in_index = expand(layout, keep) if layout is not None and any(
            id(d.root()) in keep for d in layout.dims()) else None
        out_dim = graph.outputs_of.get(id(old_layer))
        out_index = keep.get(id(out_dim.root())) if out_dim is not None else None
        values = [_sliced(old_layer, v, in_index, out_index) for v in old_layer.weights]
        for value, target in zip(values, new_layer.weights):
            if tuple(value.shape) != tuple(target.shape):
                raise RuntimeError(f"internal: {old_layer.name}/{target.name} sliced to {value.shape}, "
                                   f"the pruned layer holds {tuple(target.shape)}")
        new_layer.set_weights(values)
    return new


def prune_channels(model, config=None, *, data=None):
    """Removes whole channels: returns a new, smaller, plain Keras model.

    Coupled channels are removed together (a residual stream's channels in
    every block, a BatchNormalization's with its convolution's), so every
    layer really shrinks and runs faster on any runtime. The kept weights
    are copied; the input model is not changed.

    Args:
        model: a built Sequential or Functional Keras model (nested models included).
        config: a `ChannelPruneConfig` (default: half of each group's channels by L1).
        data: `(x, y)`, needed by `importance="taylor"` and `"fisher"`
            (first-order Taylor `|w * g|` and empirical Fisher scores from
            `keras_compress.importance.score`, summed over each channel's weights).

    Returns:
        The pruned model: same class, layer types and names, narrower
        layers. It saves and loads with `keras.saving.load_model` and no
        custom objects.

    Raises:
        TypeError: if `config` is not a `ChannelPruneConfig`.
        ValueError: for a subclassed model (no graph), an `exclude` that
            matches nothing, or a `macs_target` that cannot be met.

    Example:
    >>> small = keras_compress.prune_channels(model, keras_compress.ChannelPruneConfig(fraction=0.5))
    >>> keras_compress.evaluate.macs(small)["total"] < keras_compress.evaluate.macs(model)["total"]
    True
    """
    return build_pruned(model, plan_channels(model, config, data))
