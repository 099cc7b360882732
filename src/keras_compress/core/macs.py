"""Multiply-accumulate counts of a model's layers, from the shapes of its graph.

One multiply-accumulate (MAC) is one weight times one input added to an
accumulator, per sample. Convolutions, their depthwise, separable and
transposed forms, and Dense layers are counted; normalization, pooling and
activations cost no MACs here (BatchNormalization folds into the layer
before it on export). Layers whose cost this module does not know
(attention, recurrent layers, EinsumDense) are listed in `not_counted`.
"""

import keras
import numpy as np

_CONV = ("Conv1D", "Conv2D", "Conv3D")
_TRANSPOSE = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
_DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
_SEPARABLE = ("SeparableConv1D", "SeparableConv2D")
_FREE = ("InputLayer", "BatchNormalization", "LayerNormalization", "Activation", "ReLU", "Dropout",
         "Flatten", "Reshape", "Add", "Multiply", "Concatenate", "Average", "Subtract", "Maximum",
         "Minimum", "Rescaling", "Normalization", "ZeroPadding2D", "Embedding")
_UNCOUNTED = ("MultiHeadAttention", "EinsumDense", "LSTM", "GRU", "SimpleRNN", "Bidirectional",
              "ConvLSTM2D", "TimeDistributed", "GroupedQueryAttention")


def _spatial(shape):
    dims = shape[1:-1]
    if any(d is None for d in dims):
        raise _Unknown()
    return int(np.prod(dims)) if len(shape) > 2 else 1


class _Unknown(Exception):
    """A shape this count needs is not fixed (a variable-length sequence axis)."""


def layer_macs(layer, input_shape, output_shape):
    """MACs per sample of one call of `layer`, or `None` when this module does not count it.

    Args:
        layer: a Keras layer.
        input_shape, output_shape: the call's shapes, batch axis first.

    Returns:
        An int, or None.

    Raises:
        _Unknown: when a spatial size it needs is not fixed.

    Example:
    >>> layer_macs(keras.layers.Dense(10), (None, 20), (None, 10))
    200
    """
    name = type(layer).__name__
    if name in _CONV:
        kernel = int(np.prod(layer.kernel_size))
        return _spatial(output_shape) * kernel * (input_shape[-1] // layer.groups) * layer.filters
    if name in _TRANSPOSE:
        return _spatial(input_shape) * int(np.prod(layer.kernel_size)) * input_shape[-1] * layer.filters
    if name in _DEPTHWISE:
        return _spatial(output_shape) * int(np.prod(layer.kernel_size)) * input_shape[-1] * layer.depth_multiplier
    if name in _SEPARABLE:
        depth = input_shape[-1] * layer.depth_multiplier
        return _spatial(output_shape) * (int(np.prod(layer.kernel_size)) * depth + depth * layer.filters)
    if name == "Dense":
        return _spatial(output_shape) * input_shape[-1] * layer.units
    if name in _UNCOUNTED:
        return None
    return 0


def macs(model):
    """Counts the multiply-accumulates of one sample through `model`, per layer and in total.

    Args:
        model: a built Sequential or Functional Keras model (nested models
            are counted through their own layers).

    Returns:
        A dict: `total` (int), `layers` (`{layer name: MACs}` for every
        layer with a cost) and `not_counted` (names of layers whose cost is
        unknown here, counted as 0).

    Raises:
        ValueError: if the model has no recorded graph (a subclassed model).

    Example:
    >>> keras_compress.evaluate.macs(keras_compress.zoo.lenet5())["total"]
    2293000
    """
    from keras_compress.core.channels import _functional

    if _functional(model) is None:
        raise ValueError(f"macs needs a Functional or Sequential model with a graph; {model.name!r} has none. "
                         "Build it with keras.Model(inputs, outputs) or call it on a keras.Input first.")
    per_layer, not_counted = {}, []
    _count(model, per_layer, not_counted)
    return {"total": int(sum(per_layer.values())), "layers": per_layer, "not_counted": sorted(set(not_counted))}


def _count(model, per_layer, not_counted):
    """Adds the MACs of the calls recorded in `model`'s own graph (nested models recursed into)."""
    from keras_compress.core.channels import _functional

    for nodes in _functional(model)._nodes_by_depth.values():
        for node in nodes:
            layer = node.operation
            if node.is_input:
                continue
            if isinstance(layer, keras.Model) and _functional(layer) is not None:
                _count(layer, per_layer, not_counted)
                continue
            if not node.input_tensors or not node.output_tensors:
                continue
            try:
                count = layer_macs(layer, tuple(node.input_tensors[0].shape), tuple(node.output_tensors[0].shape))
            except (_Unknown, TypeError):
                count = None  # e.g. Conv1D over a sequence of unknown length: MACs per sample vary
            if count is None:
                not_counted.append(layer.name)
            elif count:
                per_layer[layer.name] = per_layer.get(layer.name, 0) + int(count)
