"""Ensembles as teachers: several trained models as one Keras model, measurable and distillable like any other.

    >>> teacher = keras_compress.ensemble.average([a, b, c])
    >>> stacked = keras_compress.ensemble.stacking([a, b, c], (x_held_out, y_held_out))

Both return a plain Functional `keras.Model` whose members are nested
models: it evaluates, saves, exports to LiteRT and serves as a
distillation teacher (`finetune(..., teacher=ensemble)`, or a recipe's
`finetune: {teacher: [a.keras, b.keras, c.keras]}`).
"""

from keras_compress.ensemble.api import KINDS, EnsembleError, average, kind_of, stacking

__all__ = ["KINDS", "EnsembleError", "average", "kind_of", "stacking"]
