"""Finding the weights a technique touches, by walking variables.

No hand-kept list of layer classes: every layer of the model (nested models
and the sublayers of subclassed layers included) is visited, and each
variable it creates itself is judged by a rule on the variable (trainable,
floating point, rank >= 2: kernels and embeddings, not biases or
normalisation parameters). A layer can decide for itself by defining a
method named by the technique's hook (for pruning, `get_prunable_weights()`
returning a list of its variables).
"""

import dataclasses
import re

import keras

SKIP_FILTERED = "not chosen by the layer filter"
SKIP_NOT_TRAINABLE = "not trainable"
SKIP_NOT_FLOAT = "not a floating-point variable"
SKIP_LOW_RANK = "rank < 2 (bias or normalisation parameter)"
SKIP_HOOK = "left out by the layer's own hook"


@dataclasses.dataclass
class WeightRef:
    """A variable chosen for a technique, with the layer that owns it."""

    layer: keras.layers.Layer
    variable: keras.Variable

    @property
    def path(self):
        return self.variable.path


def weight_name(model, variable):
    """A variable's name within `model`: its path without the model's own prefix.

    Keras prefixes paths with the model's name in some cases (a Sequential
    built in code) and not in others (the same model loaded from a file), so
    named weights drop that prefix to stay stable across save and load.
    """
    prefix = model.name + "/"
    path = variable.path
    return path[len(prefix):] if path.startswith(prefix) else path


def iter_layers(model):
    """Every layer inside `model`, itself included, each once, depth first."""
    return model._flatten_layers(include_self=True, recursive=True)


def own_variables(layer):
    """Variables the layer created itself (not those of its sublayers)."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def default_rule(variable):
    """Why a variable is not a compressible weight, or None if it is."""
    if not variable.trainable:
        return SKIP_NOT_TRAINABLE
    if "float" not in str(variable.dtype):
        return SKIP_NOT_FLOAT
    if len(variable.shape) < 2:
        return SKIP_LOW_RANK
    return None


class _Thawed:
    """A frozen variable seen as trainable, for a rule's other checks."""

    trainable = True

    def __init__(self, variable):
        self.variable = variable

    def __getattr__(self, name):
        return getattr(self.variable, name)


def _judged_as_trainable(rule, variable):
    return rule(_Thawed(variable))


def make_layer_filter(layers):
    """Turns `None`, a regex string or a callable into `layer -> bool`.

    A regex matches (`re.search`) the layer's name or the path of any of its
    variables, so `"conv"` picks every layer with "conv" in its name.
    """
    if layers is None:
        return lambda layer: True
    if callable(layers):
        return layers
    if isinstance(layers, str):
        try:
            pattern = re.compile(layers)
        except re.error as error:
            raise ValueError(f"layers is not a valid regex: {error}. Received: layers={layers!r}") from None

        def matches(layer):
            names = [layer.name] + [v.path for v in own_variables(layer)]
            return any(pattern.search(name) for name in names)

        return matches
    raise TypeError(
        "layers must be None, a regex string or a callable layer -> bool. "
        f"Received: layers={layers!r} of type {type(layers).__name__}"
    )


def _frozen_weights(layer):
    """Ids of the layer's weights that it made trainable and that were frozen since (`layer.trainable = False`)."""
    return {id(v) for v in layer._trainable_variables if not v.trainable}


def find_weights(model, layers=None, hook="get_prunable_weights", rule=default_rule, include_frozen=False):
    """Chooses the variables a technique applies to.

    Args:
        model: a built Keras model (any kind) or layer.
        layers: `None` (all), a regex on layer names / variable paths, or a
            callable `layer -> bool`.
        hook: name of the method a layer may define to name its own weights.
        rule: `variable -> reason or None` for layers without the hook.
        include_frozen: also choose weights of frozen layers (a backbone
            set `trainable = False` for transfer learning): a weight the
            layer created trainable is judged as if it still were. State
            variables (BatchNormalization statistics, masks) stay out.

    Returns:
        `(chosen, skipped)`: a list of `WeightRef`, and a list of
        `(variable path, reason)`.

    Raises:
        ValueError: if the model is not built.
    """
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: call it on data or build it "
            "with an input shape first."
        )
    keep_layer = make_layer_filter(layers)
    chosen, skipped, seen = [], [], set()
    for layer in iter_layers(model):
        variables = own_variables(layer)
        custom = getattr(layer, hook, None)
        wanted = keep_layer(layer)
        named = set()
        frozen = _frozen_weights(layer) if include_frozen else set()
        if callable(custom) and wanted:
            named = {id(v) for v in custom()}
        for variable in variables:
            if id(variable) in seen:
                continue
            seen.add(id(variable))
            if not wanted:
                reason = SKIP_FILTERED
            elif callable(custom):
                reason = None if id(variable) in named else SKIP_HOOK
            else:
                reason = rule(variable)
                if reason == SKIP_NOT_TRAINABLE and id(variable) in frozen:
                    reason = _judged_as_trainable(rule, variable)
            if reason is None:
                chosen.append(WeightRef(layer, variable))
            else:
                skipped.append((variable.path, reason))
    return chosen, skipped
