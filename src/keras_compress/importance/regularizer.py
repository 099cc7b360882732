"""The importance-weighted regulariser: L1/L2 weighted by inverse importance.

`regularize(model, ImportanceRegularizerConfig(...), data)` scores every
chosen weight (`importance.score`), turns the scores into per-parameter
penalty coefficients (`ops.regularizers.importance_coefficients`) held in a
variable, and sets the weight's Keras `regularizer`, so `fit` adds the
penalty to the loss on every backend with no wrapper layer.
`ImportanceRegularizerCallback(data)` refreshes the scores every
`refresh_every` steps; `keras_compress.strip` restores the weights' own
regularizers.
"""

import dataclasses

import keras
import numpy as np

from keras_compress.core import walk
from keras_compress.core.config import BaseConfig
from keras_compress.core.state import attach, detach, register_stripper, reset_compiled_functions
from keras_compress.ops import regularizers as reg_ops

_STATE_ATTR = "_keras_compress_importance_regularizer"


@dataclasses.dataclass(frozen=True)
class ImportanceRegularizerConfig(BaseConfig):
    """Settings of the importance-weighted penalty.

    Args:
        strength: the penalty's factor (as `keras.regularizers.L1(l1=...)`).
        norm: `"l1"` or `"l2"`.
        method: the importance score (`importance.METHODS`).
        refresh_every: recompute the scores every this many training steps
            (with `ImportanceRegularizerCallback`); None keeps the first.
        epsilon: floor of the normalised importance.
        max_batches: batches of `data` each scoring uses.
        layers: None (all), a regex on layer names, or a callable.
    """

    strength: float = 1e-5
    norm: str = "l1"
    method: str = "taylor"
    refresh_every: int | None = 200
    epsilon: float = 0.1
    max_batches: int = 8
    layers: object = None

    def __post_init__(self):
        from keras_compress.importance.api import METHODS

        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)) or self.strength < 0:
            raise ValueError(f"strength must be a number >= 0. Received: strength={self.strength!r}")
        if self.norm not in reg_ops.NORMS:
            raise ValueError(f"norm must be one of {list(reg_ops.NORMS)}. Received: norm={self.norm!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}. Received: method={self.method!r}")
        if self.refresh_every is not None and (
            isinstance(self.refresh_every, bool) or not isinstance(self.refresh_every, int) or self.refresh_every < 1
        ):
            raise ValueError(f"refresh_every must be None or an int >= 1. Received: {self.refresh_every!r}")
        if not isinstance(self.epsilon, (int, float)) or self.epsilon <= 0:
            raise ValueError(f"epsilon must be > 0. Received: epsilon={self.epsilon!r}")


class ImportanceRegularizer:
    """A Keras regularizer: `strength * sum(c * |w|)` (or `w**2`), `c` a variable."""

    def __init__(self, coefficients, strength, norm):
        self.coefficients = coefficients
        self.strength = float(strength)
        self.norm = norm

    def __call__(self, weight):
        return self.strength * reg_ops.weighted_penalty(weight, self.coefficients.value, self.norm)


@dataclasses.dataclass
class _Regularized:
    variable: keras.Variable
    name: str
    coefficients: keras.Variable
    previous: object


@dataclasses.dataclass
class RegularizerState:
    config: ImportanceRegularizerConfig
    weights: list
    data: tuple
    step: int = 0


def get_state(model):
    return getattr(model, _STATE_ATTR, None)


def _refresh(model, state):
    from keras_compress.importance.api import score

    x, y = state.data
    scores = score(model, (x, y), method=state.config.method, max_batches=state.config.max_batches)
    for item in state.weights:
        item.coefficients.assign(reg_ops.importance_coefficients(scores[item.name], state.config.epsilon))


def regularize(model, config=None, data=None):
    """Adds the importance-weighted penalty to `model`'s weights, in place.

    Args:
        model: a built Keras model.
        config: an `ImportanceRegularizerConfig`.
        data: `(x, y)` samples the scores are computed on (labels needed,
            except for `method="magnitude"`).

    Returns:
        The same model; compile and fit it (with
        `ImportanceRegularizerCallback()` to refresh the scores).

    Raises:
        ValueError: for a model already regularized, no weights to
            regularize, or missing data.

    Example:
    >>> kc.importance.regularize(model, ImportanceRegularizerConfig(1e-5), (x[:2048], y[:2048]))
    >>> model.fit(x, y, callbacks=[kc.importance.ImportanceRegularizerCallback()])
    """
    config = ImportanceRegularizerConfig() if config is None else config
    if not isinstance(config, ImportanceRegularizerConfig):
        raise TypeError(f"config must be an ImportanceRegularizerConfig. Received: {type(config).__name__}")
    if get_state(model) is not None:
        raise ValueError(f"Model {model.name!r} already carries the importance regularizer; strip it first.")
    if data is None and config.method != "magnitude":
        raise ValueError(f"method={config.method!r} needs data=(x, y) to score the weights.")
    chosen, _ = walk.find_weights(model, config.layers)
    if not chosen:
        raise ValueError(f"Model {model.name!r} has no weights to regularize (layers={config.layers!r}).")
    weights = [
        _Regularized(ref.variable, walk.weight_name(model, ref.variable),
                     keras.Variable(np.ones(ref.variable.shape, "float32"), trainable=False,
                                    name=ref.variable.name + "_importance_coefficients"),
                     ref.variable.regularizer)
        for ref in chosen
    ]
    state = RegularizerState(config, weights, None if data is None else (np.asarray(data[0]), np.asarray(data[1])))
    if state.data is None:
        state.data = (np.zeros((1,) + tuple(model.inputs[0].shape[1:]), "float32"), np.zeros((1,), "int32"))
    _refresh(model, state)
    for item in weights:
        item.variable.regularizer = ImportanceRegularizer(item.coefficients, config.strength, config.norm)
    attach(model, _STATE_ATTR, state)
    reset_compiled_functions(model)
    return model


class ImportanceRegularizerCallback(keras.callbacks.Callback):
    """Refreshes the importance scores every `config.refresh_every` steps in `fit`."""

    def on_train_batch_begin(self, batch, logs=None):
        state = get_state(self.model)
        if state is None:
            raise ValueError("ImportanceRegularizerCallback: call keras_compress.importance.regularize first.")
        every = state.config.refresh_every
        if every is not None and state.step > 0 and state.step % every == 0:
            _refresh(self.model, state)
            if keras.backend.backend() != "tensorflow":
                # Outside TensorFlow the coefficients are constants of the compiled step.
                self.model.make_train_function(force=True)
        state.step += 1


@register_stripper
def strip(model):
    """Restores each weight's own regularizer."""
    state = get_state(model)
    if state is None:
        return model
    for item in state.weights:
        item.variable.regularizer = item.previous
    detach(model, _STATE_ATTR)
    reset_compiled_functions(model)
    return model
