"""bench/compare.py's output: the markdown tables, and the reading of a several-seed run.

Pure functions of the result dict `compare.run` builds (no Keras, no
TensorFlow), so the verdicts can be tested on synthetic rows.
"""

import json
import statistics


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


def best_label(settings):
    """keras-compress's best recipe at the chain's budget: a different technique, marked as one."""
    s = settings if isinstance(settings, dict) else vars(settings)
    return (f"best recipe: prune {round(100 * s['target_sparsity'])}% (auto per-layer targets) -> "
            f"cluster {s['clusters']} (+ biases) -> QAT")


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
    chain = pairs[next(k for k in pairs if "-> QAT" in k)]
    pairs[best_label(result["settings"])] = chain  # not like for like: the reading says so
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
              "otherwise level. The best-recipe row is not like for like (a different technique at the same "
              "budget and overall sparsity), read against tfmot's PCQAT chain.", "",
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
