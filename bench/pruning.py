"""Pruning benchmark: LeNet-5 on MNIST through the demo's recipe.

From one trained baseline, runs the demo recipe (prune to 90% with a
polynomial schedule while fine-tuning, strip, export float32 and int8 LiteRT)
and checks the figures issue #3 asks for:

- test accuracy lost by pruning at most 0.1 percentage point;
- gzip bytes of the pruned int8 LiteRT artifact at most 1/20 of the baseline
  float32 artifact's gzip bytes;
- epoch time of the pruning fit over a plain fit, measured in one run, at
  most 1.15 (TensorFlow backend).

    KERAS_BACKEND=tensorflow python bench/pruning.py --out bench/results
    python bench/pruning.py --quick      # a small subset, a few minutes; no checks

Exits 1 when a full run misses a figure.
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402

import overhead  # noqa: E402
from keras_compress.cli import main as cli  # noqa: E402
from keras_compress.cli.recipe import DEMO_RECIPE, load_recipe  # noqa: E402
from keras_compress.cli.runner import run_recipe  # noqa: E402

MAX_ACCURACY_LOSS_POINTS = 0.1
MIN_GZIP_RATIO = 20.0
MAX_OVERHEAD = 1.15


def machine():
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, Keras {keras.__version__} ({keras.backend.backend()})"


def row(report, technique, fmt):
    for r in report.rows:
        if r.technique == technique and r.fmt == fmt:
            return r
    raise KeyError(f"no row ({technique}, {fmt}) in {[(r.technique, r.fmt) for r in report.rows]}")


def run(args):
    subset = 6000 if args.quick else None
    epochs = 2 if args.quick else args.baseline_epochs
    data = cli.load_data("mnist", subset)
    start = time.perf_counter()
    model, path = cli.demo_baseline(epochs, data, subset, progress=False)
    recipe = load_recipe(DEMO_RECIPE)
    report = run_recipe(model, recipe, data, os.path.join(args.out, "pruning_run"), progress=False,
                        title="bench: LeNet-5 on MNIST, demo recipe")
    recipe_seconds = time.perf_counter() - start
    base = row(report, "baseline", "float32")
    base_keras = next(r for r in report.rows if r.technique == "baseline" and r.keras_metric is not None)
    pruned_keras = next(r for r in report.rows if r.technique != "baseline" and r.fmt == "keras")
    pruned_f32 = next(r for r in report.rows if r.technique != "baseline" and r.fmt == "float32")
    pruned_int8 = next(r for r in report.rows if r.technique != "baseline" and r.fmt == "int8")
    timing = overhead.measure("lenet5", samples=6000 if args.quick else 20000, batch_size=128,
                              epochs=3, repeats=1 if args.quick else 3)
    result = {
        "machine": machine(),
        "baseline_epochs": epochs,
        "subset": subset,
        "baseline_keras_accuracy": base_keras.keras_metric,
        "baseline_float32_litert_accuracy": base.litert_metric,
        "pruned_keras_accuracy": pruned_keras.keras_metric,
        "pruned_float32_litert_accuracy": pruned_f32.litert_metric,
        "pruned_int8_litert_accuracy": pruned_int8.litert_metric,
        "accuracy_loss_points": 100 * (base_keras.keras_metric - pruned_keras.keras_metric),
        "int8_accuracy_loss_points": 100 * (base.litert_metric - pruned_int8.litert_metric),
        "baseline_float32_gzip_bytes": base.gzip_bytes,
        "pruned_float32_gzip_bytes": pruned_f32.gzip_bytes,
        "pruned_int8_gzip_bytes": pruned_int8.gzip_bytes,
        "int8_gzip_ratio": base.gzip_bytes / pruned_int8.gzip_bytes,
        "float32_gzip_ratio": base.gzip_bytes / pruned_f32.gzip_bytes,
        "latency_b1_ms": {"baseline_float32": base.latency_b1_ms, "pruned_int8": pruned_int8.latency_b1_ms},
        "overhead": timing,
        "recipe_wall_s": recipe_seconds,
        "report_table": report.markdown_table(),
    }
    return result


def checks(result):
    return [
        ("accuracy loss <= 0.1 pt", result["accuracy_loss_points"] <= MAX_ACCURACY_LOSS_POINTS,
         f"{result['accuracy_loss_points']:+.2f} pt"),
        ("int8 gzip ratio >= 20x", result["int8_gzip_ratio"] >= MIN_GZIP_RATIO, f"{result['int8_gzip_ratio']:.1f}x"),
        ("pruning overhead <= 1.15", result["overhead"]["overhead"] <= MAX_OVERHEAD,
         f"{result['overhead']['overhead']:.3f}"),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--quick", action="store_true", help="6,000 training images, 2 baseline epochs, no checks")
    parser.add_argument("--baseline-epochs", type=int, default=cli.DEMO_BASELINE_EPOCHS)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    result = run(args)
    result["checks"] = [{"name": n, "passed": ok, "value": v} for n, ok, v in checks(result)]
    with open(os.path.join(args.out, "pruning.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(result["report_table"])
    print(f"\nmachine: {result['machine']}")
    print(f"overhead: plain epoch {result['overhead']['plain_epoch_s']:.2f} s, pruning epoch "
          f"{result['overhead']['pruning_epoch_s']:.2f} s")
    failed = False
    for name, ok, value in checks(result):
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
        failed |= not ok
    return 1 if failed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
