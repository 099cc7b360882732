"""Optional dependencies of the export package, imported when first needed.

TensorFlow (the LiteRT converter) and `ai_edge_litert` (the interpreter) are
heavy and optional: the modules that use them import them through `_require`,
inside the functions that need them, so a missing one fails with an install
hint and importing `keras_compress.export` stays light.
"""

import importlib
import os
import sys

_INSTALL_HINT = 'Install it with: pip install "keras-compress[export]"'


def _require(module_name, purpose):
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the `{module_name}` package, which could not be "
            f"imported ({error}). {_INSTALL_HINT}"
        ) from error


def _import_tensorflow():
    if "tensorflow" not in sys.modules:
        # TF's C++ logging reads this once, when TensorFlow loads.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_compress.core import quiet

    with quiet.native_stderr_filtered():
        return _require("tensorflow", "LiteRT export")
