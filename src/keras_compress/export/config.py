"""`ExportConfig`: which artifacts a run writes. Importing it loads no TensorFlow."""

import dataclasses

from keras_compress.core.config import BaseConfig

# LiteRT's formats (export/litert.py converts them; it imports TensorFlow lazily).
LITERT_FORMATS = ("float32", "float16", "dynamic_int8", "int8")
# "keras" is the `.keras` model; "archive" keras-compress's own compact format (export/archive.py).
EXPORT_FORMATS = ("keras", "archive") + LITERT_FORMATS


@dataclasses.dataclass(frozen=True)
class ExportConfig(BaseConfig):
    """The artifacts to write: `"keras"` for `model.keras`, LiteRT formats as `model_<fmt>.tflite`.

    Args:
        formats: names drawn from `EXPORT_FORMATS` (one name may be given as a string).
        calibration_samples: training samples that calibrate the int8
            artifact of a model not trained with QAT, >= 1.
        int8_io: the int8 artifact takes and returns int8 tensors (needs
            `"int8"` in `formats`).
        per_channel: the calibrated int8 artifact has one weight scale per
            output channel (default) or, with `false`, one per tensor: a
            model clustered per tensor then stores its shared values as as
            many int8 values, which compresses better
            (`export_litert(per_channel=...)`). A QAT model's scales are its
            QATConfig's.
        select_tf_ops: let the converter use TensorFlow ops (Flex) where
            LiteRT has no builtin kernel; such an artifact needs the Select
            TensorFlow ops delegate, and its report row says so instead of
            measuring it (default false: export refuses such a model).

    Raises:
        ValueError: on an unknown or repeated format, a bad sample count, or
            `int8_io` without `"int8"`.

    Example:
    >>> ExportConfig(formats=["keras", "int8"]).formats
    ('keras', 'int8')
    """

    formats: tuple = ("keras", "float32", "int8")
    calibration_samples: int = dataclasses.field(default=256, metadata={"minimum": 1})
    int8_io: bool = False
    per_channel: bool = True
    select_tf_ops: bool = False

    def __post_init__(self):
        formats = self.formats
        if isinstance(formats, str):
            formats = (formats,)
        if not isinstance(formats, (list, tuple)) or not formats:
            raise ValueError(f"'formats' must be a non-empty list drawn from {list(EXPORT_FORMATS)}. "
                             f"Received: formats={self.formats!r}")
        for fmt in formats:
            if fmt not in EXPORT_FORMATS:
                raise ValueError(f"unknown export format {fmt!r}. Allowed formats: {list(EXPORT_FORMATS)}")
        duplicates = sorted({fmt for fmt in formats if list(formats).count(fmt) > 1})
        if duplicates:
            raise ValueError(f"export format(s) listed twice: {duplicates}")
        object.__setattr__(self, "formats", tuple(formats))
        samples = self.calibration_samples
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"'calibration_samples' must be an integer >= 1. Received: calibration_samples={samples!r}")
        if not isinstance(self.per_channel, bool):
            raise ValueError(f"'per_channel' must be true or false. Received: per_channel={self.per_channel!r}")
        if not isinstance(self.select_tf_ops, bool):
            raise ValueError(f"'select_tf_ops' must be true or false. Received: select_tf_ops={self.select_tf_ops!r}")
        if not isinstance(self.int8_io, bool):
            raise ValueError(f"'int8_io' must be true or false. Received: int8_io={self.int8_io!r}")
        if self.int8_io and "int8" not in self.formats:
            raise ValueError("'int8_io: true' makes the int8 artifact's input and output int8: add int8 to formats")
