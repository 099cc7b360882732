"""Weight sharing (clustering) for Keras 3, no wrapper layers."""

from keras_compress.clustering.api import (
    ClusteringCallback,
    cluster,
    clustering_summary,
    is_clustered,
)
from keras_compress.clustering.config import ClusterConfig
from keras_compress.core import state as _state

# Fine-tuning adds the re-clustering callback to a clustered model.
_state.register_training_callback("clustering", is_clustered, ClusteringCallback)

__all__ = ["ClusterConfig", "ClusteringCallback", "cluster", "clustering_summary", "is_clustered"]
