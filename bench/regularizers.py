"""Regularisers vs prunability: plain, L1, L2 and importance-weighted L1/L2.

LeNet-300-100 on MNIST, every run from the same initial weights and with the
same budget (epochs, batch size 128, Adam 1e-3); each trained model is then
pruned one-shot by magnitude (global per-tensor 90% and 95%, no fine-tuning)
and its test accuracy measured. The importance-weighted penalty uses Taylor
scores on 1,024 training images, refreshed every 200 steps.

    KERAS_BACKEND=tensorflow python bench/regularizers.py --out bench/results
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402
from keras_compress.importance import ImportanceRegularizerCallback, ImportanceRegularizerConfig, regularize  # noqa: E402

SPARSITIES = (0.9, 0.95)


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=1024, verbose=0), axis=1) == y))


def one_shot(model, sparsity, x, y):
    weights = model.get_weights()
    kc.prune(model, kc.PruneConfig(sparsity))
    kc.strip(model)
    result = accuracy(model, x, y)
    model.set_weights(weights)
    return result


def run(label, kind, strength, init, args, data):
    (x, y), (xt, yt) = data
    model = kc.zoo.build("lenet_300_100")
    model.set_weights(init)
    callbacks = []
    if kind in ("l1", "l2"):
        regularizer = keras.regularizers.L1(strength) if kind == "l1" else keras.regularizers.L2(strength)
        for layer in model.layers:
            if hasattr(layer, "kernel"):
                layer.kernel.regularizer = regularizer
    elif kind.startswith("importance"):
        norm = kind.split("_")[1]
        regularize(model, ImportanceRegularizerConfig(strength=strength, norm=norm, method="taylor",
                                                      refresh_every=200), (x[:1024], y[:1024]))
        callbacks = [ImportanceRegularizerCallback()]
    kc.zoo.compile_for_classification(model, 1e-3)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    model.fit(x, y, epochs=args.epochs, batch_size=128, verbose=0, callbacks=callbacks)
    seconds = time.perf_counter() - start
    kc.strip(model)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            layer.kernel.regularizer = None
    row = {"regulariser": label, "kind": kind, "strength": strength, "fit_s": seconds,
           "dense_accuracy": accuracy(model, xt, yt)}
    for s in SPARSITIES:
        row[f"pruned_{int(100 * s)}"] = one_shot(model, s, xt, yt)
    print(json.dumps(row), flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    data = kc.datasets.load("mnist")
    keras.utils.set_random_seed(0)
    init = kc.zoo.build("lenet_300_100").get_weights()
    runs = [("plain", "plain", 0.0)]
    for strength in (1e-5, 3e-5):
        runs += [(f"L1 {strength:g}", "l1", strength), (f"importance L1 {strength:g}", "importance_l1", strength)]
    for strength in (1e-4, 3e-4):
        runs += [(f"L2 {strength:g}", "l2", strength), (f"importance L2 {strength:g}", "importance_l2", strength)]
    rows = [run(label, kind, strength, init, args, data) for label, kind, strength in runs]
    lines = ["| regulariser | dense accuracy | one-shot 90% | one-shot 95% | fit time |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['regulariser']} | {100 * r['dense_accuracy']:.2f}% | {100 * r['pruned_90']:.2f}% | "
                     f"{100 * r['pruned_95']:.2f}% | {r['fit_s']:.1f} s |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "regularizers.json"), "w") as f:
        json.dump({"machine": f"{platform.machine()} {os.cpu_count()} cores, Keras {keras.__version__}, "
                              f"backend {keras.backend.backend()}", "epochs": args.epochs,
                   "rows": rows, "table": table}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
