"""Named weights: importance scores per parameter, keyed by variable path."""

from keras_compress.importance.api import HESSIANS, METHODS, aggregate, score

__all__ = ["HESSIANS", "METHODS", "aggregate", "score"]
