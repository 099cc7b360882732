"""`set_trainable`: freeze or unfreeze layers by name, nested models included (transfer learning).

    - trainable: {layers: "block_1[56]_|Conv_1", trainable: true}   # unfreeze the backbone's last blocks
    - finetune: {epochs: 2, learning_rate: 1.0e-5}

Keras freezes a whole model with `model.trainable = False`, and a frozen
container hides its sublayers' weights from training even when one of them
is set trainable again. `set_trainable` therefore also makes every container
of a chosen layer trainable while keeping each of that container's other
layers as it was, so "unfreeze the last two blocks of a frozen backbone" is
one call. BatchNormalization layers keep their state (and stay in inference
mode) unless `batchnorm=True`: Keras's transfer-learning guide unfreezes
them last, as their statistics are fragile on a small new data set.
"""

import dataclasses
import re

import keras

from keras_compress.core import walk
from keras_compress.core.config import BaseConfig


@dataclasses.dataclass(frozen=True)
class TrainableConfig(BaseConfig):
    """Which layers to freeze or unfreeze.

    Args:
        layers: a regex searched in each layer's name (nested layers included).
        trainable: `True` to unfreeze them, `False` to freeze them.
        batchnorm: also change matched BatchNormalization layers (default: they keep their state).

    Example:
    >>> TrainableConfig(layers="block_16|Conv_1", trainable=True)
    """

    layers: str = ".*"
    trainable: bool = True
    batchnorm: bool = False

    def __post_init__(self):
        if not isinstance(self.layers, str):
            raise ValueError(f"'layers' must be a regex string. Received: layers={self.layers!r}")
        try:
            re.compile(self.layers)
        except re.error as error:
            raise ValueError(f"'layers' is not a valid regex: {error}. Received: layers={self.layers!r}") from None
        for name in ("trainable", "batchnorm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"'{name}' must be true or false. Received: {name}={getattr(self, name)!r}")


def _containers(model):
    """`{id(layer): [its containers, outermost first]}` for every layer under `model`."""
    parents = {}

    def visit(container, chain):
        for layer in getattr(container, "_layers", []) or []:
            parents[id(layer)] = chain
            visit(layer, chain + [layer])

    visit(model, [model])
    return parents


def set_trainable(model, config):
    """Freezes or unfreezes the layers `config.layers` matches; returns the names changed.

    Args:
        model: a Keras model (nested models are searched too).
        config: a `TrainableConfig`.

    Returns:
        The names of the layers whose `trainable` was set (containers opened to reach them are not listed).

    Raises:
        TypeError: if `config` is not a `TrainableConfig`.
        ValueError: if the regex matches no layer (the error lists some layer names).

    Example:
    >>> set_trainable(model, TrainableConfig("block_16|Conv_1", trainable=True))
    ['block_16_expand', ..., 'Conv_1']
    """
    if not isinstance(config, TrainableConfig):
        raise TypeError(f"config must be a TrainableConfig. Received: {type(config).__name__}")
    pattern = re.compile(config.layers)
    layers = [layer for layer in walk.iter_layers(model) if layer is not model]
    chosen = [layer for layer in layers if pattern.search(layer.name) and not layer._layers
              and (config.batchnorm or not isinstance(layer, keras.layers.BatchNormalization))]
    if not chosen:
        names = [layer.name for layer in layers]
        raise ValueError(f"layers={config.layers!r} matches no layer of model {model.name!r} "
                         f"(BatchNormalization left out unless batchnorm: true). Layers: {names[:12]}"
                         + (f" ... ({len(names)} in all)" if len(names) > 12 else ""))
    before = {id(layer): layer.trainable for layer in layers}
    parents = _containers(model)
    opened = []
    if config.trainable:
        for layer in chosen:
            for container in parents.get(id(layer), []):
                if not container.trainable and container not in opened:
                    opened.append(container)
        for container in opened:
            container.trainable = True  # Keras sets every sublayer: put the others back below
        for layer in layers:  # depth first, a container before its sublayers: each gets its own flag back
            if layer not in opened:
                layer.trainable = before[id(layer)]
    for layer in chosen:
        layer.trainable = config.trainable
    return [layer.name for layer in chosen]
