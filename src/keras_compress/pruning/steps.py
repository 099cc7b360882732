"""The recipe's `prune` step: `PruneConfig`'s fields, plus `layers` and two `auto` values.

    - prune: {target_sparsity: 0.9, schedule: polynomial, initial_sparsity: 0.5,
              end_step: auto, layer_targets: auto, layers: "conv|fc"}

Recipe-only settings, resolved here before the step runs:
- `layers`: the regex `prune` takes as its `layers` argument;
- `end_step: auto`: the ramp ends after 2/3 of the fine-tuning steps that
  follow (until the next prune step);
- `layer_targets: auto`: per-layer targets from a sensitivity analysis on
  the last training samples (`prune(..., targets="auto")`).
"""

import dataclasses


from keras_compress.data.split import structure_length
from keras_compress.core.steps import AUTO, Key, RecipeError, Step, fail, register_step, where
from keras_compress.pruning.config import PruneConfig

# `end_step: auto` ends the sparsity ramp after this share of the fine-tuning steps.
AUTO_END_FRACTION = 2.0 / 3.0
# `layer_targets: auto` measures sensitivity on at most this many training samples.
AUTO_TARGET_SAMPLES = 2000


def _ramp_steps(steps, index):
    """The steps after `index` (1-based) that a prune step's ramp spans: up to the next prune step."""
    following = []
    for later in steps[index:]:
        if isinstance(later, PruneStep):
            break
        following.append(later)
    return following


def technique_label(config):
    """How a report names a pruning config: `prune 90%`, `prune 2:4`, `prune 50-93% per layer`.

    Example:
    >>> technique_label(PruneConfig(target_sparsity=0.9))
    'prune 90%'
    """
    if config.pattern == "n:m":
        label = f"prune {config.n}:{config.m}"
    elif config.layer_targets:
        values = [config.target_sparsity, *config.layer_targets.values()]
        label = f"prune {round(100 * min(values), 1):g}-{round(100 * max(values), 1):g}% per layer"
    else:
        label = f"prune {round(100 * config.target_sparsity, 1):g}%"
    if config.pattern == "block":
        label += f" block {config.block_shape[0]}x{config.block_shape[1]}"
    return label


@register_step
@dataclasses.dataclass(frozen=True)
class PruneStep(Step):
    """Prune with `PruneConfig(**settings)` on the layers matching `layers`.

    Attributes:
        settings: keyword arguments for `PruneConfig`; `end_step` may be
            `"auto"` (2/3 of the fine-tuning steps that follow) and
            `layer_targets` may be `"auto"` (from a sensitivity analysis).
        layers: regex filter on layer names / variable paths, or `None` (all).

    Example:
    >>> step = PruneStep({"target_sparsity": 0.9})
    >>> step.to_config().target_sparsity
    0.9
    """

    layers: str | None = None

    name = "prune"
    config_class = PruneConfig
    options = {"layers": Key("regex", nullable=True)}
    auto_keys = {"end_step": None, "layer_targets": "'auto' or a mapping {layer regex: sparsity}"}
    changes_weights = True

    @property
    def auto_targets(self) -> bool:
        """Whether `layer_targets` is `"auto"`: per-layer targets from a sensitivity analysis."""
        return self.settings.get("layer_targets") == AUTO

    @property
    def auto_end_step(self) -> bool:
        """Whether `end_step` is `"auto"` and must be resolved before running."""
        return self.settings.get("end_step") == AUTO

    def to_config(self, end_step=None):
        """Builds the `PruneConfig`, with `end_step` resolved when it was `"auto"`.

        Args:
            end_step: the resolved end step; required if `auto_end_step`.

        Returns:
            A `keras_compress.PruneConfig` (without `layer_targets` when they
            are `"auto"`: the runner resolves them on the model and data).

        Raises:
            ValueError: if `end_step` is `"auto"` and no `end_step` was given,
                or if `PruneConfig` rejects the settings.

        Example:
        >>> PruneStep({"schedule": "polynomial", "end_step": "auto"}).to_config(end_step=600).end_step
        600
        """
        settings = dict(self.settings)
        if self.auto_targets:
            settings.pop("layer_targets")
        if self.auto_end_step:
            if end_step is None:
                raise ValueError("end_step is 'auto': pass the resolved end_step to to_config()")
            settings["end_step"] = int(end_step)
        return PruneConfig(**settings)

    def validate(self):
        # An `auto` end step is checked with the smallest value it can resolve to.
        begin = self.settings.get("begin_step", 0)
        self.to_config(end_step=begin + 1 if self.auto_end_step else None)

    def check_order(self, index, steps):
        for earlier in reversed(steps[: index - 1]):
            if earlier.strips:
                break
            if isinstance(earlier, PruneStep):
                fail(where(index, self.name), "the model is still being pruned by an earlier prune step; "
                                              "add a '- strip: {}' step before pruning again")
        if self.auto_end_step and not any(s.trains and s.epochs > 0 for s in _ramp_steps(steps, index)):
            fail(where(index, self.name), "end_step: auto needs a finetune step with epochs >= 1 "
                                          "after this prune step")

    def prepare(self, run, index, steps):
        """The `PruneConfig` with `end_step: auto` resolved, tried on a clone of the model."""
        import keras

        from keras_compress.pruning import api

        end_step = None
        if self.auto_end_step:
            end_step = resolve_auto_end_step(self, [s for s in _ramp_steps(steps, index) if s.trains],
                                             run.num_train_samples)
        try:
            config = self.to_config(end_step=end_step)
        except (ValueError, TypeError) as error:
            raise RecipeError(f"{where(index, self.name)}: {error}") from None
        # A model with nothing to prune fails now, before anything is written.
        try:
            clone = keras.models.clone_model(run.model)
        except Exception:  # noqa: BLE001 - subclassed models may not clone; prune checks again later
            return config
        try:
            api.prune(clone, config, layers=self.layers)
        except ValueError as error:
            raise ValueError(f"{where(index, self.name)}: {error}") from None
        api.strip(clone)
        return config

    def run(self, run, index):
        from keras_compress.pruning import api

        config = run.prepared[index]
        auto = {}
        if self.auto_targets:
            # Sensitivity on the last training samples (the test split measures the result).
            held_out_data = run.data.train.last(AUTO_TARGET_SAMPLES)
            held_out = structure_length(held_out_data[0])
            auto = {"targets": AUTO, "data": held_out_data}
            run.log(f"step {index}: sensitivity analysis on {held_out} training samples (layer_targets: auto)")
        run.model = api.prune(run.model, config, layers=self.layers, **auto)
        config = api.get_state(run.model).config  # with the per-layer targets it chose
        run.log(f"step {index}: prune ({technique_label(config)}, schedule {config.schedule}, "
                f"end_step {config.end_step})")
        run.techniques.append(technique_label(config))
        return {"step": index, "config": config.to_dict(), "layers": self.layers}


def resolve_auto_end_step(step: PruneStep, finetune_steps, num_samples: int) -> int:
    """The end step `end_step: auto` stands for: 2/3 of the fine-tuning steps that follow.

    Args:
        step: the `PruneStep`.
        finetune_steps: the training steps its ramp spans (each with
            `epochs` and `steps_per_epoch(num_samples)`).
        num_samples: training samples per epoch.

    Returns:
        `begin_step + round(2/3 * total steps)`, at least `begin_step + 1`.

    Example:
    >>> resolve_auto_end_step(PruneStep({"end_step": "auto"}), [FinetuneStep({"epochs": 3})], 60000)
    938
    """
    total = sum(s.epochs * s.steps_per_epoch(num_samples) for s in finetune_steps)
    begin = step.settings.get("begin_step", 0)
    return begin + max(1, round(AUTO_END_FRACTION * total))
