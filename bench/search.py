"""Automatic search against the hand-written recipes (issue #17): does the Pareto front dominate each?

    python bench/search.py --model lenet5 --trials 30 --train-samples 12000
    python bench/search.py --model mobilenet_v2_tiny --trials 30 --train-samples 6000

On one trained model and one data set (LeNet-5 on MNIST or the
MobileNetV2-style net on Fashion-MNIST, the first `--train-samples`
training images, the full test split), in one run:
1. each hand-written recipe in `recipes/` that applies to the model runs
   through `run_recipe`; its int8 LiteRT artifact gives (accuracy, gzip bytes);
2. `keras_compress.search` runs `--trials` TPE trials over a recipe template
   (`SPACES`: pruning targets or channel fractions, fine-tuning epochs and
   learning rate, cluster count, and whether pruning, clustering and QAT run
   at all), warm-started from the sensitivity curves, objectives accuracy and
   gzip bytes of the int8 artifact;
3. for each hand recipe: is there a front trial at least as accurate and at
   most as large (one of them strictly)? If not, by how much the nearest misses.
Also measured: the bookkeeping overhead (study storage, sampling) as the share
of the search's wall time not spent inside trials.
Exits 1 when a hand recipe is not dominated.
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAND_RECIPES = {
    "lenet5": ("demo.yaml", "prune_qat.yaml", "qat.yaml", "lenet5_deep.yaml", "prune_int8.yaml"),
    # The LeNet recipes name LeNet's layers; for the MobileNetV2-style net these apply as they are.
    "mobilenet_v2_tiny": ("qat.yaml", "prune_qat.yaml", "prune_int8.yaml", "structured.yaml"),
}
DATA = {"lenet5": "mnist", "mobilenet_v2_tiny": "fashion_mnist"}
TRAIN_EPOCHS = {"lenet5": 2, "mobilenet_v2_tiny": 8}


def _tail(flag_cluster, flag_qat):
    """The optional cluster and QAT stages and the export: steps after pruning's fine-tuning."""
    return [
        {"cluster": {"num_clusters": "${clusters}", "init": "linear"}, "when": flag_cluster},
        {"finetune": {"epochs": 2, "batch_size": 128, "learning_rate": 1.0e-4}, "when": flag_cluster},
        {"quantize": {"calibration_samples": 1000}, "when": flag_qat},
        {"finetune": {"epochs": 1, "batch_size": 128, "learning_rate": 5.0e-5}, "when": flag_qat},
        {"export": {"formats": ["int8"], "calibration_samples": 256}},
    ]


FLAGS = {"prune": {"choices": [True, False]}, "cluster": {"choices": [True, False]},
         "qat": {"choices": [True, False]}}
SPACES = {
    # Per-layer pruning targets (conv1 stays at 0.5: 500 weights), fine-tuning, and whether pruning,
    # clustering and QAT run at all.
    "lenet5": {
        "recipe": {"steps": [
            {"prune": {"target_sparsity": 0.9, "schedule": "polynomial", "initial_sparsity": 0.3,
                       "end_step": "auto", "frequency": 100,
                       "layer_targets": {"conv1": 0.5, "conv2": "${conv2}", "fc1": "${fc1}", "fc2": "${fc2}"}},
             "when": "${prune}"},
            {"finetune": {"epochs": "${epochs}", "batch_size": 128, "learning_rate": "${learning_rate}"}},
            *_tail("${cluster}", "${qat}"),
        ]},
        "parameters": {
            "conv2": {"low": 0.3, "high": 0.95},
            "fc1": {"low": 0.5, "high": 0.995},
            "fc2": {"low": 0.3, "high": 0.95},
            "epochs": {"low": 2, "high": 10},
            "learning_rate": {"low": 1.0e-4, "high": 2.0e-3, "log": True},
            "clusters": {"choices": [8, 16, 32]},
            **FLAGS,
        },
    },
    # Channel fractions (structured) and weight sparsity (unstructured), each optional, then the same tail.
    "mobilenet_v2_tiny": {
        "recipe": {"steps": [
            {"prune_channels": {"fraction": "${channels}", "importance": "l1", "round_to": 4},
             "when": "${structured}"},
            {"prune": {"target_sparsity": "${sparsity}", "schedule": "polynomial", "initial_sparsity": 0.3,
                       "end_step": "auto", "frequency": 100}, "when": "${prune}"},
            {"finetune": {"epochs": "${epochs}", "batch_size": 128, "learning_rate": "${learning_rate}"}},
            *_tail("${cluster}", "${qat}"),
        ]},
        "parameters": {
            "channels": {"low": 0.1, "high": 0.6},
            "sparsity": {"low": 0.3, "high": 0.9},
            "epochs": {"low": 1, "high": 4},
            "learning_rate": {"low": 1.0e-4, "high": 2.0e-3, "log": True},
            "clusters": {"choices": [16, 32, 64]},
            "structured": {"choices": [True, False]},
            **FLAGS,
        },
    },
}


def log(message):
    print(f"[bench search] {message}", file=sys.stderr, flush=True)


def int8_row(report):
    return next(r for r in report.rows if r.name == "model_int8.tflite")


def main(argv=None):
    import keras

    import keras_compress as kc
    from keras_compress.cli.recipe import load_recipe
    from keras_compress.cli.runner import run_recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5", choices=sorted(SPACES))
    parser.add_argument("--out")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--train-samples", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--track", action="store_true", help="log every trial to MLflow (SQLite in --out)")
    args = parser.parse_args(argv)
    args.out = args.out or os.path.join(ROOT, "bench", "results", f"search_{args.model}")
    os.makedirs(args.out, exist_ok=True)
    (x, y), (x_test, y_test) = kc.datasets.load(DATA[args.model])
    data = kc.data.from_pairs(DATA[args.model], (x[: args.train_samples], y[: args.train_samples]),
                              (x_test, y_test))
    keras.utils.set_random_seed(args.seed)
    model = getattr(kc.zoo, args.model)()
    start = time.perf_counter()
    kc.zoo.train(model, x, y, epochs=TRAIN_EPOCHS[args.model], verbose=0)
    log(f"trained {args.model} on all of {DATA[args.model]} ({TRAIN_EPOCHS[args.model]} epochs) in "
        f"{time.perf_counter() - start:.0f} s")

    def copy():
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone

    hand = {}
    for name in HAND_RECIPES[args.model]:
        start = time.perf_counter()
        report = run_recipe(copy(), load_recipe(os.path.join(ROOT, "recipes", name)), data,
                            os.path.join(args.out, "hand", name[:-5]), progress=False, metric="accuracy",
                            latency_runs=20)
        row = int8_row(report)
        hand[name] = {"accuracy": row.litert_metric, "gzip_bytes": row.gzip_bytes,
                      "seconds": round(time.perf_counter() - start, 1)}
        log(f"{name}: int8 {100 * row.litert_metric:.2f}% at {row.gzip_bytes:,} gzip bytes")
    start = time.perf_counter()
    result = kc.search(model, data, SPACES[args.model], objectives=("metric", "gzip_bytes"), trials=args.trials,
                       out_dir=os.path.join(args.out, "study"), seed=args.seed, metric="accuracy",
                       latency_runs=20,
                       tracking={"uri": f"sqlite:///{os.path.join(args.out, 'mlflow.db')}",
                                 "experiment": f"bench-search-{args.model}"} if args.track else None)
    wall = time.perf_counter() - start
    inside = sum(t.user_attrs.get("seconds", 0.0) for t in result.study.trials)
    warm_seconds = result.study.user_attrs.get("warm_start_seconds", 0.0)
    front = result.pareto()
    rows, passed = [], True
    for name, figures in hand.items():
        dominating = [t for t in front if t.values[0] >= figures["accuracy"] and t.values[1] <= figures["gzip_bytes"]
                      and (t.values[0] > figures["accuracy"] or t.values[1] < figures["gzip_bytes"])]
        if dominating:
            best = min(dominating, key=lambda t: t.values[1])
            rows.append({"recipe": name, **figures, "dominated_by": best.number, "trial_accuracy": best.values[0],
                         "trial_gzip_bytes": best.values[1]})
        else:
            passed = False
            as_accurate = [t for t in front if t.values[0] >= figures["accuracy"]]
            nearest = min(as_accurate, key=lambda t: t.values[1]) if as_accurate else max(front, key=lambda t: t.values[0])
            rows.append({"recipe": name, **figures, "dominated_by": None, "nearest": nearest.number,
                         "trial_accuracy": nearest.values[0], "trial_gzip_bytes": nearest.values[1]})
    table = ["| hand recipe | int8 accuracy | gzip bytes | front trial | its accuracy | its gzip bytes | dominated |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        trial = r["dominated_by"] if r["dominated_by"] is not None else r["nearest"]
        table.append(f"| {r['recipe']} | {100 * r['accuracy']:.2f}% | {r['gzip_bytes']:,} | {trial} | "
                     f"{100 * r['trial_accuracy']:.2f}% | {int(r['trial_gzip_bytes']):,} | "
                     f"{'yes' if r['dominated_by'] is not None else 'no'} |")
    overhead = (wall - inside - warm_seconds) / wall
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Keras {keras.__version__} ({keras.backend.backend()})",
        "command": f"python bench/search.py --model {args.model} --trials {args.trials} "
                   f"--train-samples {args.train_samples}",
        "hand": hand, "rows": rows, "front": [t.number for t in front], "trials": len(result.completed()),
        "failed": result.failed(), "stopped": result.stopped(),
        "warm_trials": [t.number for t in result.completed() if t.user_attrs.get("warm_start")],
        "search_seconds": round(wall, 1), "seconds_inside_trials": round(inside, 1),
        "warm_start_seconds": warm_seconds, "tracking": bool(args.track),
        "bookkeeping_overhead": overhead, "passed": passed, "table": "\n".join(table),
        "search_table": result.table(),
    }
    with open(os.path.join(args.out, "search_bench.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    print(result.table())
    print()
    print("\n".join(table))
    print(f"\nbookkeeping overhead{' (storage and MLflow tracking)' if args.track else ''}: {100 * overhead:.2f}% "
          f"of {wall:.0f} s (needs < 2%); warm start (sensitivity analysis) {warm_seconds:.1f} s")
    return 0 if passed and overhead < 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
