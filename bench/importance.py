"""Named weights benchmark: one-shot pruning by each importance criterion.

LeNet-300-100 on MNIST, from one trained baseline: scores from 10,000
training images, one-shot unstructured pruning (per layer, every kernel at
the same sparsity; biases untouched) at 80, 90, 95 and 98% with no
fine-tuning; test accuracy of each. Also the time to score LeNet-5 over
10,000 images with Taylor and Fisher (issue #6: under 30 s on 2 cores).

    KERAS_BACKEND=tensorflow python bench/importance.py --out bench/results
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402

import keras_compress as kc  # noqa: E402
from clustering import baseline  # noqa: E402

SPARSITIES = (0.8, 0.9, 0.95, 0.98)
SAMPLES = 10000


def one_shot(model_name, epochs, data, methods):
    (x, y), (xt, yt) = data
    base = baseline(model_name, epochs, data)
    weights = base.get_weights()
    table = {"baseline": kc.evaluate.keras_accuracy(base, xt, yt)}
    for method in methods:
        scores = kc.importance.score(base, (x[:SAMPLES], y[:SAMPLES]), method, batch_size=128)
        for sparsity in SPARSITIES:
            model = kc.zoo.build(model_name)
            model.set_weights(weights)
            kc.prune(model, kc.PruneConfig(sparsity), scores=scores)
            kc.strip(model)
            table[f"{method}@{sparsity}"] = kc.evaluate.keras_accuracy(model, xt, yt)
    return table


def auto_vs_uniform(data, epochs, target=0.95, finetune_epochs=2):
    """LeNet-5 at `target` global sparsity: auto per-layer targets vs uniform, equal fine-tuning."""
    (x, y), (xt, yt) = data
    base = baseline("lenet5", epochs, data)
    weights = base.get_weights()
    # Sensitivity on held-out training images (the last 5,000), not the test set.
    targets = kc.importance.auto_layer_targets(base, (x[-5000:], y[-5000:]), target)
    results = {"targets": targets}
    steps = finetune_epochs * (-(-len(x) // 128))
    for label, layer_targets in (("uniform", None), ("auto", targets)):
        model = kc.zoo.build("lenet5")
        model.set_weights(weights)
        kc.prune(model, kc.PruneConfig(target, schedule="polynomial", initial_sparsity=0.5,
                                       end_step=2 * steps // 3, frequency=50, layer_targets=layer_targets))
        kc.zoo.compile_for_classification(model, 1e-4)
        model.fit(x, y, batch_size=128, epochs=finetune_epochs, verbose=0, callbacks=[kc.PruningCallback()])
        kc.strip(model)
        counts = kc.evaluate.count_parameters(model)
        kernels = sum(w.size for w in model.get_weights() if w.ndim > 1)
        zeros = sum(int((w == 0).sum()) for w in model.get_weights() if w.ndim > 1)
        results[label] = {"accuracy": kc.evaluate.keras_accuracy(model, xt, yt),
                          "kernel_sparsity": zeros / kernels, "nonzero": counts["nonzero"]}
    return results


def scoring_time(data, epochs):
    (x, y), _ = data
    model = baseline("lenet5", epochs, data)
    times = {}
    for method in ("taylor", "fisher"):
        start = time.perf_counter()
        kc.importance.score(model, (x[:SAMPLES], y[:SAMPLES]), method, batch_size=128)
        times[method] = time.perf_counter() - start
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--baseline-epochs", type=int, default=8)
    args = parser.parse_args()
    data = kc.datasets.load("mnist")  # arrays: (x, y), (x_test, y_test)
    methods = kc.importance.METHODS
    table = one_shot("lenet_300_100", args.baseline_epochs, data, methods)
    times = scoring_time(data, args.baseline_epochs)
    auto = auto_vs_uniform(data, args.baseline_epochs)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "importance.json"), "w") as f:
        json.dump({"one_shot": table, "scoring_seconds": times, "auto_vs_uniform": auto, "keras": keras.__version__,
                   "backend": keras.backend.backend()}, f, indent=2)
    print(f"LeNet-300-100 one-shot pruning, no fine-tuning (baseline {100 * table['baseline']:.2f}%)\n")
    print("| criterion | " + " | ".join(f"{int(100 * s)}%" for s in SPARSITIES) + " |")
    print("|---|" + "---:|" * len(SPARSITIES))
    for method in methods:
        print(f"| {method} | " + " | ".join(f"{100 * table[f'{method}@{s}']:.2f}%" for s in SPARSITIES) + " |")
    print(f"\nLeNet-5 scoring over {SAMPLES:,} images: " + ", ".join(f"{m} {t:.1f} s" for m, t in times.items()))
    best = max(methods[1:], key=lambda m: table[f"{m}@0.95"])
    beats = table[f"{best}@0.95"] > table["magnitude@0.95"]
    print(f"best importance criterion at 95%: {best} ({100 * table[f'{best}@0.95']:.2f}% vs magnitude "
          f"{100 * table['magnitude@0.95']:.2f}%): {'beats' if beats else 'does not beat'} magnitude")
    print("\nLeNet-5 at 95% global sparsity, 2 epochs of fine-tuning each:")
    for label in ("uniform", "auto"):
        r = auto[label]
        print(f"  {label:8s} accuracy {100 * r['accuracy']:.2f}%  kernel sparsity {r['kernel_sparsity']:.4f}")
    print("  auto targets: " + ", ".join(f"{k}: {v:.3f}" for k, v in auto["targets"].items()))
    ok = all(t < 30 for t in times.values()) and auto["auto"]["accuracy"] >= auto["uniform"]["accuracy"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
