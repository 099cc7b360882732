"""Named weights: importance scores per parameter, keyed by variable path."""

from keras_compress.importance.analysis import analyze
from keras_compress.importance.fidelity import explanation_fidelity
from keras_compress.importance.api import HESSIANS, METHODS, aggregate, score
from keras_compress.importance.regularizer import (
    ImportanceRegularizer,
    ImportanceRegularizerCallback,
    ImportanceRegularizerConfig,
    regularize,
)
from keras_compress.importance.tensorboard import CompressionTensorBoard
from keras_compress.importance.sensitivity import allocate, auto_layer_targets, sensitivity

__all__ = ["CompressionTensorBoard", "HESSIANS", "METHODS", "ImportanceRegularizer", "ImportanceRegularizerCallback",
           "ImportanceRegularizerConfig", "aggregate", "analyze", "explanation_fidelity", "regularize", "allocate", "auto_layer_targets", "score", "sensitivity"]
