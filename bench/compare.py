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
import re
import shlex
import statistics
import subprocess
import sys
import time
import traceback

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "tfmot_worker.py")
DEFAULT_VENV = os.path.join(HERE, ".venv-tfmot")
TFMOT_REQUIREMENTS = (
    "tensorflow-cpu==2.21.*",
    "tf-keras==2.21.*",
    "tensorflow-model-optimization==0.8.*",
    "ai-edge-litert",
)
DATASET_OF = {
    "lenet5": "mnist",
    "lenet_300_100": "mnist",
    "bn_cnn": "fashion_mnist",
    "mobilenet_v2_tiny": "fashion_mnist",
}
TOOLKITS = ("keras-compress", "keras", "tfmot")
TFMOT_TECHNIQUES = ("baseline", "prune", "cluster", "qat", "prune_cluster_pcqat")
KERAS_MODES = ("int8", "int4")
PTQ_FORMATS = ("float16", "dynamic_int8", "int8")
REFERENCE_TOOLKIT = "baseline"
ROW_FIELDS = (
    "model", "dataset", "toolkit", "technique", "format", "status", "reason",
    "keras_accuracy", "litert_accuracy", "raw_bytes", "gzip_bytes", "ratio",
    "latency_b1_ms", "finetune_s", "overhead", "notes",
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


def log(message):
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def one_line(error, limit=600):
    text = " ".join(str(error).split()) or "(no message)"
    # The LiteRT converter's errors bury the cause in MLIR locations: keep the op messages.
    ops = list(dict.fromkeys(re.findall(r"('tfl\.\w+' op .*?)(?= <unknown>:| loc\(|$)", text)))
    if ops:
        text = "; ".join(op.strip() for op in ops)
    return f"{type(error).__name__}: {text[:limit]}"


# -- rows -------------------------------------------------------------------------


def make_row(ctx, toolkit, technique, fmt, **fields):
    row = dict.fromkeys(ROW_FIELDS)
    row.update(model=ctx.name, dataset=ctx.dataset, toolkit=toolkit, technique=technique, format=fmt,
               status="ok", reason="", notes="")
    row.update(fields)
    return row


def failed_row(ctx, toolkit, technique, reason, fmt="-", **fields):
    return make_row(ctx, toolkit, technique, fmt, status="failed", reason=reason, **fields)


def add_ratios(rows):
    """Sets each row's ratio: the model's float32 baseline artifact gzip bytes / the row's gzip bytes."""
    reference = {}
    for row in rows:
        if row["toolkit"] == REFERENCE_TOOLKIT and row["format"] == "float32" and row.get("gzip_bytes"):
            reference.setdefault(row["model"], row["gzip_bytes"])
    for row in rows:
        base = reference.get(row["model"])
        row["ratio"] = base / row["gzip_bytes"] if base and row.get("gzip_bytes") else None
    return rows


# -- measuring ----------------------------------------------------------------------


def measure_artifact(ctx, row, path):
    """Fills the LiteRT measurements of `row` from the `.tflite` at `path`; a failure fails the row."""
    from keras_compress.export import litert

    row["artifact"] = os.path.relpath(path, ctx.out_root) if ctx.out_root else path
    try:
        row.update(kc.evaluate.sizes(path))
        row["litert_accuracy"] = litert.litert_accuracy(path, ctx.x_test, ctx.y_test)
        row["latency_b1_ms"] = 1000.0 * litert.litert_latency(
            path, batch_size=1, runs=ctx.settings.latency_runs, num_threads=ctx.settings.latency_threads)
    except Exception as error:  # noqa: BLE001 - an artifact LiteRT cannot run is a result too
        row["status"] = "failed"
        row["reason"] = f"LiteRT measurement: {one_line(error)}"
    return row


def epoch_seconds(model, x, y, batch_size, callbacks=()):
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=list(callbacks))
    return time.perf_counter() - start


def paired_overhead(plain, technique, x, y, batch_size, pairs, callbacks=()):
    """Median (technique epoch / plain epoch) over `pairs` back-to-back pairs, as bench/overhead.py.

    Both models must be compiled. Each gets one untimed warm-up epoch (tracing);
    then the pairs alternate which model goes first. `pairs=0` measures nothing.
    """
    if pairs == 0:
        return {"overhead": None}
    epoch_seconds(plain, x, y, batch_size)
    epoch_seconds(technique, x, y, batch_size, callbacks)
    plain_s, technique_s, ratios = [], [], []
    for i in range(pairs):
        first_plain = i % 2 == 0
        if first_plain:
            p = epoch_seconds(plain, x, y, batch_size)
            t = epoch_seconds(technique, x, y, batch_size, callbacks)
        else:
            t = epoch_seconds(technique, x, y, batch_size, callbacks)
            p = epoch_seconds(plain, x, y, batch_size)
        plain_s.append(p)
        technique_s.append(t)
        ratios.append(t / p)
    return {"overhead": statistics.median(ratios), "overhead_min_max": [min(ratios), max(ratios)],
            "plain_epoch_s": statistics.median(plain_s), "technique_epoch_s": statistics.median(technique_s),
            "pairs": pairs, "samples": len(x)}


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


# -- the reference row and keras-compress -----------------------------------------


def run_reference(ctx):
    """The baseline's own float32 LiteRT artifact: what every ratio is measured against."""
    from keras_compress.export.litert import export_litert

    row = make_row(ctx, REFERENCE_TOOLKIT, "baseline (Keras 3)", "float32",
                   keras_accuracy=ctx.info.get("baseline_keras_accuracy"),
                   notes=f"trained {ctx.settings.baseline_epochs} epochs; the reference for every ratio")
    try:
        path = export_litert(ctx.baseline, ctx.artifact("baseline_float32"), fmt="float32")
    except Exception as error:  # noqa: BLE001
        return [dict(row, status="failed", reason=f"LiteRT export: {one_line(error)}")]
    return [measure_artifact(ctx, row, path)]


def run_keras_compress(ctx):
    """keras-compress: PTQ of the baseline in three formats, and pruning with fine-tuning."""
    from keras_compress.export.litert import export_litert

    s = ctx.settings
    rows = []
    for fmt in PTQ_FORMATS:
        technique = {"float16": "PTQ float16", "dynamic_int8": "PTQ dynamic-range int8", "int8": "PTQ int8"}[fmt]
        try:
            path = export_litert(ctx.baseline, ctx.artifact(f"kc_ptq_{fmt}"), fmt=fmt,
                                 representative_data=ctx.calibration if fmt == "int8" else None,
                                 num_calibration_samples=s.calibration_samples)
            row = make_row(ctx, "keras-compress", technique, fmt,
                           keras_accuracy=ctx.info.get("baseline_keras_accuracy"),
                           notes="post-training, export_litert" + (
                               f"; calibrated on {s.calibration_samples} training images" if fmt == "int8" else ""))
            rows.append(measure_artifact(ctx, row, path))
        except Exception as error:  # noqa: BLE001
            rows.append(failed_row(ctx, "keras-compress", technique, one_line(error), fmt))
    rows.extend(guarded(ctx, "keras-compress", f"prune {round(100 * s.target_sparsity)}%", _kc_prune))
    rows.extend(guarded(ctx, "keras-compress", f"cluster {s.clusters}", _kc_cluster))
    rows.extend(guarded(ctx, "keras-compress", "QAT int8", _kc_qat))
    rows.extend(guarded(ctx, "keras-compress", "prune -> cluster -> QAT", _kc_chain))
    return rows


def _fit_timed(ctx, model, callbacks=()):
    s = ctx.settings
    kc.zoo.compile_for_classification(model, s.learning_rate)
    keras.utils.set_random_seed(s.seed)
    start = time.perf_counter()
    model.fit(ctx.x_train, ctx.y_train, epochs=s.epochs, batch_size=s.batch_size,
              callbacks=list(callbacks), verbose=0)
    return time.perf_counter() - start


def _kernel_sparsity(model):
    """Fraction of exact zeros over every weight of rank >= 2."""
    kernels = [w for w in model.weights if len(w.shape) >= 2]
    zeros = sum(int(np.sum(keras.ops.convert_to_numpy(w.value) == 0)) for w in kernels)
    return zeros / max(1, sum(int(np.prod(w.shape)) for w in kernels))


def _max_unique_per_kernel(model):
    return max(len(np.unique(keras.ops.convert_to_numpy(w.value))) for w in model.weights if len(w.shape) >= 2)


def _paired(ctx, prepare, callbacks=()):
    s = ctx.settings
    if s.overhead_pairs == 0:
        return {"overhead": None}
    x, y = ctx.x_train[: s.overhead_samples], ctx.y_train[: s.overhead_samples]
    plain = kc.zoo.compile_for_classification(ctx.fresh_baseline(), s.learning_rate)
    treated = kc.zoo.compile_for_classification(prepare(ctx.fresh_baseline()), s.learning_rate)
    return paired_overhead(plain, treated, x, y, s.batch_size, s.overhead_pairs, list(callbacks))


def _float_and_int8_rows(ctx, model, technique, stem, notes, common):
    """A fine-tuned keras-compress model exported as float32 and as full-integer PTQ int8, measured."""
    from keras_compress.export.litert import export_litert

    rows = []
    for fmt in ("float32", "int8"):
        label = technique if fmt == "float32" else f"{technique} + PTQ int8"
        path = export_litert(model, ctx.artifact(f"{stem}_{fmt}"), fmt=fmt,
                             representative_data=ctx.calibration if fmt == "int8" else None,
                             num_calibration_samples=ctx.settings.calibration_samples)
        row_notes = notes + ("; full-integer PTQ" if fmt == "int8" else "")
        rows.append(measure_artifact(ctx, make_row(ctx, "keras-compress", label, fmt, notes=row_notes, **common),
                                     path))
    return rows


def _kc_cluster(ctx):
    s = ctx.settings
    technique = f"cluster {s.clusters} (linear init)"
    # tfmot's "linear" init: evenly spaced centroids, no k-means iterations after.
    # The defaults: tfmot's linear init (no k-means iterations after it), nearest-centroid assignment.
    config = kc.ClusterConfig(num_clusters=s.clusters)
    model = kc.cluster(ctx.fresh_baseline(), config)
    seconds = _fit_timed(ctx, model, [kc.ClusteringCallback()])
    kc.strip(model)
    accuracy = kc.evaluate.keras_accuracy(model, ctx.x_test, ctx.y_test)
    timing = _paired(ctx, lambda m: kc.cluster(m, config), [kc.ClusteringCallback()])
    common = dict(keras_accuracy=accuracy, finetune_s=seconds, overhead=timing["overhead"],
                  overhead_detail=timing, max_unique_per_kernel=_max_unique_per_kernel(model))
    return _float_and_int8_rows(ctx, model, technique, "kc_cluster", "cluster, ClusteringCallback, strip", common)


def _kc_qat(ctx):
    from keras_compress.export.litert import export_litert

    s = ctx.settings
    model = kc.quantize(ctx.fresh_baseline(), kc.QATConfig(), calibration_data=ctx.calibration)
    seconds = _fit_timed(ctx, model)
    accuracy = kc.evaluate.keras_accuracy(model, ctx.x_test, ctx.y_test)
    path = export_litert(model, ctx.artifact("kc_qat_int8"), fmt="int8")
    timing = _paired(ctx, lambda m: kc.quantize(m, kc.QATConfig(), calibration_data=ctx.calibration))
    row = make_row(ctx, "keras-compress", "QAT int8", "int8", keras_accuracy=accuracy, finetune_s=seconds,
                   overhead=timing["overhead"], overhead_detail=timing,
                   notes=f"quantize (calibrated on {s.calibration_samples} images); ranges learned in QAT")
    return [measure_artifact(ctx, row, path)]


def _kc_chain(ctx):
    """prune -> sparsity-preserving cluster -> cluster- and zero-preserving QAT, each with the budget."""
    from keras_compress.export.litert import export_litert
    from keras_compress.pruning import api as pruning

    s = ctx.settings
    model = kc.prune(ctx.fresh_baseline(), ctx.prune_config(ctx.steps_total()))
    prune_s = _fit_timed(ctx, model, [kc.PruningCallback()])
    pruning.strip(model)
    kc.cluster(model, kc.ClusterConfig(num_clusters=s.clusters))  # the defaults; zeros stay zero
    cluster_s = _fit_timed(ctx, model, [kc.ClusteringCallback()])
    kc.quantize(model, kc.QATConfig(), calibration_data=ctx.calibration)  # clustering stays on
    qat_s = _fit_timed(ctx, model)
    accuracy = kc.evaluate.keras_accuracy(model, ctx.x_test, ctx.y_test)
    path = export_litert(model, ctx.artifact("kc_chain_int8"), fmt="int8")
    kc.strip(model)
    sparsity = _kernel_sparsity(model)
    row = make_row(ctx, "keras-compress",
                   f"prune {round(100 * s.target_sparsity)}% -> cluster {s.clusters} -> QAT", "int8",
                   keras_accuracy=accuracy, finetune_s=prune_s + cluster_s + qat_s,
                   stage_seconds=[prune_s, cluster_s, qat_s], kernel_sparsity=sparsity,
                   max_unique_per_kernel=_max_unique_per_kernel(model),
                   notes="QAT keeps the zeros and the clusters (their constraints stay on); ranges from QAT")
    return [measure_artifact(ctx, row, path)]


def _kc_prune(ctx):
    s = ctx.settings
    technique = f"prune {round(100 * s.target_sparsity)}%"
    model = ctx.fresh_baseline()
    config = ctx.prune_config(ctx.steps_total())
    kc.prune(model, config)
    kc.zoo.compile_for_classification(model, s.learning_rate)
    keras.utils.set_random_seed(s.seed)
    start = time.perf_counter()
    model.fit(ctx.x_train, ctx.y_train, epochs=s.epochs, batch_size=s.batch_size,
              callbacks=[kc.PruningCallback()], verbose=0)
    finetune_s = time.perf_counter() - start
    kc.strip(model)
    accuracy = kc.evaluate.keras_accuracy(model, ctx.x_test, ctx.y_test)
    sparsity = _kernel_sparsity(model)
    log(f"{ctx.name}: keras-compress prune {finetune_s:.1f} s, accuracy {accuracy:.4f}, sparsity {sparsity:.3f}")
    timing = _kc_prune_overhead(ctx)
    common = dict(keras_accuracy=accuracy, finetune_s=finetune_s, overhead=timing["overhead"],
                  overhead_detail=timing, kernel_sparsity=sparsity, end_step=config.end_step)
    return _float_and_int8_rows(ctx, model, technique, "kc_prune", "prune, PruningCallback, strip", common)


def _kc_prune_overhead(ctx):
    s = ctx.settings
    if s.overhead_pairs == 0:
        return {"overhead": None}
    x, y = ctx.x_train[: s.overhead_samples], ctx.y_train[: s.overhead_samples]
    plain = kc.zoo.compile_for_classification(ctx.fresh_baseline(), s.learning_rate)
    pruned = ctx.fresh_baseline()
    kc.prune(pruned, ctx.prune_config(ctx.overhead_steps_total()))
    kc.zoo.compile_for_classification(pruned, s.learning_rate)
    return paired_overhead(plain, pruned, x, y, s.batch_size, s.overhead_pairs, [kc.PruningCallback()])


def guarded(ctx, toolkit, technique, fn):
    """Runs `fn(ctx)`; an exception becomes one `failed` row with its reason."""
    try:
        return fn(ctx)
    except Exception as error:  # noqa: BLE001 - every failure is a row, and the benchmark goes on
        log(f"{ctx.name}: {toolkit} {technique} failed: {one_line(error)}\n{traceback.format_exc()}")
        return [failed_row(ctx, toolkit, technique, one_line(error))]


# -- Keras 3's own quantization ----------------------------------------------------


def _quantized_layers(model):
    done, left = [], []
    for layer in model._flatten_layers(include_self=False):
        if list(layer._flatten_layers(include_self=False)):
            continue
        if not layer.weights:
            continue
        mode = getattr(getattr(layer, "dtype_policy", None), "quantization_mode", None)
        (done if mode else left).append(layer.name)
    return done, left


def run_keras(ctx):
    """Keras 3's `model.quantize(mode)`: accuracy in Keras, then an attempt at LiteRT export."""
    from keras_compress.export.litert import export_litert

    rows = []
    for mode in KERAS_MODES:
        technique = f'model.quantize("{mode}")'
        try:
            model = ctx.fresh_baseline()
            with _warnings_as_notes() as caught:
                model.quantize(mode)
            done, left = _quantized_layers(model)
            if not done:
                rows.append(failed_row(ctx, "keras", technique,
                                       f"no layer was quantized (Keras quantizes Dense, EinsumDense, Embedding); "
                                       f"warnings: {'; '.join(caught)[:300]}"))
                continue
            accuracy = kc.evaluate.keras_accuracy(model, ctx.x_test, ctx.y_test)
            notes = f"post-training, weights {mode}, activations int8 on the fly; quantized: {', '.join(done)}"
            if left:
                notes += f"; left float: {', '.join(left)}"
            row = make_row(ctx, "keras", technique, "float32 converter", keras_accuracy=accuracy, notes=notes)
            try:
                path = export_litert(model, ctx.artifact(f"keras_quantize_{mode}"), fmt="float32")
            except Exception as error:  # noqa: BLE001 - the reason is the result
                rows.append(dict(row, status="failed", reason=f"LiteRT export: {one_line(error)}"))
                continue
            rows.append(measure_artifact(ctx, row, path))
        except Exception as error:  # noqa: BLE001
            rows.append(failed_row(ctx, "keras", technique, one_line(error)))
    return rows


class _warnings_as_notes:
    def __enter__(self):
        import warnings

        self._catcher = warnings.catch_warnings(record=True)
        self._records = self._catcher.__enter__()
        warnings.simplefilter("always")
        self.messages = []
        return self.messages

    def __exit__(self, *exc):
        self.messages.extend(" ".join(str(w.message).split()) for w in self._records)
        return self._catcher.__exit__(*exc)


# -- tfmot, in its own virtual environment ----------------------------------------


def ensure_tfmot_venv(venv, create=True):
    """Returns the venv's python, creating the venv (pip install, minutes) when missing.

    Raises:
        RuntimeError: if the venv is missing and `create` is false, or if
            creating it or importing tfmot in it fails.
    """
    python = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, ".kc-compare-ready")
    wanted = "\n".join(TFMOT_REQUIREMENTS)
    if os.path.isfile(python) and os.path.isfile(marker):
        with open(marker) as f:
            if f.read() == wanted:
                return python
    if not create:
        raise RuntimeError(f"the tfmot virtual environment {venv} is missing or incomplete, and creating it "
                           "was turned off (--no-create-venv)")
    log(f"creating the tfmot virtual environment {venv} (pip install; a few minutes the first time)")
    steps = [[sys.executable, "-m", "venv", venv],
             [python, "-m", "pip", "install", "-q", *TFMOT_REQUIREMENTS]]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).split())[-800:]
            raise RuntimeError(f"`{shlex.join(command[-4:])}` failed (exit {done.returncode}): {tail}")
    check = subprocess.run([python, "-c", "import tensorflow_model_optimization, tf_keras, ai_edge_litert"],
                           capture_output=True, text=True, env=_worker_env(), timeout=600)
    if check.returncode != 0:
        raise RuntimeError(f"tfmot does not import in {venv}: {' '.join(check.stderr.split())[-800:]}")
    with open(marker, "w") as f:
        f.write(wanted)
    return python


def _worker_env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND", "VIRTUAL_ENV")}
    env.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    return env


def _save_data(ctx):
    folder = os.path.join(ctx.work_dir, "data")
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for key, array in (("x_train", ctx.x_train), ("y_train", ctx.y_train), ("x_test", ctx.x_test),
                       ("y_test", ctx.y_test)):
        paths[key] = os.path.join(folder, f"{key}.npy")
        np.save(paths[key], array)
    return paths


def tfmot_label(key, settings):
    target = round(100 * settings.target_sparsity)
    return {"baseline": "baseline (tf_keras, weights loaded)", "prune": f"prune {target}%",
            "cluster": f"cluster {settings.clusters} (linear init)", "qat": "QAT int8",
            "prune_cluster_pcqat": f"prune {target}% -> cluster {settings.clusters} -> PCQAT"}[key]


def run_tfmot(ctx, techniques=TFMOT_TECHNIQUES, python=None):
    """tfmot through bench/tfmot_worker.py in its own venv; every file it writes is measured here."""
    s = ctx.settings
    try:
        python = python or ensure_tfmot_venv(s.tfmot_venv, s.create_venv)
    except Exception as error:  # noqa: BLE001
        reason = f"tfmot unavailable: {one_line(error, 900)}"
        return [failed_row(ctx, "tfmot", tfmot_label(t, s), reason) for t in techniques]
    results_path = os.path.join(ctx.work_dir, "tfmot_results.json")
    if os.path.exists(results_path):
        os.remove(results_path)
    spec = {
        "model": ctx.name, "weights": ctx.weights_path, "weight_paths": ctx.weight_paths,
        "data": _save_data(ctx), "budget": s.budget(),
        "prune": s.prune_dict(ctx.steps_total(), ctx.overhead_steps_total()), "clusters": s.clusters,
        "calibration_samples": s.calibration_samples,
        "overhead": {"samples": s.overhead_samples, "pairs": s.overhead_pairs},
        "techniques": list(techniques), "out_dir": ctx.work_dir, "results": results_path, "seed": s.seed,
    }
    spec_path = os.path.join(ctx.work_dir, "tfmot_spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=2)
    log_path = os.path.join(ctx.work_dir, "tfmot_worker.log")
    log(f"{ctx.name}: tfmot worker running (log: {log_path})")
    start = time.perf_counter()
    failure = None
    with open(log_path, "w") as log_file:
        try:
            done = subprocess.run([python, WORKER, spec_path], stdout=log_file, stderr=subprocess.STDOUT,
                                  env=_worker_env(), timeout=s.tfmot_timeout_s)
            if done.returncode != 0:
                failure = f"worker exited with code {done.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"worker timed out after {s.tfmot_timeout_s} s"
    ctx.info["tfmot_worker_s"] = time.perf_counter() - start
    payload = {"rows": [], "versions": None}
    if os.path.isfile(results_path):
        with open(results_path) as f:
            payload = json.load(f)
    ctx.info["tfmot_versions"] = payload.get("versions")
    if failure:
        failure += f"; last log lines: {_tail(log_path)}"
    rows, seen = [], set()
    for worker_row in payload["rows"]:
        fields = {k: v for k, v in worker_row.items() if k not in ("toolkit", "artifact", "key")}
        key = worker_row.get("key")
        seen.add(key)
        technique, fmt = fields.pop("technique"), fields.pop("format")
        if technique in TFMOT_TECHNIQUES:  # the worker names a failed technique by its key
            technique = tfmot_label(technique, s)
        timing = {k: fields.pop(k) for k in ("overhead_min_max", "plain_epoch_s", "technique_epoch_s",
                                             "pairs", "samples") if k in fields}
        if timing:
            fields["overhead_detail"] = dict(timing, overhead=fields.get("overhead"))
        row = make_row(ctx, "tfmot", technique, fmt, **fields)
        if row["status"] == "ok":
            measure_artifact(ctx, row, worker_row["artifact"])
        rows.append(row)
    for technique in techniques:
        if technique not in seen:
            rows.append(failed_row(ctx, "tfmot", tfmot_label(technique, s),
                                   failure or "the worker wrote no row for it (see tfmot_worker.log)"))
    return rows


def _tail(path, lines=6):
    try:
        with open(path, errors="replace") as f:
            text = [line.rstrip() for line in f if line.strip() and "cuda" not in line.lower()]
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])[-900:]


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


# -- output -------------------------------------------------------------------------


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _num(value, spec):
    return "-" if value is None else format(value, spec)


def _overhead_cell(row):
    if row["overhead"] is None:
        return "-"
    spread = (row.get("overhead_detail") or {}).get("overhead_min_max")
    return f"{row['overhead']:.2f}" + (f" ({spread[0]:.2f}-{spread[1]:.2f})" if spread else "")


def markdown(result):
    s = result["settings"]
    lines = [
        "# keras-compress vs Keras 3 quantization vs tfmot",
        "",
        f"- Machine: {result['machine']}",
        f"- Versions: {json.dumps(result['versions'])}",
        f"- tfmot venv: {json.dumps(result.get('tfmot_versions'))}",
        f"- Command: `{result['command']}`",
        f"- Fine-tuning budget (every technique that fine-tunes, each stage of the tfmot chain): "
        f"{s['epochs']} epoch(s), batch size {s['batch_size']}, Adam, learning rate {s['learning_rate']:g}, "
        f"{'all' if not s['train_samples'] else s['train_samples']} training images; baseline "
        f"{s['baseline_epochs']} epochs at 1e-3.",
        f"- Pruning: {round(100 * s['target_sparsity'])}% per kernel, polynomial from {s['initial_sparsity']} "
        f"(power {s['power']:g}) ending at {s['end_fraction']:.2f} of the fine-tuning steps (rounded to a "
        f"mask update), masks every {s['frequency']} steps. Clustering: {s['clusters']} clusters, linear init (evenly spaced, no k-means iterations, as tfmot's; keras-compress with its defaults: nearest-centroid assignment, centroids trained). int8 PTQ calibrated on "
        f"{s['calibration_samples']} training images.",
        f"- Measured here for every toolkit's `.tflite`: LiteRT accuracy over the whole test set "
        f"({result['test_samples']} images), raw and gzip (level 9) bytes, batch-1 latency (median of "
        f"{s['latency_runs']} invokes, {s['latency_threads']} interpreter thread). Ratio: gzip bytes of the "
        "model's float32 baseline artifact / the row's gzip bytes.",
        f"- Overhead: median over {s['overhead_pairs']} paired epochs (alternating order, warm-up epoch "
        f"excluded, first {s['overhead_samples']} training images) of the technique's epoch time over a plain "
        "fit of the same model in the same process (Keras 3 for keras-compress, tf_keras for tfmot); "
        "min-max over the pairs in brackets.",
        f"- Wall time: {result['wall_s'] / 60:.1f} min.",
        "",
    ]
    if len(s.get("seeds") or (0,)) > 1:
        return "\n".join(lines + seeds_markdown(result))
    header = ("Toolkit", "Technique", "Format", "Status", "Keras acc", "LiteRT acc", "Raw bytes", "Gzip bytes",
              "Ratio", "Latency b1 (ms)", "Fine-tune (s)", "Overhead", "Notes")
    for name, info in result["models"].items():
        lines += [f"## {name} on {info['dataset']}", "",
                  f"Baseline: Keras accuracy {_pct(info.get('baseline_keras_accuracy'))}, "
                  f"{info.get('params', 0):,} parameters, trained in {info.get('baseline_train_s', 0):.0f} s.", "",
                  "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for r in (row for row in result["rows"] if row["model"] == name):
            notes = r["reason"] if r["status"] != "ok" else (r.get("notes") or "")
            if r["status"] == "ok" and r.get("kernel_sparsity") is not None:
                notes += f"; kernel sparsity {r['kernel_sparsity']:.3f}"
            if r["status"] != "ok" and r.get("notes"):
                notes = f"{r['reason']} ({r['notes']})"
            cells = (
                r["toolkit"], r["technique"], r["format"], r["status"], _pct(r["keras_accuracy"]),
                _pct(r["litert_accuracy"]), _num(r["raw_bytes"], ","), _num(r["gzip_bytes"], ","),
                "-" if r["ratio"] is None else f"{r['ratio']:.1f}x", _num(r["latency_b1_ms"], ".3f"),
                _num(r["finetune_s"], ".1f"), _overhead_cell(r),
                notes.replace("|", "/"),
            )
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


# Like-for-like rows: keras-compress technique -> tfmot technique (labels as `tfmot_label` writes them).
def like_for_like(settings):
    target, k = round(100 * settings["target_sparsity"]), settings["clusters"]
    return {
        f"prune {target}%": f"prune {target}%",
        f"prune {target}% + PTQ int8": f"prune {target}% + PTQ int8",
        f"cluster {k} (linear init)": f"cluster {k} (linear init)",
        f"cluster {k} (linear init) + PTQ int8": f"cluster {k} (linear init) + PTQ int8",
        "QAT int8": "QAT int8",
        f"prune {target}% -> cluster {k} -> QAT": f"prune {target}% -> cluster {k} -> PCQAT",
    }


def _mean_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (max(values) - min(values)) / 2


def aggregate(rows):
    """One entry per (model, toolkit, technique, format) over the seeds: mean and half-range of each figure."""
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["toolkit"], row["technique"], row["format"]), []).append(row)
    out = []
    for (model, toolkit, technique, fmt), members in groups.items():
        ok = [r for r in members if r["status"] == "ok"]
        entry = {"model": model, "toolkit": toolkit, "technique": technique, "format": fmt,
                 "runs": len(members), "ok": len(ok), "first": members[0],
                 "seeds": [r.get("seed") for r in members]}
        for field in ("keras_accuracy", "litert_accuracy", "ratio", "gzip_bytes", "finetune_s"):
            entry[field], entry[field + "_spread"] = _mean_spread([r.get(field) for r in ok])
        entry["per_seed_litert"] = [r.get("litert_accuracy") for r in ok]
        out.append(entry)
    return out


def verdict(ours, theirs, field):
    """"ahead", "level" or "behind": the difference of the means against the larger of the two half-ranges."""
    if ours is None or theirs is None or ours[field] is None or theirs[field] is None:
        return "-"
    noise = max(ours[field + "_spread"] or 0.0, theirs[field + "_spread"] or 0.0)
    difference = ours[field] - theirs[field]
    return "ahead" if difference > noise else "behind" if difference < -noise else "level"


def readings(result):
    """Per model and like-for-like pair: accuracy (LiteRT) and ratio verdicts against tfmot."""
    entries = aggregate(result["rows"])
    pairs = like_for_like(result["settings"])
    out = []
    for model in result["models"]:
        index = {(e["toolkit"], e["technique"]): e for e in entries if e["model"] == model}
        for ours_label, theirs_label in pairs.items():
            ours, theirs = index.get(("keras-compress", ours_label)), index.get(("tfmot", theirs_label))
            if ours is None and theirs is None:
                continue
            out.append({"model": model, "technique": ours_label, "ours": ours, "theirs": theirs,
                        "accuracy": verdict(ours, theirs, "litert_accuracy"), "ratio": verdict(ours, theirs, "ratio")})
    return out


def _pm(value, spread, pct=True):
    if value is None:
        return "-"
    if pct:
        return f"{100 * value:.2f}% ± {100 * (spread or 0):.2f}"
    return f"{value:.1f}x ± {spread or 0:.1f}"


def seeds_markdown(result):
    """The tables of a several-seed run: mean ± half-range per row, then the reading against tfmot."""
    lines = []
    header = ("Toolkit", "Technique", "Format", "ok / runs", "Keras acc", "LiteRT acc", "LiteRT acc per seed",
              "Gzip bytes (mean)", "Ratio", "Latency b1 (ms, seed 1)", "Overhead (seed 1)")
    entries = aggregate(result["rows"])
    for name, info in result["models"].items():
        lines += [f"## {name} on {info['dataset']}", "",
                  f"Baseline: Keras accuracy {_pct(info.get('baseline_keras_accuracy'))}, "
                  f"{info.get('params', 0):,} parameters. Seeds: {', '.join(map(str, result['settings']['seeds']))}; "
                  "mean ± half-range (max - min) / 2.", "",
                  "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for e in (e for e in entries if e["model"] == name):
            first = e["first"]
            cells = (e["toolkit"], e["technique"], e["format"], f"{e['ok']} / {e['runs']}",
                     _pm(e["keras_accuracy"], e["keras_accuracy_spread"]),
                     _pm(e["litert_accuracy"], e["litert_accuracy_spread"]),
                     ", ".join(_pct(v) for v in e["per_seed_litert"]) or (first.get("reason") or "-")[:200],
                     _num(e["gzip_bytes"], ",.0f"), _pm(e["ratio"], e["ratio_spread"], pct=False),
                     _num(first.get("latency_b1_ms"), ".3f"), _overhead_cell(first))
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
        lines.append("")
    lines += ["## Reading: keras-compress against tfmot, like for like", "",
              "Ahead / behind: the difference of the means exceeds the larger of the two half-ranges; "
              "otherwise level.", "",
              "| Model | Technique | keras-compress LiteRT acc | tfmot LiteRT acc | Accuracy | "
              "keras-compress ratio | tfmot ratio | Ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in readings(result):
        ours, theirs = r["ours"] or {}, r["theirs"] or {}
        lines.append("| " + " | ".join((
            r["model"], r["technique"],
            _pm(ours.get("litert_accuracy"), ours.get("litert_accuracy_spread")),
            _pm(theirs.get("litert_accuracy"), theirs.get("litert_accuracy_spread")), r["accuracy"],
            _pm(ours.get("ratio"), ours.get("ratio_spread"), pct=False),
            _pm(theirs.get("ratio"), theirs.get("ratio_spread"), pct=False), r["ratio"])) + " |")
    lines.append("")
    return lines


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
