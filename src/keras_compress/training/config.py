"""`FinetuneConfig`: how long and how fast a compressed model trains."""

import dataclasses
import math

from keras_compress.core.config import BaseConfig


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(BaseConfig):
    """Fine-tuning settings: Adam at `learning_rate` for `epochs` epochs.

    Args:
        epochs: training epochs, >= 0 (0 trains nothing).
        batch_size: samples per training step, >= 1.
        learning_rate: Adam's learning rate, > 0.
        teacher: `None` (train on the labels), `"original"` (in a recipe:
            distil from the model as it was before the recipe's first step),
            a path to a `.keras` teacher, or a list of these (an averaged
            ensemble of them is the teacher, `keras_compress.ensemble.average`).
        temperature: softmax temperature of the distillation loss, > 0.
        distillation_weight: share of the loss that is distillation, in [0, 1].
        recalibrate_batchnorm: after training, re-measure the moving statistics
            of every trainable BatchNormalization on 20 batches of the
            training data (`training.batchnorm`). Default `True`: a short
            fine-tuning after pruning leaves statistics from before it
            (MobileNetV2-style net pruned 75% over 3 epochs: 11.8% test
            accuracy as trained, 70.9% recalibrated), and after a long one
            the re-measured statistics are the same to within noise.

    Raises:
        ValueError: on a value outside its allowed range.

    Example:
    >>> FinetuneConfig(epochs=2, learning_rate=1e-4).steps_per_epoch(60000)
    469
    """

    epochs: int = dataclasses.field(default=1, metadata={"minimum": 0})
    batch_size: int = dataclasses.field(default=128, metadata={"minimum": 1})
    learning_rate: float = 1e-4
    teacher: str | tuple[str, ...] | None = None
    temperature: float = 3.0
    distillation_weight: float = 0.5
    recalibrate_batchnorm: bool = True

    def __post_init__(self):
        for name, low in (("epochs", 0), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"'{name}' must be an integer >= {low}. Received: {name}={value!r}")
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"'learning_rate' must be > 0. Received: learning_rate={rate!r}")
        if isinstance(self.teacher, list):
            object.__setattr__(self, "teacher", tuple(self.teacher))
        members = self.teacher if isinstance(self.teacher, tuple) else (self.teacher,)
        if self.teacher is not None and (not members or isinstance(self.teacher, tuple) and len(members) < 2 or not all(
                isinstance(m, str) and (m == "original" or m.endswith(".keras")) for m in members)):
            raise ValueError("'teacher' must be null, 'original', a path to a .keras file, or a list of 2 or more "
                             f"of these (an ensemble). Received: teacher={self.teacher!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or self.temperature <= 0:
            raise ValueError(f"'temperature' must be > 0. Received: temperature={self.temperature!r}")
        weight = self.distillation_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            raise ValueError(f"'distillation_weight' must be in [0, 1]. Received: distillation_weight={weight!r}")

    def steps_per_epoch(self, num_samples: int) -> int:
        """Training steps in one epoch over `num_samples` samples.

        Example:
        >>> FinetuneConfig(batch_size=128).steps_per_epoch(60000)
        469
        """
        return math.ceil(num_samples / self.batch_size)
