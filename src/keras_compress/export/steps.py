"""The recipe's `export` step: `ExportConfig`'s fields. It runs last, once.

    - export: {formats: [keras, float32, int8], calibration_samples: 256}

A recipe without an export step is exported with the defaults at the end.
The step strips every technique first (a QAT model's int8 artifact is
written before, from the trained ranges), then writes and measures each
artifact: `model.keras`, `model.kcar`, `model_<fmt>.tflite`.
"""

import dataclasses
import os
import sys

from keras_compress.core.steps import Step, fail, register_step, where
from keras_compress.data.split import structure_length
from keras_compress.export.config import ExportConfig

KERAS_NAME = "model.keras"
ARCHIVE_NAME = "model.kcar"


def save_for_inference(model, path):
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


@register_step
@dataclasses.dataclass(frozen=True)
class ExportStep(Step):
    """Write the artifacts: `"keras"` for `model.keras`, LiteRT formats as `model_<fmt>.tflite`.

    Example:
    >>> ExportStep().formats
    ('keras', 'float32', 'int8')
    """

    name = "export"
    config_class = ExportConfig
    strips = True
    implicit_last = True

    def check_order(self, index, steps):
        exports = [i for i, step in enumerate(steps, 1) if isinstance(step, ExportStep)]
        if len(exports) > 1:
            fail(where(exports[1], self.name), f"a recipe exports once; export steps found at {exports}")
        if index != len(steps):
            fail(where(index, self.name), "export must be the last step")
        quantized = any(step.name == "quantize" for step in steps[: index - 1])
        if quantized and self.settings.get("per_channel") is False and "int8" in self.to_config().formats:
            fail(where(index, self.name), "per_channel: false sets the weight scales of a calibrated "
                                          "(post-training) int8 artifact; this recipe's int8 file comes from its "
                                          "quantize step, whose scales QAT trained: set per_channel: false in "
                                          "the quantize step instead")

    def run(self, run, index):
        config = self.to_config()
        technique = run.technique
        label = f"step {index}: export" if index else "export (implicit: the recipe has no export step)"
        run.log(f"{label} {list(config.formats)}")
        formats = list(config.formats)
        if "int8" in formats and _write_qat_int8(run, config, technique):
            formats.remove("int8")
        run.strip()
        stats = run.stats(run.model)
        from tqdm import tqdm

        bar = tqdm(formats, desc="export", unit="artifact", disable=not run.progress, file=sys.stderr)
        for fmt in bar:
            bar.set_postfix_str(fmt)
            if fmt == "keras":
                _write_keras(run, technique, stats)
            elif fmt == "archive":
                _write_archive(run, technique, stats)
            else:
                _write_litert(run, config, fmt, technique, stats)
        bar.close()


def _write_qat_int8(run, config, technique):
    """Writes a QAT model's int8 artifact from its trained ranges (before strip); False when not QAT."""
    from keras_compress.quantization import api as qat

    state = qat.get_state(run.model)
    if state is None:
        return False
    qat_stats = run.stats(run.model)  # the fake-quantized model's accuracy
    if state.config.deployable:
        path = os.path.join(run.work_dir, "model_int8.tflite")
        run.litert.export_litert(run.model, path, fmt="int8", int8_io=config.int8_io,
                                 select_tf_ops=config.select_tf_ops)
        run.measure_litert(path, technique, "int8", qat_stats,
                           notes="full integer, ranges learned in QAT (no calibration)"
                           + ("; int8 input and output" if config.int8_io else ""))
    else:
        run.skipped.append(
            f"int8: not written. This QAT model simulates {state.config.weight_bits}-bit "
            f"weights and {state.config.activation_bits}-bit activations; LiteRT stores "
            "int8 only, so the artifact cannot be stored at that width. Keras accuracy "
            f"of the fake-quantized model: {100 * qat_stats['keras_metric']:.2f}%.")
    return True


def _write_keras(run, technique, stats):
    from keras_compress import evaluate
    from keras_compress.core.report import ArtifactRow

    path = os.path.join(run.work_dir, KERAS_NAME)
    save_for_inference(run.model, path)
    run.report.add(ArtifactRow(
        name=KERAS_NAME, technique=technique, fmt="keras",
        keras_metric=stats["keras_metric"], params=stats["params"],
        nonzero=stats["nonzero"], macs=stats["macs"], notes="Keras model; LiteRT measurements do not apply",
        **evaluate.sizes(path),
    ))


def _write_archive(run, technique, stats):
    """Writes the compact archive and measures the model loaded back from it."""
    from keras_compress import evaluate
    from keras_compress.core.report import ArtifactRow
    from keras_compress.export import archive

    path = os.path.join(run.work_dir, ARCHIVE_NAME)
    archive.save(run.model, path)
    restored = archive.load(path)
    run.report.add(ArtifactRow(
        name=ARCHIVE_NAME, technique=technique, fmt="archive",
        keras_metric=run.score_model(restored),
        params=stats["params"], nonzero=stats["nonzero"], macs=stats["macs"],
        notes="keras-compress archive (zstd); measured on the model loaded back from it",
        **evaluate.sizes(path),
    ))


def _write_litert(run, config, fmt, technique, stats):
    path = os.path.join(run.work_dir, f"model_{fmt}.tflite")
    notes = ""
    if fmt == "int8":
        x_calibration, _ = run.data.train.take(config.calibration_samples)
        samples = structure_length(x_calibration)
        run.litert.export_litert(run.model, path, fmt=fmt, representative_data=x_calibration,
                                 num_calibration_samples=samples, int8_io=config.int8_io,
                                 per_channel=config.per_channel, select_tf_ops=config.select_tf_ops)
        notes = f"full integer, calibrated on {samples} training samples" + (
            "; int8 input and output" if config.int8_io else "") + (
            "; one weight scale per tensor" if not config.per_channel else "")
    else:
        run.litert.export_litert(run.model, path, fmt=fmt, select_tf_ops=config.select_tf_ops)
    run.measure_litert(path, technique, fmt, stats, notes=notes)

