"""QAT's calls: each planned layer's call fake-quantizes what LiteRT quantizes.

No wrapper layers: `_patch` gives each planned layer a call (`core.calls`)
that swaps its kernels for their fake-quantized values, observes its output
range (moving it while training or calibrating) and, at inference, computes
what the int8 kernels compute (int32 bias grid, fixed output grids).
`_unpatch` restores every call.
"""

import keras
from keras import ops

from keras_compress.core import calls
from keras_compress.ops import fake_quant as fq
from keras_compress.quantization import planning
from keras_compress.quantization.rules import HARD_SWISH, SWISH, _activation_name

_CALL_KEY = "qat"


def _training_flag():
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    return bool(context is not None and context.get_value("training", False))


def _observe(state, site, x):
    """Moves `site`'s range with `x` when training (or calibrating); fake-quantizes `x`."""
    config = state.config
    if state.calibrating or _training_flag() and not state.holding:
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


def _on_grid(state, site, x):
    """An average pool's `x` rounded onto its input `site`'s grid as LiteRT does (the range stays).

    Not while exporting: the int8 AVERAGE_POOL_2D rounds by itself, and the rounding's float ops traced into
    the graph had left a float island after every average pool (DEQUANTIZE, ten float ops, QUANTIZE)."""
    if state.exporting:
        return x
    quantized = fq.fake_quant_average(x, site.min.value, site.max.value, state.config.activation_bits)
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
    if not _on_fixed_grid(state, outputs):
        return outputs
    return fq.fake_quant_fixed_output(outputs, activation_name)


def _on_fixed_grid(state, x):
    """Whether a tensor whose grid LiteRT fixes is put on it now (8-bit inference on a float tensor)."""
    return state.config.activation_bits == 8 and _integer_inference(state) and _is_float_tensor(x)


def _activate(state, plan, activation, x):
    """`activation(x)` as the int8 model computes it at inference.

    Swish is LOGISTIC then MUL in the int8 file: its sigmoid goes onto the
    fixed logistic grid before the multiply (`fake_quant.swish_as_litert`).
    Hard swish is computed as the ADD, MUL and MUL it is exported as, each
    on its own range (`rules.HARD_SWISH`). An activation whose output grid
    is fixed goes onto it; others are computed as they are.
    """
    name = _activation_name(activation)
    if plan.float_output:
        return activation(x)
    if name in SWISH:
        return fq.swish_as_litert(x, sigmoid_on_grid=_on_fixed_grid(state, x))
    if plan.hard_swish_sites and _is_float_tensor(x):
        shifted_site, gate_site = plan.hard_swish_sites
        shifted = _observe(state, shifted_site, ops.relu6(ops.add(x, 3.0)))
        return ops.multiply(x, _observe(state, gate_site, ops.multiply(shifted, 1.0 / 6.0)))
    return _fixed_output(state, name, activation(x))


def _computes_activation(layer):
    """An Activation layer whose call QAT replaces by `_activate` (the int8 file computes it differently)."""
    return isinstance(layer, keras.layers.Activation) and _activation_name(layer.activation) in SWISH + HARD_SWISH


def _integer_inference(state):
    """Predicting or evaluating: the model computes what the int8 kernels compute."""
    return not (state.calibrating or state.exporting or _training_flag())


def _bias_grid(state, plan, bias):
    """`(input_scale, min_limit)` of the layer's int32 bias grid, or None.

    `min_limit` is the weight range below which `bias` would overflow
    int32 (0 until the input range has been observed). Not while
    calibrating: the ranges are still moving.
    """
    if plan.bias_kernel is None or state.calibrating or bias is None:
        return None
    site = plan.bias_input_site
    input_scale, _ = fq.quant_params(site.min.value, site.max.value, state.config.activation_bits)
    needed = fq.bias_min_limit(ops.stop_gradient(bias), input_scale,
                               state.config.weight_bits, per_tensor=plan.bias_kernel.axis is None)
    return input_scale, ops.where(ops.equal(site.seen.value, 0.0), 0.0, needed)


def _int32_bias(state, plan, bias, kernel, input_scale, min_limit):
    """The layer's bias as LiteRT stores it (int32, scale input x weight scale).

    `kernel` is the float kernel the call quantizes (its weight view,
    folded with a training BatchNormalization's moving statistics where
    there is one). Only at inference: training keeps the float bias (the
    rounding is at most half of `input_scale * weight_scale`, far below an
    output step), and export leaves the rounding to the converter, which
    makes the same grid. Before its input range has been observed the bias
    stays as it is.
    """
    limit = fq.weight_limit(ops.convert_to_tensor(kernel), plan.bias_kernel.axis, min_limit)
    snapped = fq.fake_quant_bias(bias, input_scale, limit, state.config.weight_bits)
    return ops.where(ops.equal(plan.bias_input_site.seen.value, 0.0), bias, snapped)


def _training(state):
    return _training_flag() and not (state.calibrating or state.exporting)


def _weight_values(state, plan):
    """What the call quantizes: each weight's view, and the bias; a training BatchNormalization folded in
    (moving statistics) except in training, where the normalization itself runs on the batch."""
    layer = plan.layer
    values = {id(w.variable): calls.view_value(layer, w.variable) for w in plan.weights}
    bias = getattr(layer, "bias", None)
    # What the layer computes with: a clustered bias's view (`ClusterConfig(biases=True)`), else its value.
    bias = calls.view_value(layer, bias) if isinstance(bias, keras.Variable) else bias
    folds = plan.batchnorm is not None and not _training(state)
    if folds:
        key = id(plan.fold_kernel.variable)
        values[key], bias = planning.folded_kernel_and_bias(layer, plan.batchnorm, values[key], bias)
    return values, bias, folds


def _is_float_tensor(x):
    return "float" in str(getattr(x, "dtype", ""))


def _layer_call(state, plan, original):
    def call(*args, **kwargs):
        layer = plan.layer
        if plan.kind == "folded_bn":
            if plan.trains and _training(state):
                outputs = original(*args, **kwargs)  # the batch's statistics; its producer did not fold it
            else:
                outputs = args[0] if args else kwargs["inputs"]
        elif plan.kind == "weights":
            saved = {}
            values, bias, folds = _weight_values(state, plan)
            # A training BatchNormalization normalizes with the batch: no int32 grid for the unfolded bias.
            grid = None if plan.batchnorm is not None and not folds else _bias_grid(state, plan, bias)
            try:
                for weight in plan.weights:
                    min_limit = grid[1] if grid is not None and weight is plan.bias_kernel else None
                    value = fq.fake_quant_weight(values[id(weight.variable)], state.config.weight_bits,
                                                 weight.axis, min_limit)
                    for name in weight.attributes:
                        saved[name] = getattr(layer, name)
                        object.__setattr__(layer, name, value)
                if folds:
                    saved.setdefault("bias", layer.bias)
                    object.__setattr__(layer, "bias", bias)
                if grid is not None and _integer_inference(state):
                    saved.setdefault("bias", layer.bias)
                    object.__setattr__(layer, "bias", _int32_bias(
                        state, plan, bias, values[id(plan.bias_kernel.variable)], *grid))
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
                outputs = _activate(state, plan, saved["activation"], outputs)
                if plan.activation_site is not None and _is_float_tensor(outputs):
                    outputs = _observe(state, plan.activation_site, outputs)
                return outputs
        elif plan.kind == "fixed":
            if plan.float_input:
                return original(*args, **kwargs)
            return _fixed_output(state, _fixed_activation_name(layer), original(*args, **kwargs))
        elif plan.kind == "same":
            outputs = original(*args, **kwargs)
            if plan.shared_site is not None and _is_float_tensor(outputs):
                outputs = _on_grid(state, plan.shared_site, outputs)
            return outputs
        elif _computes_activation(layer):
            outputs = _activate(state, plan, layer.activation, args[0] if args else kwargs["inputs"])
        elif plan.kind == "pass":  # `moved_onto`: feeds a Concatenate that LiteRT moves it onto
            outputs = original(*args, **kwargs)
            if _integer_inference(state) and _is_float_tensor(outputs):
                outputs = _moved(state, plan.moved_from, plan.moved_onto, outputs)
            return outputs
        elif plan.mean_site is not None and args and _integer_inference(state) and _is_float_tensor(args[0]):
            outputs = ops.cast(fq.layer_normalization_as_litert(
                args[0], layer.gamma, layer.beta, layer.epsilon, plan.mean_site.min.value,
                plan.mean_site.max.value, state.config.activation_bits), layer.compute_dtype)
        elif plan.requantized_sites and args and _integer_inference(state):
            outputs = original(_requantized(state, plan, args[0]), *args[1:], **kwargs)
        else:
            outputs = original(*args, **kwargs)
        if plan.output_site is not None and _is_float_tensor(outputs):
            outputs = _observe(state, plan.output_site, outputs)
        return outputs

    return call


def _requantized(state, plan, inputs):
    """A Concatenate's inputs moved onto its output's grid as LiteRT's int8 QUANTIZE moves them."""
    return [_moved(state, site, plan.output_site, x) if site is not None and _is_float_tensor(x) else x
            for x, site in zip(inputs, plan.requantized_sites)]


def _moved(state, site, onto, x):
    """`x`, on `site`'s grid, on `onto`'s as LiteRT's int8 QUANTIZE puts it (unchanged until both are observed)."""
    on_grid = fq.requantize(x, site.min.value, site.max.value, onto.min.value, onto.max.value,
                            state.config.activation_bits)
    observed = ops.logical_and(ops.greater(site.seen.value, 0.0), ops.greater(onto.seen.value, 0.0))
    return ops.where(observed, on_grid, x)


def _separable_call(state, plan, inputs):
    """A separable convolution as LiteRT runs it: depthwise, an int8 tensor, pointwise."""
    layer = plan.layer
    x = ops.depthwise_conv(inputs, layer.depthwise_kernel, strides=layer.strides,
                           padding=layer.padding, data_format=layer.data_format,
                           dilation_rate=layer.dilation_rate)
    x = _observe(state, plan.inner_site, x)
    if layer.data_format == "channels_first":
        # TensorFlow's CPU Conv2D takes NHWC only (Keras 3.15's `ops.conv` no longer transposes for it).
        x = ops.transpose(ops.conv(ops.transpose(x, (0, 2, 3, 1)), layer.pointwise_kernel, strides=1,
                                   padding="valid"), (0, 3, 1, 2))
    else:
        x = ops.conv(x, layer.pointwise_kernel, strides=1, padding="valid")
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
        if plan.kind == "pass" and plan.moved_onto is None:
            continue
        make = _model_call if plan.kind == "model" else _layer_call
        calls.wrap_call(plan.layer, _CALL_KEY, lambda inner, plan=plan, make=make: make(state, plan, inner))


def _unpatch(state):
    for plan in state.plans:
        calls.unwrap_call(plan.layer, _CALL_KEY)
