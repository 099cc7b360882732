"""Training overhead of pruning: epoch time of a pruning fit over a plain fit.

Both fits start from the same weights, use the same optimizer, batch size and
data, and alternate in one process so that the machine's state affects both
alike. The first epoch of each (tracing, compilation) is not timed.

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


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def timed_fit(model_name, weights, x, y, batch_size, epochs, pruned):
    model = kc.zoo.build(model_name)
    model.set_weights(weights)
    if pruned:
        steps = epochs * (-(-len(x) // batch_size))
        kc.prune(model, kc.PruneConfig(0.9, schedule="polynomial", initial_sparsity=0.5,
                                       end_step=steps, frequency=100))
    kc.zoo.compile_for_classification(model, 1e-3)
    timer = EpochTimer()
    callbacks = [timer] + ([kc.PruningCallback()] if pruned else [])
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=callbacks)
    return timer.times[1:]  # the first epoch traces and compiles


def measure(model_name="lenet5", samples=20000, batch_size=128, epochs=3, repeats=3):
    (x, y), _ = kc.datasets.load("mnist")
    x, y = x[:samples], y[:samples]
    keras.utils.set_random_seed(0)
    weights = kc.zoo.build(model_name).get_weights()
    plain, pruning = [], []
    for _ in range(repeats):
        plain += timed_fit(model_name, weights, x, y, batch_size, epochs, pruned=False)
        pruning += timed_fit(model_name, weights, x, y, batch_size, epochs, pruned=True)
    return {
        "model": model_name,
        "backend": keras.backend.backend(),
        "samples": samples,
        "batch_size": batch_size,
        "plain_epoch_s": statistics.median(plain),
        "pruning_epoch_s": statistics.median(pruning),
        "overhead": statistics.median(pruning) / statistics.median(plain),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = measure(args.model, args.samples, args.batch_size, args.epochs, args.repeats)
    print(json.dumps(result, indent=2))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
