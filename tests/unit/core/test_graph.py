import keras
import pytest
from keras import layers

import builders
from keras_compress.core.graph import ModelGraph, has_graph


def names(found):
    return [layer.name for layer in found]


def sequential_chain():
    return keras.Sequential([keras.Input((8,)), layers.Dense(4, name="first"), layers.ReLU(name="relu"),
                             layers.Dense(2, name="last")])


def residual():
    """conv -> relu -> conv2 -> add(relu, conv2) -> gap -> dense."""
    inputs = keras.Input((6, 6, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = layers.ReLU(name="relu")(x)
    y = layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    z = layers.Add(name="add")([x, y])
    z = layers.GlobalAveragePooling2D(name="gap")(z)
    return keras.Model(inputs, layers.Dense(2, name="out")(z))


def test_sequential_producers_and_consumers_follow_the_chain():
    model = sequential_chain()
    graph = ModelGraph(model)
    first, relu, last = (model.get_layer(n) for n in ("first", "relu", "last"))
    (input_layer,) = graph.inputs
    assert graph.is_input(input_layer) and not graph.is_input(first)
    assert graph.producers(first) == [input_layer]
    assert names(graph.consumers(first)) == ["relu"]
    assert names(graph.producers(last)) == ["relu"]
    assert graph.consumers(last) == []
    assert graph.single_producer(last) is relu
    assert graph.call_count(relu) == 1
    assert names(graph.layers)[1:] == ["first", "relu", "last"]


def test_functional_residual_add_has_two_producers_and_a_forked_consumer():
    model = residual()
    graph = ModelGraph(model)
    add = model.get_layer("add")
    assert names(graph.producers(add)) == ["relu", "conv2"]
    assert graph.single_producer(add) is None  # two inputs
    assert sorted(names(graph.consumers(model.get_layer("relu")))) == ["add", "conv2"]
    assert names(graph.consumers(model.get_layer("conv"))) == ["relu"]
    assert names(graph.inputs) == ["image"]
    assert names(graph.consumers(model.get_layer("image"))) == ["conv"]


def test_nested_backbone_is_one_layer_of_its_parent_and_a_graph_of_its_own():
    model = builders.nested()
    graph = ModelGraph(model)
    backbone = model.get_layer("backbone")
    base = backbone.get_layer("base_dense")
    assert base in graph.layers  # the backbone's own layers are read too
    assert names(graph.producers(model.get_layer("head"))) == ["backbone"]
    assert names(graph.consumers(backbone)) == ["head"]
    (inner_input,) = graph.producers(base)
    assert graph.is_input(inner_input) and inner_input is not graph.inputs[0]
    assert graph.consumers(base) == []  # the parent's graph reads the backbone instead
    assert names(graph.consumers(graph.inputs[0])) == ["backbone"]


def test_subclassed_model_has_no_graph():
    model = builders.subclassed()
    graph = ModelGraph(model)
    assert not has_graph(model) and not graph.has_graph()
    assert graph.producers(model.hidden) == [] and graph.consumers(model.hidden) == []
    assert graph.single_producer(model.out) is None
    assert graph.inputs == []
    assert graph.call_count(model.hidden) == 0


@pytest.mark.parametrize("kind", sorted(builders.MODEL_KINDS))
def test_has_graph_is_true_for_every_model_kind_but_subclassed(kind):
    model = builders.MODEL_KINDS[kind]()
    assert has_graph(model) is (kind != "subclassed")
    assert ModelGraph(model).has_graph() is (kind != "subclassed")


def test_a_layer_called_twice_has_no_single_producer():
    inputs = keras.Input((4,), name="x")
    shared = layers.Dense(4, name="shared")
    y = shared(layers.ReLU(name="pre")(shared(inputs)))
    model = keras.Model(inputs, y)
    graph = ModelGraph(model)
    assert graph.call_count(shared) == 2
    assert names(graph.producers(shared)) == ["x", "pre"]
    assert graph.single_producer(shared) is None
    assert names(graph.consumers(shared)) == ["pre"]


def test_a_tensor_read_twice_lists_its_consumer_twice():
    inputs = keras.Input((4,))
    x = layers.Dense(4, name="dense")(inputs)
    model = keras.Model(inputs, layers.Multiply(name="square")([x, x]))
    assert names(ModelGraph(model).consumers(model.get_layer("dense"))) == ["square", "square"]


def test_asking_about_a_foreign_layer_raises():
    graph = ModelGraph(sequential_chain())
    with pytest.raises(ValueError, match="is not a layer of model"):
        graph.producers(layers.Dense(2, name="stranger"))
    with pytest.raises(TypeError, match="must be a Keras model"):
        ModelGraph("not a model")
