"""`quantize`: quantization-aware training (QAT) for Keras 3, no wrapper layers.

`quantize(model, QATConfig())` changes no layer's class or name. It plans,
from the model's graph, where a LiteRT int8 model quantizes, then:

- folds each BatchNormalization into the Conv/Depthwise/Dense layer before
  it (the normalization becomes an identity that `strip` leaves in place);
- gives each layer a call that fake-quantizes its weights (symmetric, per
  output channel) and its output (asymmetric, per tensor; after a fused
  ReLU/ReLU6, before a softmax/sigmoid/tanh whose output LiteRT fixes);
- adds to each such layer three non-trainable variables holding its output
  range (min, max and whether a batch has been seen), moved by a moving
  average in `fit`, saved and restored with the model's state on every
  backend.

A layer with no rule (an RNN, a custom leaf layer without weights) keeps its
own call and stays float; the report names it with the reason. Export
(`keras_compress.export.export_litert(model, path, "int8")`) reads the
trained ranges: under TensorFlow the fake quantization is
`tf.quantization.fake_quant_*`, which the LiteRT converter turns into int8
tensors with exactly those ranges. `strip` restores every call, puts the
weights on their integer grid and removes the range variables.

The work is split by job: `quantization.rules` (the layer-rule registry),
`quantization.planning` (plans, BatchNorm folding, bias linking, from
`core.graph`), `quantization.patching` (the fake-quantizing calls); this
module holds the verbs and re-exports the names it always offered.
"""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_compress.core import variables, walk
from keras_compress.core.graph import ModelGraph
from keras_compress.core.state import QUANTIZE, UNWRAP, attach, detach, register_stripper, reset_compiled_functions
from keras_compress.ops import fake_quant as fq
from keras_compress.quantization.config import QATConfig
from keras_compress.quantization.grids import _link_grids
from keras_compress.quantization.patching import _patch, _unpatch
from keras_compress.quantization.planning import (
    SKIP_FILTERED,
    SKIP_NO_ATTRIBUTE,
    SKIP_NO_INT8_KERNEL,
    SKIP_NO_RULE,
    SKIP_UNFOLDED_BN,
    LayerPlan,
    QATState,
    QuantizedWeight,
    RangeSite,
    _input_count,
    _input_dtypes,
    _make_site,
    _plan,
    fold,
)
from keras_compress.quantization.rules import RULES, register_layer_rule

_STATE_ATTR = "_keras_compress_qat"

__all__ = [
    "KERAS_MODES", "RULES", "SKIP_FILTERED", "SKIP_NO_ATTRIBUTE", "SKIP_NO_INT8_KERNEL", "SKIP_NO_RULE",
    "SKIP_UNFOLDED_BN", "LayerPlan", "QATConfig", "QATState", "QuantizedWeight", "RangeSite", "calibrate",
    "check_ranges_observed", "detach_for_saving", "get_state", "is_quantized", "quantization_ranges",
    "quantization_summary", "quantize", "register_layer_rule", "reset_compiled_functions",
    "set_quantization_ranges", "strip",
]


def get_state(model):
    return getattr(model, _STATE_ATTR, None)


def is_quantized(model):
    """Whether `quantize` has prepared `model` for QAT (and it is not stripped)."""
    return get_state(model) is not None


# --------------------------------------------------------------------------
# The verb


KERAS_MODES = ("int8", "int4", "float8", "gptq", "awq")


def _keras_config_types():
    names = ("QuantizationConfig", "GPTQConfig", "AWQConfig")
    return tuple(getattr(keras.quantizers, n) for n in names if hasattr(keras.quantizers, n))


def _keras_quantize(model, config, layers):
    """Keras's own post-training quantization, for a quantized model inside Keras."""
    if isinstance(config, str):
        if config not in KERAS_MODES:
            raise ValueError(
                f"Unknown Keras quantization mode. Allowed: {list(KERAS_MODES)} (Keras's own "
                f"model.quantize), or a QATConfig for quantization-aware training. Received: {config!r}"
            )
        if config in ("gptq", "awq"):
            raise ValueError(
                f"mode {config!r} needs calibration settings: pass a keras.quantizers."
                f"{'GPTQConfig' if config == 'gptq' else 'AWQConfig'}(dataset=..., tokenizer=...) as config."
            )
        kwargs = {"mode": config}
    else:
        kwargs = {"config": config}
    if layers is not None:
        kwargs["filters"] = layers
    model.quantize(**kwargs)
    return model


def quantize(model, config=None, calibration_data=None, batch_size=64, layers=None):
    """Prepares a model for quantization-aware training (LiteRT int8 scheme).

    With a Keras mode (`"int8"`, `"int4"`, `"float8"`) or a
    `keras.quantizers` config (`Int8QuantizationConfig`, `GPTQConfig`,
    `AWQConfig`, ...) as `config`, it is Keras's own post-training
    `model.quantize` instead (Dense, EinsumDense and Embedding quantized in
    Keras; such a model cannot be exported to LiteRT), with `layers` as its
    filter.

    The model keeps its layers (no wrappers): batch normalizations are
    folded, and each quantized layer's call fake-quantizes its weights and
    output. Compile and `fit` as usual; then export with
    `export_litert(model, path, "int8")`, which uses the trained ranges, and
    `strip(model)` for a plain float model whose weights lie on the int8
    grid. Prune-then-quantize keeps pruned weights at zero; a clustered
    model keeps its clusters (as tfmot's PCQAT: with nearest assignments
    the weights keep moving between clusters, the centroid held at zero
    included, and the centroids train; export takes the current centroids
    as constants).

    Args:
        model: a built Keras model (Sequential, Functional, subclassed,
            nested).
        config: a `QATConfig` (defaults: int8, per-channel weights), or a
            Keras mode / `keras.quantizers` config (see above).
        calibration_data: optional inputs, shape `(N, *input_shape)` (for a model
            with several inputs, a list in input order or a dict by input name), run
            once through the model to initialise the activation ranges
            before training (so the model is already a good post-training
            quantized model). Without it the first training batch sets them.
        batch_size: batch size of the calibration pass.
        layers: for a Keras mode only: `model.quantize`'s `filters`.

    Returns:
        The same model object, ready to compile and fit.

    Raises:
        ValueError: for a model that is not built, already quantized, has no
            trainable variables, NaN/inf weights, or bad calibration data.
        TypeError: if `config` is not a `QATConfig`.

    Example:
    >>> model = keras_compress.quantize(model, keras_compress.QATConfig(),
    ...                                 calibration_data=x_train[:512])
    >>> keras_compress.zoo.compile_for_classification(model)
    >>> model.fit(x_train, y_train, epochs=1)
    """
    config = QATConfig() if config is None else config
    if isinstance(config, str) or isinstance(config, _keras_config_types()):
        return _keras_quantize(model, config, layers)
    if not isinstance(config, QATConfig):
        raise TypeError(
            "config must be a QATConfig (quantization-aware training), a Keras mode "
            f"{list(KERAS_MODES)} or a keras.quantizers config. Received: {type(config).__name__}"
        )
    if layers is not None:
        raise ValueError("For QAT, choose layers with QATConfig(layers=...). Received: layers=" + repr(layers))
    if not isinstance(model, keras.Model):
        raise TypeError(f"quantize needs a keras.Model. Received: {type(model).__name__}")
    if get_state(model) is not None:
        raise ValueError(
            f"Model {model.name!r} is already prepared for QAT; call "
            "keras_compress.strip(model) before quantizing it again."
        )
    # Frozen layers are quantized too (a transfer-learning backbone becomes int8 like the rest; its
    # weights do not train, their fake quantization still acts in the forward pass).
    chosen, _ = walk.find_weights(model, hook="get_quantizable_weights", include_frozen=True)
    if not chosen and not model.trainable_variables:
        raise ValueError(f"Model {model.name!r} has no weights to quantize.")
    for ref in chosen:
        if not np.all(np.isfinite(ops.convert_to_numpy(ref.variable.value))):
            raise ValueError(
                f"Weight {ref.path!r} holds NaN or inf values; quantization needs finite "
                "weights (a diverged training run?)."
            )
    calibration = None
    if calibration_data is not None:
        calibration = _checked_calibration(model, calibration_data)

    added, constraints = [], []
    graph = ModelGraph(model, operations=True)
    plans, float_layers, folded = _plan(model, config, chosen, graph, added)
    if config.quantize_inputs:
        model_plan = LayerPlan(model, "model")
        count = _input_count(model)
        dtypes = _input_dtypes(model, count)
        model_plan.input_sites = [
            _make_site(model, "input" if count == 1 else f"input{i}", added)
            if "float" in dtype else None
            for i, dtype in enumerate(dtypes)
        ]
        plans.append(model_plan)
    _link_grids(model, plans, graph)
    if config.preserve_zeros:
        from keras_compress.pruning.api import MaskConstraint

        for plan in plans:
            for weight in plan.weights:
                variable = weight.variable
                mask = ops.cast(ops.not_equal(variable.value, 0.0), variable.dtype)
                if float(ops.convert_to_numpy(ops.min(mask))) < 1.0:
                    constraints.append((variable, variable.constraint))
                    variable.constraint = MaskConstraint(mask, variable.constraint)
    sites = {}
    for plan in plans:
        for site in [plan.output_site, plan.inner_site, plan.activation_site, *plan.hard_swish_sites,
                     *(s for s in plan.input_sites if s is not None)]:
            if site is not None:
                sites[site.name] = site
    state = QATState(config, plans, sites, added, constraints, float_layers, folded)
    _patch(state)
    attach(model, _STATE_ATTR, state)
    reset_compiled_functions(model)
    if calibration is not None:
        calibrate(model, calibration, batch_size=batch_size)
    return model


def _checked_calibration(model, data):
    """Calibration inputs checked against the model: an array, or for several inputs a dict by input name."""
    if len(getattr(model, "inputs", None) or ()) > 1:
        from keras_compress.core.samples import _named_calibration

        return _named_calibration(model, data, None, what="calibration_data")
    from keras_compress.evaluate import _check_fits, _model_input_shape

    array = _check_calibration(data)
    _check_fits(array.shape[1:], _model_input_shape(model), what="calibration_data sample")
    return array


def _batches(model, data, batch_size):
    """The model's inputs in batches: arrays, or (for a dict by name) the structure the model takes."""
    if isinstance(data, dict):
        from keras_compress.core.samples import in_model_structure

        count = len(next(iter(data.values())))
        for start in range(0, count, batch_size):
            yield in_model_structure(model, {n: a[start:start + batch_size] for n, a in data.items()})
        return
    for start in range(0, len(data), batch_size):
        yield data[start:start + batch_size]


def _check_calibration(data):
    try:
        array = np.asarray(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"calibration_data must be an array of samples: {error}") from None
    if array.ndim == 0 or array.size == 0:
        raise ValueError(
            "calibration_data is empty: it needs at least 1 sample, shape (N, *input_shape). "
            f"Received: shape={array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"calibration_data must be numeric. Received: dtype={array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError("calibration_data holds NaN or inf values; ranges need finite inputs.")
    return array


def calibrate(model, data, batch_size=64):
    """Runs `data` through a QAT model in inference mode, moving its ranges.

    The first batch sets each range; later batches move it by the config's
    moving average. Weights do not change.

    Raises:
        ValueError: if `model` is not prepared by `quantize`, or for empty or
            non-finite data.
    """
    state = _require_state(model)
    data = _checked_calibration(model, data)
    state.calibrating = True
    try:
        for batch in _batches(model, data, batch_size):
            outputs = model(batch, training=False)
            for value in keras.tree.flatten(outputs):
                if not np.all(np.isfinite(ops.convert_to_numpy(value))):
                    raise ValueError(
                        "The model produced NaN or inf activations on calibration_data; "
                        "its ranges cannot be measured."
                    )
    finally:
        state.calibrating = False
    return model


def _require_state(model):
    state = get_state(model)
    if state is None:
        raise ValueError(
            f"Model {getattr(model, 'name', model)!r} is not prepared for QAT: call "
            "keras_compress.quantize(model, QATConfig()) first."
        )
    return state


def quantization_ranges(model):
    """The activation ranges of a QAT model: `{site name: (min, max)}`.

    Site names are `"<layer name>/output"` and `"<model name>/input"`; a
    range never observed is reported as None.
    """
    state = _require_state(model)
    return {
        name: (site.values() if float(ops.convert_to_numpy(site.seen.value)) > 0 else None)
        for name, site in state.sites.items()
    }


def set_quantization_ranges(model, ranges):
    """Sets activation ranges (as returned by `quantization_ranges`)."""
    state = _require_state(model)
    unknown = sorted(set(ranges) - set(state.sites))
    if unknown:
        raise ValueError(f"Unknown range sites: {unknown}. Allowed: {sorted(state.sites)}")
    for name, value in ranges.items():
        if value is None:
            continue
        site = state.sites[name]
        site.min.assign(float(value[0]))
        site.max.assign(float(value[1]))
        site.seen.assign(1.0)


def check_ranges_observed(model):
    """Raises if a range has never seen data (export would have no scale for it)."""
    missing = [name for name, value in quantization_ranges(model).items() if value is None]
    if missing:
        raise ValueError(
            f"{len(missing)} activation range(s) were never observed (first: {missing[0]!r}): "
            "fit the model or pass calibration_data to quantize before exporting."
        )


@contextlib.contextmanager
def ranges_held(model):
    """Within it, training-mode calls of a QAT model leave its activation ranges as they are.

    For work that runs the model in training mode without training it
    (re-measuring BatchNormalization statistics). A model not prepared by
    `quantize` (or any model inside it) is left as it is.
    """
    states = [s for s in (get_state(layer) for layer in walk.iter_layers(model)) if s is not None]
    previous = [s.holding for s in states]
    for s in states:
        s.holding = True
    try:
        yield
    finally:
        for s, value in zip(states, previous):
            s.holding = value


def detach_for_saving(model):
    """Temporarily removes QAT's calls and variables; returns a function that restores them."""
    state = _require_state(model)
    _unpatch(state)
    variables.remove_variables(state.added)
    reset_compiled_functions(model)

    def restore():
        for layer, variable in state.added:
            layer._non_trainable_variables.append(variable)
        _patch(state)
        reset_compiled_functions(model)

    return restore


@register_stripper(order=UNWRAP)
def _unwrap(model):
    """QAT's first part of `strip`: a training BatchNormalization folded, the wrapped constraints given back
    (clustering's strip, next, then sets each weight to its centroids: those shared values land on the grid)."""
    state = get_state(model)
    if state is None or state.unwrapped:
        return model
    for plan in state.plans:
        if plan.batchnorm is not None:  # a training BatchNormalization: folded now, as the int8 file has it
            fold(model, plan.layer, plan.batchnorm)
    for variable, constraint in state.constraints:
        variable.constraint = constraint  # the pruning/clustering constraint it wrapped, if any
    state.unwrapped = True
    return model


@register_stripper(order=QUANTIZE)
def strip(model):
    """Removes QAT from `model`: plain calls, weights on their integer grid.

    A BatchNormalization kept training (`train_batchnorm`) is folded here,
    with its moving statistics. Batch normalizations that were folded stay as identities (their
    variables hold mean 0, variance 1 - epsilon, scale 1, offset 0), so the
    model loads without custom objects. A model not prepared by `quantize`
    is returned unchanged. Called alone (not through `keras_compress.strip`),
    it ends clustering too, in the order `strip` would.
    """
    state = get_state(model)
    if state is None:
        return model
    if not state.unwrapped:
        from keras_compress.clustering import api as clustering

        _unwrap(model)
        clustering.strip(model)
    for plan in state.plans:
        for weight in plan.weights:
            weight.variable.assign(
                fq.fake_quant_weight(weight.variable.value, state.config.weight_bits, weight.axis)
            )
    _unpatch(state)
    variables.remove_variables(state.added)
    detach(model, _STATE_ATTR)
    reset_compiled_functions(model)
    return model


def quantization_summary(model):
    """What QAT does to each layer: a list of dicts for tables and reports.

    Each row: `layer`, `treatment` ("weights+output", "weights (output fused)",
    "weights (computed in float)", "output", "folded into <layer>",
    "pass-through", "input's scale", "fixed by runtime", "float"),
    `weight_bits`, `per_channel`, `range` (min, max or None) and `reason`
    for float layers.
    """
    state = _require_state(model)
    folded = dict(state.folded)
    rows = []
    for plan in state.plans:
        if plan.kind == "model":
            for site in plan.input_sites:
                if site is None:
                    continue
                rows.append({"layer": site.name, "treatment": "input",
                             "range": _range_or_none(site), "reason": None})
            continue
        treatment = {
            "weights": ("weights (computed in float)" if plan.float_output
                        else "weights+output" if plan.output_site else "weights (output fused)"),
            "output": ("float" if plan.float_output
                       else "float op, output quantized" if plan.reason == SKIP_NO_INT8_KERNEL
                       else "output" if plan.output_site else "output fused"),
            "folded_bn": f"folded into {folded.get(plan.layer.name)}",
            "pass": "pass-through",
            "same": "input's scale",
            "fixed": "float" if plan.float_input else "fixed by runtime",
        }[plan.kind]
        rows.append({
            "layer": plan.layer.name,
            "treatment": treatment,
            "weight_bits": state.config.weight_bits if plan.weights else None,
            "per_channel": any(w.axis is not None for w in plan.weights) if plan.weights else None,
            "range": _range_or_none(plan.output_site) if plan.output_site else None,
            "reason": ("trains on batch statistics; folded with its moving statistics at inference and export"
                       if plan.trains else plan.reason),
        })
    for name, reason in state.float_layers:
        rows.append({"layer": name, "treatment": "float", "range": None, "reason": reason})
    return rows


def _range_or_none(site):
    if float(ops.convert_to_numpy(site.seen.value)) == 0:
        return None
    return site.values()
