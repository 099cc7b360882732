"""Quantization benchmark: post-training int8 vs quantization-aware training.

For each model, from one trained float baseline (cached):
- float32 LiteRT artifact (the reference for size and latency);
- full-integer PTQ: the LiteRT converter calibrated on 1,000 training images;
- QAT: `keras_compress.quantize` (calibrated on the same 1,000 images), fine-
  tuned, exported with its trained ranges;
- a float control: the baseline fine-tuned with the same budget, so that what
  QAT gains from extra training is not credited to quantization.

Every accuracy is on the full test set (10,000 images) through the LiteRT
interpreter; latency is the median of 200 batch-1 runs, 1 thread, float32
and int8 artifacts measured back to back in the same process. The training
overhead of QAT is the median ratio of paired epochs (bench/overhead.py).

    KERAS_BACKEND=tensorflow python bench/qat.py --out bench/results
    KERAS_BACKEND=tensorflow python bench/qat.py --quick --out bench/results   # ~4 min
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402
import overhead  # noqa: E402
from keras_compress.cli import main as cli  # noqa: E402
from keras_compress.export import litert  # noqa: E402

# model -> (dataset, baseline epochs, QAT epochs, target: max loss in points vs float baseline)
CASES = {
    "lenet5": ("mnist", 8, 2, {"qat": 0.05, "ptq": 0.2}),
    "mobilenet_v2_tiny": ("fashion_mnist", 10, 2, {"qat": 0.3}),
}
FINE_TUNE_LR = 1e-4
CALIBRATION = 1000


def baseline(name, dataset, epochs, x, y):
    path = os.path.join(cli.cache_dir(), f"{name}-{dataset}-e{epochs}-{keras.backend.backend()}.keras")
    if os.path.isfile(path):
        return path
    keras.utils.set_random_seed(0)
    model = kc.zoo.build(name)
    kc.zoo.train(model, x, y, epochs=epochs, batch_size=128, learning_rate=1e-3, verbose=0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.save(path)
    return path


def keras_accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), axis=1) == y))


def artifact(path, xt, yt):
    raw = os.path.getsize(path)
    return {"path": path, "litert_accuracy": litert.litert_accuracy(path, xt, yt), "bytes": raw}


def latencies(paths, runs):
    """Batch-1 median latency of each artifact, interleaved in rounds."""
    runtimes = {k: litert.LiteRTModel(p, num_threads=1) for k, p in paths.items()}
    samples = {k: [] for k in paths}
    for _ in range(5):
        for k, runtime in runtimes.items():
            samples[k].append(runtime.latency(batch_size=1, runs=max(1, runs // 5), warmup=5))
    return {k: float(np.median(v)) for k, v in samples.items()}


def run_case(name, args, out):
    dataset, base_epochs, qat_epochs, targets = CASES[name]
    if args.quick:
        # One epoch on the whole training set: fewer steps leave BatchNormalization's
        # moving statistics unsettled and the float baseline useless.
        base_epochs, qat_epochs = 1, 1
    (x, y), (xt, yt) = kc.datasets.load(dataset)
    base_path = baseline(name, dataset, base_epochs, x, y)
    if args.quick:
        x, y, xt, yt = x[:12000], y[:12000], xt[:2000], yt[:2000]
    calibration = x[:CALIBRATION]
    folder = os.path.join(out, f"qat_{name}")
    os.makedirs(folder, exist_ok=True)
    result = {"model": name, "dataset": dataset, "baseline_epochs": base_epochs, "qat_epochs": qat_epochs,
              "seed": args.seed,
              "fine_tune_lr": FINE_TUNE_LR, "calibration_samples": CALIBRATION, "rows": {}}

    model = cli.load_model(base_path)
    result["float_keras_accuracy"] = keras_accuracy(model, xt, yt)
    paths = {
        "float32": litert.export_litert(model, os.path.join(folder, "float32.tflite"), "float32"),
        "ptq_int8": litert.export_litert(model, os.path.join(folder, "ptq_int8.tflite"), "int8",
                                         representative_data=calibration,
                                         num_calibration_samples=CALIBRATION),
    }

    control = cli.load_model(base_path)
    kc.zoo.compile_for_classification(control, FINE_TUNE_LR)
    keras.utils.set_random_seed(args.seed)  # the same shuffles for the control and QAT
    start = time.perf_counter()
    control.fit(x, y, epochs=qat_epochs, batch_size=128, verbose=0)
    result["float_fine_tuned"] = {"keras_accuracy": keras_accuracy(control, xt, yt),
                                  "seconds": time.perf_counter() - start}

    qat = cli.load_model(base_path)
    kc.quantize(qat, kc.QATConfig(), calibration_data=calibration)
    result["qat_calibrated_keras_accuracy"] = keras_accuracy(qat, xt, yt)
    kc.zoo.compile_for_classification(qat, FINE_TUNE_LR)
    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    qat.fit(x, y, epochs=qat_epochs, batch_size=128, verbose=0)
    result["qat_fit_seconds"] = time.perf_counter() - start
    result["qat_keras_accuracy"] = keras_accuracy(qat, xt, yt)
    paths["qat_int8"] = litert.export_litert(qat, os.path.join(folder, "qat_int8.tflite"), "int8")
    # Which test predictions the int8 model changes, beyond the accuracy net of them.
    keras_pred = np.argmax(qat.predict(xt, batch_size=512, verbose=0), axis=1)
    litert_pred = np.argmax(litert.litert_predict(paths["qat_int8"], xt), axis=1)
    result["qat_litert_keras_disagreements"] = int(np.sum(keras_pred != litert_pred))
    result["quantization_summary"] = [
        {k: v for k, v in row.items() if k in ("layer", "treatment", "reason")}
        for row in kc.quantization_summary(qat)
    ]

    for key, path in paths.items():
        result["rows"][key] = artifact(path, xt, yt)
    for key, value in latencies(paths, 100 if args.quick else 400).items():
        result["rows"][key]["latency_b1_s"] = value
    base = result["float_keras_accuracy"]
    rows = result["rows"]
    result["test_samples"] = int(len(xt))
    result["figures"] = {
        "ptq_loss_points": 100 * (base - rows["ptq_int8"]["litert_accuracy"]),
        "qat_loss_points": 100 * (base - rows["qat_int8"]["litert_accuracy"]),
        "qat_litert_minus_keras_points": 100 * (rows["qat_int8"]["litert_accuracy"] - result["qat_keras_accuracy"]),
        "qat_litert_keras_disagreement_rate": result["qat_litert_keras_disagreements"] / len(xt),
        "int8_speedup_b1": rows["float32"]["latency_b1_s"] / rows["qat_int8"]["latency_b1_s"],
        "ptq_speedup_b1": rows["float32"]["latency_b1_s"] / rows["ptq_int8"]["latency_b1_s"],
        "size_ratio": rows["float32"]["bytes"] / rows["qat_int8"]["bytes"],
        "targets": targets,
    }
    return result


def table(results):
    lines = ["| model | artifact | LiteRT accuracy | vs float baseline | bytes | ratio | batch-1 latency | speed-up |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rows, base = r["rows"], r["float_keras_accuracy"]
        ref = rows["float32"]
        for key in ("float32", "ptq_int8", "qat_int8"):
            row = rows[key]
            lines.append(
                f"| {r['model']} ({r['dataset']}) | {key} | {100 * row['litert_accuracy']:.2f}% | "
                f"{100 * (row['litert_accuracy'] - base):+.2f} pt | {row['bytes']:,} | "
                f"{ref['bytes'] / row['bytes']:.2f}x | {1000 * row['latency_b1_s']:.3f} ms | "
                f"{ref['latency_b1_s'] / row['latency_b1_s']:.2f}x |")
        lines.append(
            f"| {r['model']} ({r['dataset']}) | float fine-tuned (control) | "
            f"{100 * r['float_fine_tuned']['keras_accuracy']:.2f}% (Keras) | "
            f"{100 * (r['float_fine_tuned']['keras_accuracy'] - base):+.2f} pt | | | | |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--quick", action="store_true",
                        help="1 baseline epoch; 1 fine-tuning epoch on 12k images; 2k test images")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="seed of both fine-tunings (control and QAT)")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    results = [run_case(name, args, out) for name in args.models.split(",")]
    summary = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}, "
                   f"Keras {keras.__version__}, backend {keras.backend.backend()}",
        "command": "KERAS_BACKEND=tensorflow python bench/qat.py" + (" --quick" if args.quick else "")
                   + (f" --seed {args.seed}" if args.seed else ""),
        "results": results,
        "table": table(results),
    }
    if not args.skip_overhead:
        summary["overhead"] = overhead.measure("lenet5", samples=6000 if args.quick else 20000,
                                               epochs=2 if args.quick else 3, repeats=2 if args.quick else 3,
                                               technique="qat")
    print(summary["table"])
    for r in results:
        f = r["figures"]
        print(f"{r['model']}: PTQ loss {f['ptq_loss_points']:+.2f} pt, QAT loss {f['qat_loss_points']:+.2f} pt, "
              f"QAT LiteRT-Keras {f['qat_litert_minus_keras_points']:+.2f} pt "
              f"({r['qat_litert_keras_disagreements']} of {r['test_samples']} predictions differ), int8 speed-up {f['int8_speedup_b1']:.2f}x, "
              f"size {f['size_ratio']:.2f}x; float control {100 * r['float_fine_tuned']['keras_accuracy']:.2f}%")
    if "overhead" in summary:
        print(f"QAT overhead (LeNet-5, paired epochs): {summary['overhead']['overhead']:.3f}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "qat.json" if not args.quick else "qat_quick.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
