"""Who feeds whom: the one reader of a Keras model's functional graph.

Every technique that needs the graph (QAT's BatchNorm folding, activation
fusion and bias linking; later structured pruning's channel coupling and
MACs counting) asks a `ModelGraph` instead of reading Keras's nodes itself.

The graph is the one Keras records on the layers while a Sequential or
Functional model is built: each symbolic call of a layer is a node
(`layer._inbound_nodes`) whose input tensors remember the layer that made
them (`tensor._keras_history.operation`). A nested model used as a layer
(a Functional backbone inside another model) is one layer of its parent's
graph, and its own layers form a graph of their own that starts at its
`InputLayer`s; both are read. A subclassed model records no graph: its
layers have no producers and no consumers, and `has_graph` says so.

Every recorded call of a model's layer counts, including calls Keras kept
from outside this model (the same layer called in another model, or in an
earlier build of a Sequential grown with `add`): the graph then shows more
producers and consumers than the model uses, which errs on the side of
treating the layer as shared.
"""

import collections

import keras

from keras_compress.core import walk


def _history_layer(tensor):
    """The layer that produced a symbolic tensor, or None if Keras did not record one."""
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None


def has_graph(model):
    """Whether `model` records a functional graph (any of its layers was called symbolically).

    Args:
        model: a Keras model or layer of any kind.

    Returns:
        True for a built Sequential or Functional model (or a subclassed one
        holding a Functional model), False for a subclassed model whose
        layers were only called on data.

    Example:
    >>> has_graph(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    True
    """
    return any(getattr(layer, "_inbound_nodes", None) for layer in walk.iter_layers(model)
               if layer is not model)


class ModelGraph:
    """The producers and consumers of each layer of a model, read once.

    Args:
        model: a Keras model of any kind (Sequential, Functional, nested,
            subclassed). It is read when the graph is made; later changes
            to the model's structure are not seen.

    Raises:
        TypeError: if `model` is not a Keras layer or model.

    Example:
    >>> inputs = keras.Input((4,))
    >>> x = keras.layers.Dense(3, name="hidden")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    >>> graph = ModelGraph(model)
    >>> [layer.name for layer in graph.consumers(model.get_layer("hidden"))]
    ['out']
    """

    def __init__(self, model, operations=False):
        if not isinstance(model, keras.layers.Layer):
            raise TypeError(f"model must be a Keras model or layer. Received: {type(model).__name__}")
        self._model = model
        self._layers = [layer for layer in walk.iter_layers(model) if layer is not model]
        # Keras ops called on symbolic tensors (`x + 3.0`, `keras.ops.mean(x)`) are nodes of the graph that are
        # not layers; with `operations=True` they are read too (`operations`), as producers and consumers.
        self._operations = []
        if operations:
            seen = set()
            for layer in [model, *self._layers]:
                for op in getattr(layer, "_operations", None) or []:
                    if not isinstance(op, keras.layers.Layer) and id(op) not in seen:
                        seen.add(id(op))
                        self._operations.append(op)
        self._producers = {}
        self._consumers = collections.defaultdict(list)
        for layer in self._layers + self._operations:
            producers = []
            for node in getattr(layer, "_inbound_nodes", []):
                for tensor in node.input_tensors:
                    producer = _history_layer(tensor)
                    producers.append(producer)
                    if producer is not None:
                        self._consumers[id(producer)].append(layer)
            self._producers[id(layer)] = producers
        try:
            model_inputs = keras.tree.flatten(model.inputs)
        except (AttributeError, ValueError):
            model_inputs = []  # a subclassed model: no symbolic inputs
        self._inputs = [_history_layer(tensor) for tensor in model_inputs]

    @property
    def model(self):
        """The model this graph was read from."""
        return self._model

    @property
    def layers(self):
        """Every layer inside the model (nested models and their layers included), the model itself excluded.

        Returns:
            A list of layers, each once, depth first (`core.walk.iter_layers`'s order).

        Example:
        >>> [layer.name for layer in ModelGraph(model).layers]
        ['input_layer', 'hidden', 'out']
        """
        return list(self._layers)

    @property
    def operations(self):
        """The Keras ops of the graph that are not layers (read with `operations=True`; else empty).

        Returns:
            A list of `keras.Operation`s (e.g. the `Add` of `x + 3.0`), each once, in graph order.
        """
        return list(self._operations)

    @property
    def inputs(self):
        """The layers that produce the model's own inputs, in the order of `model.inputs`.

        Returns:
            A list (its `InputLayer`s for a Functional or Sequential model;
            empty for a subclassed model, which has no symbolic inputs).

        Example:
        >>> [layer.name for layer in ModelGraph(model).inputs]
        ['input_layer']
        """
        return list(self._inputs)

    def has_graph(self):
        """Whether the model records a functional graph (see the module function `has_graph`).

        Returns:
            True if any layer of the model has a recorded call.

        Example:
        >>> ModelGraph(subclassed_model).has_graph()
        False
        """
        return has_graph(self._model)

    def _check(self, layer):
        if id(layer) not in self._producers:
            raise ValueError(
                f"Layer {getattr(layer, 'name', layer)!r} is not a layer of model {self._model.name!r}."
            )

    def producers(self, layer):
        """The layers whose outputs `layer` reads.

        Args:
            layer: a layer of the model (`layers`).

        Returns:
            A list with one entry per input tensor of each recorded call of
            `layer`, in call order (a layer reading one tensor twice lists
            its producer twice; an entry is None where Keras recorded no
            producer). Empty for an `InputLayer` and in a subclassed model.

        Raises:
            ValueError: if `layer` is not a layer of the model.

        Example:
        >>> [p.name for p in ModelGraph(model).producers(model.get_layer("add"))]
        ['conv', 'input_layer']
        """
        self._check(layer)
        return list(self._producers[id(layer)])

    def single_producer(self, layer):
        """The one layer feeding `layer`, if it is called once on one tensor.

        Args:
            layer: a layer of the model.

        Returns:
            The producing layer, or None where `layer` has no recorded call,
            several calls or several inputs.

        Raises:
            ValueError: if `layer` is not a layer of the model.

        Example:
        >>> ModelGraph(model).single_producer(model.get_layer("out")).name
        'hidden'
        """
        self._check(layer)
        if self.call_count(layer) != 1:
            return None
        producers = self._producers[id(layer)]
        return producers[0] if len(producers) == 1 else None

    def consumers(self, layer):
        """The layers that read `layer`'s output.

        Args:
            layer: a layer of the model, or a layer whose output the model reads.

        Returns:
            A list with one entry per reading (a layer that reads the output
            twice, `Multiply()([x, x])`, is listed twice). Empty for the
            model's last layers and in a subclassed model. A nested model's
            last layer has no consumers inside its own graph: its parent's
            graph reads the nested model instead.

        Example:
        >>> [c.name for c in ModelGraph(model).consumers(model.get_layer("hidden"))]
        ['out']
        """
        return list(self._consumers.get(id(layer), []))

    def call_count(self, layer):
        """How many times Keras recorded a symbolic call of `layer`.

        Args:
            layer: a layer of the model.

        Returns:
            0 in a subclassed model, 1 for a layer used once, more for a
            layer shared between calls (or called outside this model).

        Raises:
            ValueError: if `layer` is not a layer of the model.

        Example:
        >>> ModelGraph(model).call_count(model.get_layer("hidden"))
        1
        """
        self._check(layer)
        return len(getattr(layer, "_inbound_nodes", None) or [])

    def is_input(self, layer):
        """Whether `layer` starts a graph: an `InputLayer` of the model or of a nested model.

        Args:
            layer: a layer of the model.

        Returns:
            True for an `InputLayer` (nothing in its graph produces it).

        Raises:
            ValueError: if `layer` is not a layer of the model.

        Example:
        >>> ModelGraph(model).is_input(model.layers[0])
        True
        """
        self._check(layer)
        return isinstance(layer, keras.layers.InputLayer)
