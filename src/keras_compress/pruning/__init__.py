"""Magnitude pruning for Keras 3: unstructured, block and N:M, no wrappers."""

from keras_compress.pruning import schedules
from keras_compress.pruning.api import is_pruned, prune, pruning_summary, strip
from keras_compress.pruning.callbacks import PruningCallback
from keras_compress.pruning.config import PATTERNS, SCHEDULES, PruneConfig
from keras_compress.core import state as _state

# Fine-tuning adds the mask-updating callback to a model being pruned, and the
# recipe runner records per-variable sparsity before it strips.
_state.register_training_callback("pruning", is_pruned, PruningCallback)
_state.register_summary("pruning", lambda model: pruning_summary(model) if is_pruned(model) else None)

__all__ = [
    "PATTERNS", "SCHEDULES", "PruneConfig", "PruningCallback",
    "is_pruned", "prune", "pruning_summary", "schedules", "strip",
]
