"""Runs a validated recipe on a model and writes measured artifacts and a report.

`run_recipe` checks everything it can before touching the disk (data shape,
prune settings against the model, the export toolchain), then works in a
hidden temporary folder beside `out_dir` and renames it into place only when
everything succeeded: a failure leaves no half-written output behind, and
an existing `out_dir` is replaced only at the very end.
"""

import datetime
import os
import platform
import shutil
import sys
import time

import numpy as np

from keras_compress.cli.recipe import (
    ExportStep,
    FinetuneStep,
    PruneStep,
    ClusterStep,
    QuantizeStep,
    Recipe,
    RecipeError,
    StripStep,
    resolve_auto_end_step,
)
from keras_compress.core.report import ArtifactRow, Report

BASELINE_NAME = "baseline_float32.tflite"
KERAS_NAME = "model.keras"
ARCHIVE_NAME = "model.kcar"
LATENCY_BATCH_SIZES = (1, 32)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _per_sample_shape(model, which):
    """Per-sample shape of the model's single input or output, or None when unknown."""
    try:
        tensors = model.inputs if which == "inputs" else model.outputs
    except (AttributeError, ValueError):
        return None
    if not tensors or len(tensors) != 1:
        return None
    return tuple(tensors[0].shape[1:])


def check_data_fits(model, data):
    """Checks that `data` suits `model`: array shapes, sample shape and label range.

    Args:
        model: a Keras classifier with one input and one output of class scores.
        data: `((x_train, y_train), (x_test, y_test))` as from `datasets.load`.

    Returns:
        `None`.

    Raises:
        ValueError: if `data` is malformed, a sample's shape does not fit the
            model's input shape, or a label is outside the model's classes.

    Example:
    >>> check_data_fits(keras_compress.zoo.lenet5(), keras_compress.datasets.load("mnist"))
    """
    try:
        (x_train, y_train), (x_test, y_test) = data
    except (TypeError, ValueError):
        raise ValueError(
            "data must be ((x_train, y_train), (x_test, y_test)). "
            f"Received: {type(data).__name__}"
        ) from None
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 1 or len(x) == 0:
            raise ValueError(f"{split} data must hold at least one sample. Received: x.shape={x.shape}")
        if len(x) != len(y):
            raise ValueError(
                f"{split} data: x and y must hold the same number of samples. "
                f"Received: len(x)={len(x)}, len(y)={len(y)}"
            )
    sample = tuple(np.asarray(x_train).shape[1:])
    expected = _per_sample_shape(model, "inputs")
    if expected is not None:
        fits = len(sample) == len(expected) and all(e is None or e == d for d, e in zip(sample, expected))
        if not fits or tuple(np.asarray(x_test).shape[1:]) != sample:
            raise ValueError(
                f"data does not fit the model: samples have shape {sample} but model "
                f"{model.name!r} expects inputs of shape {tuple(expected)} (batch axis excluded)"
            )
    out = _per_sample_shape(model, "outputs")
    if out and out[-1] is not None:
        top = int(max(np.max(y_train), np.max(y_test)))
        if top >= out[-1]:
            raise ValueError(
                f"data does not fit the model: labels go up to {top} but model "
                f"{model.name!r} outputs {out[-1]} class scores"
            )


def _plain(value):
    """`value` with NumPy scalars and tuples turned into JSON-able Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _machine():
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def _versions():
    import keras

    out = {"keras_backend": keras.backend.backend(), "keras_version": keras.__version__}
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        out["tensorflow_version"] = getattr(tf, "__version__", "unknown")
    return out


def _technique(config):
    if config.pattern == "n:m":
        label = f"prune {config.n}:{config.m}"
    elif config.layer_targets:
        values = [config.target_sparsity, *config.layer_targets.values()]
        label = f"prune {round(100 * min(values), 1):g}-{round(100 * max(values), 1):g}% per layer"
    else:
        label = f"prune {round(100 * config.target_sparsity, 1):g}%"
    if config.pattern == "block":
        label += f" block {config.block_shape[0]}x{config.block_shape[1]}"
    return label


def _resolve_prune_configs(recipe, num_samples):
    """PruneConfig per prune step index (1-based), with `end_step: auto` resolved."""
    configs = {}
    for index, step in enumerate(recipe.steps, 1):
        if not isinstance(step, PruneStep):
            continue
        end_step = None
        if step.auto_end_step:
            following = []
            for later in recipe.steps[index:]:
                if isinstance(later, PruneStep):
                    break
                if isinstance(later, FinetuneStep):
                    following.append(later)
            end_step = resolve_auto_end_step(step, following, num_samples)
        try:
            configs[index] = step.to_config(end_step=end_step)
        except (ValueError, TypeError) as error:
            raise RecipeError(f"recipe step {index} (prune): {error}") from None
    return configs


def _preflight_prune(model, recipe, configs):
    """Runs every prune step on a throwaway clone, so that a model with nothing to prune fails now."""
    import keras

    from keras_compress.pruning import prune, strip

    if not configs:
        return
    try:
        clone = keras.models.clone_model(model)
    except Exception:  # noqa: BLE001 - subclassed models may not clone; prune checks again later
        return
    for index, config in configs.items():
        try:
            prune(clone, config, layers=recipe.steps[index - 1].layers)
        except ValueError as error:
            raise ValueError(f"recipe step {index} (prune): {error}") from None
        strip(clone)
    del clone


def _save_for_inference(model, path):
    """Saves `model` to `.keras` without its optimizer state or compile settings.

    After fine-tuning, Adam's two slots per weight would triple the file and
    say nothing about the model; Keras ignores `include_optimizer` for
    `.keras`, so the optimizer is detached for the save and put back after.
    The file loads as an uncompiled model.
    """
    optimizer = getattr(model, "optimizer", None)
    compiled = getattr(model, "compiled", False)
    try:
        model.optimizer = None
        model.compiled = False
        model.save(path)
    finally:
        model.optimizer = optimizer
        model.compiled = compiled


class _Run:
    """The state of one `run_recipe` call: the model, where it writes and what it measured."""

    def __init__(self, model, data, work_dir, report, progress, latency_runs):
        from keras_compress.export import litert

        self.litert = litert
        self.model = model
        (self.x_train, self.y_train), (self.x_test, self.y_test) = data
        self.work_dir = work_dir
        self.report = report
        self.progress = progress
        self.latency_runs = latency_runs
        self.techniques = []
        self.pruning_summaries = []
        self.skipped = []  # artifacts a recipe asked for that cannot exist, and why

    def log(self, message):
        if self.progress:
            print(f"[keras-compress] {message}", file=sys.stderr, flush=True)

    @property
    def technique(self):
        return " + ".join(self.techniques) or "unchanged"

    def stats(self, model):
        from keras_compress import evaluate

        counts = evaluate.count_parameters(model)
        return {
            "keras_accuracy": evaluate.keras_accuracy(model, self.x_test, self.y_test),
            "params": counts["total"],
            "nonzero": counts["nonzero"],
        }

    def measure_litert(self, path, technique, fmt, stats, notes=""):
        from keras_compress import evaluate

        latencies = {
            batch: 1000.0 * self.litert.litert_latency(path, batch_size=batch, runs=self.latency_runs)
            for batch in LATENCY_BATCH_SIZES
        }
        row = ArtifactRow(
            name=os.path.basename(path),
            technique=technique,
            fmt=fmt,
            keras_accuracy=stats["keras_accuracy"],
            litert_accuracy=self.litert.litert_accuracy(path, self.x_test, self.y_test),
            latency_b1_ms=latencies[1],
            latency_b32_ms=latencies[32],
            params=stats["params"],
            nonzero=stats["nonzero"],
            notes=notes,
            **evaluate.sizes(path),
        )
        return self.report.add(row)

    def baseline(self):
        self.log("measuring the input model (baseline float32)")
        stats = self.stats(self.model)
        path = os.path.join(self.work_dir, BASELINE_NAME)
        self.litert.export_litert(self.model, path, fmt="float32")
        self.measure_litert(path, "baseline", "float32", stats, notes="the input model")

    def strip(self):
        from keras_compress import strip
        from keras_compress.pruning import is_pruned, pruning_summary

        if is_pruned(self.model):
            self.pruning_summaries.append(_plain(pruning_summary(self.model)))
        self.model = strip(self.model)

    def cluster(self, index, step):
        from keras_compress.clustering import cluster

        self.strip()
        config = step.to_config()
        label = f"cluster {config.num_clusters}" + (" per channel" if config.per_channel else "")
        self.log(f"step {index}: {label} (init {config.init})")
        self.model = cluster(self.model, config, layers=step.layers)
        self.techniques.append(label)
        return {"step": index, "config": config.to_dict(), "layers": step.layers}

    def quantize(self, index, step):
        from keras_compress.pruning import api as pruning
        from keras_compress.quantization import quantization_summary, quantize

        # Pruning ends here (QAT keeps its zeros); clustering stays on, so its
        # constraint keeps each weight on a shared value while QAT trains.
        pruning.strip(self.model)
        config = step.to_config()
        samples = min(step.calibration_samples, len(self.x_train))
        self.log(f"step {index}: quantize (QAT, {config.weight_bits}-bit weights, "
                 f"{config.activation_bits}-bit activations, calibrated on {samples} samples)")
        self.model = quantize(self.model, config, calibration_data=np.asarray(self.x_train[:samples]))
        self.techniques.append(f"QAT w{config.weight_bits}a{config.activation_bits}")
        return {"step": index, "config": config.to_dict(), "calibration_samples": samples,
                "layers": [{k: row[k] for k in ("layer", "treatment", "reason")}
                           for row in quantization_summary(self.model)]}

    def prune(self, index, step, config):
        from keras_compress.pruning import api as pruning

        auto = {}
        if step.auto_targets:
            # Sensitivity on the last training samples (the test split measures the result).
            held_out = min(2000, len(self.x_train))
            auto = {"targets": "auto",
                    "data": (np.asarray(self.x_train[-held_out:]), np.asarray(self.y_train[-held_out:]))}
            self.log(f"step {index}: sensitivity analysis on {held_out} training samples (layer_targets: auto)")
        self.model = pruning.prune(self.model, config, layers=step.layers, **auto)
        config = pruning.get_state(self.model).config  # with the per-layer targets it chose
        self.log(f"step {index}: prune ({_technique(config)}, schedule {config.schedule}, "
                 f"end_step {config.end_step})")
        self.techniques.append(_technique(config))
        return {"step": index, "config": config.to_dict(), "layers": step.layers}

    def finetune(self, index, step):
        from keras_compress import zoo
        from keras_compress.clustering import ClusteringCallback, is_clustered
        from keras_compress.pruning import PruningCallback, is_pruned

        steps_per_epoch = step.steps_per_epoch(len(self.x_train))
        record = {"step": index, "epochs": step.epochs, "batch_size": step.batch_size,
                  "learning_rate": step.learning_rate, "steps_per_epoch": steps_per_epoch,
                  "pruning": bool(is_pruned(self.model))}
        if step.epochs == 0:
            return record
        self.log(f"step {index}: finetune {step.epochs} epoch(s) x {steps_per_epoch} steps, "
                 f"learning rate {step.learning_rate:g}")
        zoo.compile_for_classification(self.model, step.learning_rate)
        record["clustering"] = bool(is_clustered(self.model))
        callbacks = [PruningCallback()] if record["pruning"] else []
        if record["clustering"]:
            callbacks.append(ClusteringCallback())
        start = time.perf_counter()
        history = self.model.fit(
            self.x_train, self.y_train, epochs=step.epochs, batch_size=step.batch_size,
            callbacks=callbacks, verbose=1 if self.progress else 0,
        )
        record["seconds"] = round(time.perf_counter() - start, 2)
        for key in ("loss", "accuracy"):
            if history.history.get(key):
                record[f"final_{key}"] = float(history.history[key][-1])
        if not self.techniques:
            self.techniques.append("finetune")
        return record

    def export_archive(self, technique, stats):
        """Writes the compact archive and measures the model loaded back from it."""
        from keras_compress import evaluate
        from keras_compress.export import archive

        path = os.path.join(self.work_dir, ARCHIVE_NAME)
        archive.save(self.model, path)
        restored = archive.load(path)
        self.report.add(ArtifactRow(
            name=ARCHIVE_NAME, technique=technique, fmt="archive",
            keras_accuracy=evaluate.keras_accuracy(restored, self.x_test, self.y_test),
            params=stats["params"], nonzero=stats["nonzero"],
            notes="keras-compress archive (zstd); accuracy of the model loaded back from it",
            **evaluate.sizes(path),
        ))

    def export(self, index, step, x_calibration):
        from tqdm import tqdm

        from keras_compress import evaluate

        from keras_compress.quantization import api as qat

        technique = self.technique
        where = f"step {index}: export" if index else "export (implicit: the recipe has no export step)"
        self.log(f"{where} {list(step.formats)}")
        formats = list(step.formats)
        state = qat.get_state(self.model)
        if state is not None and "int8" in formats:
            # QAT's int8 artifact comes from the trained ranges, before strip.
            formats.remove("int8")
            qat_stats = self.stats(self.model)  # the fake-quantized model's accuracy
            if state.config.deployable:
                path = os.path.join(self.work_dir, "model_int8.tflite")
                self.litert.export_litert(self.model, path, fmt="int8", int8_io=step.int8_io)
                self.measure_litert(path, technique, "int8", qat_stats,
                                    notes="full integer, ranges learned in QAT (no calibration)"
                                    + ("; int8 input and output" if step.int8_io else ""))
            else:
                self.skipped.append(
                    f"int8: not written. This QAT model simulates {state.config.weight_bits}-bit "
                    f"weights and {state.config.activation_bits}-bit activations; LiteRT stores "
                    "int8 only, so the artifact cannot be stored at that width. Keras accuracy "
                    f"of the fake-quantized model: {100 * qat_stats['keras_accuracy']:.2f}%.")
        self.strip()
        stats = self.stats(self.model)
        bar = tqdm(formats, desc="export", unit="artifact", disable=not self.progress, file=sys.stderr)
        for fmt in bar:
            bar.set_postfix_str(fmt)
            if fmt == "keras":
                path = os.path.join(self.work_dir, KERAS_NAME)
                _save_for_inference(self.model, path)
                self.report.add(ArtifactRow(
                    name=KERAS_NAME, technique=technique, fmt="keras",
                    keras_accuracy=stats["keras_accuracy"], params=stats["params"],
                    nonzero=stats["nonzero"], notes="Keras model; LiteRT measurements do not apply",
                    **evaluate.sizes(path),
                ))
                continue
            if fmt == "archive":
                self.export_archive(technique, stats)
                continue
            path = os.path.join(self.work_dir, f"model_{fmt}.tflite")
            notes = ""
            if fmt == "int8":
                samples = min(step.calibration_samples, len(x_calibration))
                self.litert.export_litert(self.model, path, fmt=fmt, representative_data=x_calibration,
                                          num_calibration_samples=samples, int8_io=step.int8_io)
                notes = f"full integer, calibrated on {samples} training samples" + (
                    "; int8 input and output" if step.int8_io else "")
            else:
                self.litert.export_litert(self.model, path, fmt=fmt)
            self.measure_litert(path, technique, fmt, stats, notes=notes)
        bar.close()


def _swap_into_place(work_dir, out_dir):
    """Renames `work_dir` to `out_dir`, replacing an existing `out_dir` only now."""
    if not os.path.lexists(out_dir):
        os.rename(work_dir, out_dir)
        return
    parent, base = os.path.split(out_dir)
    old = os.path.join(parent, f".{base}.{os.getpid()}.{time.time_ns()}.old")
    os.rename(out_dir, old)
    try:
        os.rename(work_dir, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def run_recipe(model, recipe, data, out_dir, progress=True, *, title=None, meta=None,
               latency_runs=50, seed=0):
    """Runs `recipe` on `model` and writes the artifacts and report into `out_dir`.

    First the input model is measured as the baseline (its own float32
    LiteRT file, `baseline_float32.tflite`, against which every ratio is
    computed). Then the steps run in order: `prune` (with `end_step: auto`
    resolved to 2/3 of the following fine-tuning steps), `finetune`
    (Adam at the step's learning rate, with `PruningCallback` while the model
    is being pruned), `strip`, `export` (strips first; writes `model.keras`
    and `model_<fmt>.tflite`, each measured: Keras and LiteRT accuracy on the
    whole test set, raw and gzip bytes, latency at batch 1 and 32, parameter
    counts). A recipe without an export step gets the default export at the
    end. The report is written last (`report.json`, `report.md`,
    `size_vs_accuracy.png`, `report.html`).

    Everything is checked first (data against the model, every prune step on
    a clone of the model, the LiteRT toolchain); the work happens in a hidden
    folder beside `out_dir` that is renamed to `out_dir` at the end, so a
    failure leaves nothing behind and an existing `out_dir` keeps its old
    contents until the run succeeds.

    Args:
        model: a built Keras classifier (logits or probabilities). It is
            modified in place (pruned, fine-tuned, stripped).
        recipe: a `Recipe` from `load_recipe`.
        data: `((x_train, y_train), (x_test, y_test))`; the train split is
            used for fine-tuning and int8 calibration, the test split for
            every accuracy.
        out_dir: output folder (created; replaced if it exists).
        progress: show progress (Keras progress bar, tqdm, stage lines on stderr).
        title: report title (default from the model name).
        meta: extra metadata merged into the report's `meta`.
        latency_runs: timed runs per latency measurement.
        seed: random seed set before running (Keras, NumPy, backend).

    Returns:
        The `Report` that was written.

    Raises:
        TypeError: if `recipe` is not a `Recipe`.
        ValueError: if the data does not fit the model, `out_dir` is a file,
            or a prune step finds nothing to prune in the model.
        RecipeError: if a prune step's resolved settings are invalid.
        ImportError: if the LiteRT export dependencies are missing.

    Example:
    >>> recipe = load_recipe("recipes/demo.yaml")
    >>> model = keras.saving.load_model("lenet5.keras")
    >>> report = run_recipe(model, recipe, keras_compress.datasets.load("mnist"), "runs/demo")
    >>> print(report)
    """
    import keras

    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe (see load_recipe). Received: {type(recipe).__name__}")
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a Keras model. Received: {type(model).__name__}")
    check_data_fits(model, data)
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"output path exists and is not a folder: {out_dir!r}")
    (x_train, _), (x_test, _) = data
    configs = _resolve_prune_configs(recipe, len(x_train))
    _preflight_prune(model, recipe, configs)
    from keras_compress.export import litert  # noqa: F401 - fail on a missing toolchain before writing

    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    report_meta = {
        "model": model.name,
        "recipe": recipe.to_dict(),
        "train_samples": len(x_train),
        "test_samples": len(x_test),
        **_versions(),
        "machine": _machine(),
        "started": _now(),
    }
    report_meta.update(meta or {})
    report = Report(title or f"keras-compress: {model.name}", meta=report_meta)

    parent, base = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    work_dir = os.path.join(parent, f".{base}.{os.getpid()}.{time.time_ns()}.partial")
    os.mkdir(work_dir)
    try:
        run = _Run(model, data, work_dir, report, progress, latency_runs)
        run.baseline()
        pruning, clustering, finetuning, quantizing = [], [], [], []
        exported = False
        x_calibration = None
        export_step = recipe.export_step or ExportStep()
        if "int8" in export_step.formats:
            x_calibration = np.asarray(x_train[: export_step.calibration_samples])
        for index, step in enumerate(recipe.steps, 1):
            if isinstance(step, PruneStep):
                pruning.append(run.prune(index, step, configs[index]))
            elif isinstance(step, ClusterStep):
                clustering.append(run.cluster(index, step))
            elif isinstance(step, QuantizeStep):
                quantizing.append(run.quantize(index, step))
            elif isinstance(step, FinetuneStep):
                finetuning.append(run.finetune(index, step))
            elif isinstance(step, StripStep):
                run.log(f"step {index}: strip")
                run.strip()
            elif isinstance(step, ExportStep):
                run.export(index, step, x_calibration)
                exported = True
        if not exported:
            run.export(None, export_step, x_calibration)
        report.meta["prune"] = pruning
        report.meta["cluster"] = clustering
        if quantizing:
            report.meta["quantize"] = quantizing
        if run.skipped:
            report.meta["artifacts not written"] = run.skipped
        report.meta["finetune"] = finetuning
        report.meta["pruning_summary"] = run.pruning_summaries
        report.meta["finished"] = _now()
        report.meta["seconds"] = round(time.perf_counter() - started, 2)
        report.write(work_dir)
        _swap_into_place(work_dir, out_dir)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    run.log(f"wrote {out_dir}")
    return report
