"""Recurrent layers for LiteRT: unrolled over a fixed sequence length, so the stock interpreter runs them.

Keras converts an LSTM, GRU or SimpleRNN to a TensorFlow `While` loop over
a `TensorList`, which LiteRT has no builtin kernels for: the file needs the
Select TensorFlow ops (Flex) delegate, and int8 conversion fails outright.
Unrolled (`unroll=True`), the same layer is a fixed chain of matrix
multiplications and element-wise ops, every one a LiteRT builtin with an
int8 kernel. `unrolled(model)` sets `unroll` on every recurrent layer for
the length of an export when the model's inputs have a fixed sequence
length, and puts it back afterwards: the user's model is unchanged, and a
QAT model keeps its ranges (the layers are the same objects).
"""

import contextlib


def recurrent_layers(model):
    """The recurrent layers inside `model` (those in `Bidirectional` wrappers included)."""
    import keras  # here, not at import: the CLI imports this module before it quiets TensorFlow's start-up

    from keras_compress.core import walk

    return [layer for layer in walk.iter_layers(model) if isinstance(layer, keras.layers.RNN)]


def _fixed_length(model):
    try:
        return all(None not in tuple(t.shape[1:]) for t in model.inputs)
    except (AttributeError, TypeError, ValueError):
        return False


@contextlib.contextmanager
def unrolled(model):
    """Within the block, every recurrent layer of `model` runs unrolled (when its inputs have fixed shapes).

    Yields the names of the layers it unrolled (empty when there are none or the sequence length varies:
    the export then fails in `_check_runs` with a message saying so).
    """
    layers = [layer for layer in recurrent_layers(model) if not layer.unroll] if _fixed_length(model) else []
    for layer in layers:
        layer.unroll = True
    try:
        yield [layer.name for layer in layers]
    finally:
        for layer in layers:
            layer.unroll = False
