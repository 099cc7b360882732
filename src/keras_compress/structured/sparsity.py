"""Sparsity training before structured pruning: penalties that empty whole channels.

`channel_sparsity(model, strength, kind)` adds, to every prunable channel
group, a penalty through the weights' own Keras `regularizer` (no wrapper
layer; `fit` adds it to the loss on every backend):

- `"bn_scale"`: L1 on the group's BatchNormalization scales (network
  slimming, Liu et al. 2017): channels whose gamma reaches zero carry nothing,
  and `importance="bn_scale"` then removes them;
- `"group_lasso"`: the L2 norm of each output filter of the layers that make
  the group's channels (`ops.regularizers.group_lasso`), summed.

`keras_compress.strip` restores the weights' own regularizers.
"""

import keras

from keras_compress.core.channels import ChannelGraph
from keras_compress.core.state import attach, detach, register_stripper
from keras_compress.ops import regularizers as reg_ops

KINDS = ("bn_scale", "group_lasso")
_STATE_ATTR = "_keras_compress_channel_sparsity"


class GroupLasso(keras.regularizers.Regularizer):
    """`strength * sum of each output filter's L2 norm` (a Keras regularizer)."""

    def __init__(self, strength, axis=-1):
        self.strength = float(strength)
        self.axis = int(axis)

    def __call__(self, weight):
        return self.strength * reg_ops.group_lasso(weight, self.axis)

    def get_config(self):
        return {"strength": self.strength, "axis": self.axis}


def channel_sparsity(model, strength=1e-4, kind="bn_scale"):
    """Adds a channel-sparsity penalty to every prunable group of `model`, for `fit` before pruning.

    Args:
        model: a Sequential or Functional Keras model.
        strength: the penalty's factor, > 0.
        kind: `"bn_scale"` (L1 on BatchNormalization scales) or
            `"group_lasso"` (L2 norm of each output filter).

    Returns:
        `model`, with the penalties set (strip them with `keras_compress.strip`).

    Raises:
        ValueError: on a bad `strength` or `kind`, a subclassed model, a model
            that already carries the penalty, or no weight to penalise.

    Example:
    >>> model = channel_sparsity(model, 1e-4, "bn_scale")
    >>> model.fit(x, y, epochs=2)
    >>> small = keras_compress.prune_channels(keras_compress.strip(model), ChannelPruneConfig(importance="bn_scale"))
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength > 0:
        raise ValueError(f"strength must be a number > 0. Received: strength={strength!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}. Received: kind={kind!r}")
    if getattr(model, _STATE_ATTR, None) is not None:
        raise ValueError(f"model {model.name!r} already carries a channel-sparsity penalty; strip it first")
    chosen = {}
    for group in ChannelGraph(model).groups():
        if not group.prunable:
            continue
        for member in group.members:
            layer = member.layer
            if kind == "bn_scale" and member.role == "chan" and type(layer).__name__ == "BatchNormalization" \
                    and layer.scale:
                chosen[id(layer.gamma)] = (layer.gamma, keras.regularizers.L1(strength))
            elif kind == "group_lasso" and member.role == "out":
                kernel = getattr(layer, "pointwise_kernel", None) or getattr(layer, "kernel", None)
                if kernel is not None:
                    axis = -2 if type(layer).__name__.endswith("Transpose") else -1
                    chosen[id(kernel)] = (kernel, GroupLasso(strength, axis))
    if not chosen:
        raise ValueError(f"model {model.name!r} has no prunable group with a weight for kind={kind!r}")
    previous = []
    for variable, penalty in chosen.values():
        previous.append((variable, variable.regularizer))
        variable.regularizer = penalty
    attach(model, _STATE_ATTR, previous)
    return model


@register_stripper
def strip(model):
    """Restores each penalised weight's own regularizer."""
    previous = getattr(model, _STATE_ATTR, None)
    if previous is None:
        return model
    for variable, regularizer in previous:
        variable.regularizer = regularizer
    detach(model, _STATE_ATTR)
    return model
