"""Fake quantization maths in `keras.ops`: weights, activations, BN folding.

Fake quantization rounds a float tensor to the grid an integer kernel will
use and returns it as float, so training sees the rounding error. The
rounding itself is Keras's `keras.quantizers.fake_quant_with_min_max_vars`:
under TensorFlow it emits `tf.quantization.fake_quant_*` ops, which the
LiteRT converter reads as the ranges of a quantization-aware-trained model;
under other backends it is the same arithmetic with a straight-through
gradient (1 inside the range, 0 outside). What this module adds is the
LiteRT int8 scheme on top:

- weights: symmetric, per output channel, narrow range (int8 in
  [-127, 127], zero point 0), the range being the channel's largest
  magnitude;
- activations: asymmetric, per tensor, full range ([-128, 127]), the range
  tracked by an exponential moving average of batch minima and maxima and
  always containing 0 (so that 0, padding's value, is exact);
- outputs whose range the runtime fixes (softmax, sigmoid, tanh,
  log-softmax): LiteRT's int8 kernels write them on a fixed grid (softmax:
  steps of 1/256 from 0), which `fixed_output_range` gives;
- biases: int32 with scale `input_scale * weight_scale` per channel (zero
  point 0), the scale LiteRT gives them, so a simulated layer adds the
  bias the integer kernel adds;
- batch normalization folded into the kernel and bias before it.
"""

import keras
from keras import ops

# A channel whose weights are all zero (pruned away) still needs a non-empty
# range: its zeros stay exactly zero under any positive range.
_MIN_RANGE = 1e-8


def check_bits(num_bits, what="num_bits"):
    """Validates a bit width for fake quantization (2 to 8 bits)."""
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not 2 <= num_bits <= 8:
        raise ValueError(
            f"{what} must be an int in [2, 8] (LiteRT stores 8; fewer bits are "
            f"simulated for experiments). Received: {what}={num_bits!r}"
        )
    return num_bits


def channel_max_abs(weight, axis):
    """Largest magnitude of `weight` per channel along `axis` (None: whole tensor)."""
    weight = ops.convert_to_tensor(weight)
    if axis is None:
        return ops.max(ops.abs(weight))
    axis = axis % len(weight.shape)
    reduce_axes = tuple(i for i in range(len(weight.shape)) if i != axis)
    return ops.max(ops.abs(weight), axis=reduce_axes)


def weight_limit(weight, axis, min_limit=None):
    """The range `m` (`[-m, m]`) `fake_quant_weight` gives each channel.

    Its largest magnitude, at least `min_limit` where given (see
    `bias_min_limit`) and never zero.
    """
    limit = ops.maximum(channel_max_abs(weight, axis), _MIN_RANGE)
    return limit if min_limit is None else ops.maximum(limit, min_limit)


def fake_quant_weight(weight, num_bits=8, axis=-1, min_limit=None):
    """Symmetric fake quantization of a weight tensor.

    The range of each channel is `[-m, m]` with `m` its largest magnitude;
    `num_bits=8` gives the integers -127..127 (narrow range, zero point 0),
    so zeros stay exactly zero and the largest weight is exact. The range is
    not differentiated: the weight's gradient passes straight through.

    Args:
        weight: a float tensor.
        num_bits: bit width, 2 to 8.
        axis: the output-channel axis (per-channel), or None (per-tensor).
        min_limit: optional lower bound on each channel's range (see
            `bias_min_limit`).

    Returns:
        A tensor of `weight`'s shape and dtype, on the quantization grid.

    Example:
    >>> fake_quant_weight(np.array([[0.5, -1.0], [0.25, 2.0]]), 8, axis=-1)
    """
    weight = ops.convert_to_tensor(weight)
    if not hasattr(weight, "ndim"):  # a TensorFlow variable: read it
        weight = ops.copy(weight)
    last = len(weight.shape) - 1
    if axis is not None and axis % len(weight.shape) != last:
        # Keras's non-TensorFlow path broadcasts per-channel ranges along the
        # last axis only, so the channel axis is moved there and back.
        moved = ops.swapaxes(weight, axis, last)
        return ops.swapaxes(fake_quant_weight(moved, num_bits, -1, min_limit), axis, last)
    limit = ops.stop_gradient(weight_limit(weight, axis, min_limit))
    return keras.quantizers.fake_quant_with_min_max_vars(
        weight, -limit, limit, num_bits=num_bits, narrow_range=True, axis=axis
    )


def bias_min_limit(bias, input_scale, num_bits=8, per_tensor=False):
    """The smallest weight range with which `bias` fits LiteRT's int32 bias grid.

    The bias's scale is `input_scale * weight_scale`: a channel whose weights
    are all (or nearly all) zero has a tiny weight range, and its bias would
    overflow int32, which the converter clips (a pruned-away channel's bias
    of 0.5 became 0.03 in a test). Widening that channel's weight range costs
    nothing (its weights are zeros or tiny, and zero stays exact) and keeps
    the bias. A 1% margin covers rounding.

    Returns:
        Per channel (shape of `bias`), or a scalar when `per_tensor`.
    """
    needed = ops.abs(bias) / (input_scale * (2.0**31 - 1)) * (2 ** (num_bits - 1) - 1) * 1.01
    return ops.max(needed) if per_tensor else needed


def weight_scale(limit, num_bits=8):
    """The scale of a symmetric narrow-range weight grid whose range is `[-limit, limit]`."""
    return limit / (2 ** (num_bits - 1) - 1)


def fake_quant_bias(bias, input_scale, weight_limit, weight_bits=8):
    """A bias on the int32 grid LiteRT stores it on.

    An int8 convolution or fully connected op keeps its bias as int32 with
    scale `input_scale * weight_scale` (per output channel) and zero point
    0; its accumulator adds that integer. A float bias between two grid
    points is rounded to the nearer one, which moves the op's output by up
    to half of `input_scale * weight_scale`: a small fraction of an output
    step, yet enough to round a value near a half step to the other integer
    and, through twenty layers, to change logits. The gradient passes
    straight through.

    Args:
        bias: the float bias, one value per output channel.
        input_scale: the scale of the op's int8 input (a scalar).
        weight_limit: the weight range `m` (`[-m, m]`) per output channel
            (shape of `bias`) or per tensor (a scalar).
        weight_bits: the weights' bit width.

    Returns:
        A tensor like `bias`, on the grid where the grid fits int32.

    Example:
    >>> fake_quant_bias(np.array([0.1001]), 0.01, np.array([1.27]), 8)  # scale 1e-4
    array([0.1001])
    """
    bias = ops.convert_to_tensor(bias)
    scale = ops.cast(input_scale * weight_scale(weight_limit, weight_bits), bias.dtype)
    levels = ops.round(bias / scale)
    # A bias beyond int32 at this scale (a channel whose weights are all zero
    # has a tiny weight scale) stays float rather than overflowing. The
    # converter would clip it; QAT avoids the case by widening such a
    # channel's range with `bias_min_limit`.
    snapped = ops.where(ops.abs(levels) <= 2.0**31 - 1, levels * scale, bias)
    return snapped + (bias - ops.stop_gradient(bias))  # exactly on the grid


def activation_range(range_min, range_max):
    """The range fake quantization uses: widened to contain 0, never empty."""
    range_min = ops.minimum(range_min, 0.0)
    range_max = ops.maximum(ops.maximum(range_max, 0.0), range_min + _MIN_RANGE)
    return range_min, range_max


def fake_quant_activation(x, range_min, range_max, num_bits=8):
    """Asymmetric per-tensor fake quantization of an activation tensor.

    Values outside `[range_min, range_max]` (widened to contain 0) are
    clipped; the gradient is 1 inside the range and 0 outside.

    Args:
        x: a float tensor.
        range_min, range_max: scalars (tensors or variables).
        num_bits: bit width, 2 to 8.

    Returns:
        A tensor like `x`, on the grid of `2**num_bits` levels.
    """
    range_min, range_max = activation_range(
        ops.convert_to_tensor(range_min, "float32"), ops.convert_to_tensor(range_max, "float32")
    )
    return keras.quantizers.fake_quant_with_min_max_vars(
        x, range_min, range_max, num_bits=num_bits, narrow_range=False
    )


# LiteRT's int8 kernels for these activations write their output with a
# fixed scale and zero point whatever the ranges seen in training (TFLite's
# int8 quantization spec): softmax and logistic 1/256 with zero point -128,
# tanh 1/128 with 0, log-softmax 16/256 with 127. As [min, max] ranges:
FIXED_OUTPUT_RANGES = {
    "softmax": (0.0, 255.0 / 256.0),
    "sigmoid": (0.0, 255.0 / 256.0),
    "tanh": (-1.0, 127.0 / 128.0),
    "log_softmax": (-255.0 * 16.0 / 256.0, 0.0),
}


def fixed_output_range(activation_name):
    """The int8 range LiteRT fixes for `activation_name`'s output, or None."""
    return FIXED_OUTPUT_RANGES.get(activation_name)


def fake_quant_fixed_output(x, activation_name):
    """`x` (an activation's output) on the 8-bit grid LiteRT fixes for it.

    Two classes whose probabilities differ by less than a step (1/256 for
    softmax) come out equal, as on the device, and an argmax then takes the
    first: a simulation without this step disagrees with the int8 model on
    such ties. Activations without a fixed range are returned unchanged.
    """
    fixed = fixed_output_range(activation_name)
    if fixed is None:
        return x
    return fake_quant_activation(x, fixed[0], fixed[1], 8)


def swish_as_litert(x, sigmoid_on_grid=True):
    """`x * sigmoid(x)` as LiteRT's int8 model computes swish (SiLU).

    The converter writes swish as LOGISTIC then MUL: the sigmoid is an int8
    tensor on LOGISTIC's fixed grid (1/256, zero point -128) before the
    multiply. Computing it in float instead differs by up to a step of the
    sigmoid per activation, which compounds through a deep network
    (EfficientNetB0). `sigmoid_on_grid=False` gives the exact swish.
    """
    gate = ops.sigmoid(x)
    if sigmoid_on_grid:
        gate = fake_quant_fixed_output(gate, "sigmoid")
    return ops.multiply(x, gate)


def moving_range(range_min, range_max, x, decay, initialized):
    """The activation range after seeing batch `x`.

    The first batch (`initialized` == 0) sets the range to its own minimum
    and maximum; later batches move it by an exponential moving average,
    `range = decay * range + (1 - decay) * batch`.

    Returns:
        `(new_min, new_max)`, scalar tensors.
    """
    x = ops.stop_gradient(ops.cast(x, "float32"))
    batch_min, batch_max = ops.min(x), ops.max(x)
    ema_min = decay * range_min + (1.0 - decay) * batch_min
    ema_max = decay * range_max + (1.0 - decay) * batch_max
    first = ops.equal(initialized, 0.0)
    return ops.where(first, batch_min, ema_min), ops.where(first, batch_max, ema_max)


def quant_params(range_min, range_max, num_bits=8):
    """LiteRT's `(scale, zero_point)` for an activation range (int8: [-128, 127]).

    Applies the same nudging as the fake quantization (the zero point is an
    integer, so the range shifts slightly), which is what the converter does.
    """
    range_min, range_max = activation_range(
        ops.convert_to_tensor(range_min, "float32"), ops.convert_to_tensor(range_max, "float32")
    )
    levels = 2**num_bits - 1
    scale = (range_max - range_min) / levels
    zero_point = ops.round(ops.clip(-range_min / scale, 0, levels)) - 2 ** (num_bits - 1)
    return scale, zero_point


def fake_quant_average(x, range_min, range_max, num_bits=8):
    """An average of values on an activation grid, rounded back onto that grid as LiteRT's int8 pooling does.

    LiteRT's int8 AVERAGE_POOL_2D keeps its input's scale and zero point and
    divides the window's integer sum rounding half away from zero, in the
    signed int8 coordinates: ties (a sum of 4 values is a multiple of 1/4)
    go the other way from a plain fake quantization for every negative
    level. The gradient passes straight through.

    Args:
        x: the float average of values on the grid of `[range_min, range_max]`.
        range_min, range_max: the input's range.
        num_bits: bit width.

    Returns:
        A tensor like `x` on the same grid.

    Example:
    >>> round(float(fake_quant_average(1.5 / 255, 0.0, 1.0)) * 255, 3)  # level -126.5 -> -127
    1.0
    """
    scale, zero = quant_params(range_min, range_max, num_bits)
    level = ops.add(ops.divide(x, scale), zero)
    # Exact ties arrive as k + 0.5 up to float error; the nudge keeps them ties.
    rounded = ops.multiply(ops.sign(level), ops.floor(ops.add(ops.abs(level), 0.5 + 1e-3)))
    low, high = -(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1
    rounded = ops.clip(rounded, low, high)
    snapped = ops.multiply(ops.subtract(rounded, zero), scale)
    return ops.add(x, ops.stop_gradient(ops.subtract(snapped, x)))


def layer_normalization_as_litert(x, gamma, beta, epsilon, range_min, range_max, num_bits=8):
    """Layer normalization over the last axis as LiteRT computes it on an int8 input.

    The converter lowers LayerNormalization to MEAN, SQUARED_DIFFERENCE,
    RSQRT, MUL and ADD; where its input is an int8 tensor written by the op
    before it, the first MEAN runs in int8 on the input's grid (its scale
    and zero point), rounding the integer mean half to even, and every
    later op, in float, uses that mean. Read from exported files: with an
    exact mean, 345 of 640 outputs of a Dense, Add, LayerNormalization net
    were one to three steps from the file's; with this, none. Used at
    inference only (the rounding passes no gradient).

    Args:
        x: the input, on the grid of `[range_min, range_max]`.
        gamma, beta: the scale and offset (None where the layer has none).
        epsilon: added to the variance.
        range_min, range_max: the input's range.
        num_bits: bit width.

    Returns:
        The normalized tensor, like `x`.

    Example:
    >>> y = layer_normalization_as_litert(x, None, None, 1e-3, -1.0, 1.0)
    """
    scale, zero = quant_params(range_min, range_max, num_bits)
    levels = ops.round(ops.add(ops.divide(x, scale), zero))  # x is on the grid: whole levels
    # The integer mean rounded half to even (read from a file: 0 of 128 means apart; half away from zero, 7).
    mean_level = ops.clip(ops.round(ops.mean(levels, axis=-1, keepdims=True)),
                          -(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1)
    mean = ops.multiply(ops.subtract(mean_level, zero), scale)
    centered = ops.subtract(x, mean)
    variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
    outputs = ops.multiply(centered, ops.rsqrt(ops.add(variance, epsilon)))
    if gamma is not None:
        outputs = ops.multiply(outputs, gamma)
    if beta is not None:
        outputs = ops.add(outputs, beta)
    return outputs


# XNNPACK (the stock interpreter's default delegate) runs an int8-to-int8 QUANTIZE with the scale ratio as a
# multiplier of 8 fractional bits where the ratio lies in [2**-8, 2**7]; elsewhere LiteRT's builtin kernel
# requantizes with a 32-bit multiplier (a plain rounding).
_XNNPACK_RATIO = (2.0**-8, 2.0**7)


def requantize(x, in_min, in_max, out_min, out_max, num_bits=8):
    """`x`, on the grid of `[in_min, in_max]`, moved onto the grid of `[out_min, out_max]` as LiteRT does it.

    The converter inserts an int8-to-int8 QUANTIZE where a tensor with a range of its own must take another
    scale (each Concatenate input whose range is not the output's: DenseNet has one per block). XNNPACK
    computes it as `zero_out + floor(level * round(256 * s_in / s_out) / 256 + 1/2)` with `level` the input's
    integer less its zero point: the ratio is rounded to 8 fractional bits, so a plain fake quantization of
    the float value onto the output grid lands a step away on some values (6% of them at a ratio of 0.983,
    read from an exported file), and a chain of concatenations compounds it. The gradient passes straight
    through.

    Args:
        x: a tensor on the input grid (fake-quantized with `[in_min, in_max]`).
        in_min, in_max: the input's range.
        out_min, out_max: the range of the tensor it is moved onto.
        num_bits: bit width.

    Returns:
        A tensor like `x` on the output grid.

    Example:
    >>> # scale 1 -> 1.1: level 50 * round(256 / 1.1) / 256 = 45.51 -> 46 (a plain rounding of 45.45: 45)
    >>> round(float(requantize(50.0, -128.0, 127.0, -140.8, 139.7)), 3)
    50.6
    """
    s_in, z_in = quant_params(in_min, in_max, num_bits)
    s_out, z_out = quant_params(out_min, out_max, num_bits)
    level = ops.round(ops.divide(x, s_in))  # the input's integer less its zero point
    ratio = ops.divide(s_in, s_out)
    fixed_point = ops.floor(ops.add(ops.divide(ops.multiply(level, ops.round(ratio * 256.0)), 256.0), 0.5))
    plain = ops.round(ops.multiply(level, ratio))
    in_range = ops.logical_and(ops.greater_equal(ratio, _XNNPACK_RATIO[0]), ops.less_equal(ratio, _XNNPACK_RATIO[1]))
    out_level = ops.add(ops.where(in_range, fixed_point, plain), z_out)
    out_level = ops.clip(out_level, -(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1)
    snapped = ops.multiply(ops.subtract(out_level, z_out), s_out)
    return ops.add(x, ops.stop_gradient(ops.subtract(snapped, x)))


def fold_batchnorm(kernel, bias, gamma, beta, mean, variance, epsilon, channel_axis=-1):
    """Folds an inference-mode batch normalization into the layer before it.

    `bn(conv(x, kernel) + bias) == conv(x, kernel * s) + (bias - mean) * s + beta`
    with `s = gamma / sqrt(variance + epsilon)`, per output channel.

    Args:
        kernel: the kernel; `channel_axis` is its output-channel axis.
        bias: the bias, or None for a layer without one.
        gamma, beta, mean, variance: the normalization's per-channel vectors
            (`gamma`/`beta` None when it does not scale/center).
        epsilon: the normalization's epsilon.
        channel_axis: the kernel's output-channel axis.

    Returns:
        `(folded_kernel, folded_bias)`.
    """
    kernel = ops.convert_to_tensor(kernel)
    mean = ops.convert_to_tensor(mean)
    scale = 1.0 / ops.sqrt(ops.convert_to_tensor(variance) + epsilon)
    if gamma is not None:
        scale = scale * gamma
    shape = [1] * len(kernel.shape)
    shape[channel_axis] = -1
    folded_kernel = kernel * ops.reshape(scale, shape)
    folded_bias = (0.0 if bias is None else bias) - mean
    folded_bias = folded_bias * scale
    if beta is not None:
        folded_bias = folded_bias + beta
    return folded_kernel, folded_bias
