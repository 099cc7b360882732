"""Structured (channel) pruning: is the model really faster? Side by side, one process.

For each zoo model: one trained baseline (cached), then `prune_channels`
and a fine-tuning of `--finetune-epochs`; the baseline gets the same extra
epochs as a control, so the accuracy cost is read against an equal
training budget. Each model is exported as float32 and full-integer int8
LiteRT (calibrated on 500 training images) and timed with the LiteRT
interpreter (one thread) in interleaved rounds; a speed-up is the median
of the per-round ratios against the baseline float32 artifact.

    KERAS_BACKEND=tensorflow python bench/structured.py --models mobilenet_v2_tiny,resnet20
    KERAS_BACKEND=tensorflow python bench/structured.py --quick     # one epoch each, a subset
    KERAS_BACKEND=tensorflow python bench/structured.py --applications   # keras.applications at 50%
    KERAS_BACKEND=tensorflow python bench/structured.py --one-shot --models mobilenet_v2_tiny  # no fine-tuning
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402
import qat as qat_bench  # noqa: E402 - its cached baselines
from keras_compress.cli import main as cli  # noqa: E402
from keras_compress.core.macs import macs  # noqa: E402
from keras_compress.export import litert  # noqa: E402
from keras_compress.structured import ChannelPruneConfig, plan_channels  # noqa: E402
from keras_compress.structured.api import build_pruned  # noqa: E402
from keras_compress.training import FinetuneConfig, finetune  # noqa: E402


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), axis=1) == y))


def fine_tuned_control(base, x, y, fine, seed):
    """The baseline given the same fine-tuning as the pruned model: the equal-budget control."""
    keras.utils.set_random_seed(seed)
    control = keras.models.clone_model(base)
    control.set_weights(base.get_weights())
    finetune(control, x, y, fine)
    return control


def paired_speedups(paths, reference, rounds, runs):
    """Median batch-1 and batch-32 latency of each artifact, and its median per-round speed-up."""
    runtimes = {k: litert.LiteRTModel(p, num_threads=1) for k, p in paths.items()}
    out = {}
    for batch, count in ((1, runs), (32, max(5, runs // 20))):
        samples = {k: [] for k in paths}
        for _ in range(rounds):
            for k, runtime in runtimes.items():
                samples[k].append(runtime.latency(batch_size=batch, runs=count, warmup=3))
        for k in paths:
            ratios = [r / s for r, s in zip(samples[reference], samples[k])]
            out.setdefault(k, {})[f"latency_b{batch}_ms"] = 1000 * float(np.median(samples[k]))
            out[k][f"speedup_b{batch}"] = float(np.median(ratios))
    return out


def run_model(name, args, folder):
    (x, y), (xt, yt) = kc.datasets.load(args.dataset)
    if args.quick:
        x, y, xt, yt = x[:6000], y[:6000], xt[:2000], yt[:2000]
    base = cli.load_model(qat_bench.baseline(name, args.dataset + ("-quick" if args.quick else ""),
                                             args.epochs, x, y))
    fine = FinetuneConfig(epochs=args.finetune_epochs, batch_size=128, learning_rate=args.learning_rate)
    control = fine_tuned_control(base, x, y, fine, args.seed)
    start = time.perf_counter()
    config = ChannelPruneConfig(fraction=args.fraction, round_to=args.round_to, importance=args.importance,
                                allocation=args.allocation, macs_target=args.macs_target)
    held_out = (x[-2000:], y[-2000:])
    plan = plan_channels(base, config, data=held_out if args.allocation == "sensitivity" else None)
    pruned = build_pruned(base, plan)
    prune_seconds = time.perf_counter() - start
    if args.recalibrate:
        from keras_compress.structured import recalibrate_batchnorm

        recalibrate_batchnorm(pruned, x[:2560])  # as the recipe step does
    keras.utils.set_random_seed(args.seed)
    pruned_at_once = accuracy(pruned, xt, yt)
    finetune(pruned, x, y, dataclasses.replace(fine, distillation_weight=args.distillation_weight),
             teacher=base if args.teacher else None)
    calibration = dict(representative_data=x[:500], num_calibration_samples=500)
    models = {"baseline": base, "baseline + fine-tuning (control)": control, "channels pruned": pruned}
    paths, rows = {}, {}
    for label, model in models.items():
        for fmt in ("float32", "int8"):
            key = f"{label} {fmt}"
            path = os.path.join(folder, f"{name}-{len(paths)}-{fmt}.tflite")
            litert.export_litert(model, path, fmt, **(calibration if fmt == "int8" else {}))
            paths[key] = path
            rows[key] = {"model": name, "artifact": key, "keras_accuracy": accuracy(model, xt, yt),
                         "litert_accuracy": litert.litert_accuracy(path, xt, yt),
                         "macs": macs(model)["total"], "params": model.count_params(),
                         "bytes": os.path.getsize(path)}
    timing = paired_speedups(paths, "baseline float32", args.rounds, args.runs)
    for key in rows:
        rows[key].update(timing[key])
    summary = plan.summary()
    fraction = summary["fraction"]
    return {"model": name, "fraction": fraction, "allocation": args.allocation, "macs_target": args.macs_target,
            "distilled_from_baseline": args.teacher, "recalibrated": args.recalibrate, "round_to": args.round_to, "importance": args.importance,
            "baseline_epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
            "accuracy_right_after_pruning": pruned_at_once, "plan_seconds_and_build": prune_seconds,
            "groups": summary["groups"], "groups_pruned": summary["groups_pruned"],
            "left_whole_by_reason": summary["left_whole_by_reason"], "rows": list(rows.values())}


def run_applications(args):
    """keras.applications (weights=None, 96x96): 50% of each prunable group, built, saved, loaded, exported."""
    out = []
    folder = tempfile.mkdtemp(prefix="kc-structured-apps-")
    for app in ("MobileNetV2", "ResNet50", "EfficientNetB0", "DenseNet121"):
        model = getattr(keras.applications, app)(input_shape=(96, 96, 3), weights=None, classes=10)
        start = time.perf_counter()
        plan = plan_channels(model, ChannelPruneConfig(fraction=0.5))
        pruned = build_pruned(model, plan)
        seconds = time.perf_counter() - start
        path = os.path.join(folder, f"{app}.keras")
        pruned.save(path)
        loaded = keras.saving.load_model(path)
        x = np.random.default_rng(0).random((2, 96, 96, 3)).astype("float32")
        same = bool(np.allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5))
        tflite = litert.export_litert(pruned, os.path.join(folder, f"{app}.tflite"), "float32")
        runs = bool(np.all(np.isfinite(litert.litert_predict(tflite, x))))
        summary = plan.summary()
        out.append({"model": app, "seconds": round(seconds, 2), "macs_before": summary["macs_before"],
                    "macs_after": summary["macs_after"], "macs_ratio": summary["macs_ratio"],
                    "params_before": model.count_params(), "params_after": pruned.count_params(),
                    "groups": summary["groups"], "groups_pruned": summary["groups_pruned"],
                    "left_whole_by_reason": summary["left_whole_by_reason"],
                    "save_load_same_outputs": same, "litert_runs": runs})
        print(json.dumps(out[-1]), flush=True)
    return out


def run_one_shot(args):
    """Accuracy right after pruning (no fine-tuning), with and without BatchNormalization recalibration."""
    from keras_compress.structured import prune_channels, recalibrate_batchnorm

    (x, y), (xt, yt) = kc.datasets.load(args.dataset)
    base = cli.load_model(qat_bench.baseline(args.models.split(",")[0], args.dataset, args.epochs, x, y))
    xt, yt = xt[:2000], yt[:2000]
    lines = ["| Importance | 25% removed | + recalibration | 50% removed | + recalibration |",
             "|---|---:|---:|---:|---:|"]
    for importance in ("l1", "l2", "bn_scale", "taylor"):
        cells = []
        for fraction in (0.25, 0.5):
            small = prune_channels(base, ChannelPruneConfig(fraction=fraction, round_to=args.round_to,
                                                            importance=importance), data=(x[-2000:], y[-2000:]))
            cells.append(accuracy(small, xt, yt))
            recalibrate_batchnorm(small, x[:2560])
            cells.append(accuracy(small, xt, yt))
        lines.append(f"| {importance} | " + " | ".join(f"{100 * c:.1f}%" for c in cells) + " |")
    print("\n".join(lines))


def markdown(results):
    """The results as BENCHMARKS.md's table (one row per artifact)."""
    lines = ["| Model | Artifact | Keras acc | LiteRT acc | MACs | Params | Bytes | Latency b1 (ms) "
             "| Speed-up b1 | Speed-up b32 |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        for row in result["rows"]:
            lines.append(
                f"| {row['model']} | {row['artifact']} | {100 * row['keras_accuracy']:.2f}% | "
                f"{100 * row['litert_accuracy']:.2f}% | {row['macs']:,} | {row['params']:,} | {row['bytes']:,} | "
                f"{row['latency_b1_ms']:.3f} | {row['speedup_b1']:.2f}x | {row['speedup_b32']:.2f}x |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilenet_v2_tiny,resnet20")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=8, help="baseline epochs (cached)")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, default=4)
    parser.add_argument("--importance", default="l1")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allocation", default="uniform", choices=("uniform", "sensitivity"))
    parser.add_argument("--macs-target", type=float, default=None)
    parser.add_argument("--recalibrate", action="store_true",
                        help="re-measure BatchNormalization statistics after pruning (the recipe step does)")
    parser.add_argument("--teacher", action="store_true", help="fine-tune the pruned model by distillation")
    parser.add_argument("--distillation-weight", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--applications", action="store_true")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--one-shot", action="store_true",
                        help="accuracy right after pruning, with and without BatchNormalization recalibration")
    parser.add_argument("--table", metavar="JSON", help="print the Markdown table of an earlier run and stop")
    args = parser.parse_args()
    if args.one_shot:
        run_one_shot(args)
        return
    if args.table:
        with open(args.table) as f:
            print(markdown(json.load(f)))
        return
    if args.quick:
        args.epochs, args.finetune_epochs, args.rounds, args.runs = 1, 1, 3, 50
    os.makedirs(args.out, exist_ok=True)
    if args.applications:
        result = run_applications(args)
        name = "structured_applications.json"
    else:
        folder = tempfile.mkdtemp(prefix="kc-structured-")
        result = []
        for model in args.models.split(","):
            result.append(run_model(model, args, folder))
            for row in result[-1]["rows"]:
                print(json.dumps(row), flush=True)
        name = "structured.json"
    path = os.path.join(args.out, name)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
