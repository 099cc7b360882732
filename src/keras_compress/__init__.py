"""keras-compress: make Keras 3 models smaller and faster, with measured costs.

The public names load on first use (PEP 562), so `import keras_compress`
is cheap and the command line can quiet TensorFlow's start-up logging
before anything imports Keras. Using a name imports Keras and NumPy only;
TensorFlow is imported by export.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it (a module name alone: the module itself)
_NAMES = {
    "ClusterConfig": "keras_compress.clustering",
    "ClusteringCallback": "keras_compress.clustering",
    "cluster": "keras_compress.clustering",
    "clustering_summary": "keras_compress.clustering",
    "is_clustered": "keras_compress.clustering",
    "PruneConfig": "keras_compress.pruning",
    "PruningCallback": "keras_compress.pruning",
    "is_pruned": "keras_compress.pruning",
    "prune": "keras_compress.pruning",
    "pruning_summary": "keras_compress.pruning",
    "schedules": "keras_compress.pruning",
    "QATConfig": "keras_compress.quantization",
    "is_quantized": "keras_compress.quantization",
    "quantization_summary": "keras_compress.quantization",
    "quantize": "keras_compress.quantization",
    "strip": "keras_compress.core.state",
    "ChannelPruneConfig": "keras_compress.structured",
    "channel_groups": "keras_compress.structured",
    "prune_channels": "keras_compress.structured",
    "distill": "keras_compress.training",
    "finetune": "keras_compress.training",
    "ensemble": None,
    "data": None,
    "datasets": None,
    "metrics": None,
    "search": None,
    "evaluate": None,
    "importance": None,
    "zoo": None,
}

__all__ = sorted(_NAMES) + ["__version__"]


def __getattr__(name):
    if name not in _NAMES:
        raise AttributeError(f"module 'keras_compress' has no attribute {name!r}")
    source = _NAMES[name]
    if source is None:
        value = importlib.import_module(f"keras_compress.{name}")
    else:
        value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES))
