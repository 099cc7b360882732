import numpy as np
import pytest

from keras_compress import zoo


def test_lenet_sizes_match_deep_compression():
    assert zoo.lenet5().count_params() == 431_080
    assert zoo.lenet_300_100().count_params() == 266_610


@pytest.mark.parametrize("name", zoo.MODELS)
def test_every_zoo_model_gives_ten_logits(name):
    model = zoo.build(name)
    assert model(np.zeros((2, 28, 28, 1), "float32")).shape == (2, 10)


def test_mobilenet_has_depthwise_bn_relu6_and_residual_adds():
    kinds = {type(layer).__name__ for layer in zoo.mobilenet_v2_tiny().layers}
    assert {"DepthwiseConv2D", "BatchNormalization", "ReLU", "Add"} <= kinds


def test_training_helper_learns_a_tiny_problem():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 256).astype("int32")
    x = rng.random((256, 28, 28, 1)).astype("float32") * 0.5
    x[y == 1, :14] += 0.5  # class 1 has a bright top half
    model = zoo.lenet_300_100()
    history = zoo.train(model, x, y, epochs=5, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.8


def test_unknown_zoo_model_is_rejected():
    with pytest.raises(ValueError, match="Unknown zoo model"):
        zoo.build("resnet50")
