"""Explanation fidelity: SHAP attributions of LeNet-5 vs its compressed versions.

For 20 MNIST test images, the permutation-SHAP attribution (784 pixels, for
the class the original predicts) of the float baseline is compared with that
of each compressed model: Spearman rank correlation per image (mean), and
the overlap of the top-10% pixels. Compressed models: the PTQ and QAT int8
LiteRT files written by bench/qat.py, and the baseline pruned one-shot by
magnitude (no fine-tuning) at 90% and 98%.

    KERAS_BACKEND=tensorflow python bench/fidelity.py --out bench/results   # after bench/qat.py
"""

import argparse
import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402
from keras_compress.cli import main as cli  # noqa: E402
from keras_compress.export.litert import LiteRTModel  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--inputs", type=int, default=20)
    args = parser.parse_args()
    _, (xt, yt) = kc.datasets.load("mnist")
    x = xt[: args.inputs]
    baseline_path = os.path.join(cli.cache_dir(), "lenet5-mnist-e8-tensorflow.keras")
    base = cli.load_model(baseline_path)
    candidates = {}
    folder = os.path.join(args.out, "qat_lenet5")
    for name in ("ptq_int8", "qat_int8"):
        candidates[f"LiteRT {name}"] = LiteRTModel(os.path.join(folder, f"{name}.tflite"))
    for sparsity in (0.9, 0.98):
        model = cli.load_model(baseline_path)
        kc.prune(model, kc.PruneConfig(sparsity))
        kc.strip(model)
        candidates[f"one-shot prune {int(100 * sparsity)}% (no fine-tuning)"] = model
    rows = []
    for name, model in candidates.items():
        accuracy = float(np.mean(np.argmax(model.predict(xt[:2000]) if hasattr(model, "interpreter")
                                           else model.predict(xt[:2000], verbose=0), axis=1) == yt[:2000]))
        result = kc.importance.explanation_fidelity(base, model, x)
        rows.append({"model": name, "accuracy_2k": accuracy, **{k: v for k, v in result.items() if k != "per_input"}})
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| compressed model | accuracy (2k test) | SHAP rank correlation | top-10% pixel overlap |",
             "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {100 * r['accuracy_2k']:.2f}% | {r['rank_correlation']:.3f} | "
                     f"{r['top_overlap']:.3f} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(args.out, "fidelity.json"), "w") as f:
        json.dump({"inputs": args.inputs, "rows": rows, "table": table}, f, indent=2)


if __name__ == "__main__":
    main()
