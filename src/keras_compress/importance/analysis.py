"""`analyze`: importance and sensitivity of a model, as figures a person reads.

Writes into one folder (atomically: a hidden folder renamed at the end):
`importance_histograms.png` (per weight, the distribution of log10 scores),
`channel_heatmap.png` (per layer, mean importance of each output channel,
normalised per layer), `sensitivity.png` (accuracy versus sparsity per
weight, the others intact), `analysis.json` and `analysis.md` (a table per
weight: size, mean score, accuracy at each sparsity, suggested target).
"""

import json
import os
import shutil
import time

import numpy as np

from keras_compress.core.report import atomic_write


def _figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"analyze draws with matplotlib, which could not be imported ({error}). "
            'Install it with: pip install "keras-compress[report]"'
        ) from error
    return Figure


def _png(figure):
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def histogram_png(scores):
    """Per weight, a histogram of log10 importance (zeros left out, counted in the title)."""
    Figure = _figure()
    names = list(scores)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    figure = Figure(figsize=(4.2 * cols, 2.8 * rows))
    for i, name in enumerate(names):
        axis = figure.add_subplot(rows, cols, i + 1)
        values = np.asarray(scores[name], np.float64).ravel()
        positive = values[values > 0]
        if positive.size:
            axis.hist(np.log10(positive), bins=50, color="#4477aa")
        axis.set_title(f"{name}\n{values.size:,} params, {values.size - positive.size:,} zero", fontsize=8)
        axis.set_xlabel("log10 importance", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.tight_layout()
    return _png(figure)


def channel_importance(scores):
    """`{name: per-output-channel mean importance / its max}` for weights of rank >= 2."""
    out = {}
    for name, values in scores.items():
        values = np.asarray(values, np.float64)
        if values.ndim < 2:
            continue
        per_channel = values.reshape(-1, values.shape[-1]).mean(axis=0)
        top = per_channel.max()
        out[name] = per_channel / top if top > 0 else per_channel
    return out


def heatmap_png(channels):
    """Rows: weights; columns: output channels (padded); colour: normalised mean importance."""
    Figure = _figure()
    names = list(channels)
    width = max(len(v) for v in channels.values())
    grid = np.full((len(names), width), np.nan)
    for i, name in enumerate(names):
        grid[i, : len(channels[name])] = channels[name]
    figure = Figure(figsize=(min(14, 3 + width / 40), 1 + 0.45 * len(names)))
    axis = figure.add_subplot(1, 1, 1)
    image = axis.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set_xlabel("output channel", fontsize=8)
    axis.set_title("mean importance per output channel (1 = the layer's most important)", fontsize=9)
    figure.colorbar(image, ax=axis, fraction=0.03)
    return _png(figure)


def sensitivity_png(result):
    """Accuracy (%) versus sparsity, one line per weight, the baseline dashed."""
    Figure = _figure()
    figure = Figure(figsize=(6.5, 4))
    axis = figure.add_subplot(1, 1, 1)
    for name, curve in result["curves"].items():
        xs = sorted(curve)
        axis.plot([100 * s for s in xs], [100 * curve[s] for s in xs], marker="o", label=name)
    axis.axhline(100 * result["baseline"], color="grey", linestyle="--", label="unpruned")
    axis.set_xlabel("sparsity of this weight only (%)")
    axis.set_ylabel("accuracy (%)")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    return _png(figure)


def _markdown(summary):
    sparsities = summary["sparsities"]
    lines = [f"# Importance and sensitivity: {summary['model']}", "",
             f"Scores: `{summary['method']}` on {summary['score_samples']} samples; sensitivity on "
             f"{summary['sensitivity_samples']} samples (unpruned accuracy "
             f"{100 * summary['baseline_accuracy']:.2f}%). Suggested targets meet "
             f"{100 * summary['target_sparsity']:.0f}% overall with the least predicted loss.", "",
             "| weight | params | mean score | " + " | ".join(f"acc @ {100 * s:.0f}%" for s in sparsities)
             + " | suggested target |",
             "|---|---:|---:|" + "---:|" * len(sparsities) + "---:|"]
    for row in summary["weights"]:
        cells = " | ".join(f"{100 * row['sensitivity'][str(float(s))]:.2f}%" for s in sparsities)
        lines.append(f"| {row['name']} | {row['params']:,} | {row['mean_score']:.3g} | {cells} | "
                     f"{100 * row['suggested_target']:.1f}% |")
    lines += ["", "![histograms](importance_histograms.png)", "", "![heat map](channel_heatmap.png)", "",
              "![sensitivity](sensitivity.png)", ""]
    return "\n".join(lines)


def analyze(model, data, out_dir, method="taylor", target_sparsity=0.9,
            sparsities=(0.5, 0.7, 0.8, 0.9, 0.95, 0.98), max_samples=2000):
    """Scores, sensitivity curves and suggested per-layer targets, written as figures.

    Args:
        model: a built Keras classifier.
        data: `(x, y)`: the first `max_samples` score the weights and
            measure sensitivity.
        out_dir: the folder to write (replaced at the end if it exists).
        method: importance method (`importance.METHODS`).
        target_sparsity: overall sparsity the suggested targets meet.
        sparsities: sparsities of the sensitivity curves.
        max_samples: samples used.

    Returns:
        The summary dict written to `analysis.json`.

    Example:
    >>> keras_compress.importance.analyze(model, (x[:2000], y[:2000]), "runs/analysis")
    """
    from keras_compress.importance.api import score
    from keras_compress.importance.sensitivity import allocate, sensitivity

    x, y = np.asarray(data[0])[:max_samples], np.asarray(data[1])[:max_samples]
    scores = score(model, (x, y), method=method)
    result = sensitivity(model, (x, y), sparsities=sparsities, max_samples=max_samples)
    plan = allocate(result["curves"], result["sizes"], result["baseline"], target_sparsity)
    weighted = {name: scores[name] for name in result["curves"]}
    summary = {
        "model": model.name, "method": method, "score_samples": int(len(x)),
        "sensitivity_samples": int(len(x)), "baseline_accuracy": result["baseline"],
        "target_sparsity": target_sparsity, "sparsities": [float(s) for s in sparsities],
        "weights": [
            {"name": name, "params": result["sizes"][name],
             "mean_score": float(np.mean(scores[name])),
             "sensitivity": {str(float(s)): a for s, a in result["curves"][name].items()},
             "suggested_target": float(plan[name])}
            for name in result["curves"]
        ],
    }
    out_dir = os.path.abspath(os.fspath(out_dir))
    parent, base = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    work = os.path.join(parent, f".{base}.{os.getpid()}.{time.time_ns()}.partial")
    os.mkdir(work)
    try:
        atomic_write(os.path.join(work, "importance_histograms.png"), histogram_png(weighted))
        atomic_write(os.path.join(work, "channel_heatmap.png"), heatmap_png(channel_importance(weighted)))
        atomic_write(os.path.join(work, "sensitivity.png"), sensitivity_png(result))
        atomic_write(os.path.join(work, "analysis.json"), json.dumps(summary, indent=2).encode())
        atomic_write(os.path.join(work, "analysis.md"), _markdown(summary).encode())
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.rename(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return summary
