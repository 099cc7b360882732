"""QAT's layer rules: how each layer type is treated, and LiteRT's fusion facts.

A registry keyed by layer type (`register_layer_rule`) says whether a layer's
kernels and output are quantized, only its output, or neither (its output
keeps its input's range, or the runtime fixes it). The helpers here answer
the per-layer questions planning asks: a layer's rule, whether an activation
layer fuses into the op before it, and the axis a kernel is quantized along.
"""

import collections

import keras

RULES = ("weights", "output", "pass", "same", "fixed", "float")
# How each layer type is treated. "weights": its kernels and output are
# quantized; "output": LiteRT gives its output its own scale, so the output
# is fake-quantized; "pass": the output keeps its input's scale and its values
# stay on the input's grid (max pooling, reshapes); "same": the output must
# share its input's scale but computes new values (average pooling), so they
# are rounded back onto the input's grid; "fixed": LiteRT fixes the output's
# scale itself (softmax: 1/256).
_RULES = collections.OrderedDict()


def register_layer_rule(layer_type, rule):
    """Says how QAT treats a layer type that has no weights of its own.

    Args:
        layer_type: a `keras.layers.Layer` subclass (subclasses inherit it).
        rule: `"weights"` (its kernels are fake-quantized, per output channel,
            by swapping them for their quantized values during its call, and
            its output gets a range; the layer must hold each kernel in an
            attribute), `"output"` (its output gets its own int8 range), `"pass"` (its
            output keeps its input's range: reshapes, max pooling), `"same"`
            (its output is rounded onto its input's grid: average pooling) or
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
                 "ReLU", "LeakyReLU", "ELU", "PReLU", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
                 "GlobalAveragePooling3D", "BatchNormalization", "LayerNormalization", "Rescaling"):
        if hasattr(layers, name):
            register_layer_rule(getattr(layers, name), "output")
    # LiteRT's int8 AVERAGE_POOL_2D requires its input's scale and zero point
    # (the converter rejects a range of its own: "same scale constraint") and
    # rounds the average onto that grid; its global form (MEAN) requantizes freely.
    for name in ("AveragePooling1D", "AveragePooling2D", "AveragePooling3D"):
        register_layer_rule(getattr(layers, name), "same")
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

# Keras ops called on symbolic tensors that are not layers (`x + 3.0`, `x * (1 / 6)` in MobileNetV3's hard
# sigmoid): LiteRT's int8 ADD, SUB and MUL requantize their output freely, so QAT gives each its own range
# (without one, the converter leaves the op in float between a DEQUANTIZE and a QUANTIZE). Others stay as
# they compute.
_OP_RULES = {"Add": "output", "Subtract": "output", "Multiply": "output"}


def _op_rule(op):
    """The rule for a Keras op node that is not a layer (`None`: left as it is)."""
    return _OP_RULES.get(type(op).__name__)


# Activations LiteRT fuses into the op before them: the quantized tensor is
# the activation's output. Other activations (softmax, sigmoid, tanh) run as
# ops of their own whose output LiteRT fixes, so the tensor before them is
# the one to quantize.
_FUSED_ACTIVATIONS = ("linear", "relu", "relu6")


# Hard swish, `x * relu6(x + 3) / 6`, is computed by QAT and exported as the int8 ADD (ReLU6 fused), MUL and MUL
# it is made of, each with a range of its own. The converter's fused int8 HARD_SWISH has fixed-point arithmetic
# that no float simulation follows: up to a step per activation from QAT's float, and LiteRT's builtin and
# XNNPACK kernels differ from each other by as much (measured on four conv-hard-swish blocks: 541 of 1280
# outputs more than half a step from the Keras QAT model; as the three ops, 1).
HARD_SWISH = ("hard_silu", "hard_swish")
# Swish, `x * sigmoid(x)`, is exported as LOGISTIC then MUL: QAT puts its sigmoid on LOGISTIC's fixed grid.
SWISH = ("silu", "swish")


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
