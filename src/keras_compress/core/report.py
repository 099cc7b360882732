"""Compression reports: one row per artifact, written as JSON, Markdown and HTML.

A `Report` is what the CLI prints and writes, and what the API returns: the
artifacts a recipe produced (the baseline's own float32 LiteRT file
included), each with its accuracy, size, compression ratio, latency and
parameter counts, plus the run's metadata (model, data, recipe, machine).
The renderers (Markdown, HTML, the plot) live in `report_render`; `Report`'s
methods call them.

This module imports neither TensorFlow nor Keras; matplotlib is imported
only when the size-vs-accuracy plot is drawn.
"""

import dataclasses
import json
import os
import warnings
from typing import Any

from keras_compress.core import report_render
from keras_compress.core.files import atomic_write  # noqa: F401 - re-exported: the report's writer

REPORT_VERSION = 1
JSON_NAME = "report.json"
MARKDOWN_NAME = "report.md"
PLOT_NAME = "size_vs_accuracy.png"
HTML_NAME = "report.html"
# The row every ratio is measured against: the input model's float32 file.
REFERENCE_FORMAT = "float32"
REFERENCE_TECHNIQUE = "baseline"


# Row keys of reports written when every report measured top-1 accuracy.
_LEGACY_KEYS = {"keras_accuracy": "keras_metric", "litert_accuracy": "litert_metric"}
# The metric a report measures when none is stated (reports written before metrics).
DEFAULT_METRIC = {"name": "accuracy", "higher_is_better": True, "percent": True}


@dataclasses.dataclass
class ArtifactRow:
    """One measured artifact (a `.keras` or `.tflite` file) in a `Report`.

    `keras_metric` and `litert_metric` are the report's metric (`Report.metric`:
    accuracy, MAE, a task's score; an accuracy is a fraction in [0, 1], shown in %); sizes are
    bytes; latencies are median milliseconds per batch. `ratio` is filled in
    by the `Report`: the baseline float32 artifact's gzip bytes divided by
    this artifact's gzip bytes. Any measurement may be `None` (not measured).

    Attributes:
        name: artifact file name, e.g. `"model_int8.tflite"`.
        technique: what was done to the model, e.g. `"baseline"`, `"prune 90%"`.
        fmt: `"keras"`, `"float32"`, `"float16"`, `"dynamic_int8"` or `"int8"`.
        keras_metric: the metric of the Keras model the artifact came from, on the test split.
        litert_metric: the metric of the LiteRT artifact itself (its interpreter's predictions).
        raw_bytes: file size.
        gzip_bytes: gzip-compressed file size (what sparsity buys on disk).
        ratio: compression ratio against the baseline float32 artifact.
        latency_b1_ms: median LiteRT latency at batch size 1.
        latency_b32_ms: median LiteRT latency at batch size 32.
        params: total parameter count of the model.
        nonzero: nonzero parameter count.
        notes: free text.
        macs: multiply-accumulates per sample of the model (`evaluate.macs`).
        speedup_b1, speedup_b32: the baseline float32 artifact's latency
            divided by this artifact's, at batch 1 and 32 (filled in by the `Report`).

    Example:
    >>> row = ArtifactRow("model_int8.tflite", "prune 90%", "int8",
    ...                   litert_metric=0.989, raw_bytes=120_000, gzip_bytes=40_000)
    """

    name: str
    technique: str
    fmt: str
    keras_metric: float | None = None
    litert_metric: float | None = None
    raw_bytes: int | None = None
    gzip_bytes: int | None = None
    ratio: float | None = None
    latency_b1_ms: float | None = None
    latency_b32_ms: float | None = None
    params: int | None = None
    nonzero: int | None = None
    notes: str = ""
    macs: int | None = None
    speedup_b1: float | None = None
    speedup_b32: float | None = None

    @property
    def accuracy(self):
        """The metric to show for this artifact: LiteRT's if measured, else Keras's."""
        return self.litert_metric if self.litert_metric is not None else self.keras_metric

    def to_dict(self) -> dict[str, Any]:
        """Returns the row as a dict of plain values (JSON-able).

        Example:
        >>> ArtifactRow("model.keras", "baseline", "keras").to_dict()["fmt"]
        'keras'
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArtifactRow":
        """Builds a row from `to_dict` output; missing optional keys take defaults.

        Args:
            data: a dict with at least `name`, `technique` and `fmt`.

        Returns:
            An `ArtifactRow`.

        Raises:
            TypeError: if `data` is not a dict.
            ValueError: if `data` holds an unknown key or lacks a required one.

        Example:
        >>> row = ArtifactRow("a.tflite", "baseline", "float32", gzip_bytes=10)
        >>> ArtifactRow.from_dict(row.to_dict()) == row
        True
        """
        if not isinstance(data, dict):
            raise TypeError(
                f"ArtifactRow.from_dict expects a dict. Received: {type(data).__name__}"
            )
        fields = [f.name for f in dataclasses.fields(cls)]
        data = {_LEGACY_KEYS.get(k, k): v for k, v in data.items()}  # reports written before metrics
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"Unknown key(s) for ArtifactRow: {unknown}. Allowed keys: {fields}")
        missing = [k for k in ("name", "technique", "fmt") if k not in data]
        if missing:
            raise ValueError(f"ArtifactRow is missing required key(s): {missing}. Received: {data}")
        return cls(**data)


@dataclasses.dataclass
class Report:
    """The measured artifacts of a compression run, and how they were made.

    `ratio` of every row is kept up to date against the reference row: the
    first float32 row whose technique is `"baseline"`, else the first float32
    row; without a float32 row every ratio is `None`.

    Attributes:
        title: a heading for the report.
        rows: the `ArtifactRow`s, in the order they were added.
        meta: free-form, JSON-able run metadata (model, dataset, recipe,
            machine, Keras backend and version, timestamps, fine-tune settings).
        metric: what `keras_metric` and `litert_metric` measure: `name`,
            `higher_is_better`, `percent` (see `keras_compress.metrics.Metric.describe`).

    Example:
    >>> report = Report("LeNet-5 on MNIST", meta={"dataset": "mnist"})
    >>> report.add(ArtifactRow("baseline_float32.tflite", "baseline", "float32",
    ...                        litert_metric=0.991, gzip_bytes=1_600_000))
    >>> report.add(ArtifactRow("model_int8.tflite", "prune 90%", "int8",
    ...                        litert_metric=0.990, gzip_bytes=75_000))
    >>> report.rows[1].ratio
    21.333333333333332
    >>> print(report)          # the Markdown table
    >>> report.write("runs/demo")
    """

    title: str = "keras-compress report"
    rows: list[ArtifactRow] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    metric: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_METRIC))

    def __post_init__(self):
        self.rows = [r if isinstance(r, ArtifactRow) else ArtifactRow.from_dict(r) for r in self.rows]
        self.meta = dict(self.meta or {})
        self.metric = {**DEFAULT_METRIC, **(self.metric or {})}
        self.update_ratios()

    def lost(self, row: ArtifactRow) -> float | None:
        """How much worse `row`'s metric is than the reference row's (positive = worse), in its own units.

        The direction is the metric's: for an error (MAE) a larger value is worse.

        Example:
        >>> report = Report(metric={"name": "mae", "higher_is_better": False, "percent": False},
        ...                 rows=[ArtifactRow("a", "baseline", "float32", litert_metric=2.0)])
        >>> report.lost(ArtifactRow("b", "prune", "int8", litert_metric=2.5))
        0.5
        """
        reference = self.reference_row()
        if reference is None or reference.accuracy is None or row.accuracy is None:
            return None
        difference = reference.accuracy - row.accuracy
        return difference if self.metric.get("higher_is_better", True) else -difference

    # -- rows -------------------------------------------------------------

    def add(self, row: ArtifactRow) -> ArtifactRow:
        """Appends a row and recomputes every row's compression ratio.

        Args:
            row: an `ArtifactRow` (or a dict accepted by `ArtifactRow.from_dict`).

        Returns:
            The added row, with its `ratio` filled in.

        Raises:
            TypeError: if `row` is neither an `ArtifactRow` nor a dict.

        Example:
        >>> report = Report()
        >>> report.add(ArtifactRow("base.tflite", "baseline", "float32", gzip_bytes=100)).ratio
        1.0
        """
        if isinstance(row, dict):
            row = ArtifactRow.from_dict(row)
        if not isinstance(row, ArtifactRow):
            raise TypeError(
                f"Report.add expects an ArtifactRow. Received: {type(row).__name__}"
            )
        self.rows.append(row)
        self.update_ratios()
        return row

    def reference_row(self) -> ArtifactRow | None:
        """Returns the row ratios are measured against, or `None` when there is none.

        That is the first float32 row of technique `"baseline"`, else the
        first float32 row.

        Returns:
            An `ArtifactRow` or `None`.

        Example:
        >>> Report().reference_row() is None
        True
        """
        float32 = [r for r in self.rows if r.fmt == REFERENCE_FORMAT]
        for row in float32:
            if row.technique == REFERENCE_TECHNIQUE:
                return row
        return float32[0] if float32 else None

    def update_ratios(self) -> None:
        """Sets every row's `ratio` = reference gzip bytes / row gzip bytes.

        Rows without a size, or reports without a sized float32 row, get `None`.

        Example:
        >>> report = Report(rows=[ArtifactRow("a", "baseline", "float32", gzip_bytes=8),
        ...                       ArtifactRow("b", "prune 50%", "int8", gzip_bytes=2)])
        >>> report.rows[1].ratio
        4.0
        """
        reference = self.reference_row()
        base = reference.gzip_bytes if reference is not None else None
        for row in self.rows:
            if base and row.gzip_bytes:
                row.ratio = base / row.gzip_bytes
            else:
                row.ratio = None
            # Speed-ups against the same reference row (latencies are measured side by side in one run).
            for batch in (1, 32):
                ours = getattr(row, f"latency_b{batch}_ms")
                theirs = getattr(reference, f"latency_b{batch}_ms") if reference is not None else None
                setattr(row, f"speedup_b{batch}", theirs / ours if theirs and ours else None)

    # -- serialisation ----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as a JSON-able dict (`version`, `title`, `meta`, `rows`).

        Example:
        >>> Report("t").to_dict()["rows"]
        []
        """
        self.update_ratios()
        return {
            "version": REPORT_VERSION,
            "title": self.title,
            "meta": self.meta,
            "metric": self.metric,
            "rows": [row.to_dict() for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        """Builds a report from `to_dict` output (for example a loaded `report.json`).

        Args:
            data: a dict with `rows` and optionally `version`, `title`, `meta`.

        Returns:
            A `Report`.

        Raises:
            TypeError: if `data` is not a dict.
            ValueError: on unknown keys, or a row that `ArtifactRow.from_dict` rejects.

        Example:
        >>> report = Report("t", [ArtifactRow("a", "baseline", "float32", gzip_bytes=1)])
        >>> Report.from_dict(report.to_dict()) == report
        True
        """
        if not isinstance(data, dict):
            raise TypeError(f"Report.from_dict expects a dict. Received: {type(data).__name__}")
        allowed = ["version", "title", "meta", "metric", "rows"]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"Unknown key(s) for Report: {unknown}. Allowed keys: {allowed}")
        rows = data.get("rows", [])
        if not isinstance(rows, list):
            raise TypeError(f"Report rows must be a list. Received: {type(rows).__name__}")
        return cls(
            title=data.get("title", cls.title),
            rows=[ArtifactRow.from_dict(r) for r in rows],
            meta=dict(data.get("meta") or {}),
            metric=dict(data.get("metric") or DEFAULT_METRIC),
        )

    def to_json(self) -> str:
        """Returns the report as indented JSON text (the content of `report.json`).

        Example:
        >>> '"rows": []' in Report().to_json()
        True
        """
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"

    @classmethod
    def read(cls, path) -> "Report":
        """Loads a report from a `report.json` file, or from the folder holding one.

        Args:
            path: path to `report.json` or to a folder written by `write`.

        Returns:
            A `Report`.

        Raises:
            FileNotFoundError: if the file does not exist.
            ValueError: if the file is not a valid report.

        Example:
        >>> report = Report.read("runs/demo")
        """
        if os.path.isdir(path):
            path = os.path.join(path, JSON_NAME)
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path!r} is not valid JSON: {error}") from None
        return cls.from_dict(data)

    # -- rendering --------------------------------------------------------

    def markdown_table(self) -> str:
        """Returns the rows as an aligned Markdown table, readable as plain text too.

        Accuracy is shown in %, bytes with thousands separators, the ratio
        as e.g. `21.3x`, latencies in ms; unmeasured values as `-`.

        Returns:
            The table, one line per row, without a trailing newline.

        Example:
        >>> print(Report(rows=[ArtifactRow("a.tflite", "baseline", "float32",
        ...                                gzip_bytes=1234567)]).markdown_table())
        """
        return report_render.markdown_table(self)

    def __str__(self) -> str:
        return self.markdown_table()

    def markdown(self, plot_name: str | None = PLOT_NAME) -> str:
        """Returns the full Markdown document: title, metadata, table and plot link.

        Args:
            plot_name: file name of the plot to link, or `None` for no link.

        Returns:
            Markdown text ending in a newline.

        Example:
        >>> Report("Demo").markdown().startswith("# Demo")
        True
        """
        return report_render.markdown(self, plot_name)

    def plot(self, path=None) -> bytes:
        """Draws accuracy (%) against gzip size (bytes, log scale), one labelled point per artifact.

        LiteRT accuracy is used where measured (filled marker), else Keras
        accuracy (hollow marker); colours distinguish techniques. Rows
        without a size or any accuracy are left out.

        Args:
            path: if given, the PNG is also written there (atomically).

        Returns:
            The PNG bytes.

        Raises:
            ImportError: if matplotlib is not installed (with an install hint).

        Example:
        >>> png = report.plot("size_vs_accuracy.png")
        """
        png = report_render.plot_png(self)
        if path is not None:
            atomic_write(path, png)
        return png

    def html(self, png: bytes | None = None) -> str:
        """Returns a self-contained HTML page: title, table, embedded plot and metadata.

        Args:
            png: the plot's PNG bytes, embedded as a base64 `data:` URI; `None`
                for a page without the plot.

        Returns:
            HTML text.

        Example:
        >>> page = report.html(report.plot())
        """
        return report_render.html_page(self, png)

    def write(self, out_dir) -> dict[str, str]:
        """Writes `report.json`, `report.md`, `size_vs_accuracy.png` and `report.html` into `out_dir`.

        Each file is written atomically (temp file in `out_dir`, then
        `os.replace`). `out_dir` is created if needed. Without matplotlib the
        PNG is skipped with a warning and the HTML has no plot.

        Args:
            out_dir: destination folder.

        Returns:
            A dict mapping `"json"`, `"markdown"`, `"html"` and (when drawn)
            `"png"` to the written paths.

        Raises:
            OSError: if `out_dir` cannot be created or written.

        Example:
        >>> paths = report.write("runs/demo")
        >>> sorted(paths)
        ['html', 'json', 'markdown', 'png']
        """
        os.makedirs(out_dir, exist_ok=True)
        paths = {}
        try:
            png = self.plot()
        except ImportError as error:
            warnings.warn(f"{error}. Skipping {PLOT_NAME}.", stacklevel=2)
            png = None
        paths["json"] = atomic_write(os.path.join(out_dir, JSON_NAME), self.to_json())
        paths["markdown"] = atomic_write(
            os.path.join(out_dir, MARKDOWN_NAME), self.markdown(PLOT_NAME if png else None)
        )
        if png is not None:
            paths["png"] = atomic_write(os.path.join(out_dir, PLOT_NAME), png)
        paths["html"] = atomic_write(os.path.join(out_dir, HTML_NAME), self.html(png))
        return paths
