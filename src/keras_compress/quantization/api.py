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
"""

import collections
import dataclasses

import keras
import numpy as np
from keras import ops

from keras_compress.core import calls, variables, walk
from keras_compress.core.state import attach, detach, register_stripper, reset_compiled_functions
from keras_compress.ops import fake_quant as fq
from keras_compress.quantization.config import QATConfig

_CALL_KEY = "qat"
_STATE_ATTR = "_keras_compress_qat"

SKIP_FILTERED = "left out by the layer filter"
SKIP_NO_RULE = "no quantization rule for this layer type (register one with register_layer_rule)"
SKIP_UNFOLDED_BN = "BatchNormalization not folded (no Conv/Dense before it in the graph); output quantized"
SKIP_NO_INT8_KERNEL = "LiteRT has no int8 kernel for this op: it runs in float (output quantized for the next op)"
SKIP_NO_ATTRIBUTE = "weight not held in a layer attribute, so its call cannot see it fake-quantized"

RULES = ("weights", "output", "pass", "fixed", "float")
# How each layer type is treated. "weights": its kernels and output are
# quantized; "output": LiteRT gives its output its own scale, so the output
# is fake-quantized; "pass": the output keeps its input's scale (max pooling,
# reshapes); "fixed": LiteRT fixes the output's scale itself (softmax: 1/256).
_RULES = collections.OrderedDict()


def register_layer_rule(layer_type, rule):
    """Says how QAT treats a layer type that has no weights of its own.

    Args:
        layer_type: a `keras.layers.Layer` subclass (subclasses inherit it).
        rule: `"weights"` (its kernels are fake-quantized, per output channel,
            by swapping them for their quantized values during its call, and
            its output gets a range; the layer must hold each kernel in an
            attribute), `"output"` (its output gets its own int8 range), `"pass"` (its
            output keeps its input's range: reshapes, max pooling) or
            `"fixed"` (the runtime fixes the output's range: softmax) or
            `"float"` (the op has no int8 kernel: its weights stay float, its
            output is quantized for the next op).

    Example:
    >>> register_layer_rule(MyClip, "pass")
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {list(RULES)}. Received: rule={rule!r}")
    if not (isinstance(layer_type, type) and issubclass(layer_type, keras.layers.Layer)):
        raise TypeError(f"layer_type must be a keras.layers.Layer subclass. Received: {layer_type!r}")
    _RULES[layer_type] = rule


def _register_defaults():
    layers = keras.layers
    for name in ("Dense", "EinsumDense", "Embedding", "Conv1D", "Conv2D", "Conv3D",
                 "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "DepthwiseConv1D",
                 "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D"):
        register_layer_rule(getattr(layers, name), "weights")
    for name in ("Conv3D", "Conv3DTranspose"):
        register_layer_rule(getattr(layers, name), "float")
    for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
                 "ReLU", "LeakyReLU", "ELU", "PReLU", "AveragePooling1D", "AveragePooling2D",
                 "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
                 "GlobalAveragePooling3D", "BatchNormalization", "LayerNormalization", "Rescaling"):
        if hasattr(layers, name):
            register_layer_rule(getattr(layers, name), "output")
    for name in ("Flatten", "Reshape", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
                 "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "Dropout",
                 "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                 "GaussianDropout", "AlphaDropout", "ZeroPadding1D", "ZeroPadding2D",
                 "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "Permute",
                 "RepeatVector", "Identity", "InputLayer", "UpSampling1D", "UpSampling2D",
                 "UpSampling3D", "ActivityRegularization"):
        if hasattr(layers, name):
            register_layer_rule(getattr(layers, name), "pass")
    register_layer_rule(layers.Softmax, "fixed")


_register_defaults()

# Activations LiteRT fuses into the op before them: the quantized tensor is
# the activation's output. Other activations (softmax, sigmoid, tanh) run as
# ops of their own whose output LiteRT fixes, so the tensor before them is
# the one to quantize.
_FUSED_ACTIVATIONS = ("linear", "relu", "relu6")


def _activation_name(activation):
    if activation is None:
        return "linear"
    name = getattr(activation, "__name__", None)
    return name if isinstance(name, str) else type(activation).__name__.lower()


def _rule_for(layer):
    for layer_type in reversed(_RULES):
        if isinstance(layer, layer_type):
            rule = _RULES[layer_type]
            if isinstance(layer, keras.layers.Activation) or type(layer).__name__ == "Activation":
                break
            return rule
    if isinstance(layer, keras.layers.Activation):
        name = _activation_name(layer.activation)
        if name in ("softmax", "sigmoid", "tanh", "log_softmax"):
            return "fixed"
        return "pass" if name == "linear" else "output"
    return None


def _is_fusable_activation_layer(layer):
    if isinstance(layer, keras.layers.ReLU):
        return (
            float(layer.negative_slope) == 0.0
            and float(layer.threshold) == 0.0
            and (layer.max_value is None or float(layer.max_value) == 6.0)
        )
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer.activation) in ("relu", "relu6")
    return False


def _weight_axis(layer, variable, per_channel):
    """The output-channel axis LiteRT quantizes a kernel along (None: per tensor).

    Per channel where LiteRT's int8 kernels and its converter take per-axis
    weights: 2D/3D convolutions, 2D depthwise (multiplier 1) and separable
    convolutions. Dense, EinsumDense and Embedding (FULLY_CONNECTED, GATHER)
    and the layers the converter lowers through a reshape or transpose
    (1D convolutions, transposed convolutions) take one scale per tensor:
    the converter rejects per-axis ranges there.
    """
    if not per_channel:
        return None
    transposed = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                  keras.layers.Conv3DTranspose)
    if isinstance(layer, transposed):
        return None
    if isinstance(layer, keras.layers.DepthwiseConv2D) or (
        isinstance(layer, keras.layers.SeparableConv2D) and variable is layer.depthwise_kernel
    ):
        # Kernel (h, w, in, multiplier): LiteRT's channels are in * multiplier.
        return -2 if variable.shape[-1] == 1 else None
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.SeparableConv2D)):
        return -1
    return None


# --------------------------------------------------------------------------
# The plan: what each layer does under QAT


@dataclasses.dataclass
class RangeSite:
    """An activation range tracked during training: three variables on `owner`."""

    name: str
    owner: keras.layers.Layer
    min: keras.Variable
    max: keras.Variable
    seen: keras.Variable

    def values(self):
        """`(min, max)` as floats, widened to contain 0 (what LiteRT uses)."""
        low, high = fq.activation_range(
            ops.convert_to_tensor(self.min.value), ops.convert_to_tensor(self.max.value)
        )
        return float(ops.convert_to_numpy(low)), float(ops.convert_to_numpy(high))


@dataclasses.dataclass
class QuantizedWeight:
    variable: keras.Variable
    attributes: list
    axis: object


@dataclasses.dataclass
class LayerPlan:
    layer: keras.layers.Layer
    kind: str  # "weights", "output", "fixed", "pass", "folded_bn", "float", "model"
    weights: list = dataclasses.field(default_factory=list)
    output_site: RangeSite | None = None
    pre_activation: bool = False
    input_sites: list = dataclasses.field(default_factory=list)
    inner_site: RangeSite | None = None  # separable convolutions: between the two convolutions
    folded_into: str | None = None
    reason: str | None = None
    # The bias's int32 grid: the input's range and the kernel it multiplies.
    bias_input_site: RangeSite | None = None
    bias_kernel: QuantizedWeight | None = None


@dataclasses.dataclass
class QATState:
    """What `quantize` attached to a model; `strip` removes it."""

    config: QATConfig
    plans: list
    sites: dict
    added: list  # (layer, variable) pairs this technique added
    constraints: list  # (variable, previous constraint)
    float_layers: list  # (layer name, reason)
    folded: list  # (bn name, into layer name)
    calibrating: bool = False
    exporting: bool = False
    needs_retrace: bool = True


def get_state(model):
    return getattr(model, _STATE_ATTR, None)


def is_quantized(model):
    """Whether `quantize` has prepared `model` for QAT (and it is not stripped)."""
    return get_state(model) is not None


def _graph_consumers(model):
    """Layer id -> the layers that consume its output, from the model's graph.

    Subclassed models record no graph; their map is empty, so nothing is
    fused or folded in them.
    """
    consumers = collections.defaultdict(list)
    for layer in walk.iter_layers(model):
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in node.input_tensors:
                history = getattr(tensor, "_keras_history", None)
                if history is not None:
                    consumers[id(history.operation)].append(layer)
    return consumers


def _has_graph(model):
    return any(getattr(layer, "_inbound_nodes", None) for layer in walk.iter_layers(model)
               if layer is not model)


def _add_variable(layer, name, value, state_added):
    variable = variables.add_variable(layer, name, value)
    state_added.append((layer, variable))
    return variable


def _make_site(layer, label, added):
    name = f"{layer.name}/{label}"
    return RangeSite(
        name=name, owner=layer,
        min=_add_variable(layer, f"qat_{label}_min", 0.0, added),
        max=_add_variable(layer, f"qat_{label}_max", 0.0, added),
        seen=_add_variable(layer, f"qat_{label}_seen", 0.0, added),
    )


def _is_foldable(producer, bn):
    return (
        isinstance(producer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                              keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
                              keras.layers.Dense))
        and not isinstance(producer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                                      keras.layers.Conv3DTranspose))
        and _activation_name(producer.activation) == "linear"
        and getattr(producer, "data_format", "channels_last") == "channels_last"
        and bn.axis in (-1, len(bn.input.shape) - 1 if hasattr(bn, "input") else -1)
        and len(bn._inbound_nodes) == 1
        and len(producer._inbound_nodes) == 1
    )


def _fold(model, producer, bn):
    """Folds `bn` into `producer`'s kernel and bias (adding a bias if needed)."""
    from keras_compress.clustering import api as clustering

    kernel = producer.kernel
    shape = tuple(kernel.shape)
    depthwise = isinstance(producer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D))
    # Each weight's output channel (depthwise: input channel x multiplier);
    # clusters spanning channels are split, since folding scales each channel.
    channels = shape[-2] * shape[-1] if depthwise else shape[-1]
    channel_index = np.broadcast_to(np.arange(channels).reshape(shape[-2:] if depthwise else (channels,)), shape)
    clustering.split_clusters_by_channel(model, kernel, channel_index)
    # Read after the split: a nearest-centroid weight is set to its centroids there.
    value = ops.convert_to_tensor(kernel.value)
    if depthwise:
        value = ops.reshape(value, tuple(shape[:-2]) + (shape[-2] * shape[-1],))
    bias = producer.bias.value if producer.bias is not None else None
    gamma = bn.gamma.value if bn.scale else None
    beta = bn.beta.value if bn.center else None
    new_kernel, new_bias = fq.fold_batchnorm(
        value, bias, gamma, beta, bn.moving_mean.value, bn.moving_variance.value, bn.epsilon
    )
    if depthwise:
        new_kernel = ops.reshape(new_kernel, shape)
    kernel.assign(new_kernel)
    if producer.bias is None:
        with variables.unlocked(producer):
            producer.bias = producer.add_weight(
                name="bias", shape=(new_bias.shape[0],), initializer="zeros",
                dtype=producer.variable_dtype,
            )
        producer.use_bias = True
    producer.bias.assign(new_bias)
    # The normalization becomes an identity, so `strip` can leave it in a
    # model that still loads: (x - 0) / sqrt(1 - eps + eps) * 1 + 0.
    channels = bn.moving_mean.shape
    bn.moving_mean.assign(np.zeros(channels, "float32"))
    bn.moving_variance.assign(np.full(channels, 1.0 - bn.epsilon, "float32"))
    if bn.scale:
        bn.gamma.assign(np.ones(channels, "float32"))
    if bn.center:
        bn.beta.assign(np.zeros(channels, "float32"))
    bn.trainable = False


def _attribute_names(layer, variable):
    return [name for name, value in vars(layer).items() if value is variable]


def _plan(model, config, chosen_layers, consumers, added):
    """Decides each layer's treatment; folds batch normalizations."""
    plans, float_layers, folded = [], [], []
    keep = walk.make_layer_filter(config.layers)
    weights_by_layer = collections.defaultdict(list)
    for ref in chosen_layers:
        weights_by_layer[id(ref.layer)].append(ref.variable)

    layers = [layer for layer in walk.iter_layers(model) if layer is not model]
    folded_bns = set()
    if config.fold_batchnorm:
        for layer in layers:
            if isinstance(layer, keras.layers.BatchNormalization) and keep(layer):
                nodes = layer._inbound_nodes
                if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
                    continue
                producer = nodes[0].input_tensors[0]._keras_history.operation
                if (
                    id(producer) in weights_by_layer
                    and len(consumers[id(producer)]) == 1
                    and keep(producer)
                    and _is_foldable(producer, layer)
                ):
                    _fold(model, producer, layer)
                    folded_bns.add(id(layer))
                    folded.append((layer.name, producer.name))

    def fuses_into_next(layer):
        """The layer's output is fused with its only consumer's (no own range)."""
        nxt = consumers.get(id(layer), [])
        if len(nxt) != 1:
            return False
        return id(nxt[0]) in folded_bns or _is_fusable_activation_layer(nxt[0])

    for layer in layers:
        if layer._layers and not weights_by_layer.get(id(layer)):
            continue  # a container: its sublayers are planned
        if not keep(layer):
            if weights_by_layer.get(id(layer)) or _rule_for(layer) is not None:
                float_layers.append((layer.name, SKIP_FILTERED))
            continue
        if id(layer) in folded_bns:
            plan = LayerPlan(layer, "folded_bn")
            if not fuses_into_next(layer):
                plan.output_site = _make_site(layer, "output", added)
            plans.append(plan)
            continue
        variables = weights_by_layer.get(id(layer), [])
        if variables and not (_rule_for(layer) in ("weights", "float")
                              or callable(getattr(layer, "get_quantizable_weights", None))):
            float_layers.append((layer.name, SKIP_NO_RULE))
            continue
        if variables and _rule_for(layer) != "float":
            plan = LayerPlan(layer, "weights")
            for variable in variables:
                names = _attribute_names(layer, variable)
                if not names:
                    plan = None
                    break
                plan.weights.append(QuantizedWeight(variable, names, _weight_axis(
                    layer, variable, config.per_channel)))
            if plan is None:
                float_layers.append((layer.name, SKIP_NO_ATTRIBUTE))
                continue
            if isinstance(layer, keras.layers.SeparableConv2D):
                plan.inner_site = _make_site(layer, "depthwise", added)
            activation = _activation_name(getattr(layer, "activation", None))
            plan.pre_activation = activation not in _FUSED_ACTIVATIONS
            if isinstance(layer, keras.layers.Embedding):
                pass  # a lookup's output is its weights: no range of its own
            elif plan.pre_activation or not (activation == "linear" and fuses_into_next(layer)):
                plan.output_site = _make_site(layer, "output", added)
            plans.append(plan)
            continue
        rule = _rule_for(layer)
        if rule == "float":
            plans.append(LayerPlan(layer, "output", output_site=_make_site(layer, "output", added),
                                   reason=SKIP_NO_INT8_KERNEL))
            continue
        if rule is None or rule == "weights":
            float_layers.append((layer.name, SKIP_NO_RULE))
            continue
        if rule == "output":
            plan = LayerPlan(layer, "output")
            if isinstance(layer, keras.layers.BatchNormalization):
                plan.reason = SKIP_UNFOLDED_BN
            if not fuses_into_next(layer) or _is_fusable_activation_layer(layer):
                plan.output_site = _make_site(layer, "output", added)
            plans.append(plan)
        else:
            plans.append(LayerPlan(layer, rule))
    return plans, float_layers, folded


def _link_biases(model, plans):
    """Gives each weighted layer with a bias its int32 grid: input range and kernel.

    The input range is the site whose tensor reaches the layer through
    range-preserving layers (pooling, reshape, dropout) or the model's own
    input site; where none is found (a subclassed model, a layer fed by a
    fixed-range output or by a nested model's input) the bias stays float.
    """
    by_id = {id(plan.layer): plan for plan in plans}
    model_plan = by_id.get(id(model))
    try:
        model_inputs = keras.tree.flatten(model.inputs) if model_plan is not None else []
    except (AttributeError, ValueError):
        model_inputs = []
    for plan in plans:
        layer = plan.layer
        if plan.kind != "weights" or getattr(layer, "bias", None) is None:
            continue
        separable = isinstance(layer, keras.layers.SeparableConv2D)
        wanted = "pointwise_kernel" if separable else "kernel"
        kernel = next((w for w in plan.weights
                       if any(name.lstrip("_") == wanted for name in w.attributes)), None)
        site = plan.inner_site if separable else _input_site(layer, by_id, model_plan, model_inputs)
        if kernel is not None and site is not None:
            plan.bias_kernel, plan.bias_input_site = kernel, site


def _single_input(layer):
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    return nodes[0].input_tensors[0]


def _input_site(layer, by_id, model_plan, model_inputs):
    tensor = _single_input(layer)
    while tensor is not None:
        for i, model_input in enumerate(model_inputs):
            if tensor is model_input:
                return model_plan.input_sites[i]
        history = getattr(tensor, "_keras_history", None)
        producer = history.operation if history is not None else None
        plan = by_id.get(id(producer))
        if plan is None:
            return None
        if plan.output_site is not None:
            return plan.output_site
        if plan.kind != "pass":
            return None
        tensor = _single_input(producer)
    return None


# --------------------------------------------------------------------------
# The calls


def _training_flag():
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    return bool(context is not None and context.get_value("training", False))


def _observe(state, site, x):
    """Moves `site`'s range with `x` when training (or calibrating); fake-quantizes `x`."""
    config = state.config
    if state.calibrating or _training_flag():
        low, high = fq.moving_range(site.min.value, site.max.value, x,
                                    config.ema_decay, site.seen.value)
        site.min.assign(low)
        site.max.assign(high)
        site.seen.assign(1.0)
        return fq.fake_quant_activation(x, low, high, config.activation_bits)
    quantized = fq.fake_quant_activation(x, site.min.value, site.max.value,
                                         config.activation_bits)
    if state.exporting:
        return quantized  # every range is observed (checked before export)
    # A range never observed (no batch yet) leaves the tensor as it is.
    return ops.where(ops.equal(site.seen.value, 0.0), x, quantized)


def _fixed_activation_name(layer):
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    return _activation_name(getattr(layer, "activation", None))


def _fixed_output(state, activation_name, outputs):
    """At inference, an output whose range LiteRT fixes, on that fixed grid.

    Only when predicting or evaluating: in training the probabilities stay
    exact (a class rounded to probability 0 would lose its gradient), while
    the trained model's predictions, ties of nearly equal probabilities
    included, are those of the int8 model. Not while exporting either: the
    runtime applies the grid itself.
    """
    if (state.config.activation_bits != 8 or state.calibrating or state.exporting
            or _training_flag() or not _is_float_tensor(outputs)):
        return outputs
    return fq.fake_quant_fixed_output(outputs, activation_name)


def _integer_inference(state):
    """Predicting or evaluating: the model computes what the int8 kernels compute."""
    return not (state.calibrating or state.exporting or _training_flag())


def _bias_grid(state, plan):
    """`(input_scale, min_limit)` of the layer's int32 bias grid, or None.

    `min_limit` is the weight range below which the bias would overflow
    int32 (0 until the input range has been observed). Not while
    calibrating: the ranges are still moving.
    """
    if plan.bias_kernel is None or state.calibrating:
        return None
    site = plan.bias_input_site
    input_scale, _ = fq.quant_params(site.min.value, site.max.value, state.config.activation_bits)
    needed = fq.bias_min_limit(ops.stop_gradient(plan.layer.bias.value), input_scale,
                               state.config.weight_bits, per_tensor=plan.bias_kernel.axis is None)
    return input_scale, ops.where(ops.equal(site.seen.value, 0.0), 0.0, needed)


def _int32_bias(state, plan, input_scale, min_limit):
    """The layer's bias as LiteRT stores it (int32, scale input x weight scale).

    Only at inference: training keeps the float bias (the rounding is at most
    half of `input_scale * weight_scale`, far below an output step), and
    export leaves the rounding to the converter, which makes the same grid.
    Before its input range has been observed the bias stays as it is.
    """
    kernel = plan.bias_kernel
    bias = plan.layer.bias.value
    limit = fq.weight_limit(ops.convert_to_tensor(kernel.variable.value), kernel.axis, min_limit)
    snapped = fq.fake_quant_bias(bias, input_scale, limit, state.config.weight_bits)
    return ops.where(ops.equal(plan.bias_input_site.seen.value, 0.0), bias, snapped)


def _is_float_tensor(x):
    return "float" in str(getattr(x, "dtype", ""))


def _layer_call(state, plan, original):
    def call(*args, **kwargs):
        layer = plan.layer
        if plan.kind == "folded_bn":
            outputs = args[0] if args else kwargs["inputs"]
        elif plan.kind == "weights":
            saved = {}
            grid = _bias_grid(state, plan)
            try:
                for weight in plan.weights:
                    # What the call would see (a clustered weight: its cluster means).
                    min_limit = grid[1] if grid is not None and weight is plan.bias_kernel else None
                    value = fq.fake_quant_weight(calls.view_value(layer, weight.variable),
                                                 state.config.weight_bits, weight.axis, min_limit)
                    for name in weight.attributes:
                        saved[name] = getattr(layer, name)
                        object.__setattr__(layer, name, value)
                if grid is not None and _integer_inference(state):
                    saved["bias"] = layer.bias
                    object.__setattr__(layer, "bias", _int32_bias(state, plan, *grid))
                if plan.pre_activation:
                    activation = layer.activation
                    saved["activation"] = activation
                    object.__setattr__(layer, "activation", keras.activations.linear)
                if plan.inner_site is not None:
                    outputs = _separable_call(state, plan, *args, **kwargs)
                else:
                    outputs = original(*args, **kwargs)
            finally:
                for name, value in saved.items():
                    object.__setattr__(layer, name, value)
            if plan.pre_activation:
                if plan.output_site is not None:
                    outputs = _observe(state, plan.output_site, outputs)
                activation = saved["activation"]
                return _fixed_output(state, _activation_name(activation), activation(outputs))
        elif plan.kind == "fixed":
            return _fixed_output(state, _fixed_activation_name(layer), original(*args, **kwargs))
        else:
            outputs = original(*args, **kwargs)
        if plan.output_site is not None and _is_float_tensor(outputs):
            outputs = _observe(state, plan.output_site, outputs)
        return outputs

    return call


def _separable_call(state, plan, inputs):
    """A separable convolution as LiteRT runs it: depthwise, an int8 tensor, pointwise."""
    layer = plan.layer
    x = ops.depthwise_conv(inputs, layer.depthwise_kernel, strides=layer.strides,
                           padding=layer.padding, data_format=layer.data_format,
                           dilation_rate=layer.dilation_rate)
    x = _observe(state, plan.inner_site, x)
    x = ops.conv(x, layer.pointwise_kernel, strides=1, padding="valid",
                 data_format=layer.data_format)
    if layer.use_bias:
        bias = layer.bias
        if layer.data_format == "channels_first":
            bias = ops.reshape(bias, (-1,) + (1,) * (len(x.shape) - 2))
        x = ops.add(x, bias)
    return layer.activation(x) if layer.activation is not None else x


def _model_call(state, plan, original):
    def call(inputs, *args, **kwargs):
        flat = keras.tree.flatten(inputs)
        flat = [
            _observe(state, site, x) if site is not None and _is_float_tensor(x) else x
            for x, site in zip(flat, plan.input_sites)
        ]
        return original(keras.tree.pack_sequence_as(inputs, flat), *args, **kwargs)

    return call


def _patch(state):
    for plan in state.plans:
        if plan.kind == "pass":
            continue
        make = _model_call if plan.kind == "model" else _layer_call
        calls.wrap_call(plan.layer, _CALL_KEY, lambda inner, plan=plan, make=make: make(state, plan, inner))


def _unpatch(state):
    for plan in state.plans:
        calls.unwrap_call(plan.layer, _CALL_KEY)


def _input_dtypes(model, count):
    try:
        return [str(t.dtype) for t in keras.tree.flatten(model.inputs)]
    except (AttributeError, ValueError):
        return [str(getattr(model, "input_dtype", "float32"))] * count


def _input_count(model):
    try:
        return len(keras.tree.flatten(model.inputs))
    except (AttributeError, ValueError):
        return 1


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
    grid. Prune-then-quantize keeps pruned weights at zero.

    Args:
        model: a built Keras model (Sequential, Functional, subclassed,
            nested).
        config: a `QATConfig` (defaults: int8, per-channel weights), or a
            Keras mode / `keras.quantizers` config (see above).
        calibration_data: optional inputs, shape `(N, *input_shape)`, run
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
    chosen, _ = walk.find_weights(model, hook="get_quantizable_weights")
    if not model.trainable_variables:
        raise ValueError(f"Model {model.name!r} has no trainable variables: there is nothing to quantize.")
    for ref in chosen:
        if not np.all(np.isfinite(ops.convert_to_numpy(ref.variable.value))):
            raise ValueError(
                f"Weight {ref.path!r} holds NaN or inf values; quantization needs finite "
                "weights (a diverged training run?)."
            )
    calibration = None
    if calibration_data is not None:
        from keras_compress.evaluate import _check_fits, _model_input_shape

        calibration = _check_calibration(calibration_data)
        _check_fits(calibration.shape[1:], _model_input_shape(model), what="calibration_data sample")

    added, constraints = [], []
    consumers = _graph_consumers(model) if _has_graph(model) else {}
    plans, float_layers, folded = _plan(model, config, chosen, consumers, added)
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
    _link_biases(model, plans)
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
        for site in [plan.output_site, plan.inner_site,
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
    data = _check_calibration(data)
    state.calibrating = True
    try:
        for start in range(0, len(data), batch_size):
            outputs = model(data[start:start + batch_size], training=False)
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


@register_stripper(first=True)
def strip(model):
    """Removes QAT from `model`: plain calls, weights on their integer grid.

    Batch normalizations that were folded stay as identities (their
    variables hold mean 0, variance 1 - epsilon, scale 1, offset 0), so the
    model loads without custom objects. A model not prepared by `quantize`
    is returned unchanged.
    """
    state = get_state(model)
    if state is None:
        return model
    for plan in state.plans:
        for weight in plan.weights:
            weight.variable.assign(
                fq.fake_quant_weight(weight.variable.value, state.config.weight_bits, weight.axis)
            )
    for variable, constraint in state.constraints:
        variable.constraint = constraint  # the pruning/clustering constraint it wrapped, if any
    _unpatch(state)
    variables.remove_variables(state.added)
    detach(model, _STATE_ATTR)
    reset_compiled_functions(model)
    return model


def quantization_summary(model):
    """What QAT does to each layer: a list of dicts for tables and reports.

    Each row: `layer`, `treatment` ("weights+output", "weights", "output",
    "folded into <layer>", "pass-through", "fixed by runtime", "float"),
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
            "weights": "weights+output" if plan.output_site else "weights (output fused)",
            "output": ("float op, output quantized" if plan.reason == SKIP_NO_INT8_KERNEL
                       else "output" if plan.output_site else "output fused"),
            "folded_bn": f"folded into {folded.get(plan.layer.name)}",
            "pass": "pass-through",
            "fixed": "fixed by runtime",
        }[plan.kind]
        rows.append({
            "layer": plan.layer.name,
            "treatment": treatment,
            "weight_bits": state.config.weight_bits if plan.weights else None,
            "per_channel": any(w.axis is not None for w in plan.weights) if plan.weights else None,
            "range": _range_or_none(plan.output_site) if plan.output_site else None,
            "reason": plan.reason,
        })
    for name, reason in state.float_layers:
        rows.append({"layer": name, "treatment": "float", "range": None, "reason": reason})
    return rows


def _range_or_none(site):
    if float(ops.convert_to_numpy(site.seen.value)) == 0:
        return None
    return site.values()
