"""bench/compare.py's rows for the float32 reference, keras-compress and Keras 3's own quantization.

Each runner takes a `compare.ModelContext` and returns its rows; a failing
technique is a failed row, never an exception.
"""

import statistics
import time
import traceback

import keras
import numpy as np
from compare_report import best_label
from compare_rows import (
    KERAS_MODES,
    PTQ_FORMATS,
    REFERENCE_TOOLKIT,
    failed_row,
    log,
    make_row,
    measure_artifact,
    one_line,
)

import keras_compress as kc


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
    rows.extend(guarded(ctx, "keras-compress", best_label(s), lambda c: _kc_chain(c, best=True)))
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


def _max_unique(model, per_channel=False):
    """Distinct values (zero included) in any kernel, or in any output channel of any kernel: after QAT's strip
    a tensor's shared values sit on each channel's own int8 grid, so a channel holds at most the clusters and zero."""
    most = 0
    for w in model.weights:
        if len(w.shape) < 2:
            continue
        values = np.asarray(keras.ops.convert_to_numpy(w.value))
        if not per_channel:
            most = max(most, len(np.unique(values)))
            continue
        axis = -2 if values.ndim == 4 and values.shape[-1] == 1 else -1  # depthwise: the channel axis
        columns = np.moveaxis(values, axis, -1).reshape(-1, values.shape[axis])
        most = max(most, max(len(np.unique(columns[:, c])) for c in range(columns.shape[1])))
    return most


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
                  overhead_detail=timing, max_unique_per_kernel=_max_unique(model))
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


def _kc_chain(ctx, best=False):
    """prune -> sparsity-preserving cluster -> cluster- and zero-preserving QAT, each with the budget.

    `best`: the same budget and overall sparsity, with per-layer targets from
    a sensitivity analysis on the last 2,000 training images (not the test
    set) and the biases clustered too.
    """
    from keras_compress.export.litert import export_litert
    from keras_compress.pruning import api as pruning

    s = ctx.settings
    if best:
        held = (ctx.x_train[-2000:], ctx.y_train[-2000:])
        model = kc.prune(ctx.fresh_baseline(), ctx.prune_config(ctx.steps_total()), targets="auto", data=held)
    else:
        model = kc.prune(ctx.fresh_baseline(), ctx.prune_config(ctx.steps_total()))
    prune_s = _fit_timed(ctx, model, [kc.PruningCallback()])
    pruning.strip(model)
    kc.cluster(model, kc.ClusterConfig(num_clusters=s.clusters, biases=best))  # the defaults; zeros stay zero
    cluster_s = _fit_timed(ctx, model, [kc.ClusteringCallback()])
    kc.quantize(model, kc.QATConfig(), calibration_data=ctx.calibration)  # clustering stays on
    qat_s = _fit_timed(ctx, model)
    accuracy = kc.evaluate.keras_accuracy(model, ctx.x_test, ctx.y_test)
    path = export_litert(model, ctx.artifact("kc_best_int8" if best else "kc_chain_int8"), fmt="int8")
    kc.strip(model)
    sparsity = _kernel_sparsity(model)
    label = best_label(s) if best else f"prune {round(100 * s.target_sparsity)}% -> cluster {s.clusters} -> QAT"
    row = make_row(ctx, "keras-compress", label, "int8",
                   keras_accuracy=accuracy, finetune_s=prune_s + cluster_s + qat_s,
                   stage_seconds=[prune_s, cluster_s, qat_s], kernel_sparsity=sparsity,
                   max_unique_per_kernel=_max_unique(model),
                   max_unique_per_channel=_max_unique(model, per_channel=True),
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
