"""Reference models: builders and a training helper.

LeNet-300-100 and LeNet-5 follow Deep Compression (Han et al., 2016):
LeNet-5 is conv20(5x5)-pool-conv50(5x5)-pool-fc500-fc10 (431,080 parameters,
1.72 MB as float32); LeNet-300-100 is 784-300-100-10 (266,610 parameters).
Every model outputs logits.
"""

import keras
from keras import layers

INPUT_SHAPE = (28, 28, 1)
MODELS = ("lenet_300_100", "lenet5", "bn_cnn", "mobilenet_v2_tiny", "resnet20")


def lenet_300_100(input_shape=INPUT_SHAPE, num_classes=10):
    """LeNet-300-100: a 784-300-100-10 multilayer perceptron.

    Example:
    >>> model = keras_compress.zoo.lenet_300_100()
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Flatten(),
            layers.Dense(300, activation="relu", name="fc1"),
            layers.Dense(100, activation="relu", name="fc2"),
            layers.Dense(num_classes, name="fc3"),
        ],
        name="lenet_300_100",
    )


def lenet5(input_shape=INPUT_SHAPE, num_classes=10):
    """LeNet-5 as in Deep Compression: conv20-pool-conv50-pool-fc500-fc10.

    Example:
    >>> model = keras_compress.zoo.lenet5()
    >>> model.count_params()
    431080
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(20, 5, name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(500, activation="relu", name="fc1"),
            layers.Dense(num_classes, name="fc2"),
        ],
        name="lenet5",
    )


def bn_cnn(input_shape=INPUT_SHAPE, num_classes=10):
    """A small CNN with BatchNormalization, for Fashion-MNIST.

    Example:
    >>> model = keras_compress.zoo.bn_cnn()
    """
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((32, 64)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    outputs = layers.Dense(num_classes, name="fc2")(x)
    return keras.Model(inputs, outputs, name="bn_cnn")


def _inverted_residual(x, expansion, filters, stride, name):
    in_channels = x.shape[-1]
    y = layers.Conv2D(in_channels * expansion, 1, use_bias=False, name=f"{name}_expand")(x)
    y = layers.BatchNormalization(name=f"{name}_expand_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if stride == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v2_tiny(input_shape=INPUT_SHAPE, num_classes=10, width=16):
    """A small MobileNetV2-style net: depthwise convs, BN, ReLU6, residual adds.

    Example:
    >>> model = keras_compress.zoo.mobilenet_v2_tiny()
    """
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    plan = [(1, width, 1), (4, 2 * width, 2), (4, 2 * width, 1), (4, 4 * width, 2), (4, 4 * width, 1)]
    for i, (expansion, filters, stride) in enumerate(plan):
        x = _inverted_residual(x, expansion, filters, stride, name=f"block{i}")
    x = layers.Conv2D(8 * width, 1, use_bias=False, name="head")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_tiny")


def _basic_block(x, filters, stride, name):
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        x = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_shortcut")(x)
        x = layers.BatchNormalization(name=f"{name}_shortcut_bn")(x)
    y = layers.Add(name=f"{name}_add")([x, y])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet20(input_shape=INPUT_SHAPE, num_classes=10, width=16):
    """CIFAR-style ResNet-20 (He et al. 2016): three stages of three basic blocks, widths 16/32/64.

    Each stage's residual stream is one channel group for structured pruning.

    Example:
    >>> model = keras_compress.zoo.resnet20()
    """
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, name=f"stage{stage}_block{block}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="resnet20")


def build(name, **kwargs):
    """Builds a zoo model by name (one of `MODELS`).

    Raises:
        ValueError: if `name` is not in `MODELS`.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown zoo model. Allowed: {list(MODELS)}. Received: name={name!r}")
    return globals()[name](**kwargs)


def compile_for_classification(model, learning_rate=1e-3):
    """Compiles `model` with Adam and sparse categorical cross-entropy on logits."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train(model, x, y, epochs=1, batch_size=128, learning_rate=1e-3, callbacks=None,
          validation_data=None, verbose="auto", seed=0):
    """Compiles and fits `model` on `(x, y)`; returns the Keras `History`.

    Example:
    >>> (x, y), _ = keras_compress.datasets.load("mnist")
    >>> model = keras_compress.zoo.lenet5()
    >>> keras_compress.zoo.train(model, x[:1024], y[:1024], epochs=1)
    """
    keras.utils.set_random_seed(seed)
    compile_for_classification(model, learning_rate)
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=callbacks,
                     validation_data=validation_data, verbose=verbose)
