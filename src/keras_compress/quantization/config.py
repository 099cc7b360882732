"""`QATConfig`: settings of quantization-aware training."""

import dataclasses

from keras_compress.core.config import BaseConfig
from keras_compress.ops.fake_quant import check_bits


@dataclasses.dataclass(frozen=True)
class QATConfig(BaseConfig):
    """How `quantize` prepares a model for quantization-aware training.

    The defaults are LiteRT's int8 scheme: weights symmetric per output
    channel, activations asymmetric per tensor.

    Args:
        weight_bits: bit width of weights, 2 to 8. Only 8 exports to a
            LiteRT int8 model; fewer bits are simulated for experiments (the
            exported file still stores 8-bit integers, on a coarser grid).
        activation_bits: bit width of activations, 2 to 8 (8 to export).
        per_channel: one weight range per output channel (LiteRT's scheme);
            False uses one range per tensor.
        ema_decay: decay of the moving average that tracks each activation
            range during `fit`, in [0, 1). The first batch sets the range.
        fold_batchnorm: fold each BatchNormalization into the Conv, Depthwise
            or Dense layer feeding it (as LiteRT does), so training sees the
            folded weights' rounding. Needs a Sequential or Functional graph;
            in a subclassed model BatchNormalization stays as it is.
        train_batchnorm: with `fold_batchnorm`, keep each folded
            BatchNormalization learning, as a folded conv-BN does in tfmot:
            in training the layer computes with its fake-quantized kernel
            and the normalization uses the batch's statistics (its scale,
            offset and moving statistics keep training); at inference,
            calibration and export the kernel and bias are folded with the
            moving statistics, so the int8 model is what Keras predicts.
            `False` folds once at `quantize` and freezes the normalization.
            Only where the fold commutes with the kernel's per-channel
            rounding (Conv2D/3D, depthwise with multiplier 1, `per_channel`);
            elsewhere (Dense, Conv1D, per-tensor) the normalization is folded
            and frozen. Default `False`: measured level within the seeds'
            spread (BN CNN +0.02 pt, MobileNetV2-style +0.15 pt, 3 seeds),
            60-90% slower per epoch, and a short run needs its moving
            statistics re-measured (BENCHMARKS, "Defaults").
        preserve_zeros: keep every weight that is exactly zero at zero during
            training (a pruned model stays pruned).
        quantize_inputs: fake-quantize the model's floating-point inputs, as
            a full-integer model quantizes them on entry.
        layers: which layers to quantize: None (all), a regex on layer
            names, or a callable `layer -> bool`. Layers left out stay float
            and are named in the report.
        version: config format version.

    Example:
    >>> model = keras_compress.quantize(model, QATConfig())
    >>> model.fit(x, y, epochs=1)
    >>> keras_compress.export.export_litert(model, "m.tflite", "int8")
    """

    weight_bits: int = 8
    activation_bits: int = 8
    per_channel: bool = True
    ema_decay: float = 0.99
    fold_batchnorm: bool = True
    train_batchnorm: bool = False
    preserve_zeros: bool = True
    quantize_inputs: bool = True
    # In a recipe `layers` is a regex; Python also takes a callable.
    layers: object = dataclasses.field(default=None, metadata={"recipe_kind": "regex"})

    def __post_init__(self):
        check_bits(self.weight_bits, "weight_bits")
        check_bits(self.activation_bits, "activation_bits")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)) or not (
            0.0 <= self.ema_decay < 1.0
        ):
            raise ValueError(f"ema_decay must be a number in [0, 1). Received: ema_decay={self.ema_decay!r}")
        for name in ("per_channel", "fold_batchnorm", "train_batchnorm", "preserve_zeros", "quantize_inputs"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False. Received: {name}={getattr(self, name)!r}")
        if self.layers is not None and not (isinstance(self.layers, str) or callable(self.layers)):
            raise TypeError(
                "layers must be None, a regex string or a callable layer -> bool. "
                f"Received: layers={self.layers!r}"
            )

    @property
    def deployable(self):
        """Whether the scheme exports as a LiteRT int8 model as trained."""
        return self.weight_bits == 8 and self.activation_bits == 8
