"""The recipe's `prune_channels` step: `ChannelPruneConfig`'s fields.

    - prune_channels: {fraction: 0.5, importance: l1, round_to: 8}
    - finetune: {epochs: 2}

Iterative structured pruning is several of these, each followed by a
`finetune` step (each removes `fraction` of the channels left). The step
strips earlier state first, replaces the run's model by the smaller one and
re-measures its BatchNormalization statistics on training samples
(`recalibrate_batchnorm`).
"""

import dataclasses


from keras_compress.data.split import structure_length
from keras_compress.core.steps import Step, register_step
from keras_compress.structured.config import DATA_IMPORTANCES, ChannelPruneConfig

# Data-driven importances are scored on at most this many of the last training samples.
SCORE_SAMPLES = 2000
# BatchNormalization statistics are re-measured on this many training samples after pruning.
RECALIBRATION_SAMPLES = 2560


def _needs_data(config):
    return config.importance in DATA_IMPORTANCES or config.allocation == "sensitivity"


@register_step
@dataclasses.dataclass(frozen=True)
class ChannelPruneStep(Step):
    """Remove whole channels with `prune_channels(model, ChannelPruneConfig(**settings))`.

    Example:
    >>> ChannelPruneStep({"fraction": 0.25}).to_config().fraction
    0.25
    """

    name = "prune_channels"
    config_class = ChannelPruneConfig
    strips = True
    changes_weights = True

    def prepare(self, run, index, steps):
        # A subclassed model or an exclude that matches nothing fails before anything is written.
        from keras_compress.structured.api import plan_channels

        if not any(s.name == self.name for s in steps[: index - 1]):
            config = self.to_config()
            if _needs_data(config):  # scores and curves are measured when the step runs
                config = dataclasses.replace(config, importance="l1", allocation="uniform")
            try:
                plan_channels(run.model, config)
            except ValueError as error:
                raise ValueError(f"recipe step {index} ({self.name}): {error}") from None

    def run(self, run, index):
        from keras_compress.structured.api import build_pruned, plan_channels
        from keras_compress.structured.recalibrate import recalibrate_batchnorm

        run.strip()
        config = self.to_config()
        data = None
        if _needs_data(config):
            data = run.data.train.last(SCORE_SAMPLES)
            held_out = structure_length(data[0])
            run.log(f"step {index}: {config.importance} importance, {config.allocation} allocation, "
                    f"measured on {held_out} training samples")
        plan = plan_channels(run.model, config, data)
        summary = plan.summary()
        run.log(f"step {index}: prune_channels ({summary['groups_pruned']} of {summary['groups']} groups "
                f"narrowed, MACs {summary['macs_before']:,} -> {summary['macs_after']:,})")
        run.model = build_pruned(run.model, plan)
        # The statistics after narrowed layers no longer hold: re-measure them before fine-tuning.
        summary["batchnorm_recalibrated"] = recalibrate_batchnorm(run.model,
                                                                run.data.train.take(RECALIBRATION_SAMPLES)[0])
        if isinstance(plan.fraction, dict):
            run.techniques.append(f"channels to {config.macs_target:.0%} MACs by sensitivity")
        else:
            run.techniques.append(f"channels -{round(100 * plan.fraction):g}%")
        return {"step": index, "config": config.to_dict(), **summary}
