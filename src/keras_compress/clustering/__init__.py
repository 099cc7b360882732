"""Weight sharing (clustering) for Keras 3, no wrapper layers."""

from keras_compress.clustering.api import (
    ClusteringCallback,
    cluster,
    clustering_summary,
    is_clustered,
)
from keras_compress.clustering.config import ClusterConfig

__all__ = ["ClusterConfig", "ClusteringCallback", "cluster", "clustering_summary", "is_clustered"]
