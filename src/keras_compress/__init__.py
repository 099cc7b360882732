"""keras-compress: make Keras 3 models smaller and faster, with measured costs.

Importing it loads Keras and NumPy only; TensorFlow is imported by export.
"""

from keras_compress import datasets, evaluate, zoo
from keras_compress.pruning import (
    PruneConfig,
    PruningCallback,
    is_pruned,
    prune,
    pruning_summary,
    schedules,
    strip,
)

__version__ = "0.1.0"

__all__ = [
    "PruneConfig",
    "PruningCallback",
    "__version__",
    "datasets",
    "evaluate",
    "is_pruned",
    "prune",
    "pruning_summary",
    "schedules",
    "strip",
    "zoo",
]
