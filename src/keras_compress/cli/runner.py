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
from keras_compress.core.samples import _input_names
from keras_compress.core.steps import registered
from keras_compress.export.steps import ARCHIVE_NAME, KERAS_NAME, save_for_inference as _save_for_inference  # noqa: F401

BASELINE_NAME = "baseline_float32.tflite"
LATENCY_BATCH_SIZES = (1, 32)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _model_tensors(model, which):
    try:
        tensors = model.inputs if which == "inputs" else model.outputs
    except (AttributeError, ValueError):
        return None
    return list(tensors or []) or None


def _matched(model, x):
    """Pairs of (model input tensor, data array) for a sample structure `x`, matched by position or name."""
    inputs = _model_tensors(model, "inputs")
    if inputs is None:
        return []
    if isinstance(x, dict):
        names = _input_names(model)
        missing = [n for n in names if n not in x]
        if missing:
            raise ValueError(f"data does not fit the model: model {model.name!r} has inputs {names}, the data "
                             f"has no {missing} (it has {sorted(x)})")
        return [(t, x[n]) for t, n in zip(inputs, names)]
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(arrays) != len(inputs):
        raise ValueError(f"data does not fit the model: model {model.name!r} has {len(inputs)} input(s), "
                         f"the data gives {len(arrays)}")
    return list(zip(inputs, arrays))


def check_data_fits(model, data):
    """Checks that `data` suits `model`: sample shapes against every input, labels against class counts.

    A stream is checked on its first batch; arrays whole.

    Args:
        model: a Keras model (one or several inputs and outputs).
        data: a `keras_compress.data.Dataset`, or `((x_train, y_train), (x_test, y_test))` arrays.

    Returns:
        `None`.

    Raises:
        ValueError: if `data` is malformed, a sample's shape does not fit the model's input shape, or an
            integer label is outside the classes of a classifier's output.

    Example:
    >>> check_data_fits(keras_compress.zoo.lenet5(), keras_compress.data.load("mnist"))
    """
    from keras_compress.data import as_dataset

    dataset = as_dataset(data)
    outputs = _model_tensors(model, "outputs")
    for split in (dataset.train, dataset.test):
        x, y = split.take() if not split.streaming else split.first_batch()
        for tensor, array in _matched(model, x):
            sample, expected = tuple(np.asarray(array).shape[1:]), tuple(tensor.shape[1:])
            fits = len(sample) == len(expected) and all(e is None or e == d for d, e in zip(sample, expected))
            if not fits:
                raise ValueError(
                    f"data does not fit the model: {split.name} samples have shape {sample} but model "
                    f"{model.name!r} expects inputs of shape {expected} (batch axis excluded)")
        if y is None or outputs is None or len(outputs) != 1 or isinstance(y, (dict, list, tuple)):
            continue
        y = np.asarray(y)
        classes = outputs[0].shape[-1]
        if classes and classes > 1 and np.issubdtype(y.dtype, np.integer) and y.ndim <= 2 and y.size and (
                y.ndim == 1 or y.shape[-1] == 1):
            top, low = int(np.max(y)), int(np.min(y))
            if top >= classes or low < 0:
                raise ValueError(f"data does not fit the model: {split.name} labels go from {low} to {top} but "
                                 f"model {model.name!r} outputs {classes} class scores")


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
    """The state of one `run_recipe` call: the model, its data and metric, where it writes and what it measured."""

    def __init__(self, model, data, work_dir, report, progress, latency_runs, metric=None, loss=None):
        from keras_compress import metrics
        from keras_compress.data import as_dataset
        from keras_compress.export import litert

        self.litert = litert
        self.model = model
        self.data = as_dataset(data)
        self.metric = metric  # resolved by `run_recipe` once the steps have prepared
        self.loss = loss  # the loss fine-tuning uses when its step names none (the model's compiled loss)
        self.output_names = metrics.output_names(model)
        self.work_dir = work_dir
        self.report = report
        self.progress = progress
        self.latency_runs = latency_runs
        self.techniques = []
        self.summaries = {}  # "<technique>_summary" -> what its summary said before each strip
        self.skipped = []  # artifacts a recipe asked for that cannot exist, and why
        self.prepared = {}  # step index -> what the step's `prepare` resolved
        self.cache = {}  # what steps share within one run (the original model's copy, teachers measured)

    @property
    def num_train_samples(self):
        """Training samples (a stream that does not say is counted by one pass)."""
        train = self.data.train
        if train.num_samples is None:
            for _ in train.batches():
                pass
        return train.num_samples

    def log(self, message):
        if self.progress:
            print(f"[keras-compress] {message}", file=sys.stderr, flush=True)

    @property
    def technique(self):
        return " + ".join(self.techniques) or "unchanged"

    def score(self, predict):
        """The run's metric of a predictor (a Keras model's or a LiteRT interpreter's) on the test split."""
        return self.metric.score(predict, self.data.test, output_names=self.output_names)

    def score_model(self, model):
        from keras_compress import metrics

        return self.score(metrics.keras_predictor(model))

    def stats(self, model):
        from keras_compress import evaluate

        counts = evaluate.count_parameters(model)
        try:
            macs = evaluate.macs(model)["total"]
        except ValueError:  # a subclassed model: no graph to count
            macs = None
        return {
            "keras_metric": self.score_model(model),
            "params": counts["total"],
            "nonzero": counts["nonzero"],
            "macs": macs,
        }

    def measure_litert(self, path, technique, fmt, stats, notes=""):
        """The artifact's report row, measured by the stock interpreter; a file that calls TensorFlow ops
        (`select_tf_ops`) gets its sizes and the note that it needs the Flex delegate instead."""
        from keras_compress import evaluate

        flex = self.litert.flex_ops(path)
        if flex:
            return self.report.add(ArtifactRow(
                name=os.path.basename(path), technique=technique, fmt=fmt, keras_metric=stats["keras_metric"],
                params=stats["params"], nonzero=stats["nonzero"], macs=stats["macs"],
                notes="; ".join(filter(None, [notes, f"needs the Select TensorFlow ops (Flex) delegate "
                                                     f"({', '.join(flex)}): not measured, the stock interpreter "
                                                     "cannot run it"])),
                **evaluate.sizes(path)))
        runtime = self.litert.LiteRTModel(path)
        names = _input_names(self.model)

        def predict(x):  # a list of inputs is in the Keras model's order; the file takes them by name
            return runtime.predict(dict(zip(names, x)) if isinstance(x, (list, tuple)) else x)

        latencies = {
            batch: 1000.0 * self.litert.litert_latency(path, batch_size=batch, runs=self.latency_runs)
            for batch in LATENCY_BATCH_SIZES
        }
        score = self.score(predict)
        if not runtime.xnnpack:  # the stock interpreter ran it, on its builtin kernels: say so
            notes = "; ".join(filter(None, [notes, "XNNPACK refused the graph: measured on LiteRT's builtin "
                                                   "kernels"]))
        row = ArtifactRow(
            name=os.path.basename(path),
            technique=technique,
            fmt=fmt,
            keras_metric=stats["keras_metric"],
            litert_metric=score,
            latency_b1_ms=latencies[1],
            latency_b32_ms=latencies[32],
            params=stats["params"],
            nonzero=stats["nonzero"],
            macs=stats["macs"],
            notes=notes,
            **evaluate.sizes(path),
        )
        return self.report.add(row)

    def baseline(self, select_tf_ops=False):
        """The input model's float32 row (with TensorFlow ops where the recipe's export step allows them)."""
        self.log("measuring the input model (baseline float32)")
        stats = self.stats(self.model)
        path = os.path.join(self.work_dir, BASELINE_NAME)
        self.litert.export_litert(self.model, path, fmt="float32", select_tf_ops=select_tf_ops)
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
               latency_runs=50, seed=0, metric=None, loss=None, on_step=None):
    """Runs `recipe` on `model` and writes the artifacts and report into `out_dir`.

    First the input model is measured as the baseline (its own float32
    LiteRT file, `baseline_float32.tflite`, against which every ratio is
    computed). Then each step prepares (resolves its `auto` settings, tries
    itself on a clone where that can fail) and the steps run in order, each
    through its registered `Step.run` (`core/steps.py`; the techniques'
    steps live in their own folders). A step that must come last (export)
    runs with its defaults when the recipe leaves it out. The export step
    writes `model.keras` and `model_<fmt>.tflite`, each measured: the
    metric of the Keras model and of the LiteRT file on the whole test split, raw and gzip bytes, latency at
    batch 1 and 32, parameter counts. The report is written last
    (`report.json`, `report.md`, `size_vs_accuracy.png`, `report.html`),
    with each step's record under its name in `meta`.

    Everything is checked first (data against the model, each step's
    preparation, the LiteRT toolchain); the work happens in a hidden
    folder beside `out_dir` that is renamed to `out_dir` at the end, so a
    failure leaves nothing behind and an existing `out_dir` keeps its old
    contents until the run succeeds.

    Args:
        model: a built Keras model. It is modified in place (pruned,
            fine-tuned, stripped).
        recipe: a `Recipe` from `load_recipe`.
        data: a `keras_compress.data.Dataset` (`keras_compress.data.load`:
            arrays or streams) or `((x_train, y_train), (x_test, y_test))`;
            the train split is used for fine-tuning and int8 calibration,
            the test split for every measurement.
        out_dir: output folder (created; replaced if it exists).
        progress: show progress (Keras progress bar, tqdm, stage lines on stderr).
        title: report title (default from the model name).
        meta: extra metadata merged into the report's `meta`.
        latency_runs: timed runs per latency measurement.
        seed: random seed set before running (Keras, NumPy, backend).
        metric: what every row measures (`keras_compress.metrics.get`): `None`
            for the recipe's `metric`, else the model's compiled metric or loss.
        loss: the loss fine-tuning uses when its step names none (a Keras
            loss or its name); `None`: the model's compiled loss, else sparse
            categorical cross-entropy on logits.

    Returns:
        The `Report` that was written.

    Raises:
        TypeError: if `recipe` is not a `Recipe`.
        ValueError: if the data does not fit the model, `out_dir` is a file,
            a step's preparation fails (a prune step with nothing to prune),
            or no metric is named and the model was never compiled.
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
    # Each step resolves what it can against the model and data now (an
    # `auto` setting, a trial on a clone), so a bad step fails before writing.
    if loss is None and getattr(model, "compiled", False):
        loss = getattr(model, "loss", None)
    run = _Run(model, data, None, None, progress, latency_runs,
               metric=metric if metric is not None else recipe.metric, loss=loss)
    for index, step in enumerate(recipe.steps, 1):
        run.prepared[index] = step.prepare(run, index, recipe.steps)
    from keras_compress import metrics

    run.metric = metrics.get(run.metric, model)
    from keras_compress.export import litert  # noqa: F401 - fail on a missing toolchain before writing

    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    report_meta = {
        "model": model.name,
        "recipe": recipe.to_dict(),
        **run.data.describe(),
        "metric": run.metric.describe(),
        **_versions(),
        "machine": _machine(),
        "started": _now(),
    }
    report_meta.update(meta or {})
    report = Report(title or f"keras-compress: {model.name}", meta=report_meta, metric=run.metric.describe())

    parent, base = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    work_dir = os.path.join(parent, f".{base}.{os.getpid()}.{time.time_ns()}.partial")
    os.mkdir(work_dir)
    try:
        run.work_dir, run.report = work_dir, report
        export_step = recipe.export_step
        run.baseline(select_tf_ops=bool(export_step is not None and export_step.to_config().select_tf_ops))
        records = {}
        for index, step in enumerate(recipe.steps, 1):
            record = step.run(run, index)
            if record is not None:
                records.setdefault(step.name, []).append(record)
            if on_step is not None:
                on_step(run, index, step)
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
