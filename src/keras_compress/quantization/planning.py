"""QAT's plan: what each layer does under quantization-aware training.

Planning reads the model's graph (`core.graph.ModelGraph`) and the layer
rules (`quantization.rules`), folds each BatchNormalization into the
Conv/Depthwise/Dense layer before it, decides which tensors get an int8
range (three variables on the layer that owns the tensor) and links each
bias to the input range and kernel that make its int32 grid
(`quantization.grids`). It changes weights (folding) and adds variables, but
no layer's call: that is `quantization.patching`.
"""

import collections
import dataclasses

import keras
import numpy as np
from keras import ops

from keras_compress.core import variables, walk
from keras_compress.core.variables import remove_variables
from keras_compress.ops import fake_quant as fq
from keras_compress.quantization.config import QATConfig
from keras_compress.quantization.rules import (
    _FUSED_ACTIVATIONS,
    HARD_SWISH,
    _activation_name,
    _is_fusable_activation_layer,
    _op_rule,
    _rule_for,
    _weight_axis,
)

SKIP_FILTERED = "left out by the layer filter"
SKIP_NO_RULE = "no quantization rule for this layer type (register one with register_layer_rule)"
SKIP_UNFOLDED_BN = "BatchNormalization not folded (no Conv/Dense before it in the graph); output quantized"
SKIP_NO_INT8_KERNEL = "LiteRT has no int8 kernel for this op: it runs in float (output quantized for the next op)"
SKIP_NO_ATTRIBUTE = "weight not held in a layer attribute, so its call cannot see it fake-quantized"


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
    kind: str  # "weights", "output", "fixed", "pass", "same", "folded_bn", "float", "model"
    weights: list = dataclasses.field(default_factory=list)
    output_site: RangeSite | None = None
    pre_activation: bool = False
    input_sites: list = dataclasses.field(default_factory=list)
    inner_site: RangeSite | None = None  # separable convolutions: between the two convolutions
    # A non-fused activation whose output LiteRT does not fix (swish: LOGISTIC then MUL, whose output
    # requantizes freely): the activation's output, after `output_site` (the tensor before it).
    activation_site: RangeSite | None = None
    # Hard swish as the ops it is exported as (`quantization.rules.HARD_SWISH`): ranges of relu6(x + 3), the gate.
    hard_swish_sites: list = dataclasses.field(default_factory=list)
    folded_into: str | None = None
    reason: str | None = None
    # The bias's int32 grid: the input's range and the kernel it multiplies.
    bias_input_site: RangeSite | None = None
    bias_kernel: QuantizedWeight | None = None
    # "same" layers: the input's site, whose grid the output is rounded onto.
    shared_site: RangeSite | None = None
    # A Concatenate with a range: each input's own site (None: it writes onto the output's grid), from which
    # LiteRT requantizes it onto the output's grid (`fake_quant.requantize`).
    requantized_sites: list = dataclasses.field(default_factory=list)
    # A pass-through layer (max pooling, padding) feeding such a Concatenate: the converter gives the whole
    # pass-through chain the Concatenate's scale, requantizing where the chain starts, so every consumer of
    # this output reads it moved from `moved_from`'s grid onto `moved_onto`'s (read from DenseNet121's file:
    # pool1 feeds its first block's BatchNormalization on the concatenation's grid). An average pooling's
    # output is requantized on the Concatenate's edge only.
    moved_from: RangeSite | None = None
    moved_onto: RangeSite | None = None
    # A BatchNormalization that keeps training (`train_batchnorm`): on its producer's plan, the normalization
    # folded into the kernel at inference (`fold_kernel` is the weight it scales); on its own plan, `trains`.
    batchnorm: keras.layers.Layer | None = None
    fold_kernel: QuantizedWeight | None = None
    trains: bool = False
    # Inside a layer QAT leaves float (a custom layer with weights of its own and no rule): the ops between its
    # sublayers are its own code, which the converter keeps in float where nothing gives them a range, but
    # where a sublayer's output had one, it carried that scale through them (keras-hub's ViT: the class token
    # put on the patch convolution's grid by a concatenation, so rounded to zero). Such a sublayer's weights
    # are quantized and its output keeps no range: it computes in float, in the file as in Keras.
    float_output: bool = False
    # A fixed-range layer (softmax, sigmoid) fed by nothing with a range: the converter leaves it in float, so its
    # output stays off the fixed grid (MultiHeadAttention's softmax, fed by its float score matmul).
    float_input: bool = False
    # A LayerNormalization over the last axis whose input has a range: that range, on whose grid LiteRT's int8
    # MEAN rounds the mean (`fake_quant.layer_normalization_as_litert`).
    mean_site: RangeSite | None = None


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
    holding: bool = False  # training-mode calls leave the ranges where they are (BatchNormalization recalibration)
    needs_retrace: bool = True
    unwrapped: bool = False  # strip's first part ran (constraints given back); its second puts weights on the grid


def _add_variable(layer, name, value, state_added):
    variable = variables.add_variable(layer, name, value)
    state_added.append((layer, variable))
    return variable


def _make_site(layer, label, added, owner=None, name=None):
    """A range for `layer`'s `label` tensor; its variables live on `owner` (default: the layer itself; a Keras
    op that is not a layer has none, so its range lives on the model)."""
    owner = owner or layer
    prefix = label if owner is layer else f"{layer.name}_{label}"
    return RangeSite(
        name=name or f"{layer.name}/{label}", owner=owner,
        min=_add_variable(owner, f"qat_{prefix}_min", 0.0, added),
        max=_add_variable(owner, f"qat_{prefix}_max", 0.0, added),
        seen=_add_variable(owner, f"qat_{prefix}_seen", 0.0, added),
    )


def _is_foldable(graph, producer, bn):
    return (
        isinstance(producer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                              keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
                              keras.layers.Dense))
        and not isinstance(producer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                                      keras.layers.Conv3DTranspose))
        and _activation_name(producer.activation) == "linear"
        and getattr(producer, "data_format", "channels_last") == "channels_last"
        and bn.axis in (-1, len(bn.input.shape) - 1 if hasattr(bn, "input") else -1)
        and graph.call_count(bn) == 1
        and graph.call_count(producer) == 1
    )


def _is_depthwise(layer):
    return isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D))


def folded_kernel_and_bias(producer, bn, kernel, bias):
    """`producer`'s kernel and bias with `bn` (inference mode) folded in: pure `keras.ops`.

    A depthwise kernel `(..., in, multiplier)` is scaled per `in * multiplier` channel.
    """
    shape = tuple(kernel.shape)
    depthwise = _is_depthwise(producer)
    if depthwise:
        kernel = ops.reshape(kernel, shape[:-2] + (shape[-2] * shape[-1],))
    new_kernel, new_bias = fq.fold_batchnorm(
        kernel, bias, bn.gamma.value if bn.scale else None, bn.beta.value if bn.center else None,
        bn.moving_mean.value, bn.moving_variance.value, bn.epsilon,
    )
    if depthwise:
        new_kernel = ops.reshape(new_kernel, shape)
    return new_kernel, new_bias


def _ensure_bias(producer, channels):
    if producer.bias is None:
        with variables.unlocked(producer):
            producer.bias = producer.add_weight(
                name="bias", shape=(channels,), initializer="zeros", dtype=producer.variable_dtype,
            )
        producer.use_bias = True


def _output_channels(producer):
    shape = tuple(producer.kernel.shape)
    return shape[-2] * shape[-1] if _is_depthwise(producer) else shape[-1]


def _fold_commutes(producer, config):
    """Whether folding a per-channel scale into `producer`'s kernel commutes with its weight rounding.

    Symmetric per-output-channel rounding scales with its channel, so
    `fake_quant(W) * s == fake_quant(W * s)`: training can round the kernel
    and normalize with the batch's statistics, and the int8 file (folded
    with the moving statistics) rounds the same way.
    """
    if not config.per_channel:
        return False
    # `_weight_axis` gives a depthwise kernel its per-channel axis only with multiplier 1 (the input channel).
    axis = _weight_axis(producer, producer.kernel, True)
    rank = len(producer.kernel.shape)
    return axis is not None and axis % rank == rank - (2 if _is_depthwise(producer) else 1)


def fold(model, producer, bn):
    """Folds `bn` into `producer`'s kernel and bias (adding a bias if needed); `bn` becomes an identity."""
    from keras_compress.clustering import api as clustering

    kernel = producer.kernel
    shape = tuple(kernel.shape)
    # Each weight's output channel (depthwise: input channel x multiplier);
    # clusters spanning channels are split, since folding scales each channel.
    channels = _output_channels(producer)
    channel_index = np.broadcast_to(
        np.arange(channels).reshape(shape[-2:] if _is_depthwise(producer) else (channels,)), shape)
    clustering.split_clusters_by_channel(model, kernel, channel_index)
    if producer.bias is not None:  # a clustered bias (`ClusterConfig(biases=True)`): one value per channel now
        clustering.split_clusters_by_channel(model, producer.bias, np.arange(channels))
    # Read after the split: a nearest-centroid weight is set to its centroids there.
    bias = producer.bias.value if producer.bias is not None else None
    new_kernel, new_bias = folded_kernel_and_bias(producer, bn, ops.convert_to_tensor(kernel.value), bias)
    kernel.assign(new_kernel)
    _ensure_bias(producer, channels)
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


def _plan(model, config, chosen_layers, graph, added):
    """Decides each layer's treatment; folds batch normalizations."""
    plans, float_layers, folded = [], [], []
    keep = walk.make_layer_filter(config.layers)
    weights_by_layer = collections.defaultdict(list)
    for ref in chosen_layers:
        weights_by_layer[id(ref.layer)].append(ref.variable)

    layers = graph.layers
    folded_bns = set()
    training_bns = {}  # id(producer) -> its BatchNormalization, which keeps training
    if config.fold_batchnorm:
        for layer in layers:
            if isinstance(layer, keras.layers.BatchNormalization) and keep(layer):
                producer = graph.single_producer(layer)
                if producer is None:
                    continue
                if (
                    id(producer) in weights_by_layer
                    and len(graph.consumers(producer)) == 1
                    and keep(producer)
                    and _is_foldable(graph, producer, layer)
                ):
                    if config.train_batchnorm and _fold_commutes(producer, config):
                        _ensure_bias(producer, _output_channels(producer))
                        training_bns[id(producer)] = layer
                    else:
                        fold(model, producer, layer)
                    folded_bns.add(id(layer))
                    folded.append((layer.name, producer.name))

    def fuses_into_next(layer):
        """The layer's output is fused with its only consumer's (no own range)."""
        nxt = graph.consumers(layer)
        if len(nxt) != 1:
            return False
        return id(nxt[0]) in folded_bns or _is_fusable_activation_layer(nxt[0])

    def feeds_concatenation(layer):
        """LiteRT's int8 CONCATENATION gives each input the output's scale: a layer whose only consumer is a
        Concatenate writes straight onto that grid (no range of its own; read from exported files: a branch
        clipped at its own narrower range in Keras was not clipped in LiteRT)."""
        nxt = graph.consumers(layer)
        return len(nxt) == 1 and isinstance(nxt[0], keras.layers.Concatenate) and keep(nxt[0])

    parents = _enclosing_layers(model)

    def inside_float_layer(layer):
        """Whether an enclosing layer is one QAT leaves float (weights of its own, no rule)."""
        parent = parents.get(id(layer))
        while parent is not None:
            if weights_by_layer.get(id(parent)) and not _has_weight_rule(parent):
                return parent
            parent = parents.get(id(parent))
        return None

    for layer in layers:
        if layer._layers and not weights_by_layer.get(id(layer)):
            continue  # a container: its sublayers are planned
        if not keep(layer):
            if weights_by_layer.get(id(layer)) or _rule_for(layer) is not None:
                float_layers.append((layer.name, SKIP_FILTERED))
            continue
        if id(layer) in folded_bns:
            plan = LayerPlan(layer, "folded_bn", trains=any(bn is layer for bn in training_bns.values()))
            if not fuses_into_next(layer):
                plan.output_site = _make_site(layer, "output", added)
            plans.append(plan)
            continue
        variables = weights_by_layer.get(id(layer), [])
        if variables and not _has_weight_rule(layer):
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
            if id(layer) in training_bns:
                plan.batchnorm = training_bns[id(layer)]
                plan.fold_kernel = next(w for w in plan.weights if w.variable is layer.kernel)
            if isinstance(layer, keras.layers.SeparableConv2D):
                plan.inner_site = _make_site(layer, "depthwise", added)
            activation = _activation_name(getattr(layer, "activation", None))
            plan.pre_activation = activation not in _FUSED_ACTIVATIONS
            if plan.pre_activation and fq.fixed_output_range(activation) is None:
                # Without a range the converter leaves the activation and the next op in float.
                plan.activation_site = _make_site(layer, "activation", added)
            plan.hard_swish_sites = _hard_swish_sites(layer, activation, added)
            if isinstance(layer, keras.layers.Embedding):
                pass  # a lookup's output is its weights: no range of its own
            elif plan.pre_activation or not (activation == "linear" and fuses_into_next(layer)
                                             or feeds_concatenation(layer)):
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
            if isinstance(layer, keras.layers.Activation):
                plan.hard_swish_sites = _hard_swish_sites(layer, _activation_name(layer.activation), added)
            if isinstance(layer, keras.layers.BatchNormalization):
                plan.reason = SKIP_UNFOLDED_BN
            if not feeds_concatenation(layer) and (not fuses_into_next(layer)
                                                   or _is_fusable_activation_layer(layer)):
                plan.output_site = _make_site(layer, "output", added)
            plans.append(plan)
        else:
            plans.append(LayerPlan(layer, rule))
    for plan in plans:
        enclosing = inside_float_layer(plan.layer)
        if enclosing is not None and plan.kind in ("weights", "output", "fixed"):
            dropped = [plan.output_site, plan.activation_site, plan.inner_site, *plan.hard_swish_sites]
            dropped = {id(v) for site in dropped if site is not None for v in (site.min, site.max, site.seen)}
            orphans = [pair for pair in added if id(pair[1]) in dropped]
            remove_variables(orphans)
            added[:] = [pair for pair in added if id(pair[1]) not in dropped]
            plan.output_site = plan.activation_site = plan.inner_site = None
            plan.hard_swish_sites = []
            plan.float_output = plan.kind != "fixed"
            plan.float_input = plan.kind == "fixed"
            plan.reason = f"inside {enclosing.name}, which QAT leaves float ({SKIP_NO_RULE.split(' (')[0]})"
        elif plan.kind == "fixed" and id(plan.layer) in parents and not graph.producers(plan.layer):
            plan.float_input = True  # called inside another layer's code, on a tensor no range was given to
            plan.reason = f"its input, computed inside {parents[id(plan.layer)].name}, has no range"
    for op in graph.operations:  # `x + 3.0` and the like: LiteRT's ADD/SUB/MUL have int8 kernels of their own
        if _op_rule(op) != "output" or not _has_float_input(op) or not keep(op):
            continue
        plan = LayerPlan(op, "output")
        if not feeds_concatenation(op) and not fuses_into_next(op):
            plan.output_site = _make_site(op, "output", added, owner=model, name=f"{op.name}/op_output")
        plans.append(plan)
    return plans, float_layers, folded


def _has_weight_rule(layer):
    """Whether QAT knows how to quantize the layer's own weights (a rule, or `get_quantizable_weights`)."""
    return _rule_for(layer) in ("weights", "float") or callable(getattr(layer, "get_quantizable_weights", None))


def _enclosing_layers(model):
    """id(layer) -> the layer whose own `call` calls it, for layers inside a layer that is not a model.

    Between such sublayers run the enclosing layer's own ops, which no graph records (a Sequential, Functional
    or subclassed model's layers are not in this map)."""
    parents = {}
    for layer in walk.iter_layers(model):
        if isinstance(layer, keras.Model):
            continue
        for child in layer._flatten_layers(include_self=False, recursive=False):
            parents[id(child)] = layer
    return parents


def _hard_swish_sites(layer, activation, added):
    """The ranges of hard swish's inner tensors (`relu6(x + 3)`, the gate), or none for other activations."""
    if activation not in HARD_SWISH:
        return []
    return [_make_site(layer, "hard_swish_shifted", added), _make_site(layer, "hard_swish_gate", added)]


def _has_float_input(op):
    """Whether the op reads a float tensor made by a layer or op of the graph (a cast of token ids does not)."""
    for node in getattr(op, "_inbound_nodes", []):
        for tensor in node.input_tensors:
            if "float" in str(getattr(tensor, "dtype", "")):
                return True
    return False


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
