"""Deep-Compression-style benchmark: prune + cluster + int8 / archive.

For LeNet-5 and LeNet-300-100 on MNIST, from one trained baseline each,
runs `recipes/lenet5_deep.yaml` and `recipes/lenet300_deep.yaml` (at most 20
epochs of fine-tuning in all) and checks issue #18's figures (issue #5's were
40x, 100x and 80x). Ratios are the baseline float32 LiteRT artifact's raw
bytes over the compressed artifact's bytes (gzip bytes for a LiteRT file,
file bytes for the archive):

- LeNet-5 int8 LiteRT: >= 100x; LeNet-5 archive: >= 150x;
- LeNet-300-100 archive: >= 120x; each with at most 0.1 pt of accuracy lost.

    KERAS_BACKEND=tensorflow python bench/clustering.py --out bench/results

Exits 1 when a figure is missed.
"""

import argparse
import json
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_compress as kc  # noqa: E402
from keras_compress.cli import main as cli  # noqa: E402
from keras_compress.cli.recipe import load_recipe  # noqa: E402
from keras_compress.cli.runner import run_recipe  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "lenet5": ("recipes/lenet5_deep.yaml", {"int8": 100.0, "archive": 150.0}),
    "lenet_300_100": ("recipes/lenet300_deep.yaml", {"archive": 120.0}),
}
MAX_LOSS_POINTS = 0.1


def baseline(name, epochs, data):
    path = os.path.join(cli.cache_dir(), f"{name}-mnist-e{epochs}-{keras.backend.backend()}.keras")
    if os.path.isfile(path):
        return cli.load_model(path)
    x, y = data.train.take()  # a Dataset (the recipe runner's input): its training arrays
    model = kc.zoo.build(name)
    kc.zoo.train(model, x, y, epochs=epochs, batch_size=128, learning_rate=1e-3, verbose=0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.save(path)
    return model


def run_case(name, epochs, data, out):
    recipe_path, targets = CASES[name]
    model = baseline(name, epochs, data)
    report = run_recipe(model, load_recipe(os.path.join(REPO, recipe_path)), data, os.path.join(out, f"deep_{name}"),
                        progress=False, title=f"bench: {name} prune + cluster")
    rows = {r.fmt if r.technique != "baseline" else "baseline": r for r in report.rows}
    base = rows["baseline"]
    result = {"model": name, "recipe": recipe_path, "baseline_epochs": epochs,
              "baseline_accuracy": base.keras_metric, "baseline_float32_raw_bytes": base.raw_bytes,
              "table": report.markdown_table(), "figures": {}}
    for fmt in ("float32", "int8", "archive"):
        row = rows[fmt]
        size = row.raw_bytes if fmt == "archive" else row.gzip_bytes
        accuracy = row.litert_metric if row.litert_metric is not None else row.keras_metric
        result["figures"][fmt] = {
            "bytes": size, "ratio": base.raw_bytes / size, "accuracy": accuracy,
            "loss_points": 100 * (base.keras_metric - accuracy), "nonzero": row.nonzero, "params": row.params,
            "target_ratio": targets.get(fmt),
        }
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--baseline-epochs", type=int, default=8)
    parser.add_argument("--models", default="lenet5,lenet_300_100")
    args = parser.parse_args()
    data = cli.load_data("mnist")
    results = [run_case(name, args.baseline_epochs, data, args.out) for name in args.models.split(",")]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "clustering.json"), "w") as f:
        json.dump({"machine": f"{platform.machine()}, {os.cpu_count()} cores, Keras {keras.__version__}",
                   "results": results}, f, indent=2)
    failed = False
    for result in results:
        print(f"\n## {result['model']} ({result['recipe']})\n\n{result['table']}\n")
        for fmt, fig in result["figures"].items():
            ok = fig["loss_points"] <= MAX_LOSS_POINTS and (fig["target_ratio"] is None or fig["ratio"] >= fig["target_ratio"])
            failed |= not ok
            target = f" (target {fig['target_ratio']:g}x)" if fig["target_ratio"] else ""
            print(f"{'PASS' if ok else 'FAIL'}  {result['model']} {fmt}: {fig['ratio']:.1f}x{target}, "
                  f"{fig['bytes']:,} bytes, accuracy {100 * fig['accuracy']:.2f}% "
                  f"(loss {fig['loss_points']:+.2f} pt)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
