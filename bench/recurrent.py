"""Recurrent layers in LiteRT (issue #19): unrolled exports that the stock interpreter runs, float32 and int8.

    python bench/recurrent.py --train-samples 20000 --epochs 3 --out bench/results/recurrent

MNIST read as sequences (28 time steps of 28 pixels). For each recurrent
layer (LSTM, GRU, SimpleRNN with 64 units, and a Bidirectional LSTM of 32),
a classifier `Input((28, 28)) -> recurrent -> Dense(10)` is trained
`--epochs` epochs, then exported float32 and PTQ int8 (256 calibration
images) through `export_litert`, which unrolls the layer over the fixed 28
steps; each file is run on the whole test split in the stock `ai_edge_litert`
interpreter (no Flex delegate). Reported: accuracy of Keras and of each
file, gzip bytes, batch-1 latency. Exits 1 when a file does not run or an
int8 file loses more than 1 pt against Keras.
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_INT8_LOSS_POINTS = 1.0


def main(argv=None):
    import keras
    import numpy as np

    import keras_compress as kc
    from keras_compress.evaluate import sizes
    from keras_compress.export.litert import export_litert, litert_accuracy, litert_latency

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "recurrent"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    (x, y), (x_test, y_test) = kc.datasets.load("mnist")
    x, x_test = x[: args.train_samples, :, :, 0], x_test[:, :, :, 0]
    y = y[: args.train_samples]
    layers = {
        "LSTM(64)": lambda: keras.layers.LSTM(64),
        "GRU(64)": lambda: keras.layers.GRU(64),
        "SimpleRNN(64)": lambda: keras.layers.SimpleRNN(64),
        "Bidirectional(LSTM(32))": lambda: keras.layers.Bidirectional(keras.layers.LSTM(32)),
    }
    rows, passed = [], True
    for name, make in layers.items():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((28, 28)), make(), keras.layers.Dense(10)])
        start = time.perf_counter()
        kc.zoo.train(model, x, y, epochs=args.epochs, verbose=0)
        keras_accuracy = float(np.mean(np.argmax(model.predict(x_test, batch_size=512, verbose=0), -1) == y_test))
        row = {"layer": name, "keras": keras_accuracy, "train_seconds": round(time.perf_counter() - start, 1)}
        for fmt in ("float32", "int8"):
            path = export_litert(model, os.path.join(args.out, f"{name.split('(')[0].lower()}_{fmt}.tflite"), fmt,
                                 representative_data=x[:256])
            row[fmt] = {"accuracy": float(litert_accuracy(path, x_test, y_test)),
                        "gzip_bytes": sizes(path)["gzip_bytes"],
                        "latency_b1_ms": 1000 * litert_latency(path, batch_size=1, runs=50)}
        lost = 100 * (keras_accuracy - row["int8"]["accuracy"])
        row["int8_lost_points"] = lost
        passed = passed and lost <= MAX_INT8_LOSS_POINTS
        rows.append(row)
        print(f"[bench recurrent] {name}: Keras {100 * keras_accuracy:.2f}%, float32 "
              f"{100 * row['float32']['accuracy']:.2f}%, int8 {100 * row['int8']['accuracy']:.2f}%", file=sys.stderr)
    table = ["| layer | Keras | float32 LiteRT | int8 LiteRT | int8 lost | gzip bytes f32 / int8 | "
             "latency b1 f32 / int8 (ms) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['layer']} | {100 * r['keras']:.2f}% | {100 * r['float32']['accuracy']:.2f}% | "
                     f"{100 * r['int8']['accuracy']:.2f}% | {r['int8_lost_points']:+.2f} pt | "
                     f"{r['float32']['gzip_bytes']:,} / {r['int8']['gzip_bytes']:,} | "
                     f"{r['float32']['latency_b1_ms']:.3f} / {r['int8']['latency_b1_ms']:.3f} |")
    summary = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Keras {keras.__version__} "
                          f"({keras.backend.backend()})",
               "command": f"python bench/recurrent.py --train-samples {args.train_samples} --epochs {args.epochs}",
               "rows": rows, "passed": passed, "table": "\n".join(table)}
    with open(os.path.join(args.out, "recurrent.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print("\n".join(table))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
