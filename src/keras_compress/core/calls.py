"""Changing what a layer's call computes, without wrapper layers.

Two tools shared by the techniques:

- **call wrappers**: a technique wraps a layer's `call` under a key (QAT
  fake-quantizes activations this way). Wrappers stack in the order they
  were added and each can be removed on its own, in any order: the
  instance's `call` is rebuilt from the class's method every time. When
  none is left the layer is exactly its class again.
- **weight views**: a technique makes the call see a differentiable
  function of a variable instead of the variable (clustering: each
  weight's cluster mean, so every member's gradient is its cluster's mean
  gradient). Views of one variable compose in the order they were added;
  `view_value` gives the composed tensor to code that reads the variable
  itself (QAT fake-quantizes the viewed value). The view wrapper is always
  the innermost wrapper, and it replaces an attribute only while the
  attribute still holds the variable (an outer wrapper may have replaced
  it by its own function of `view_value`).
"""

import dataclasses

_WRAPPERS = "_keras_compress_call_wrappers"
_VIEWS = "_keras_compress_weight_views"
_VIEW_KEY = "weight views"


def wrap_call(layer, key, make_wrapper):
    """Wraps `layer.call` with `make_wrapper(inner_call) -> call`, under `key`."""
    wrappers = vars(layer).get(_WRAPPERS)
    if wrappers is None:
        wrappers = []
        object.__setattr__(layer, _WRAPPERS, wrappers)
    wrappers.append((key, make_wrapper))
    _rebuild(layer)


def unwrap_call(layer, key):
    """Removes the wrappers added under `key` (the others stay)."""
    wrappers = vars(layer).get(_WRAPPERS)
    if not wrappers:
        return
    wrappers[:] = [(k, make) for k, make in wrappers if k != key]
    _rebuild(layer)


def is_wrapped(layer, key):
    return any(k == key for k, _ in vars(layer).get(_WRAPPERS) or [])


def _rebuild(layer):
    if "call" in vars(layer):
        object.__delattr__(layer, "call")
    wrappers = vars(layer).get(_WRAPPERS) or []
    if not wrappers:
        if _WRAPPERS in vars(layer):
            object.__delattr__(layer, _WRAPPERS)
        return
    call = layer.call  # the class's method, bound
    ordered = [w for w in wrappers if w[0] == _VIEW_KEY] + [w for w in wrappers if w[0] != _VIEW_KEY]
    for _, make in ordered:
        call = make(call)
    object.__setattr__(layer, "call", call)


@dataclasses.dataclass
class _View:
    variable: object
    attributes: list
    functions: list  # (key, fn) in the order added


def add_view(layer, variable, key, fn):
    """Makes `layer`'s call see `fn(value)` where it reads `variable`.

    Args:
        layer: the layer that holds `variable` as an attribute.
        variable: the variable.
        key: the technique's name (`remove_views(layer, key)` takes it back).
        fn: a differentiable function of the variable's value (or of the
            previous view's output), same shape.

    Returns:
        True, or False if no attribute of `layer` holds `variable` (then
        nothing changed).
    """
    views = vars(layer).get(_VIEWS)
    entry = views.get(id(variable)) if views else None
    if entry is None:
        attributes = [name for name, value in vars(layer).items() if value is variable]
        if not attributes:
            return False
        if views is None:
            views = {}
            object.__setattr__(layer, _VIEWS, views)
        entry = views[id(variable)] = _View(variable, attributes, [])
    entry.functions.append((key, fn))
    if not is_wrapped(layer, _VIEW_KEY):
        wrap_call(layer, _VIEW_KEY, lambda inner: _viewing_call(layer, inner))
    return True


def swap_view(layer, variable, key, fn):
    """Replaces the view `key` of `variable` on `layer` by `fn`; returns the one it replaced (or None)."""
    entry = (vars(layer).get(_VIEWS) or {}).get(id(variable))
    if entry is None:
        return None
    for i, (k, old) in enumerate(entry.functions):
        if k == key:
            entry.functions[i] = (key, fn)
            return old
    return None


def remove_views(layer, key):
    """Removes the views added under `key`; the call is restored when none is left."""
    views = vars(layer).get(_VIEWS)
    if not views:
        return
    for variable_id in list(views):
        entry = views[variable_id]
        entry.functions = [(k, fn) for k, fn in entry.functions if k != key]
        if not entry.functions:
            del views[variable_id]
    if not views:
        object.__delattr__(layer, _VIEWS)
        unwrap_call(layer, _VIEW_KEY)


def view_value(layer, variable):
    """What `layer`'s call sees for `variable`: its views applied to its value."""
    value = variable.value
    entry = (vars(layer).get(_VIEWS) or {}).get(id(variable))
    if entry is not None:
        for _, fn in entry.functions:
            value = fn(value)
    return value


def _viewing_call(layer, inner):
    def call(*args, **kwargs):
        saved = {}
        try:
            for entry in list((vars(layer).get(_VIEWS) or {}).values()):
                names = [n for n in entry.attributes if getattr(layer, n) is entry.variable]
                if not names:
                    continue
                value = view_value(layer, entry.variable)
                for name in names:
                    saved[name] = entry.variable
                    object.__setattr__(layer, name, value)
            return inner(*args, **kwargs)
        finally:
            for name, variable in saved.items():
                object.__setattr__(layer, name, variable)

    return call
