"""Side by side: keras-compress, Keras 3's own quantization and tfmot, from one baseline.

For each model, a baseline is trained once with Keras 3 and its weights saved
as NumPy arrays (`model.get_weights()` order). From that same baseline, with
the same fine-tuning budget (epochs, batch size, learning rate, optimizer):

- keras-compress: post-training LiteRT export (float16, dynamic-range int8,
  full-integer int8) and pruning to 90% (polynomial schedule from 50%,
  `PruningCallback`, `strip`) exported as float32 and int8;
- Keras 3: `model.quantize("int8")` and `model.quantize("int4")` (Dense,
  EinsumDense and Embedding layers only), then an attempt at LiteRT export;
- tfmot 0.8 on tf_keras, in its own virtual environment (`bench/.venv-tfmot`,
  created on first use: a few minutes), through `bench/tfmot_worker.py`:
  `prune_low_magnitude` (same schedule), `cluster_weights` (16 clusters,
  linear init), `quantize_model` (QAT) and the collaborative chain
  prune -> sparsity-preserving cluster -> PCQAT.

Every `.tflite` file, whichever toolkit made it, is measured here by the same
code: LiteRT accuracy over the whole test set, raw and gzip bytes, batch-1
latency (one interpreter thread). Ratios are against the model's float32
baseline artifact (gzip bytes). Training-step overhead is the median, over
paired epochs in alternating order (first epoch excluded), of a technique's
epoch time over a plain fit of the same model in the same process. A
technique that cannot run is a `failed` row with the reason, never a number.

    python bench/compare.py --quick                       # LeNet-5, 4,000 images, 1 epoch: < 10 min
    python bench/compare.py --models lenet5,lenet_300_100 # the full budget on two models
    python bench/compare.py --toolkits keras-compress,keras  # no tfmot, no venv

Writes bench/results/compare.json and bench/results/compare.md (--out).
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
import time
import traceback

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402

from compare_rows import (  # noqa: E402,F401 - the tests read these from here
    HERE,
    DATASET_OF,
    DEFAULT_VENV,
    KERAS_MODES,
    PTQ_FORMATS,
    REFERENCE_TOOLKIT,
    ROW_FIELDS,
    TFMOT_REQUIREMENTS,
    TFMOT_TECHNIQUES,
    TOOLKITS,
    add_ratios,
    failed_row,
    log,
    make_row,
    measure_artifact,
    one_line,
)

@dataclasses.dataclass
class Settings:
    """Everything a run depends on; printed in compare.md and stored in compare.json."""

    baseline_epochs: int = 3
    epochs: int = 2
    batch_size: int = 128
    learning_rate: float = 1e-4
    target_sparsity: float = 0.9
    initial_sparsity: float = 0.5
    end_fraction: float = 2 / 3  # the polynomial ramp ends at 2/3 of the fine-tuning steps
    frequency: int = 50
    power: float = 3.0
    clusters: int = 16
    calibration_samples: int = 256
    train_samples: int | None = None
    test_samples: int | None = None
    overhead_samples: int = 10000
    overhead_pairs: int = 3
    latency_runs: int = 100
    latency_threads: int = 1
    seed: int = 0  # the fine-tuning's seed (shuffles, initial draws) in the pass being run
    seeds: tuple = (0,)  # one pass per seed; overhead measured in the first only
    baseline_seed: int = 0
    tfmot_venv: str = DEFAULT_VENV
    create_venv: bool = True
    tfmot_timeout_s: int = 5400

    def budget(self):
        return {"epochs": self.epochs, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "optimizer": "Adam", "train_samples": self.train_samples}

    def end_step(self, steps_total):
        """Where the polynomial ramp ends: `end_fraction` of the steps, on a mask-update step.

        tfmot updates masks only on steps that are multiples of `frequency`
        (keras-compress also at `end_step`), so an end step between two updates
        would leave tfmot short of the target; rounding it to a multiple of
        `frequency` gives both toolkits the same update steps and final sparsity.
        """
        steps = self.end_fraction * steps_total / self.frequency
        return self.frequency * max(1, int(round(steps)))

    def prune_dict(self, steps_total, overhead_steps_total):
        return {"target_sparsity": self.target_sparsity, "initial_sparsity": self.initial_sparsity,
                "end_step": self.end_step(steps_total), "overhead_end_step": self.end_step(overhead_steps_total),
                "frequency": self.frequency, "power": self.power}


# A smoke run of the whole harness: 47 fine-tuning steps, so masks move every 4 steps and the
# learning rate is Adam's default (1e-4 barely moves a 90%-pruned LeNet-5 in 47 steps).
QUICK = dict(baseline_epochs=2, epochs=1, train_samples=6000, learning_rate=1e-3, frequency=4,
             overhead_samples=6000, overhead_pairs=2, latency_runs=50, tfmot_timeout_s=900)


# -- the context of one model -----------------------------------------------------


class ModelContext:
    """One model's baseline, data and output folder, shared by every toolkit."""

    def __init__(self, name, dataset, build_fn, data, settings, work_dir, out_root=None):
        self.name, self.dataset, self.build_fn = name, dataset, build_fn
        (self.x_train, self.y_train), (self.x_test, self.y_test) = data
        self.settings = settings
        self.work_dir = work_dir
        self.out_root = out_root
        os.makedirs(work_dir, exist_ok=True)
        self.baseline = None
        self.weights_path = os.path.join(work_dir, "baseline.weights.npz")
        self.weight_paths = None
        self.info = {}

    def fresh_baseline(self):
        """A new model object holding the baseline's weights."""
        model = self.build_fn()
        model.set_weights(self.baseline.get_weights())
        return model

    def steps_total(self):
        s = self.settings
        return s.epochs * (-(-len(self.x_train) // s.batch_size))

    def overhead_steps_total(self):
        # The pruning schedule of the overhead runs spans 3 of their epochs.
        s = self.settings
        return 3 * (-(-min(s.overhead_samples, len(self.x_train)) // s.batch_size))

    def prune_config(self, steps_total):
        s = self.settings
        return kc.PruneConfig(target_sparsity=s.target_sparsity, schedule="polynomial",
                              initial_sparsity=s.initial_sparsity, end_step=s.end_step(steps_total),
                              frequency=s.frequency, power=s.power)

    def artifact(self, stem):
        return os.path.join(self.work_dir, f"{stem}.tflite")

    @property
    def calibration(self):
        return self.x_train[: self.settings.calibration_samples]


def train_baseline(ctx, retrain=False):
    """Trains (or reloads) the model's Keras 3 baseline; saves its weights as NumPy arrays."""
    s = ctx.settings
    meta_path = os.path.join(ctx.work_dir, "baseline.json")
    key = {"model": ctx.name, "dataset": ctx.dataset, "epochs": s.baseline_epochs, "batch_size": s.batch_size,
           "train_samples": len(ctx.x_train), "seed": s.baseline_seed, "keras": keras.__version__}
    model = ctx.build_fn()
    cached = None
    if not retrain and os.path.isfile(meta_path) and os.path.isfile(ctx.weights_path):
        with open(meta_path) as f:
            cached = json.load(f)
        if cached.get("key") != key:
            cached = None
    if cached is not None:
        with np.load(ctx.weights_path) as f:
            model.set_weights([f[f"arr_{i}"] for i in range(len(f.files))])
        log(f"{ctx.name}: baseline weights reused from {ctx.weights_path}")
        train_s = cached["train_s"]
    else:
        log(f"{ctx.name}: training the baseline ({s.baseline_epochs} epochs on {len(ctx.x_train)} images)")
        start = time.perf_counter()
        kc.zoo.train(model, ctx.x_train, ctx.y_train, epochs=s.baseline_epochs, batch_size=s.batch_size,
                     learning_rate=1e-3, verbose=0, seed=s.baseline_seed)
        train_s = time.perf_counter() - start
        np.savez(ctx.weights_path, *model.get_weights())
    ctx.baseline = model
    # "layer/variable", which is how tf_keras names the same variable (minus ":0").
    ctx.weight_paths = ["/".join(v.path.split("/")[-2:]) for v in model.weights]
    accuracy = kc.evaluate.keras_accuracy(model, ctx.x_test, ctx.y_test)
    ctx.info = {"baseline_keras_accuracy": accuracy, "baseline_train_s": train_s, "baseline_epochs": s.baseline_epochs,
                "params": model.count_params()}
    with open(meta_path, "w") as f:
        json.dump({"key": key, "train_s": train_s, "accuracy": accuracy, "weight_paths": ctx.weight_paths}, f)
    return model


# -- the reference row, keras-compress and Keras 3's own quantization: bench/compare_runs.py --

from compare_runs import run_keras, run_keras_compress, run_reference  # noqa: E402


# -- tfmot, in its own virtual environment: bench/compare_tfmot.py ----------------

from compare_tfmot import ensure_tfmot_venv, run_tfmot, tfmot_label  # noqa: E402,F401


# -- one model, all toolkits ------------------------------------------------------


RUNNERS = {"keras-compress": run_keras_compress, "keras": run_keras, "tfmot": run_tfmot}


def benchmark_model(ctx, toolkits=TOOLKITS, runners=None):
    """Reference row, then each toolkit's rows; a toolkit that raises yields one `failed` row."""
    runners = dict(RUNNERS, **(runners or {}))
    rows = run_reference(ctx)
    for toolkit in toolkits:
        log(f"{ctx.name}: {toolkit}")
        start = time.perf_counter()
        try:
            rows.extend(runners[toolkit](ctx))
        except Exception as error:  # noqa: BLE001 - one toolkit failing must not stop the others
            log(f"{ctx.name}: {toolkit} failed: {one_line(error)}\n{traceback.format_exc()}")
            rows.append(failed_row(ctx, toolkit, "(all)", one_line(error)))
        ctx.info[f"{toolkit}_wall_s"] = time.perf_counter() - start
    return add_ratios(rows)


# -- output: bench/compare_report.py (re-exported: the tests read them from here) ----------

from compare_report import (  # noqa: E402,F401
    aggregate,
    best_label,
    like_for_like,
    markdown,
    readings,
    seeds_markdown,
    verdict,
)


def machine():
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}")


def versions():
    out = {"keras": keras.__version__, "backend": keras.backend.backend(), "keras_compress": kc.__version__}
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        out["tensorflow"] = tf.__version__
    try:
        from importlib.metadata import version

        out["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001
        pass
    return out


def write_results(result, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name, text in (("compare.json", json.dumps(result, indent=2, default=str)), ("compare.md", markdown(result))):
        tmp = os.path.join(out_dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, os.path.join(out_dir, name))


def load_data(dataset, settings):
    (x, y), (x_test, y_test) = kc.datasets.load(dataset)
    if settings.train_samples:
        x, y = x[: settings.train_samples], y[: settings.train_samples]
    if settings.test_samples:
        x_test, y_test = x_test[: settings.test_samples], y_test[: settings.test_samples]
    return (x, y), (x_test, y_test)


def run(models, toolkits, settings, out_dir, command, retrain=False):
    start = time.perf_counter()
    result = {"machine": machine(), "command": command, "settings": dataclasses.asdict(settings),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "toolkits": list(toolkits), "models": {}, "rows": [], "wall_s": 0.0, "test_samples": None,
              "versions": None, "tfmot_versions": None}
    for name in models:
        dataset = DATASET_OF[name]
        data = load_data(dataset, settings)
        result["test_samples"] = len(data[1][0])
        ctx = ModelContext(name, dataset, lambda name=name: kc.zoo.build(name), data, settings,
                           os.path.join(out_dir, "compare_work", name), out_root=out_dir)
        keras.utils.set_random_seed(settings.baseline_seed)
        train_baseline(ctx, retrain=retrain)
        for index, seed in enumerate(settings.seeds):
            ctx.settings = dataclasses.replace(settings, seed=seed,
                                               overhead_pairs=settings.overhead_pairs if index == 0 else 0)
            log(f"{name}: seed {seed} ({index + 1} of {len(settings.seeds)})")
            rows = benchmark_model(ctx, toolkits)
            for row in rows:
                row["seed"] = seed
            result["rows"].extend(rows)
        result["models"][name] = dict(ctx.info, dataset=dataset)
        result["tfmot_versions"] = ctx.info.get("tfmot_versions") or result["tfmot_versions"]
        result["versions"] = versions()
        result["wall_s"] = time.perf_counter() - start
        write_results(result, out_dir)
        log(f"{name} done ({result['wall_s'] / 60:.1f} min so far)")
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DATASET_OF), help="comma-separated zoo models")
    parser.add_argument("--toolkits", default=",".join(TOOLKITS), help=f"comma-separated, of {list(TOOLKITS)}")
    parser.add_argument("--quick", action="store_true",
                        help="lenet5 only, 4,000 training images, 1 fine-tune epoch (< 10 min once the venv exists)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    defaults = Settings()
    for field in ("baseline_epochs", "epochs", "batch_size", "train_samples", "test_samples", "overhead_samples",
                  "overhead_pairs", "latency_runs", "clusters", "tfmot_timeout_s"):
        parser.add_argument("--" + field.replace("_", "-"), type=int, default=None,
                            help=f"default {getattr(defaults, field)}")
    parser.add_argument("--learning-rate", type=float, default=None, help=f"default {defaults.learning_rate}")
    parser.add_argument("--seeds", default="0",
                        help="comma-separated fine-tuning seeds, one pass each (mean ± half-range reported)")
    parser.add_argument("--tfmot-venv", default=DEFAULT_VENV)
    parser.add_argument("--no-create-venv", action="store_true", help="fail the tfmot rows if the venv is missing")
    parser.add_argument("--retrain", action="store_true", help="train the baselines again even if cached")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite compare.md from the compare.json in --out; runs nothing")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.quick and args.models == parser.get_default("models"):
        models = ["lenet5"]
    toolkits = [t.strip() for t in args.toolkits.split(",") if t.strip()]
    for m in models:
        if m not in DATASET_OF:
            parser.error(f"unknown model {m!r}; allowed: {list(DATASET_OF)}")
    for t in toolkits:
        if t not in TOOLKITS:
            parser.error(f"unknown toolkit {t!r}; allowed: {list(TOOLKITS)}")
    overrides = dict(QUICK) if args.quick else {}
    for field in ("baseline_epochs", "epochs", "batch_size", "train_samples", "test_samples", "overhead_samples",
                  "overhead_pairs", "latency_runs", "clusters", "tfmot_timeout_s", "learning_rate"):
        value = getattr(args, field)
        if value is not None:
            overrides[field] = value
    try:
        seeds = tuple(int(v) for v in args.seeds.split(",") if v.strip())
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers; received {args.seeds!r}")
    if not seeds or len(set(seeds)) != len(seeds):
        parser.error(f"--seeds must name at least one seed, each once; received {args.seeds!r}")
    settings = Settings(tfmot_venv=os.path.abspath(args.tfmot_venv), create_venv=not args.no_create_venv,
                        seeds=seeds, seed=seeds[0], **overrides)
    return args, models, toolkits, settings


def main(argv=None):
    args, models, toolkits, settings = parse_args(argv)
    if args.render_only:
        with open(os.path.join(args.out, "compare.json")) as f:
            result = json.load(f)
        write_results(result, args.out)
        print(markdown(result))
        return 0
    command = "python bench/compare.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    result = run(models, toolkits, settings, args.out, command, retrain=args.retrain)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
