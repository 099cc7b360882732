"""What techniques attach to a model while it trains, and removing it all.

Each technique keeps its training state on the model object (no wrapper
layers) and registers a function that strips it; `keras_compress.strip`
runs them all, so one call leaves a plain Keras model whatever was applied.
"""

_STRIPPERS = []  # (order, registration index, fn), run in that order
# The orders the techniques use: a technique applied on top of others (QAT after pruning or clustering) first
# unwraps the constraints it wrapped; clustering then sets each weight to its shared values; then what puts
# weights on a grid (QAT) runs; the rest (pruning's masks, regularisers) after.
UNWRAP, SHARE, QUANTIZE, DEFAULT = 0, 10, 20, 50
_TRAINING_CALLBACKS = {}  # name -> (is_active(model), make_callback())
_SUMMARIES = {}  # name -> summary(model), rows recorded before a strip


def register_stripper(fn=None, *, order=DEFAULT):
    """Registers `fn(model)`, called by `strip` (a decorator).

    `strip` runs the functions by `order` (ties in registration order):
    `UNWRAP` for a technique that wrapped other techniques' constraints,
    `SHARE` for clustering's shared values, `QUANTIZE` for what puts weights
    on an integer grid, `DEFAULT` for the rest.
    """
    def register(fn):
        _STRIPPERS.append((order, len(_STRIPPERS), fn))
        _STRIPPERS.sort(key=lambda entry: entry[:2])
        return fn

    return register(fn) if fn is not None else register


def strip(model):
    """Removes every technique's training state, leaving a plain Keras model.

    Masks and shared values are applied a last time and the weights' own
    constraints are restored. The result saves to `.keras` and loads with
    `keras.saving.load_model` without custom objects. A model with nothing
    to strip is returned unchanged.

    Args:
        model: a model passed to `prune` or `cluster` (or one containing it).

    Returns:
        The same model object, now plain Keras.

    Example:
    >>> model = keras_compress.strip(model)
    >>> model.save("compressed.keras")
    """
    for _, _, fn in _STRIPPERS:
        fn(model)
    return model


def register_training_callback(name, is_active, make_callback):
    """Registers the callback a technique's state needs in `fit` (e.g. pruning's mask updates).

    Fine-tuning (`keras_compress.training.finetune`, the recipe's `finetune`
    step) asks `training_callbacks(model)` instead of knowing techniques.

    Args:
        name: the technique's name, as reported (`"pruning"`).
        is_active: `model -> bool`, whether the model carries the state.
        make_callback: `() -> keras.callbacks.Callback`.
    """
    _TRAINING_CALLBACKS[name] = (is_active, make_callback)


def training_callbacks(model):
    """`{name: callback}` for each registered technique whose state `model` carries."""
    return {name: make() for name, (active, make) in _TRAINING_CALLBACKS.items() if active(model)}


def active_techniques(model):
    """`{name: bool}`: which registered training techniques `model` carries now."""
    return {name: bool(active(model)) for name, (active, _) in _TRAINING_CALLBACKS.items()}


def register_summary(name, summary):
    """Registers `summary(model) -> rows or None`, recorded by the recipe runner before it strips."""
    _SUMMARIES[name] = summary


def summaries(model):
    """`{name: rows}` of each registered summary that has something to say about `model`."""
    out = {}
    for name, summary in _SUMMARIES.items():
        rows = summary(model)
        if rows:
            out[name] = rows
    return out


def reset_train_function(model):
    """Drops a compiled train step so the next `fit` traces one that sees
    the weights' current constraints."""
    if getattr(model, "train_function", None) is not None:
        model.train_function = None


def reset_compiled_functions(model):
    """Drops the compiled train, test and predict steps of `model`.

    For a change to the forward pass (QAT patching or unpatching layer
    calls, a bias added by folding a normalization): a step traced before it
    would keep computing the old function, since Keras reuses its compiled
    `predict_function` and `test_function` across calls.
    """
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


def attach(model, attr, state):
    """Keeps `state` on the model object, outside Keras's tracking."""
    object.__setattr__(model, attr, state)


def detach(model, attr):
    object.__delattr__(model, attr)


def states_for_training(model, get_state, callback_name, verb):
    """The states a technique's callback drives in `fit`, with the train step ready.

    Collects the states attached to `model` or any layer inside it, fails
    loudly when there are none (a forgotten `prune`/`cluster` is a mistake
    worth stopping for), and rebuilds the train step once if a state was
    attached after it was traced: an old step would not apply the new
    constraints. It is not rebuilt on every `fit` (tracing costs time).
    """
    from keras_compress.core import walk

    states = [s for layer in walk.iter_layers(model) if (s := get_state(layer)) is not None]
    if not states:
        raise ValueError(
            f"{callback_name} found nothing to drive in model {model.name!r}: call "
            f"keras_compress.{verb}(model, config) before fit."
        )
    if any(state.needs_retrace for state in states):
        model.make_train_function(force=True)
        for state in states:
            state.needs_retrace = False
    return states
