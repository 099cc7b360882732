"""Adding variables to a built layer and taking them out again.

A technique that needs state of its own on a layer (QAT's activation ranges,
clustering's trainable centroids) adds it as a layer variable, so that it is
in the model's (trainable or non-trainable) variables, saved by the
optimizer's step and seen by JAX's stateless train step; `strip` removes it
and the layer is its class again.
"""

import contextlib

import numpy as np


@contextlib.contextmanager
def unlocked(layer):
    """Lets a built layer create variables (Keras locks its tracker after `build`)."""
    tracker = getattr(layer, "_tracker", None)
    was_locked = bool(tracker is not None and tracker.locked)
    if tracker is not None:
        tracker.unlock()
    try:
        yield
    finally:
        if was_locked:
            tracker.lock()


def add_variable(layer, name, value, trainable=False, dtype="float32"):
    """Adds a variable holding `value` to `layer`; returns it."""
    value = np.asarray(value, dtype)
    with unlocked(layer):
        variable = layer.add_weight(shape=value.shape, initializer="zeros", trainable=trainable,
                                    name=name, dtype=dtype)
    variable.assign(value)
    return variable


def remove_variables(pairs):
    """Takes each `(layer, variable)` out of the layer's variables and tracker."""
    for layer, variable in pairs:
        for store in ("_non_trainable_variables", "_trainable_variables"):
            items = getattr(layer, store, [])
            for i, item in enumerate(items):
                if item is variable:
                    del items[i]
                    break
        tracker = getattr(layer, "_tracker", None)
        if tracker is not None:
            for ids in tracker.stored_ids.values():
                ids.discard(id(variable))
