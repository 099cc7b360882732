"""BatchNormalization recalibration: moving statistics re-measured after channels are removed.

Removing a layer's input channels changes the distribution of its outputs,
so the BatchNormalization after it normalises with statistics that no longer
hold (one-shot pruning of a MobileNetV2-style net to 75% of its channels
fell to 14% test accuracy; with the statistics re-measured on 20 batches,
51%). Recalibration runs the model in training mode on a few batches with
each BatchNormalization's momentum set so that its moving mean and variance
become the exact average over those batches; no weight is trained.
"""

import keras
import numpy as np

from keras_compress.core import walk


def recalibrate_batchnorm(model, x, batches=20, batch_size=128):
    """Re-measures every BatchNormalization's moving mean and variance on `x`.

    Args:
        model: a Keras model.
        x: input samples (an array or a list of arrays for several inputs).
        batches: at most this many batches of `batch_size` are used.
        batch_size: samples per batch.

    Returns:
        The number of BatchNormalization layers recalibrated.

    Example:
    >>> small = keras_compress.prune_channels(model, ChannelPruneConfig(0.5))
    >>> recalibrate_batchnorm(small, x_train[:2560])
    """
    norms = [layer for layer in walk.iter_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return 0
    inputs = x if isinstance(x, (list, tuple)) else [x]
    count = min(batches, int(np.ceil(len(inputs[0]) / batch_size)))
    momentum = [layer.momentum for layer in norms]
    trainable = [layer.trainable for layer in norms]
    try:
        for k in range(count):
            for layer in norms:
                # moving = moving * k/(k+1) + batch / (k+1): the running average of the batches seen.
                layer.momentum = k / (k + 1)
                layer.trainable = True  # a frozen BatchNormalization ignores training=True
            batch = [np.asarray(a[k * batch_size:(k + 1) * batch_size]) for a in inputs]
            model(batch if len(batch) > 1 else batch[0], training=True)
    finally:
        for layer, value, flag in zip(norms, momentum, trainable):
            layer.momentum = value
            layer.trainable = flag
    return len(norms)
