"""The user's own data through keras-compress (issue #15): the figures, measured.

    python bench/user_data.py --case regression   # diabetes CSV, MLP pruned 80% + int8: MAE within 2%, 3 seeds
    python bench/user_data.py --case folder       # Fashion-MNIST as PNG folders vs the built-in arrays, demo recipe
    python bench/user_data.py --case streaming    # 1,000,000 generated samples: evaluate + int8 export, peak memory
    python bench/user_data.py --case all --out bench/results/user_data

Each case writes `<case>.json` and prints a Markdown table; exits 1 when a
figure is missed. Everything runs through the CLI (`keras-compress compress`,
`evaluate`, `export`) in child processes, as a user would, except the
trained baselines.
"""

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MAX_REGRESSION_LOSS = 0.02  # int8 MAE at most 2% above the float model's
MAX_FOLDER_DIFFERENCE_POINTS = 0.1
MAX_STREAM_PEAK_GIB = 2.5
REGRESSION_RECIPE = """
steps:
  - prune: {target_sparsity: 0.8, end_step: auto}
  - finetune: {epochs: 30, batch_size: 32, learning_rate: 1.0e-3}
  - strip: {}
  - export: {formats: [float32, int8], calibration_samples: 256}
"""


def machine():
    import keras

    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Keras {keras.__version__} ({keras.backend.backend()})")


def cli(*args, env=None):
    """Runs `keras-compress ARGS` in a child process; returns (stdout, seconds, the child's peak RSS in GiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "keras_compress", *args], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", ""),
                                 **(env or {})})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"keras-compress {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of the children is the largest of them so far (kB on Linux): run the big ones first.
    return result.stdout, seconds, max(peak, before) / 2**20


def regression(out, seeds):
    import keras
    import numpy as np
    from sklearn.datasets import load_diabetes

    import keras_compress as kc

    bunch = load_diabetes()
    csv = os.path.join(out, "diabetes.csv")
    header = [f"f{i}" for i in range(bunch.data.shape[1])] + ["target"]
    np.savetxt(csv, np.column_stack([bunch.data * 20, bunch.target]), delimiter=",", header=",".join(header),
               comments="", fmt="%.6f")
    recipe = os.path.join(out, "regression.yaml")
    with open(recipe, "w") as f:
        f.write(REGRESSION_RECIPE)
    rows = []
    for seed in seeds:
        spec = f"{csv}?target=target&test_fraction=0.25&seed={seed}"
        keras.utils.set_random_seed(seed)
        x, y = kc.data.load(spec).train.take()
        model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(64, activation="relu"),
                                  keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)], name="mlp")
        model.compile(keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
        model.fit(x, y, epochs=60, batch_size=32, verbose=0)
        path = os.path.join(out, f"mlp-seed{seed}.keras")
        model.save(path)
        run_dir = os.path.join(out, f"regression-seed{seed}")
        _, seconds, _ = cli("compress", path, "--data", spec, "--recipe", recipe, "--out", run_dir, "--quiet")
        with open(os.path.join(run_dir, "report.json")) as f:
            report = json.load(f)
        by_name = {r["name"]: r for r in report["rows"]}
        base, int8 = by_name["baseline_float32.tflite"], by_name["model_int8.tflite"]
        rows.append({"seed": seed, "float_mae": base["litert_metric"], "int8_mae": int8["litert_metric"],
                     "relative": int8["litert_metric"] / base["litert_metric"] - 1,
                     "nonzero": int8["nonzero"] / int8["params"], "gzip_ratio": int8["ratio"],
                     "seconds": round(seconds, 1)})
    passed = all(r["relative"] <= MAX_REGRESSION_LOSS for r in rows)
    table = ["| seed | float MAE | int8 LiteRT MAE (80% pruned) | change | nonzero | gzip ratio |",
             "|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {r['seed']} | {r['float_mae']:.2f} | {r['int8_mae']:.2f} | {100 * r['relative']:+.2f}% | "
              f"{100 * r['nonzero']:.1f}% | {r['gzip_ratio']:.1f}x |" for r in rows]
    return {"case": "regression", "rows": rows, "passed": passed, "table": "\n".join(table),
            "criterion": f"int8 MAE at most {100 * MAX_REGRESSION_LOSS:g}% above the float model's, every seed"}


def _write_pngs(root, split, x, y):
    from PIL import Image
    import numpy as np

    marker = os.path.join(root, split, ".complete")
    if os.path.exists(marker):
        return
    for label in range(10):
        os.makedirs(os.path.join(root, split, str(label)), exist_ok=True)
    for i, (image, label) in enumerate(zip(x, y)):
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8), "L").save(
            os.path.join(root, split, str(label), f"{i:05d}.png"))
    open(marker, "w").close()


def folder(out, epochs):
    import keras

    import keras_compress as kc

    (x, y), (x_test, y_test) = kc.datasets.load("fashion_mnist")
    root = os.path.join(out, "fashion_mnist_png")
    start = time.perf_counter()
    _write_pngs(root, "train", x, y)
    _write_pngs(root, "test", x_test, y_test)
    png_seconds = time.perf_counter() - start
    keras.utils.set_random_seed(0)
    model = kc.zoo.lenet5()
    kc.zoo.train(model, x, y, epochs=epochs, verbose=0)
    path = os.path.join(out, "lenet5-fashion.keras")
    model.save(path)
    recipe = os.path.join(os.path.dirname(HERE), "recipes", "demo.yaml")
    figures = {}
    for label, spec in (("built-in arrays", "fashion_mnist"), ("PNG folder", f"{root}?scale=1/255")):
        run_dir = os.path.join(out, "folder-" + re.sub(r"\W+", "_", label))
        _, seconds, _ = cli("compress", path, "--data", spec, "--recipe", recipe, "--out", run_dir, "--quiet")
        with open(os.path.join(run_dir, "report.json")) as f:
            report = json.load(f)
        figures[label] = {r["name"]: r for r in report["rows"]}
        figures[label]["seconds"] = round(seconds, 1)
    rows, passed = [], True
    for name, field in (("baseline_float32.tflite", "litert_metric"), ("model.keras", "keras_metric"),
                        ("model_float32.tflite", "litert_metric"), ("model_int8.tflite", "litert_metric")):
        a, b = figures["built-in arrays"][name][field], figures["PNG folder"][name][field]
        difference = 100 * (b - a)
        passed &= abs(difference) <= MAX_FOLDER_DIFFERENCE_POINTS
        rows.append({"artifact": name, "arrays": a, "folder": b, "difference_points": difference})
    table = ["| artifact | built-in arrays | PNG folder | difference |", "|---|---:|---:|---:|"]
    table += [f"| {r['artifact']} | {100 * r['arrays']:.2f}% | {100 * r['folder']:.2f}% | "
              f"{r['difference_points']:+.2f} pt |" for r in rows]
    return {"case": "folder", "rows": rows, "passed": bool(passed), "table": "\n".join(table),
            "png_seconds": round(png_seconds, 1),
            "seconds": {k: v["seconds"] for k, v in figures.items()},
            "criterion": f"every artifact within {MAX_FOLDER_DIFFERENCE_POINTS} pt of the built-in dataset's"}


def streaming(out, samples):
    import keras

    import keras_compress as kc

    (x, y), _ = kc.datasets.load("mnist")
    keras.utils.set_random_seed(0)
    model = kc.zoo.lenet5()
    kc.zoo.train(model, x[:5000], y[:5000], epochs=1, verbose=0)
    path = os.path.join(out, "lenet5-stream.keras")
    model.save(path)
    spec = f"streams:million?n={samples}"
    measured = {}
    printed, seconds, peak = cli("evaluate", path, "--data", spec)
    measured["evaluate"] = {"seconds": round(seconds, 1), "peak_gib": round(peak, 3), "printed": printed.strip()}
    # ru_maxrss of children is a running maximum: the export's own peak is bounded by the larger figure.
    printed, seconds, peak = cli("export", path, "--format", "int8", "--data", spec, "--out",
                                 os.path.join(out, "stream_int8.tflite"))
    measured["int8 export + LiteRT evaluation"] = {"seconds": round(seconds, 1), "peak_gib": round(peak, 3),
                                                   "printed": printed.strip()}
    held = samples * 28 * 28 * 4 / 2**30
    passed = all(m["peak_gib"] < MAX_STREAM_PEAK_GIB for m in measured.values())
    table = ["| command | samples | held at once would be | peak RSS of the process | seconds |",
             "|---|---:|---:|---:|---:|"]
    table += [f"| {k} | {samples:,} | {held:.1f} GiB | {m['peak_gib']:.2f} GiB | {m['seconds']} |"
              for k, m in measured.items()]
    return {"case": "streaming", "samples": samples, "measured": measured, "passed": passed,
            "table": "\n".join(table), "criterion": f"peak RSS under {MAX_STREAM_PEAK_GIB} GiB"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("regression", "folder", "streaming", "all"), default="all")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "user_data"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2, help="baseline epochs of the folder case's LeNet-5")
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples of the streaming case")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    cases = ("streaming", "regression", "folder") if args.case == "all" else (args.case,)
    ok = True
    for case in cases:
        result = {"regression": lambda: regression(args.out, args.seeds), "folder": lambda: folder(args.out, args.epochs),
                  "streaming": lambda: streaming(args.out, args.samples)}[case]()
        result["machine"] = machine()
        result["command"] = f"python bench/user_data.py --case {case}"
        with open(os.path.join(args.out, f"{case}.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(f"\n## {case}: {'pass' if result['passed'] else 'MISSED'} ({result['criterion']})\n")
        print(result["table"])
        ok &= result["passed"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
