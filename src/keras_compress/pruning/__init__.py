"""Magnitude pruning for Keras 3: unstructured, block and N:M, no wrappers."""

from keras_compress.pruning import schedules
from keras_compress.pruning.api import is_pruned, prune, pruning_summary, strip
from keras_compress.pruning.callbacks import PruningCallback
from keras_compress.pruning.config import PATTERNS, SCHEDULES, PruneConfig

__all__ = [
    "PATTERNS", "SCHEDULES", "PruneConfig", "PruningCallback",
    "is_pruned", "prune", "pruning_summary", "schedules", "strip",
]
