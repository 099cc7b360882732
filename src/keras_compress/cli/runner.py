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

from keras_compress.cli.recipe import Recipe
from keras_compress.core import state as core_state
from keras_compress.core.report import ArtifactRow, Report
from keras_compress.core.steps import registered
from keras_compress.export.steps import ARCHIVE_NAME, KERAS_NAME, save_for_inference as _save_for_inference  # noqa: F401

BASELINE_NAME = "baseline_float32.tflite"
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
        self.num_train_samples = len(self.x_train)
        self.techniques = []
        self.summaries = {}  # "<technique>_summary" -> what its summary said before each strip
        self.skipped = []  # artifacts a recipe asked for that cannot exist, and why
        self.prepared = {}  # step index -> what the step's `prepare` resolved

    def log(self, message):
        if self.progress:
            print(f"[keras-compress] {message}", file=sys.stderr, flush=True)

    @property
    def technique(self):
        return " + ".join(self.techniques) or "unchanged"

    def stats(self, model):
        from keras_compress import evaluate

        counts = evaluate.count_parameters(model)
        try:
            macs = evaluate.macs(model)["total"]
        except ValueError:  # a subclassed model: no graph to count
            macs = None
        return {
            "keras_accuracy": evaluate.keras_accuracy(model, self.x_test, self.y_test),
            "params": counts["total"],
            "nonzero": counts["nonzero"],
            "macs": macs,
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
            macs=stats["macs"],
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
        """Strips every technique, recording what registered summaries say first (pruning's sparsity)."""
        from keras_compress import strip

        for name, rows in core_state.summaries(self.model).items():
            self.summaries.setdefault(f"{name}_summary", []).append(_plain(rows))
        self.model = strip(self.model)


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
    computed). Then each step prepares (resolves its `auto` settings, tries
    itself on a clone where that can fail) and the steps run in order, each
    through its registered `Step.run` (`core/steps.py`; the techniques'
    steps live in their own folders). A step that must come last (export)
    runs with its defaults when the recipe leaves it out. The export step
    writes `model.keras` and `model_<fmt>.tflite`, each measured: Keras and
    LiteRT accuracy on the whole test set, raw and gzip bytes, latency at
    batch 1 and 32, parameter counts. The report is written last
    (`report.json`, `report.md`, `size_vs_accuracy.png`, `report.html`),
    with each step's record under its name in `meta`.

    Everything is checked first (data against the model, each step's
    preparation, the LiteRT toolchain); the work happens in a hidden
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
            or a step's preparation fails (a prune step with nothing to prune).
        RecipeError: if a step's resolved settings are invalid.
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
    # Each step resolves what it can against the model and data now (an
    # `auto` setting, a trial on a clone), so a bad step fails before writing.
    run = _Run(model, data, None, None, progress, latency_runs)
    for index, step in enumerate(recipe.steps, 1):
        run.prepared[index] = step.prepare(run, index, recipe.steps)
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
        run.work_dir, run.report = work_dir, report
        run.baseline()
        records = {}
        for index, step in enumerate(recipe.steps, 1):
            record = step.run(run, index)
            if record is not None:
                records.setdefault(step.name, []).append(record)
        # A step that must run last (export) runs with its defaults when the recipe leaves it out.
        present = {step.name for step in recipe.steps}
        for name, cls in sorted(registered().items()):
            if cls.implicit_last and name not in present:
                record = cls().run(run, None)
                if record is not None:
                    records.setdefault(name, []).append(record)
        report.meta.update(records)
        if run.skipped:
            report.meta["artifacts not written"] = run.skipped
        report.meta.update(run.summaries)
        report.meta["finished"] = _now()
        report.meta["seconds"] = round(time.perf_counter() - started, 2)
        report.write(work_dir)
        _swap_into_place(work_dir, out_dir)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    run.log(f"wrote {out_dir}")
    return report
