"""Structured pruning side by side with Sony MCT's (issue #14): same baseline, same budget, same fine-tuning.

One trained zoo baseline (bench/qat.py's cache, shared with
bench/structured.py). keras-compress: `prune_channels` to a parameter
budget (`params_target`), then `finetune`. MCT: its
`keras_pruning_experimental` to the same budget in weights memory (float32
bytes), in its own virtual environment (`bench/.venv-mct`, TensorFlow 2.15
and tf.keras, created on the first run), through bench/mct_worker.py, then
the same optimizer, learning rate, epochs and batch size. The baseline gets
the same epochs as a control. Every .tflite (float32 and int8 calibrated on
the same 500 training images) is measured here, by the same interpreter code,
timed in interleaved rounds (median of the per-round ratios against the
baseline float32 file). If MCT cannot be installed or fails, its row says why.

    KERAS_BACKEND=tensorflow python bench/structured_mct.py --model resnet20 --epochs 4 --finetune-epochs 2 \\
        --params-target 0.5 --out bench/results/mct
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402
import qat as qat_bench  # noqa: E402 - its cached baselines
from keras_compress.cli import main as cli  # noqa: E402
from keras_compress.core.macs import macs  # noqa: E402
from keras_compress.export import litert  # noqa: E402
from keras_compress.training import FinetuneConfig, finetune  # noqa: E402
from structured import accuracy, fine_tuned_control, paired_speedups  # noqa: E402

MCT_PACKAGES = ["tensorflow-cpu==2.15.1", "model-compression-toolkit==2.6.1"]
CALIBRATION = 500


def log(message):
    print(f"[bench mct] {message}", file=sys.stderr, flush=True)


def ensure_venv(venv):
    """The MCT venv's python, created with pip when missing (a few minutes); raises RuntimeError with pip's reason."""
    python = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, ".kc-mct-ready")
    if os.path.exists(marker):
        return python
    log(f"creating {venv}: pip install {' '.join(MCT_PACKAGES)}")
    for command in ([sys.executable, "-m", "venv", venv], [python, "-m", "pip", "install", "-q", *MCT_PACKAGES]):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"could not create the MCT venv ({' '.join(command[:4])}...): "
                               f"{' '.join(done.stderr.split())[-600:]}")
    open(marker, "w").close()
    return python


def run_mct(python, spec, work):
    spec_path = os.path.join(work, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    done = subprocess.run([python, os.path.join(HERE, "mct_worker.py"), spec_path], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""))
    if done.returncode:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"MCT's worker failed: {(lines or ['(no output)'])[-1][:400]}")
    with open(spec["result"]) as f:
        return json.load(f)


def _channels(base, share, args, x, y, fine):
    """keras-compress's side: `prune_channels` to `share` of the parameters, then the fine-tuning; and the seconds
    planning and building took."""
    start = time.perf_counter()
    pruned = kc.prune_channels(base, kc.ChannelPruneConfig(params_target=share, round_to=args.round_to))
    seconds = time.perf_counter() - start
    keras.utils.set_random_seed(args.seed)
    finetune(pruned, x, y, fine)
    return pruned, seconds


def _add_artifacts(paths, rows, label, model, work, x, xt, yt):
    """Exports `model` as float32 and calibrated int8 into `work`; its rows' Keras figures."""
    for fmt in ("float32", "int8"):
        key = f"{label} {fmt}"
        calibration = {"representative_data": x[:CALIBRATION], "num_calibration_samples": CALIBRATION}
        paths[key] = litert.export_litert(model, os.path.join(work, f"{len(paths)}-{fmt}.tflite"), fmt,
                                          **(calibration if fmt == "int8" else {}))
        rows[key] = {"artifact": key, "keras_accuracy": accuracy(model, xt, yt), "params": model.count_params(),
                     "macs": macs(model)["total"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20", choices=["resnet20", "mobilenet_v2_tiny"])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=4, help="baseline epochs (cached)")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--params-target", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, default=4)
    parser.add_argument("--score-approximations", type=int, default=32, help="MCT's LFH score samples")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 training images, a smoke run")
    parser.add_argument("--venv", default=os.path.join(HERE, ".venv-mct"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "mct"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    (x, y), (xt, yt) = kc.datasets.load(args.dataset)
    if args.quick:
        x, y, xt, yt = x[:2000], y[:2000], xt[:1000], yt[:1000]
    base = cli.load_model(qat_bench.baseline(args.model, args.dataset + ("-quick2k" if args.quick else ""),
                                             args.epochs, x, y))
    fine = FinetuneConfig(epochs=args.finetune_epochs, batch_size=128, learning_rate=args.learning_rate)
    control = fine_tuned_control(base, x, y, fine, args.seed)
    ours, ours_seconds = _channels(base, args.params_target, args, x, y, fine)
    work = tempfile.mkdtemp(prefix="kc-mct-", dir=args.out)
    paths, rows = {}, {}
    for label, model in {"baseline": base, "baseline + fine-tuning (control)": control,
                         f"keras-compress channels to {args.params_target:.0%} params": ours}.items():
        _add_artifacts(paths, rows, label, model, work, x, xt, yt)
    rows[f"keras-compress channels to {args.params_target:.0%} params float32"]["prune_seconds"] = ours_seconds
    mct_result, mct_failure = None, None
    try:
        python = ensure_venv(args.venv)
        data_path = os.path.join(work, "data.npz")
        np.savez(data_path, x=np.round(x * 255).astype("uint8"), y=y, xt=np.round(xt * 255).astype("uint8"), yt=yt)
        weights_path = os.path.join(work, "weights.npz")
        np.savez(weights_path, **{f"w{i}": w for i, w in enumerate(base.get_weights())})
        reference_path = os.path.join(work, "reference.npz")
        np.savez(reference_path, logits=keras.ops.convert_to_numpy(base.predict(xt[:256], verbose=0)))
        spec = {"data": data_path, "weights": weights_path, "reference": reference_path, "model": args.model,
                "zoo": os.path.join(os.path.dirname(HERE), "src", "keras_compress", "zoo.py"),
                "params_shares": [round(args.params_target + 0.05 * i, 2) for i in range(int((1 - args.params_target) / 0.05))],
                "representative_samples": CALIBRATION, "score_approximations": args.score_approximations,
                "seed": args.seed, "learning_rate": args.learning_rate, "epochs": args.finetune_epochs,
                "batch_size": 128, "calibration_samples": CALIBRATION, "result": os.path.join(work, "mct.json"),
                "float32_path": os.path.join(work, "mct-float32.tflite"),
                "int8_path": os.path.join(work, "mct-int8.tflite")}
        log("MCT: pruning and fine-tuning in its venv")
        mct_result = run_mct(python, spec, work)
        share = mct_result["params_share"]
        for fmt in ("float32", "int8"):
            key = f"MCT channels to {share:.0%} params {fmt}"
            paths[key] = spec[f"{fmt}_path"]
            rows[key] = {"artifact": key, "keras_accuracy": mct_result["keras_accuracy"],
                         "params": mct_result["params"], "macs": None}
        if share != args.params_target:  # keras-compress at MCT's reachable budget too: like for like
            log(f"MCT reached {share:.0%} of the parameters, not {args.params_target:.0%}: keras-compress there too")
            same, _ = _channels(base, share, args, x, y, fine)
            _add_artifacts(paths, rows, f"keras-compress channels to {share:.0%} params", same, work, x, xt, yt)
    except (RuntimeError, OSError) as error:
        mct_failure = str(error)
        log(f"MCT row failed: {mct_failure}")
    for key, path in paths.items():
        rows[key].update(litert_accuracy=litert.litert_accuracy(path, xt, yt), bytes=os.path.getsize(path))
    timing = paired_speedups(paths, "baseline float32", args.rounds, args.runs)
    for key in rows:
        rows[key].update(timing[key])
    result = {"model": args.model, "params_target": args.params_target, "baseline_epochs": args.epochs,
              "finetune_epochs": args.finetune_epochs, "mct": mct_result, "mct_failure": mct_failure,
              "rows": list(rows.values()), "seconds": round(time.perf_counter() - started),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Keras {keras.__version__}"}
    with open(os.path.join(args.out, f"mct_{args.model}.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(markdown(result))
    return 0


def markdown(result):
    lines = ["| Artifact | Keras acc | LiteRT acc | Params | MACs | Bytes | Latency b1 (ms) | Speed-up b1 | Speed-up b32 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['artifact']} | {100 * r['keras_accuracy']:.2f}% | {100 * r['litert_accuracy']:.2f}% | "
                     f"{r['params']:,} | {format(r['macs'], ',') if r['macs'] else 'n/a'} | {r['bytes']:,} | "
                     f"{r['latency_b1_ms']:.3f} | {r['speedup_b1']:.2f}x | {r['speedup_b32']:.2f}x |")
    if result["mct_failure"]:
        lines.append(f"| MCT channels | failed: {result['mct_failure']} | | | | | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
