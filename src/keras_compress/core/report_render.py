"""Renderers of a `Report`: the Markdown table and document, the plot, the HTML page.

Each takes a `keras_compress.core.report.Report` (duck-typed: its `title`,
`rows`, `meta`, `reference_row()` and `update_ratios()`), so this module
imports nothing of the data model; `Report`'s methods call these.
matplotlib is imported only when the plot is drawn.
"""

import base64
import html
import io
import json
import math

_MISSING = "-"
_INSTALL_HINT = 'pip install "keras-compress[report]"  (or: pip install matplotlib)'


def table_cells(report):
    """The table as text: (header, body rows, which columns are right-aligned)."""
    report.update_ratios()
    columns = _columns(report)
    header = [column for column, _, _ in columns]
    body = [[render(row) for _, render, _ in columns] for row in report.rows]
    numeric = [is_numeric for _, _, is_numeric in columns]
    return header, body, numeric


def metric_value(report, value):
    """A metric value as the table shows it: % for a percent metric, else 4 significant digits."""
    if value is None:
        return _MISSING
    if report.metric.get("percent"):
        return _percent(value)
    return f"{value:.4g}"


def _lost(report, row):
    value = report.lost(row)
    if value is None:
        return _MISSING
    value += 0.0  # no "-0"
    if report.metric.get("percent"):
        return f"{100.0 * value:+.2f} pt"
    return f"{value:+.4g}"


def _columns(report):
    """The table's columns: the metric's own name heads its columns; "Lost" is signed, positive = worse."""
    name = report.metric.get("name", "accuracy")
    short = "acc" if name == "accuracy" else name
    metric = [
        (f"Keras {short}", lambda r: metric_value(report, r.keras_metric), True),
        (f"LiteRT {short}", lambda r: metric_value(report, r.litert_metric), True),
        ("Lost", lambda r: _lost(report, r), True),
    ]
    return _COLUMNS[:3] + tuple(metric) + _COLUMNS[3:]


def markdown_table(report):
    """The rows as an aligned Markdown table (see `Report.markdown_table`)."""
    header, body, numeric = table_cells(report)
    body = [[cell.replace("|", "\\|") for cell in line] for line in body]
    widths = [max(len(c) for c in column) for column in zip(header, *body)]
    widths = [max(w, 3) for w in widths]

    def line(cells):
        padded = [
            c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, numeric)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        ("-" * (w + 1) + ":") if right else ("-" * (w + 2)) for w, right in zip(widths, numeric)
    ) + "|"
    return "\n".join([line(header), rule] + [line(cells) for cells in body])


def markdown(report, plot_name):
    """The full Markdown document (see `Report.markdown`)."""
    parts = [f"# {report.title}", "", report.markdown_table(), ""]
    if plot_name:
        parts += [f"![Size vs accuracy]({plot_name})", ""]
    reference = report.reference_row()
    if reference is not None:
        parts += [f"Ratio: gzip bytes of `{reference.name}` / gzip bytes of the artifact.", ""]
    if report.meta:
        parts += ["## Run", ""]
        for key, value in report.meta.items():
            if isinstance(value, (dict, list, tuple)):
                text = json.dumps(value, indent=2, default=str)
                parts += [f"- **{key}**:", "", "  ```json"]
                parts += ["  " + text_line for text_line in text.splitlines()]
                parts += ["  ```"]
            else:
                parts.append(f"- **{key}**: {value}")
        parts.append("")
    return "\n".join(parts)


def plot_png(report):
    """Draws the size-vs-accuracy plot; returns its PNG bytes (see `Report.plot`)."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter
    except ImportError as error:
        raise ImportError(f"Plotting the report needs matplotlib. Install it with: {_INSTALL_HINT}") from error

    # The object-oriented API (no pyplot) leaves the caller's matplotlib backend alone.
    figure = Figure(figsize=(8, 5), dpi=100)
    axes = figure.add_subplot()
    points = [r for r in report.rows if r.gzip_bytes and r.gzip_bytes > 0 and r.accuracy is not None]
    scale = 100.0 if report.metric.get("percent") else 1.0
    name = report.metric.get("name", "accuracy")
    techniques = list(dict.fromkeys(r.technique for r in points))
    colours = [f"C{i % 10}" for i in range(len(techniques))]
    for technique, colour in zip(techniques, colours):
        label = technique
        for litert in (True, False):
            group = [r for r in points if r.technique == technique and (r.litert_metric is not None) == litert]
            if not group:
                continue
            axes.scatter(
                [r.gzip_bytes for r in group],
                [scale * r.accuracy for r in group],
                s=60,
                marker="o" if litert else "s",
                edgecolors=colour,
                facecolors=colour if litert else "none",
                label=label,
                zorder=3,
            )
            label = None
    # Alternate label offsets so artifacts of similar size stay readable.
    for i, row in enumerate(points):
        axes.annotate(
            row.name,
            (row.gzip_bytes, scale * row.accuracy),
            textcoords="offset points",
            xytext=(6, 6 if i % 2 == 0 else -12),
            fontsize=8,
        )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _human_bytes(value)))
    axes.set_xlabel("gzip size (bytes, log scale)")
    better = "higher" if report.metric.get("higher_is_better", True) else "lower"
    axes.set_ylabel(f"{name}{' (%)' if scale == 100.0 else ''}, {better} is better")
    axes.set_title(report.title)
    axes.grid(True, which="both", alpha=0.3)
    if points:
        sizes = [r.gzip_bytes for r in points]
        low, high = min(sizes), max(sizes)
        axes.set_xlim(low / 1.6, high * 1.6)
        accuracies = [scale * r.accuracy for r in points]
        spread = max(max(accuracies) - min(accuracies), 0.5 if scale == 100.0 else 1e-6 + 0.01 * max(
            abs(a) for a in accuracies))
        top = max(accuracies) + 0.3 * spread
        axes.set_ylim(min(accuracies) - 0.3 * spread, min(100.0 + 0.05 * spread, top) if scale == 100.0 else top)
        axes.legend(loc="lower right", fontsize=8, title="filled: LiteRT, hollow: Keras", title_fontsize=8)
    else:
        axes.text(0.5, 0.5, "no measured artifacts", ha="center", va="center", transform=axes.transAxes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def html_page(report, png):
    """The self-contained HTML page (see `Report.html`)."""
    header, body, numeric = table_cells(report)
    esc = html.escape

    def cells(tag, values):
        return "".join(
            f'<{tag} class="num">{esc(v)}</{tag}>' if right else f"<{tag}>{esc(v)}</{tag}>"
            for v, right in zip(values, numeric)
        )

    table = ["<table class=\"rows\">", f"<thead><tr>{cells('th', header)}</tr></thead>", "<tbody>"]
    table += [f"<tr>{cells('td', line)}</tr>" for line in body]
    table += ["</tbody>", "</table>"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(report.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(report.title)}</h1>",
        "\n".join(table),
    ]
    reference = report.reference_row()
    if reference is not None:
        parts.append(
            f'<p class="note">Ratio: gzip bytes of <code>{esc(reference.name)}</code> '
            "/ gzip bytes of the artifact.</p>"
        )
    if png:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img alt="size vs accuracy" src="data:image/png;base64,{data}">'
            "<figcaption>Accuracy against gzip size (log scale)</figcaption></figure>"
        )
    if report.meta:
        parts.append("<h2>Run</h2>")
        parts.append('<table class="meta">')
        for key, value in report.meta.items():
            if isinstance(value, (dict, list, tuple)):
                shown = f"<pre>{esc(json.dumps(value, indent=2, default=str))}</pre>"
            else:
                shown = esc(str(value))
            parts.append(f"<tr><th>{esc(str(key))}</th><td>{shown}</td></tr>")
        parts.append("</table>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# -- cell formatting ------------------------------------------------------


def _human_bytes(value):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value:g} B"


def _percent(value):
    return _MISSING if value is None else f"{100.0 * value:.2f}%"


def _count(value):
    return _MISSING if value is None else f"{int(value):,}"


def _ratio(value):
    return _MISSING if value is None or not math.isfinite(value) else f"{value:.1f}x"


def _millis(value):
    return _MISSING if value is None else f"{value:.3f}"


def _nonzero(row):
    if row.nonzero is None:
        return _MISSING
    if row.params:
        return f"{row.nonzero:,} ({row.nonzero / row.params:.1%})"
    return f"{row.nonzero:,}"


# (header, cell renderer, right-aligned)
_COLUMNS = (
    ("Artifact", lambda r: r.name, False),
    ("Technique", lambda r: r.technique, False),
    ("Format", lambda r: r.fmt, False),
    ("Size (bytes)", lambda r: _count(r.raw_bytes), True),
    ("Gzip (bytes)", lambda r: _count(r.gzip_bytes), True),
    ("Ratio", lambda r: _ratio(r.ratio), True),
    ("Latency b1 (ms)", lambda r: _millis(r.latency_b1_ms), True),
    ("Latency b32 (ms)", lambda r: _millis(r.latency_b32_ms), True),
    ("Speed-up b1", lambda r: _ratio(r.speedup_b1), True),
    ("Speed-up b32", lambda r: _ratio(r.speedup_b32), True),
    ("MACs", lambda r: _count(r.macs), True),
    ("Params", lambda r: _count(r.params), True),
    ("Nonzero", _nonzero, True),
    ("Notes", lambda r: r.notes or "", False),
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
thead th { background: #f0f3f7; }
tbody tr:nth-child(even) { background: #fafafa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.meta th { background: #f0f3f7; }
pre { margin: 0; font-size: 0.8rem; }
figure { margin: 1.5rem 0; } img { max-width: 100%; }
.note { color: #555; font-size: 0.85rem; }
""".strip()
