"""The recipe's `finetune` step: `FinetuneConfig`'s fields.

    - finetune: {epochs: 3, batch_size: 128, learning_rate: 1.0e-4}
    - finetune: {epochs: 2, teacher: original, temperature: 4.0, distillation_weight: 0.7}

With a `teacher`, the fine-tuning distils (`keras_compress.training.distill`):
`original` is the model as it was before the recipe's first step.
"""

import dataclasses

from keras_compress.core.steps import Step, register_step
from keras_compress.training.config import FinetuneConfig


@register_step
@dataclasses.dataclass(frozen=True)
class FinetuneStep(Step):
    """Train for `epochs` with Adam at `learning_rate` (with each technique's callback).

    Example:
    >>> FinetuneStep({"epochs": 2, "learning_rate": 1e-4}).batch_size
    128
    """

    name = "finetune"
    config_class = FinetuneConfig
    trains = True

    def steps_per_epoch(self, num_samples: int) -> int:
        """Training steps in one epoch over `num_samples` samples."""
        return self.to_config().steps_per_epoch(num_samples)

    def prepare(self, run, index, steps):
        """The teacher: a copy of the model before the recipe's first step, or the `.keras` file loaded."""
        import keras

        teacher = self.to_config().teacher
        if teacher is None:
            return None
        if teacher == "original":
            clone = keras.models.clone_model(run.model)
            clone.set_weights(run.model.get_weights())
            return clone
        import os

        if not os.path.isfile(teacher):
            raise FileNotFoundError(f"recipe step {index} (finetune): teacher file not found: {teacher!r}")
        return keras.saving.load_model(teacher, compile=False)

    def run(self, run, index):
        from keras_compress.training import finetune

        config = self.to_config()
        if config.epochs:
            run.log(f"step {index}: finetune {config.epochs} epoch(s) x "
                    f"{config.steps_per_epoch(run.num_train_samples)} steps, learning rate {config.learning_rate:g}")
        record = finetune(run.model, run.data.train, None, config, teacher=run.prepared.get(index),
                          verbose=1 if run.progress else 0, loss=run.loss)
        if config.epochs and not run.techniques:
            run.techniques.append("finetune")
        return {"step": index, **record}
