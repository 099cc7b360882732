"""keras.applications through QAT to a full-integer int8 LiteRT file (issue #19 probe).

Each model (weights=None, small inputs, random data) is prepared for QAT,
calibrated on 16 samples, exported to int8 and run by the stock LiteRT
interpreter; the table says how long each part took and whether the
artifact's predictions agree with the Keras QAT model's.

    KERAS_BACKEND=tensorflow python bench/architectures.py --models DenseNet121
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402
from keras_compress.export.litert import export_litert, litert_predict  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="DenseNet121,MobileNetV2,ResNet50")
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="kc-architectures-")
    print("| Model | quantize (s) | int8 export (s) | max |LiteRT − Keras| | top-1 agreement |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        model = getattr(keras.applications, name)(input_shape=(args.size, args.size, 3), weights=None, classes=10)
        x = np.random.default_rng(0).random((32, args.size, args.size, 3)).astype("float32")
        start = time.perf_counter()
        kc.quantize(model, kc.QATConfig(), calibration_data=x[:16])
        quantized = time.perf_counter()
        path = export_litert(model, os.path.join(folder, f"{name}.tflite"), "int8")
        exported = time.perf_counter()
        got, want = litert_predict(path, x), keras.ops.convert_to_numpy(model(x))
        print(f"| {name} | {quantized - start:.1f} | {exported - quantized:.1f} | "
              f"{float(np.abs(got - want).max()):.4f} | {float(np.mean(got.argmax(1) == want.argmax(1))):.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
