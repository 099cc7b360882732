"""bench/compare.py's tfmot rows: its virtual environment and bench/tfmot_worker.py, measured here."""

import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np
from compare_rows import (
    TFMOT_REQUIREMENTS,
    TFMOT_TECHNIQUES,
    WORKER,
    failed_row,
    log,
    make_row,
    measure_artifact,
    one_line,
)


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
