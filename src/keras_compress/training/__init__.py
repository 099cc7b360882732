"""Fine-tuning a model under compression: the `finetune` verb and its config."""

from keras_compress.training.api import finetune
from keras_compress.training.config import FinetuneConfig
from keras_compress.training.distill import distill
from keras_compress.training.trainable import TrainableConfig, set_trainable

__all__ = ["FinetuneConfig", "TrainableConfig", "distill", "finetune", "set_trainable"]
