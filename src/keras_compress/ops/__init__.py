"""Pure `keras.ops` maths, free of model walking; each runs on every backend."""

from keras_compress.ops.masks import block_mask, magnitude_mask, n_m_mask, sparsity

__all__ = ["block_mask", "magnitude_mask", "n_m_mask", "sparsity"]
