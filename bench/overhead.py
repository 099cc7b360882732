"""Training overhead of a technique: epoch time of its fit over a plain fit.

Techniques: pruning (prune + PruningCallback) and qat (quantize, calibrated).

Both fits start from the same weights, use the same optimizer, batch size and
data, and alternate epoch by epoch in one process so that the machine's state
affects both alike. The first epoch of each (tracing, compilation) is not timed.

    python bench/overhead.py --model lenet5 --batch-size 128 --repeats 3
"""

import argparse
import json
import os
import statistics
import time

import keras
import numpy as np

import keras_compress as kc


def _epoch_seconds(model, x, y, batch_size, callbacks):
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start


def _prepare_pruning(model, x, steps):
    kc.prune(model, kc.PruneConfig(0.9, schedule="polynomial", initial_sparsity=0.5,
                                   end_step=2 * steps // 3, frequency=100))
    return [kc.PruningCallback()]


def _prepare_qat(model, x, steps):
    kc.quantize(model, kc.QATConfig(), calibration_data=x[:512])
    return []


TECHNIQUES = {"pruning": _prepare_pruning, "qat": _prepare_qat}


def measure(model_name="lenet5", samples=20000, batch_size=128, epochs=3, repeats=3,
            technique="pruning", dataset="mnist"):
    """Median over paired epochs of (technique epoch time / plain epoch time).

    Both models are built, compiled and warmed up (one untimed epoch, which
    traces and compiles) first; then each round times one plain epoch and
    one pruning epoch back to back, in alternating order, so that drift in
    the machine's speed (a shared VM) hits both sides of each pair alike.
    `epochs * repeats` pairs are timed. The pruning schedule runs across the
    rounds, as it does across any series of `fit` calls.
    """
    prepare = TECHNIQUES[technique]
    (x, y), _ = kc.datasets.load(dataset)
    x, y = x[:samples], y[:samples]
    keras.utils.set_random_seed(0)
    weights = kc.zoo.build(model_name).get_weights()
    rounds = max(1, epochs * repeats)
    steps = (rounds + 1) * (-(-len(x) // batch_size))
    models = {}
    for kind in ("plain", technique):
        model = kc.zoo.build(model_name)
        model.set_weights(weights)
        callbacks = prepare(model, x, steps) if kind == technique else []
        kc.zoo.compile_for_classification(model, 1e-3)
        _epoch_seconds(model, x, y, batch_size, callbacks)  # warm-up: tracing
        models[kind] = (model, callbacks)
    plain, treated, ratios = [], [], []
    for i in range(rounds):
        order = ("plain", technique) if i % 2 == 0 else (technique, "plain")
        times = {kind: _epoch_seconds(models[kind][0], x, y, batch_size, models[kind][1]) for kind in order}
        plain.append(times["plain"])
        treated.append(times[technique])
        ratios.append(times[technique] / times["plain"])
    return {
        "model": model_name,
        "technique": technique,
        "backend": keras.backend.backend(),
        "samples": samples,
        "batch_size": batch_size,
        "pairs": rounds,
        "plain_epoch_s": statistics.median(plain),
        f"{technique}_epoch_s": statistics.median(treated),
        "overhead": statistics.median(ratios),
        "overhead_min_max": [min(ratios), max(ratios)],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--technique", default="pruning", choices=sorted(TECHNIQUES))
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = measure(args.model, args.samples, args.batch_size, args.epochs, args.repeats, args.technique)
    print(json.dumps(result, indent=2))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
