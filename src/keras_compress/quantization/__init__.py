"""Quantization-aware training (QAT) and quantization settings."""

from keras_compress.quantization.api import (
    calibrate,
    is_quantized,
    quantization_ranges,
    quantization_summary,
    quantize,
    register_layer_rule,
    set_quantization_ranges,
)
from keras_compress.quantization.config import QATConfig

__all__ = [
    "QATConfig",
    "calibrate",
    "is_quantized",
    "quantization_ranges",
    "quantization_summary",
    "quantize",
    "register_layer_rule",
    "set_quantization_ranges",
]
