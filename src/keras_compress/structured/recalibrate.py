"""BatchNormalization recalibration (lives in `keras_compress.training.batchnorm`; this path still imports)."""

from keras_compress.training.batchnorm import recalibrate_batchnorm

__all__ = ["recalibrate_batchnorm"]
