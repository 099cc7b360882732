"""keras-compress: make Keras 3 models smaller and faster, with measured costs.

Importing it loads Keras and NumPy only; TensorFlow is imported by export.
"""

from keras_compress import datasets, evaluate, importance, zoo
from keras_compress.clustering import ClusterConfig, ClusteringCallback, cluster, clustering_summary, is_clustered
from keras_compress.core.state import strip
from keras_compress.quantization import QATConfig, is_quantized, quantization_summary, quantize
from keras_compress.pruning import PruneConfig, PruningCallback, is_pruned, prune, pruning_summary, schedules

__version__ = "0.1.0"

__all__ = [
    "ClusterConfig",
    "ClusteringCallback",
    "cluster",
    "clustering_summary",
    "is_clustered",
    "PruneConfig",
    "QATConfig",
    "PruningCallback",
    "__version__",
    "datasets",
    "evaluate",
    "importance",
    "is_pruned",
    "prune",
    "pruning_summary",
    "quantization_summary",
    "quantize",
    "is_quantized",
    "schedules",
    "strip",
    "zoo",
]
