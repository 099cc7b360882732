"""bench/compare.py's rows: the constants, a row's fields, the LiteRT measurement of an artifact.

Shared by compare.py's runners and compare_tfmot.py.
"""

import os
import re
import sys

import keras_compress as kc

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
