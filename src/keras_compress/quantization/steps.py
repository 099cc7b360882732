"""The recipe's `quantize` step: `QATConfig`'s fields, plus `calibration_samples`.

    - quantize: {weight_bits: 8, activation_bits: 8, calibration_samples: 1000}

The step strips earlier pruning first (pruned zeros stay zero:
`preserve_zeros` defaults to true; clustering stays on, so its constraint
keeps each weight on a shared value while QAT trains), initialises the
activation ranges on the first `calibration_samples` training samples, and
the `finetune` steps after it train with fake quantization. The export step
writes the `int8` LiteRT artifact from the trained ranges.
"""

import dataclasses


from keras_compress.data.split import structure_length
from keras_compress.core.steps import Key, Step, fail, register_step, where
from keras_compress.quantization.config import QATConfig

CALIBRATION_SAMPLES = 1000


@register_step
@dataclasses.dataclass(frozen=True)
class QuantizeStep(Step):
    """Prepare for quantization-aware training with `QATConfig(**settings)`.

    Example:
    >>> QuantizeStep({"weight_bits": 8}).to_config().weight_bits
    8
    """

    calibration_samples: int = CALIBRATION_SAMPLES

    name = "quantize"
    config_class = QATConfig
    options = {"calibration_samples": Key("int", CALIBRATION_SAMPLES, minimum=1)}
    strips = True

    def to_dict(self):
        return {self.name: {**super().to_dict()[self.name], "calibration_samples": self.calibration_samples}}

    def check_order(self, index, steps):
        for i, earlier in enumerate(steps[: index - 1], 1):
            if isinstance(earlier, QuantizeStep):
                fail(where(index, self.name), "the model is already prepared for QAT by an earlier "
                                              "quantize step; a recipe quantizes once")
        for i, later in enumerate(steps[index:], index + 1):
            if later.changes_weights:
                fail(where(i, later.name), f"{later.name} after quantize: prune and cluster first, "
                                           "then quantize (QAT keeps pruned zeros)")

    def run(self, run, index):
        from keras_compress.pruning import api as pruning
        from keras_compress.quantization import quantization_summary, quantize

        pruning.strip(run.model)
        config = self.to_config()
        x_calibration, _ = run.data.train.take(self.calibration_samples)
        samples = structure_length(x_calibration)
        run.log(f"step {index}: quantize (QAT, {config.weight_bits}-bit weights, "
                f"{config.activation_bits}-bit activations, calibrated on {samples} samples)")
        run.model = quantize(run.model, config, calibration_data=x_calibration)
        run.techniques.append(f"QAT w{config.weight_bits}a{config.activation_bits}")
        return {"step": index, "config": config.to_dict(), "calibration_samples": samples,
                "layers": [{k: row[k] for k in ("layer", "treatment", "reason")}
                           for row in quantization_summary(run.model)]}
