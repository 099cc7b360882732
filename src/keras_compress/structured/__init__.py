"""Structured pruning: remove whole channels, so every layer really shrinks."""

from keras_compress.structured.api import ChannelPlan, channel_groups, plan_channels, prune_channels
from keras_compress.structured.config import IMPORTANCES, ChannelPruneConfig
from keras_compress.structured.recalibrate import recalibrate_batchnorm
from keras_compress.structured.sparsity import channel_sparsity

__all__ = ["ChannelPlan", "ChannelPruneConfig", "IMPORTANCES", "channel_groups", "channel_sparsity", "recalibrate_batchnorm", "plan_channels", "prune_channels"]
