"""Automatic search against the hand-written recipes (issue #17): does the Pareto front dominate each?

    python bench/search.py --trials 20 --train-samples 12000 --out bench/results/search

On one trained LeNet-5 and one data set (MNIST, the first `--train-samples`
training images, the full test split), in one run:
1. each hand-written recipe in `recipes/` that applies to LeNet-5 runs through
   `run_recipe`; its int8 LiteRT artifact gives (accuracy, gzip bytes);
2. `keras_compress.search` runs `--trials` TPE trials over a recipe template
   (per-layer pruning targets, fine-tuning epochs and learning rate, cluster
   count), objectives accuracy and gzip bytes of the int8 artifact;
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
HAND_RECIPES = ("demo.yaml", "prune_qat.yaml", "qat.yaml", "lenet5_deep.yaml", "prune_int8.yaml")
SPACE = {
    "recipe": {"steps": [
        {"prune": {"target_sparsity": 0.9, "schedule": "polynomial", "initial_sparsity": 0.5, "end_step": "auto",
                   "frequency": 100,
                   "layer_targets": {"conv1": 0.5, "conv2": "${conv2}", "fc1": "${fc1}", "fc2": "${fc2}"}}},
        {"finetune": {"epochs": "${epochs}", "batch_size": 128, "learning_rate": "${learning_rate}"}},
        {"cluster": {"num_clusters": "${clusters}", "init": "linear"}},
        {"finetune": {"epochs": 2, "batch_size": 128, "learning_rate": 1.0e-4}},
        {"export": {"formats": ["int8"], "calibration_samples": 256}},
    ]},
    "parameters": {
        "conv2": {"low": 0.5, "high": 0.95},
        "fc1": {"low": 0.85, "high": 0.995},
        "fc2": {"low": 0.5, "high": 0.95},
        "epochs": {"low": 3, "high": 10},
        "learning_rate": {"low": 1.0e-4, "high": 2.0e-3, "log": True},
        "clusters": {"choices": [8, 16, 32]},
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
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "search"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--train-samples", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    (x, y), (x_test, y_test) = kc.datasets.load("mnist")
    data = kc.data.from_pairs("mnist", (x[: args.train_samples], y[: args.train_samples]), (x_test, y_test))
    keras.utils.set_random_seed(args.seed)
    model = kc.zoo.lenet5()
    kc.zoo.train(model, x, y, epochs=2, verbose=0)

    def copy():
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone

    hand = {}
    for name in HAND_RECIPES:
        start = time.perf_counter()
        report = run_recipe(copy(), load_recipe(os.path.join(ROOT, "recipes", name)), data,
                            os.path.join(args.out, "hand", name[:-5]), progress=False, metric="accuracy",
                            latency_runs=20)
        row = int8_row(report)
        hand[name] = {"accuracy": row.litert_metric, "gzip_bytes": row.gzip_bytes,
                      "seconds": round(time.perf_counter() - start, 1)}
        log(f"{name}: int8 {100 * row.litert_metric:.2f}% at {row.gzip_bytes:,} gzip bytes")
    start = time.perf_counter()
    result = kc.search(model, data, SPACE, objectives=("metric", "gzip_bytes"), trials=args.trials,
                       out_dir=os.path.join(args.out, "study"), seed=args.seed, metric="accuracy",
                       latency_runs=20)
    wall = time.perf_counter() - start
    inside = sum(t.user_attrs.get("seconds", 0.0) for t in result.completed())
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
    overhead = (wall - inside) / wall
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Keras {keras.__version__} ({keras.backend.backend()})",
        "command": f"python bench/search.py --trials {args.trials} --train-samples {args.train_samples}",
        "hand": hand, "rows": rows, "front": [t.number for t in front], "trials": len(result.completed()),
        "failed": result.failed(), "search_seconds": round(wall, 1), "seconds_inside_trials": round(inside, 1),
        "bookkeeping_overhead": overhead, "passed": passed, "table": "\n".join(table),
        "search_table": result.table(),
    }
    with open(os.path.join(args.out, "search_bench.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    print(result.table())
    print()
    print("\n".join(table))
    print(f"\nbookkeeping overhead: {100 * overhead:.2f}% of {wall:.0f} s (needs < 2%)")
    return 0 if passed and overhead < 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
