"""Which settings should be the defaults (issue #18): measured, several seeds, side by side.

    KERAS_BACKEND=tensorflow python bench/defaults.py --part cluster --seeds 0,1,2
    KERAS_BACKEND=tensorflow python bench/defaults.py --part qat --seeds 0,1,2
    KERAS_BACKEND=tensorflow python bench/defaults.py --part chain --seeds 0,1,2

The budget is `bench/compare.py`'s: baselines trained 3 epochs (Adam 1e-3,
batch 128, all training images, seed 0), then every candidate fine-tuned 2
epochs (Adam 1e-4, batch 128) from the same trained weights, once per seed
(the seed sets the shuffles). Test accuracy over the whole test set.

- `cluster`: LeNet-5 and LeNet-300-100 on MNIST, 16 clusters per kernel,
  `ClusterConfig` candidates (assignment x init x k-means iterations);
  Keras accuracy after `strip` and the gzip (level 9) bytes of the
  stripped model's float32 weights.
- `qat`: the BN CNN and the MobileNetV2-style net on Fashion-MNIST, QAT with
  BatchNormalization folded and frozen against kept training
  (`QATConfig(train_batchnorm=...)`); Keras accuracy of the QAT model, and the
  agreement of its int8 LiteRT artifact with it (seed 0).
- `chain`: LeNet-5 and LeNet-300-100 through compare.py's chain (prune 90%
  polynomially from 50% over 2/3 of the steps, strip, cluster 16, QAT), each
  stage 2 epochs; `ClusterConfig(zero_cluster=...)` candidates; Keras
  accuracy of the QAT model, the int8 LiteRT artifact's accuracy, its gzip
  bytes and the kernels' final sparsity.

Writes `defaults_<part>.json` and `.md` under `--out`.
"""

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLUSTER_CANDIDATES = {
    "fixed, kmeans++, 10 iterations (batch 1 default)": dict(assignment="fixed", init="kmeans++", kmeans_iterations=10),
    "fixed, linear, 0 iterations (compare's row)": dict(assignment="fixed", init="linear", kmeans_iterations=0),
    "nearest, linear, 0 iterations": dict(assignment="nearest", init="linear", kmeans_iterations=0),
    "nearest, kmeans++, 10 iterations": dict(assignment="nearest", init="kmeans++", kmeans_iterations=10),
    "nearest, density, 0 iterations": dict(assignment="nearest", init="density", kmeans_iterations=0),
}
QAT_CANDIDATES = {
    "BatchNormalization folded and frozen": dict(train_batchnorm=False),
    "BatchNormalization kept training": dict(train_batchnorm=True),
}
CHAIN_CANDIDATES = {
    "zero a shared value kept weights may join": dict(zero_cluster=True),
    "zeros only where pruned": dict(zero_cluster=False),
}
CANDIDATES = {"cluster": CLUSTER_CANDIDATES, "qat": QAT_CANDIDATES, "chain": CHAIN_CANDIDATES}
MODELS = {"cluster": (("lenet5", "mnist"), ("lenet_300_100", "mnist")),
          "chain": (("lenet5", "mnist"), ("lenet_300_100", "mnist")),
          "qat": (("bn_cnn", "fashion_mnist"), ("mobilenet_v2_tiny", "fashion_mnist"))}


def _weights_gzip(model):
    import numpy as np

    blob = b"".join(np.asarray(w, "float32").tobytes() for w in model.get_weights())
    return len(gzip.compress(blob, 9))


def _accuracy(model, x, y):
    import numpy as np

    return float(np.mean(np.argmax(model.predict(x, batch_size=1024, verbose=0), -1) == y))


def _baseline(name, x, y, cache):
    import keras

    import keras_compress as kc

    path = os.path.join(cache, f"{name}-e3.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path)
    model = kc.zoo.build(name)
    kc.zoo.train(model, x, y, epochs=3, learning_rate=1e-3, verbose=0, seed=0)
    model.save(path)
    return model


def _finetune(model, x, y, seed, callbacks=()):
    import keras

    import keras_compress as kc

    kc.zoo.compile_for_classification(model, 1e-4)
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    model.fit(x, y, epochs=2, batch_size=128, callbacks=list(callbacks), verbose=0)
    return time.perf_counter() - start


def run_cluster(base, data, seed, settings):
    import keras_compress as kc

    (x, y), (x_test, y_test) = data
    model = kc.cluster(base, kc.ClusterConfig(num_clusters=16, seed=seed, **settings))
    seconds = _finetune(model, x, y, seed, [kc.ClusteringCallback()])
    kc.strip(model)
    return {"accuracy": _accuracy(model, x_test, y_test), "gzip_bytes": _weights_gzip(model), "seconds": seconds}


def run_qat(base, data, seed, settings, work):
    import numpy as np

    import keras_compress as kc
    from keras_compress.export.interpreter import litert_predict
    from keras_compress.export.litert import export_litert

    (x, y), (x_test, y_test) = data
    model = kc.quantize(base, kc.QATConfig(**settings), calibration_data=x[:256])
    seconds = _finetune(model, x, y, seed)
    row = {"accuracy": _accuracy(model, x_test, y_test), "seconds": seconds}
    if seed == 0:
        path = export_litert(model, os.path.join(work, f"qat_{settings['train_batchnorm']}.tflite"), fmt="int8")
        litert = np.argmax(litert_predict(path, x_test), -1)
        keras_pred = np.argmax(model.predict(x_test, batch_size=1024, verbose=0), -1)
        row["litert_accuracy"] = float(np.mean(litert == y_test))
        row["litert_differing"] = int(np.sum(litert != keras_pred))
    return row


def run_chain(base, data, seed, settings, work):
    import numpy as np

    import keras_compress as kc
    from keras_compress.export.interpreter import litert_predict
    from keras_compress.export.litert import export_litert

    (x, y), (x_test, y_test) = data
    steps = 2 * (-(-len(x) // 128))
    end_step = 50 * max(1, int(round(2 / 3 * steps / 50)))  # compare.py's Settings.end_step
    model = kc.prune(base, kc.PruneConfig(target_sparsity=0.9, schedule="polynomial", initial_sparsity=0.5,
                                          end_step=end_step, frequency=50, power=3.0))
    seconds = _finetune(model, x, y, seed, [kc.PruningCallback()])
    kc.strip(model)
    kc.cluster(model, kc.ClusterConfig(num_clusters=16, seed=seed, **settings))
    seconds += _finetune(model, x, y, seed, [kc.ClusteringCallback()])
    kc.quantize(model, kc.QATConfig(), calibration_data=x[:256])
    seconds += _finetune(model, x, y, seed)
    row = {"accuracy": _accuracy(model, x_test, y_test), "seconds": seconds}
    path = export_litert(model, os.path.join(work, f"chain_{seed}.tflite"), fmt="int8")
    with open(path, "rb") as f:
        row["int8_gzip_bytes"] = len(gzip.compress(f.read(), 9))
    row["litert_accuracy"] = float(np.mean(np.argmax(litert_predict(path, x_test), -1) == y_test))
    kc.strip(model)
    kernels = [np.asarray(w) for w in model.get_weights() if np.asarray(w).ndim >= 2]
    row["sparsity"] = float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels))
    return row


def summarise(values):
    mean = statistics.fmean(values)
    spread = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    return mean, spread


def markdown(result):
    lines = [f"Command: `{result['command']}`", "", f"- Machine: {result['machine']}", ""]
    for model, rows in result["models"].items():
        lines += [f"### {model}", "", f"Baseline: {rows['baseline_accuracy']:.2%}", "",
                  "| Candidate | accuracy (mean ± half-range) | per seed | " +
                  {"cluster": "gzip bytes (mean) |", "qat": "LiteRT int8 (seed 0) |",
                   "chain": "LiteRT int8 accuracy (mean) | int8 gzip bytes (mean) | kernel sparsity (mean) |"}[
                      result["part"]],
                  "|---|---:|---|---:|" + ("---:|---:|" if result["part"] == "chain" else "")]
        for label, runs in rows["candidates"].items():
            acc = [r["accuracy"] for r in runs]
            mean, spread = summarise(acc)
            per_seed = ", ".join(f"{a:.2%}" for a in acc)
            if result["part"] == "cluster":
                extra = f"{statistics.fmean(r['gzip_bytes'] for r in runs):,.0f}"
            elif result["part"] == "chain":
                extra = (f"{statistics.fmean(r['litert_accuracy'] for r in runs):.2%} | "
                         f"{statistics.fmean(r['int8_gzip_bytes'] for r in runs):,.0f} | "
                         f"{statistics.fmean(r['sparsity'] for r in runs):.2%}")
            else:
                first = runs[0]
                extra = (f"{first['litert_accuracy']:.2%}, {first['litert_differing']} differing"
                         if "litert_accuracy" in first else "-")
            lines.append(f"| {label} | {mean:.2%} ± {spread:.2%} | {per_seed} | {extra} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    import keras

    import keras_compress as kc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(MODELS), required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default=None, help="comma-separated subset of the part's models")
    parser.add_argument("--candidates", default=None, help="comma-separated indices into the part's candidates")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "defaults"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    candidates = CANDIDATES[args.part]
    if args.candidates:
        keep = [int(i) for i in args.candidates.split(",")]
        candidates = {k: v for i, (k, v) in enumerate(candidates.items()) if i in keep}
    models = [m for m in MODELS[args.part] if args.models is None or m[0] in args.models.split(",")]
    result = {"part": args.part, "command": "python bench/defaults.py " + " ".join(argv or sys.argv[1:]),
              "machine": f"{platform.platform()}, {os.cpu_count()} cores, keras {keras.__version__}, "
                         f"backend {keras.backend.backend()}",
              "seeds": seeds, "models": {}}
    for name, dataset in models:
        data = kc.datasets.load(dataset)
        (x, y), (x_test, y_test) = data
        base = _baseline(name, x, y, args.out)
        weights = base.get_weights()
        rows = {"baseline_accuracy": _accuracy(base, x_test, y_test), "candidates": {}}
        result["models"][name] = rows
        for label, settings in candidates.items():
            runs = rows["candidates"].setdefault(label, [])
            for seed in seeds:
                model = kc.zoo.build(name)
                model.set_weights(weights)
                if args.part == "cluster":
                    run = run_cluster(model, data, seed, settings)
                elif args.part == "chain":
                    run = run_chain(model, data, seed, settings, args.out)
                else:
                    run = run_qat(model, data, seed, settings, args.out)
                run["seed"] = seed
                runs.append(run)
                print(f"{name} | {label} | seed {seed}: {json.dumps(run)}", flush=True)
                with open(os.path.join(args.out, f"defaults_{args.part}.json"), "w") as f:
                    json.dump(result, f, indent=1)
    with open(os.path.join(args.out, f"defaults_{args.part}.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
