"""Writers of shippable artifacts, and the runtimes that measure them.

The only part of keras-compress that imports TensorFlow and LiteRT, and only
inside the functions that need them: importing this package stays light.

Example:
>>> from keras_compress import export
>>> path = export.export_litert(model, "runs/model_int8.tflite", "int8",
...                             representative_data=x_train)
>>> export.litert_accuracy(path, x_test, y_test)
0.9907
"""

from keras_compress.export.config import EXPORT_FORMATS, LITERT_FORMATS, ExportConfig
from keras_compress.export.litert import (
    FORMATS,
    ConversionError,
    LiteRTModel,
    export_all,
    export_litert,
    flex_ops,
    litert_accuracy,
    litert_latency,
    litert_predict,
)

__all__ = [
    "ConversionError",
    "EXPORT_FORMATS",
    "ExportConfig",
    "LITERT_FORMATS",
    "FORMATS",
    "LiteRTModel",
    "export_all",
    "export_litert",
    "flex_ops",
    "litert_accuracy",
    "litert_latency",
    "litert_predict",
]
