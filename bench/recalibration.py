"""BatchNormalization recalibration after fine-tuning: why `FinetuneConfig.recalibrate_batchnorm` is on by default.

    python bench/recalibration.py --seeds 0,1 --out bench/results/recalibration

MobileNetV2-style net (`kc.zoo.mobilenet_v2_tiny`) on Fashion-MNIST:
trained `--train-epochs` on the first `--train-samples` images, then for
each seed pruned to 75% (polynomial ramp) and fine-tuned `--epochs` epochs
on `--finetune-samples` images, twice from the same trained weights and
seed: with the default (`recalibrate_batchnorm=True`: moving statistics
re-measured on 20 training batches at the end) and without. Test accuracy
(first 5,000 test images) of each, and of the trained model as trained and
recalibrated. Exits 1 when recalibration does not help on average.
"""

import argparse
import json
import os
import platform
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    import keras
    import numpy as np

    import keras_compress as kc
    from keras_compress.training import FinetuneConfig
    from keras_compress.training.batchnorm import recalibrate_batchnorm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--train-samples", type=int, default=30000)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--finetune-samples", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "recalibration"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    (x, y), (x_test, y_test) = kc.datasets.load("fashion_mnist")
    x_test, y_test = x_test[:5000], y_test[:5000]

    def accuracy(model):
        return float(np.mean(np.argmax(model.predict(x_test, batch_size=512, verbose=0), -1) == y_test))

    keras.utils.set_random_seed(0)
    base = kc.zoo.mobilenet_v2_tiny()
    kc.zoo.train(base, x[: args.train_samples], y[: args.train_samples], epochs=args.train_epochs, verbose=0)
    weights = base.get_weights()
    figures = {"trained": accuracy(base)}
    recalibrate_batchnorm(base, x[:2560])
    figures["trained_recalibrated"] = accuracy(base)
    steps = int(np.ceil(args.finetune_samples / 128)) * args.epochs
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        row = {"seed": seed}
        for recalibrate in (False, True):
            keras.utils.set_random_seed(seed)
            model = kc.zoo.mobilenet_v2_tiny()
            model.set_weights(weights)
            model = kc.prune(model, kc.PruneConfig(0.75, schedule="polynomial", initial_sparsity=0.3,
                                                   end_step=2 * steps // 3, frequency=20))
            kc.finetune(model, x[: args.finetune_samples], y[: args.finetune_samples],
                        FinetuneConfig(epochs=args.epochs, learning_rate=3e-4, recalibrate_batchnorm=recalibrate))
            kc.strip(model)
            row["recalibrated" if recalibrate else "as_trained"] = accuracy(model)
        runs.append(row)
        print(f"[bench recalibration] seed {seed}: {row}", file=sys.stderr)
    gain = statistics.mean(100 * (r["recalibrated"] - r["as_trained"]) for r in runs)
    table = ["| model (first 5,000 test images) | as trained | BN recalibrated |", "|---|---:|---:|",
             f"| trained ({args.train_epochs} epochs, {args.train_samples:,} images) | "
             f"{100 * figures['trained']:.2f}% | {100 * figures['trained_recalibrated']:.2f}% |"]
    for r in runs:
        table.append(f"| pruned 75% + {args.epochs} epochs on {args.finetune_samples:,} images, seed {r['seed']} | "
                     f"{100 * r['as_trained']:.2f}% | {100 * r['recalibrated']:.2f}% |")
    summary = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Keras {keras.__version__} "
                          f"({keras.backend.backend()})",
               "command": f"python bench/recalibration.py --seeds {args.seeds} --train-samples {args.train_samples} "
                          f"--train-epochs {args.train_epochs} --finetune-samples {args.finetune_samples} "
                          f"--epochs {args.epochs}",
               **figures, "runs": runs, "gain_points_mean": gain, "table": "\n".join(table)}
    with open(os.path.join(args.out, "recalibration.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print("\n".join(table))
    print(f"\nrecalibration gain after pruning: {gain:+.2f} pt (mean over seeds)")
    return 0 if gain > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
