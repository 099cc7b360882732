"""Why the int8 artifact is not 2x faster: batch-1 latency probes, one process.

For a cached zoo baseline (bench/qat.py trains it), exports float32, full-
integer int8 (float input/output) and int8 with int8 input/output, then
times them at batch 1 in interleaved rounds, with LiteRT's default XNNPACK
delegate and without any delegate (the builtin kernels).

    KERAS_BACKEND=tensorflow python bench/int8_latency.py            # MobileNetV2-style net
    KERAS_BACKEND=tensorflow python bench/int8_latency.py --model lenet5 --dataset mnist --epochs 8
    KERAS_BACKEND=tensorflow python bench/int8_latency.py --per-layer   # where the time goes

`--per-layer` also times each convolution (with its folded normalization and
fused ReLU), pooling and dense layer alone: a one-layer model per layer,
exported as float32 and as int8 (calibrated on the activations the trained
model feeds that layer), timed back to back. Residual adds (two inputs) are
left out.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402
import qat as qat_bench  # noqa: E402
from keras_compress.cli import main as cli  # noqa: E402
from keras_compress.export import litert  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2_tiny")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=10, help="baseline epochs (the cached baseline's)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=200, help="invokes per round")
    parser.add_argument("--per-layer", action="store_true", help="also time each layer alone")
    args = parser.parse_args()
    (x, y), _ = kc.datasets.load(args.dataset)
    model = cli.load_model(qat_bench.baseline(args.model, args.dataset, args.epochs, x, y))
    folder = tempfile.mkdtemp(prefix="kc-int8-latency-")
    calibration = dict(representative_data=x[:500], num_calibration_samples=500)
    paths = {
        "float32": litert.export_litert(model, os.path.join(folder, "f32.tflite"), "float32"),
        "int8": litert.export_litert(model, os.path.join(folder, "i8.tflite"), "int8", **calibration),
        "int8 (int8 in/out)": litert.export_litert(model, os.path.join(folder, "i8io.tflite"), "int8",
                                                   int8_io=True, **calibration),
    }
    runtimes = {k: litert.LiteRTModel(p, num_threads=1) for k, p in paths.items()}
    samples = {k: [] for k in runtimes}
    for _ in range(args.rounds):
        for k, runtime in runtimes.items():
            samples[k].append(runtime.latency(batch_size=1, runs=args.runs, warmup=10))
    xnnpack = {k: float(np.median(v)) for k, v in samples.items()}

    from ai_edge_litert.interpreter import OpResolverType

    no_delegate = dict(experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    builtin = {k: _invoke_seconds(path, args.runs * 2, rounds=1, warmup=20, **no_delegate)
               for k, path in paths.items()}
    print(f"{args.model}: batch 1, 1 thread, median of {args.rounds} interleaved rounds")
    print("| artifact | XNNPACK (default) | speed-up | no delegate | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for k in paths:
        print(f"| {k} | {1e6 * xnnpack[k]:.1f} µs | {xnnpack['float32'] / xnnpack[k]:.2f}x | "
              f"{1e6 * builtin[k]:.1f} µs | {builtin['float32'] / builtin[k]:.2f}x |")
    if args.per_layer:
        per_layer(model, x, folder, runs=10 * args.runs)


def _layer_groups(model):
    """Each weighted or pooling layer with the normalization/ReLU that fuse into it."""
    names = {layer.name for layer in model.layers}
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            yield [layer] + [model.get_layer(n) for n in (f"{layer.name}_bn", f"{layer.name}_relu") if n in names]
        elif isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.Dense)):
            yield [layer]


def _invoke_seconds(path, runs, rounds=5, warmup=50, **interpreter_kwargs):
    """Seconds per `invoke()` of a 1-thread interpreter: the median over `rounds` loops of `runs`."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=1, **interpreter_kwargs)
    interpreter.allocate_tensors()
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(runs):
            interpreter.invoke()
        times.append((time.perf_counter() - start) / runs)
    return float(np.median(times))


def per_layer(model, x, folder, runs):
    print("| layer | input | float32 | int8 (int8 in/out) | speed-up |")
    print("|---|---|---:|---:|---:|")
    totals = [0.0, 0.0]
    for group in _layer_groups(model):
        first = group[0]
        inputs = keras.Input(first.input.shape[1:])
        h = inputs
        for layer in group:
            clone = layer.__class__.from_config(layer.get_config())
            h = clone(h)
            clone.set_weights(layer.get_weights())
        single = keras.Model(inputs, h)
        feed = keras.Model(model.inputs, first.input).predict(x[:300], verbose=0)
        f32 = litert.export_litert(single, os.path.join(folder, "layer_f32.tflite"), "float32")
        i8 = litert.export_litert(single, os.path.join(folder, "layer_i8.tflite"), "int8", int8_io=True,
                                  representative_data=feed, num_calibration_samples=300)
        a, b = _invoke_seconds(f32, runs), _invoke_seconds(i8, runs)
        totals[0] += a
        totals[1] += b
        print(f"| {' + '.join(layer.name for layer in group)} | {tuple(first.input.shape[1:])} | "
              f"{1e6 * a:.2f} µs | {1e6 * b:.2f} µs | {a / b:.2f}x |")
    print(f"| sum (each alone, so each with its own invoke overhead) | | {1e6 * totals[0]:.1f} µs | "
          f"{1e6 * totals[1]:.1f} µs | {totals[0] / totals[1]:.2f}x |")


if __name__ == "__main__":
    main()
