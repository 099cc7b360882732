"""Channel dependency groups: which channel dimensions of a model must shrink together.

Structured pruning removes whole channels, and a channel is not one
layer's business: a Conv's output channel is also an input row of every
layer that reads it, an entry of the BatchNormalization after it, and, in a
residual network, the same channel of every tensor added to it. This module
reads a Sequential or Functional model (nested models included) tensor by
tensor and joins coupled channel dimensions into groups with two rules
(torch-pruning's DepGraph, written for Keras): a layer's output channels
are its consumers' input channels, and a layer whose output channels are its
input channels (BatchNormalization, depthwise convolution, activations,
pooling, element-wise merges) ties the two. Concatenations carry offsets,
Flatten carries the spatial tiling. A layer it cannot reason about is a
wall: the groups on both sides are left whole and the reason is kept.

Each tensor's last (channel) axis is described by a `Layout`: a list of
segments `(dim, offset)` of width `width`, repeated `tile` times (Flatten's
positions): channel `k` of segment `(dim, offset)` at position `p` is index
`p * width + offset + k`.

Example:
>>> graph = ChannelGraph(model)
>>> [(g.name, g.size, g.prunable) for g in graph.groups()]
[('conv1', 16, True), ('conv2', 32, True), ('logits', 10, False)]
"""

import dataclasses

import keras
import numpy as np

from keras_compress.core import walk

# Layers that keep channels where they are and have no channel weights.
_PASSTHROUGH = (
    "Activation", "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
    "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Identity", "Resizing", "Masking",
)
_GLOBAL_POOLING = (
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
)
_ELEMENTWISE = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
_CONV = ("Conv1D", "Conv2D", "Conv3D")
_CONV_TRANSPOSE = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
_DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
_SEPARABLE = ("SeparableConv1D", "SeparableConv2D")
_NORMALIZATION = ("BatchNormalization", "LayerNormalization")

# Why a group is left whole.
OUTPUT = "feeds a model output"
INPUT = "is a model input"


class Dim:
    """One channel dimension; coupled dimensions are joined (union-find) into a group."""

    def __init__(self, size, name):
        self.size = int(size)
        self.name = name
        self.parent = self
        self.members = []  # Member records, kept at the root
        self.reasons = []  # why the group cannot be pruned, kept at the root

    def root(self):
        node = self
        while node.parent is not node:
            node.parent = node.parent.parent
            node = node.parent
        return node


@dataclasses.dataclass
class Member:
    """A layer's weights along a group's channels.

    Attributes:
        layer: the layer.
        role: `"out"` (the layer makes the channels: kernel's output axis and
            bias), `"in"` (it reads them: its kernel's input axis) or
            `"chan"` (per-channel weights: normalization, depthwise).
        offset, width, tile: where the group's channels sit in the layer's
            input (`Layout`), for `"in"` and `"chan"`.
    """

    layer: object
    role: str
    offset: int = 0
    width: int = 0
    tile: int = 1


@dataclasses.dataclass
class Layout:
    """The channel axis of a tensor: segments `(dim, offset)` of `width`, repeated `tile` times."""

    segments: list
    width: int
    tile: int = 1

    def dims(self):
        return [dim for dim, _ in self.segments]


@dataclasses.dataclass
class Group:
    """A set of coupled channels, pruned together.

    Attributes:
        name: the first layer that makes the channels (or the first member).
        size: the number of channels.
        members: `Member` records (layers and how their weights hold the channels).
        reasons: why the group cannot be pruned (empty when it can).
        dim: the root `Dim` (the key of a pruning plan).
    """

    name: str
    size: int
    members: list
    reasons: list
    dim: Dim

    @property
    def prunable(self):
        return not self.reasons

    def layers(self, role=None):
        """Names of the member layers (of one role, when given), each once."""
        out = []
        for member in self.members:
            if (role is None or member.role == role) and member.layer.name not in out:
                out.append(member.layer.name)
        return out


def _class(layer):
    return type(layer).__name__


def _is_model(layer):
    return isinstance(layer, keras.Model)


def _functional(model):
    """The Functional graph of a Sequential or Functional model, or None (subclassed)."""
    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None)
    if model is None or not hasattr(model, "_nodes_by_depth"):
        return None
    return model


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _last_axis(layer, rank):
    axis = getattr(layer, "axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis in (-1, rank - 1)


class ChannelGraph:
    """The channel groups of a Sequential or Functional model (nested models read through).

    Args:
        model: a built Sequential or Functional Keras model.

    Raises:
        ValueError: if `model` is subclassed (no graph to read); the message
            says how to get a Functional model.

    Example:
    >>> graph = ChannelGraph(keras.applications.MobileNetV2((96, 96, 3), weights=None))
    >>> sum(g.prunable for g in graph.groups())
    35
    """

    def __init__(self, model):
        if _functional(model) is None:
            raise ValueError(
                f"structured pruning needs a Functional or Sequential model; {model.name!r} is a subclassed "
                f"{type(model).__name__} with no graph to read. Build it with keras.Model(inputs, outputs) "
                "(or keras.Sequential), or wrap its layers in a Functional model."
            )
        self.model = model
        self.layouts = {}  # id(KerasTensor) -> Layout
        self.inputs_of = {}  # id(layer) -> Layout of its input (single-input layers)
        self.outputs_of = {}  # id(producer layer) -> Dim of its output channels
        self.reshapes = {}  # id(Reshape layer) -> its Layout (target_shape follows the channels)
        self.model_layers = [layer for layer in walk.iter_layers(model) if layer is not model]
        self._dims = []
        self._calls = {}
        self._count_calls(model)
        self._read(model, None, top=True)

    # -- reading ------------------------------------------------------------

    def _count_calls(self, model):
        functional = _functional(model)
        for nodes in functional._nodes_by_depth.values():
            for node in nodes:
                op = node.operation
                self._calls[id(op)] = self._calls.get(id(op), 0) + 1
                if _is_model(op) and _functional(op) is not None:
                    self._count_calls(op)

    def _new_dim(self, size, name, reason=None):
        dim = Dim(size, name)
        if reason:
            dim.reasons.append(reason)
        self._dims.append(dim)
        return dim

    def _plain(self, dim):
        return Layout([(dim, 0)], dim.size, 1)

    def _fresh(self, tensor, name, reason):
        size = tensor.shape[-1] if len(tensor.shape) else 1
        return self._plain(self._new_dim(size or 0, name, reason))

    def _block(self, layout, reason):
        for dim in layout.dims():
            root = dim.root()
            if reason not in root.reasons:
                root.reasons.append(reason)

    def _union(self, a, b):
        ra, rb = a.root(), b.root()
        if ra is rb:
            return True
        if ra.size != rb.size:
            return False
        rb.parent = ra
        ra.members.extend(rb.members)
        ra.reasons.extend(r for r in rb.reasons if r not in ra.reasons)
        return True

    def _add(self, dim, member):
        dim.root().members.append(member)

    def _read(self, model, input_layouts, top):
        functional = _functional(model)
        for tensor_index, tensor in enumerate(functional.inputs):
            if top:
                layout = self._fresh(tensor, f"{model.name}.input", INPUT)
            else:
                layout = input_layouts[tensor_index]
            self.layouts[id(tensor)] = layout
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for node in functional._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                self._read_node(node)
        if top:
            for tensor in functional.outputs:
                self._block(self.layouts[id(tensor)], OUTPUT)

    def _wall(self, layer, inputs, outputs, reason):
        for layout in inputs:
            self._block(layout, reason)
        for tensor in outputs:
            self.layouts[id(tensor)] = self._fresh(tensor, layer.name, reason)

    def _read_node(self, node):
        layer = node.operation
        inputs = [self.layouts.get(id(t)) for t in node.input_tensors]
        outputs = node.output_tensors
        name = _class(layer)
        if any(layout is None for layout in inputs):
            self._wall(layer, [l for l in inputs if l is not None], outputs, f"{layer.name}: input not traced")
            return
        if self._calls.get(id(layer), 0) > 1:
            self._wall(layer, inputs, outputs, f"{layer.name} ({name}) is called more than once")
            return
        if _is_model(layer):
            if _functional(layer) is None:
                self._wall(layer, inputs, outputs, f"{layer.name}: a subclassed model inside the graph")
                return
            self._read(layer, inputs, top=False)
            for tensor, inner in zip(outputs, _functional(layer).outputs):
                self.layouts[id(tensor)] = self.layouts[id(inner)]
            return
        if not _channels_last(layer):
            self._wall(layer, inputs, outputs, f"{layer.name} ({name}) is channels_first")
            return
        reader = _READERS.get(name)
        if reader is None:
            reason = f"{layer.name} ({name}) is not supported by structured pruning"
            self._wall(layer, inputs, outputs, reason)
            return
        reader(self, layer, node, inputs, outputs)

    # -- what each kind of layer does ------------------------------------------

    def _produce(self, layer, inputs, outputs, size):
        self.inputs_of[id(layer)] = inputs[0]
        for dim, offset in inputs[0].segments:
            self._add(dim, Member(layer, "in", offset, inputs[0].width, inputs[0].tile))
        dim = self._new_dim(size, layer.name)
        self._add(dim, Member(layer, "out"))
        self.outputs_of[id(layer)] = dim
        self.layouts[id(outputs[0])] = self._plain(dim)

    def _same(self, layer, inputs, outputs, weights=False):
        if weights:
            self.inputs_of[id(layer)] = inputs[0]
            for dim, offset in inputs[0].segments:
                self._add(dim, Member(layer, "chan", offset, inputs[0].width, inputs[0].tile))
        for tensor in outputs:
            self.layouts[id(tensor)] = inputs[0]

    def groups(self):
        """The groups that some layer makes (each once), in the order the model makes them.

        Returns:
            A list of `Group`; `prunable` is False where a reason holds it whole.
        """
        seen, out = set(), []
        for dim in self._dims:
            root = dim.root()
            if id(root) in seen:
                continue
            producers = [m for m in root.members if m.role == "out"]
            if not producers:
                continue
            seen.add(id(root))
            out.append(Group(producers[0].layer.name, root.size, list(root.members), list(root.reasons), root))
        return out


def _read_conv(graph, layer, node, inputs, outputs):
    if getattr(layer, "groups", 1) != 1:
        graph._wall(layer, inputs, outputs, f"{layer.name}: grouped convolution (groups={layer.groups})")
        return
    graph._produce(layer, inputs, outputs, layer.filters)


def _read_dense(graph, layer, node, inputs, outputs):
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        graph._wall(layer, inputs, outputs, f"{layer.name}: LoRA or quantized Dense")
        return
    graph._produce(layer, inputs, outputs, layer.units)


def _read_embedding(graph, layer, node, inputs, outputs):
    dim = graph._new_dim(layer.output_dim, layer.name)
    graph._add(dim, Member(layer, "out"))
    graph.outputs_of[id(layer)] = dim
    graph.layouts[id(outputs[0])] = graph._plain(dim)


def _read_depthwise(graph, layer, node, inputs, outputs):
    if layer.depth_multiplier != 1:
        graph._wall(layer, inputs, outputs,
                    f"{layer.name}: depth_multiplier={layer.depth_multiplier} (only 1 is pruned through)")
        return
    graph._same(layer, inputs, outputs, weights=True)


def _read_separable(graph, layer, node, inputs, outputs):
    if layer.depth_multiplier != 1:
        graph._wall(layer, inputs, outputs,
                    f"{layer.name}: depth_multiplier={layer.depth_multiplier} (only 1 is pruned through)")
        return
    graph._produce(layer, inputs, outputs, layer.filters)


def _read_normalization(graph, layer, node, inputs, outputs):
    rank = len(node.input_tensors[0].shape)
    if not _last_axis(layer, rank):
        graph._wall(layer, inputs, outputs, f"{layer.name}: normalizes an axis other than the channels")
        return
    graph._same(layer, inputs, outputs, weights=bool(layer.weights))


def _read_passthrough(graph, layer, node, inputs, outputs):
    graph._same(layer, inputs, outputs)


def _read_global_pooling(graph, layer, node, inputs, outputs):
    if inputs[0].tile != 1:
        graph._wall(layer, inputs, outputs, f"{layer.name}: pools a flattened tensor")
        return
    graph._same(layer, inputs, outputs)


def _read_flatten(graph, layer, node, inputs, outputs):
    shape = node.input_tensors[0].shape
    if any(d is None for d in shape[1:]):
        graph._wall(layer, inputs, outputs, f"{layer.name}: Flatten of an unknown shape")
        return
    positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
    layout = inputs[0]
    graph.layouts[id(outputs[0])] = Layout(layout.segments, layout.width, layout.tile * positions)


def _read_reshape(graph, layer, node, inputs, outputs):
    before, after = node.input_tensors[0].shape, outputs[0].shape
    if inputs[0].tile == 1 and before[-1] is not None and before[-1] == after[-1]:
        graph.reshapes[id(layer)] = inputs[0]
        graph._same(layer, inputs, outputs)
        return
    graph._wall(layer, inputs, outputs, f"{layer.name}: Reshape that moves the channel axis")


def _read_rescaling(graph, layer, node, inputs, outputs):
    if np.size(layer.scale) == 1 and np.size(layer.offset) == 1:
        graph._same(layer, inputs, outputs)
        return
    graph._wall(layer, inputs, outputs, f"{layer.name}: per-channel Rescaling")


def _same_structure(layouts):
    first = layouts[0]
    for other in layouts[1:]:
        if (other.width, other.tile, len(other.segments)) != (first.width, first.tile, len(first.segments)):
            return False
        for (a, oa), (b, ob) in zip(first.segments, other.segments):
            if oa != ob or a.root().size != b.root().size:
                return False
    return True


def _read_elementwise(graph, layer, node, inputs, outputs):
    if len(inputs) < 2 or not _same_structure(inputs):
        graph._wall(layer, inputs, outputs, f"{layer.name}: merges tensors whose channels do not line up")
        return
    for other in inputs[1:]:
        for (a, _), (b, _) in zip(inputs[0].segments, other.segments):
            graph._union(a, b)
    for tensor in outputs:
        graph.layouts[id(tensor)] = inputs[0]


def _read_concatenate(graph, layer, node, inputs, outputs):
    rank = len(node.input_tensors[0].shape)
    if not _last_axis(layer, rank):
        _read_elementwise(graph, layer, node, inputs, outputs)  # along another axis: channels are shared
        return
    if any(layout.tile != 1 for layout in inputs):
        graph._wall(layer, inputs, outputs, f"{layer.name}: concatenates flattened tensors")
        return
    segments, offset = [], 0
    for layout in inputs:
        segments.extend((dim, offset + inner) for dim, inner in layout.segments)
        offset += layout.width
    graph.layouts[id(outputs[0])] = Layout(segments, offset, 1)


_READERS = {
    **{name: _read_conv for name in _CONV + _CONV_TRANSPOSE},
    "Dense": _read_dense,
    "Embedding": _read_embedding,
    **{name: _read_depthwise for name in _DEPTHWISE},
    **{name: _read_separable for name in _SEPARABLE},
    **{name: _read_normalization for name in _NORMALIZATION},
    **{name: _read_passthrough for name in _PASSTHROUGH},
    **{name: _read_global_pooling for name in _GLOBAL_POOLING},
    "Flatten": _read_flatten,
    "Reshape": _read_reshape,
    "Rescaling": _read_rescaling,
    **{name: _read_elementwise for name in _ELEMENTWISE},
    "Concatenate": _read_concatenate,
}


def expand(layout, keep):
    """The kept indices of a tensor's channel axis, given the kept channels of each group.

    Args:
        layout: the tensor's `Layout`.
        keep: `{id(root Dim): sorted kept channel indices}`; a group not in
            it keeps every channel.

    Returns:
        A sorted NumPy int array of indices into the channel axis.

    Example:
    >>> expand(Layout([(a, 0), (b, 4)], width=6), {id(a): [1, 3]})
    array([1, 3, 4, 5])
    """
    per_position = []
    for dim, offset in layout.segments:
        root = dim.root()
        kept = keep.get(id(root), range(root.size))
        per_position.extend(offset + int(k) for k in kept)
    per_position = np.asarray(per_position, dtype=np.int64)
    return np.concatenate([p * layout.width + per_position for p in range(layout.tile)]) if layout.tile > 1 \
        else per_position
