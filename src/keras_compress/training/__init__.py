"""Fine-tuning a model under compression: the `finetune` verb and its config."""

from keras_compress.training.api import finetune
from keras_compress.training.config import FinetuneConfig
from keras_compress.training.distill import distill

__all__ = ["FinetuneConfig", "distill", "finetune"]
