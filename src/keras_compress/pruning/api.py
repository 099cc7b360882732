"""`prune` and `strip`: magnitude pruning with no wrapper layers.

`prune` leaves the model's layers as they are. For each chosen weight it
creates a mask variable and sets the weight's `constraint` so that every
optimizer step multiplies the weight by its mask, inside the compiled train
step on every backend: pruned weights are exactly zero after each step.
`PruningCallback` moves the masks along the schedule; `strip` applies them a
last time, restores the original constraints and forgets the masks, leaving
a plain Keras model.
"""

import dataclasses
import re

import keras
import numpy as np
from keras import ops

from keras_compress.core import walk
from keras_compress.core.state import attach, detach, register_stripper, reset_train_function
from keras_compress.ops import masks as mask_ops
from keras_compress.pruning.config import PruneConfig

_STATE_ATTR = "_keras_compress_pruning"


class MaskConstraint:
    """Multiplies a weight by its mask after the wrapped constraint, if any."""

    def __init__(self, mask, inner=None):
        self.mask = mask
        self.inner = inner

    def __call__(self, weight):
        if self.inner is not None:
            weight = self.inner(weight)
        return weight * ops.cast(self.mask, weight.dtype)


@dataclasses.dataclass
class PrunedWeight:
    """One pruned variable: its mask, its final target and its old constraint."""

    ref: walk.WeightRef
    mask: keras.Variable
    target: float
    schedule: object
    inner_constraint: object
    score: object = None  # importance scores; None means magnitude

    @property
    def variable(self):
        return self.ref.variable

    @property
    def path(self):
        return self.ref.path


@dataclasses.dataclass
class PruningState:
    """What `prune` attached to a model: config, pruned weights, step, skips."""

    config: PruneConfig
    weights: list
    skipped: list
    step: int = 0
    needs_retrace: bool = True


def _layer_target(config, ref):
    for pattern, value in (config.layer_targets or {}).items():
        if re.search(pattern, ref.layer.name) or re.search(pattern, ref.path):
            return float(value)
    return float(config.target_sparsity)


def compute_mask(config, weight, sparsity, score=None):
    """The mask for `weight` at `sparsity` under the config's pattern.

    The criterion is `|weight|`, or `score` (importance scores of the same
    shape) with weights that are already zero ranked last.
    """
    if score is None:
        scores = ops.abs(ops.convert_to_tensor(weight))
    else:
        alive = ops.cast(ops.not_equal(ops.convert_to_tensor(weight), 0), "float32")
        scores = (ops.convert_to_tensor(score, "float32") + 1e-30) * alive
    if config.pattern == "n:m":
        return mask_ops.n_m_mask(scores, config.n, config.m)
    if sparsity <= 0.0:
        return ops.ones(scores.shape, "float32")
    if config.pattern == "block":
        return mask_ops.block_mask(scores, sparsity, config.block_shape)
    return mask_ops.magnitude_mask(scores, sparsity)


def get_state(model):
    """The `PruningState` attached to `model` by `prune`, or None."""
    return getattr(model, _STATE_ATTR, None)


def is_pruned(model):
    """Whether `model` (or a model inside it) is being pruned and not stripped."""
    return any(get_state(layer) is not None for layer in walk.iter_layers(model))


def update_masks(state, step):
    """Recomputes every mask for training step `step` and zeroes the weights."""
    for pruned in state.weights:
        sparsity = pruned.schedule(step)
        if state.config.pattern != "n:m" and sparsity <= 0.0:
            continue
        mask = compute_mask(state.config, pruned.variable.value, sparsity, pruned.score)
        pruned.mask.assign(mask)
        pruned.variable.assign(pruned.variable.value * ops.cast(mask, pruned.variable.dtype))


def prune(model, config=None, layers=None, scores=None, targets=None, data=None):
    """Prepares `model` for magnitude pruning, in place; returns it.

    Chooses prunable weights by walking every layer's variables (trainable,
    floating point, rank >= 2, or what a layer's `get_prunable_weights()`
    returns), nested and subclassed models included. Masks for step 0 are
    applied at once, so a constant schedule prunes one-shot; train with
    `PruningCallback()` to follow the schedule, then call `strip`.

    Args:
        model: a built Keras model (Sequential, Functional, subclassed, nested).
        config: a `PruneConfig` (default: 50% unstructured, constant).
        layers: `None` (all layers), a regex matched against layer names and
            variable paths, or a callable `layer -> bool`.
        scores: `None` (magnitude pruning) or importance scores keyed by
            variable path, as `keras_compress.importance.score` returns; the
            lowest-scoring weights are pruned at every mask update.
        targets: `None` (the config's own), `"auto"` (per-layer targets
            from a sensitivity analysis on `data` that meet the config's
            `target_sparsity` overall with the least predicted accuracy loss,
            see `keras_compress.importance.auto_layer_targets`), or a dict
            `{layer regex: sparsity}` replacing the config's `layer_targets`.
        data: `(x, y)` validation samples, for `targets="auto"`.

    Returns:
        The same model, ready to prune. `pruning_summary(model)` lists what
        was pruned and what was skipped and why.

    Raises:
        ValueError: if the model is not built, is already being pruned, or
            has no prunable weights among the chosen layers. The model is left
            untouched.
        TypeError: if `config` is not a `PruneConfig`.

    Example:
    >>> model = keras_compress.prune(model, keras_compress.PruneConfig(0.9), layers="conv|fc")
    >>> model.fit(x, y, callbacks=[keras_compress.PruningCallback()])
    >>> model = keras_compress.strip(model)
    """
    config = PruneConfig() if config is None else config
    if not isinstance(config, PruneConfig):
        raise TypeError(f"config must be a PruneConfig. Received: config={config!r}")
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"model must be a Keras model or layer. Received: {type(model).__name__}")
    if is_pruned(model):
        raise ValueError(f"Model {model.name!r} is already being pruned; call strip() on it first.")
    if targets is not None:
        config = _with_targets(model, config, layers, targets, data)
    chosen, skipped = walk.find_weights(model, layers, include_frozen=config.include_frozen)
    if not chosen:
        reasons = sorted({reason for _, reason in skipped})
        raise ValueError(
            f"Model {model.name!r} has no prunable weights (layers={layers!r}). Prunable "
            "weights are trainable floating-point variables of rank >= 2 (kernels, "
            "embeddings) or those a layer's get_prunable_weights() returns. "
            f"Reasons variables were skipped: {reasons or ['the model has no variables']}"
        )
    names = {id(ref): walk.weight_name(model, ref.variable) for ref in chosen}
    if scores is not None:
        missing = [names[id(ref)] for ref in chosen if names[id(ref)] not in scores]
        wrong = [names[id(ref)] for ref in chosen if names[id(ref)] in scores
                 and tuple(np.shape(scores[names[id(ref)]])) != tuple(ref.variable.shape)]
        if missing or wrong:
            raise ValueError(
                f"scores must hold an array shaped like each pruned variable. Missing: {missing}; "
                f"wrong shape: {wrong}"
            )
    weights = []
    for ref in chosen:
        target = _layer_target(config, ref)
        mask = keras.Variable(
            np.ones(ref.variable.shape, "float32"), trainable=False, dtype="float32",
            name=ref.variable.name + "_prune_mask",
        )
        weights.append(
            PrunedWeight(ref, mask, target, config.schedule_fn(target), ref.variable.constraint,
                         None if scores is None else np.asarray(scores[names[id(ref)]], np.float32))
        )
    # Everything is resolved; only now does the model change.
    for pruned in weights:
        pruned.variable.constraint = MaskConstraint(pruned.mask, pruned.inner_constraint)
    state = PruningState(config, weights, skipped)
    attach(model, _STATE_ATTR, state)
    if config.should_update(0):
        update_masks(state, 0)
    reset_train_function(model)
    return model


def _with_targets(model, config, layers, targets, data):
    if isinstance(targets, dict):
        return dataclasses.replace(config, layer_targets=dict(targets))
    if targets != "auto":
        raise ValueError(f"targets must be None, 'auto' or a dict {{layer regex: sparsity}}. "
                         f"Received: targets={targets!r}")
    if data is None:
        raise ValueError("targets='auto' measures each layer's sensitivity: pass data=(x_val, y_val).")
    from keras_compress.importance.sensitivity import auto_layer_targets

    found = auto_layer_targets(model, data, config.target_sparsity, layers=layers)
    return dataclasses.replace(config, layer_targets=found)


@register_stripper
def strip(model):
    """Removes pruning state, leaving a plain Keras model with its zeros.

    Applies each mask a last time, restores the weights' own constraints and
    drops the masks. The result saves to `.keras` and loads with
    `keras.saving.load_model` without custom objects. Stripping a model that
    is not being pruned returns it unchanged.

    Args:
        model: a model passed to `prune` (or one containing it).

    Returns:
        The same model object, now plain Keras.

    Example:
    >>> model = keras_compress.strip(model)
    >>> model.save("pruned.keras")
    """
    for layer in walk.iter_layers(model):
        state = get_state(layer)
        if state is None:
            continue
        for pruned in state.weights:
            variable = pruned.variable
            variable.assign(variable.value * ops.cast(pruned.mask.value, variable.dtype))
            variable.constraint = pruned.inner_constraint
        detach(layer, _STATE_ATTR)
        reset_train_function(layer)
    reset_train_function(model)
    return model


def pruning_summary(model):
    """Per-variable sparsity of a model being pruned (call before `strip`).

    Returns:
        A list of dicts: `path`, `shape`, `target` (final sparsity),
        `sparsity` (measured now), and for skipped variables `skipped` (the
        reason) instead of a target.
    """
    rows = []
    for layer in walk.iter_layers(model):
        state = get_state(layer)
        if state is None:
            continue
        for pruned in state.weights:
            rows.append(
                {
                    "path": pruned.path,
                    "shape": tuple(pruned.variable.shape),
                    "target": state.config.final_sparsity(pruned.target),
                    "sparsity": mask_ops.sparsity(pruned.variable.value),
                }
            )
        rows.extend({"path": path, "skipped": reason} for path, reason in state.skipped)
    return rows
