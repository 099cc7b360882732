import base64
import json
import os
import subprocess
import sys

import pytest

from keras_compress.core import report as report_module
from keras_compress.core.report import ArtifactRow, Report, atomic_write

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sample_report():
    report = Report("LeNet-5 on MNIST", meta={"dataset": "mnist", "recipe": {"steps": [{"strip": {}}]}})
    report.add(ArtifactRow("baseline_float32.tflite", "baseline", "float32", keras_metric=0.9912,
                           litert_metric=0.9912, raw_bytes=1_725_000, gzip_bytes=1_600_000,
                           latency_b1_ms=0.12, latency_b32_ms=2.5, params=431_080, nonzero=431_080,
                           notes="the input model"))
    report.add(ArtifactRow("model.keras", "prune 90%", "keras", keras_metric=0.9901,
                           raw_bytes=1_760_000, gzip_bytes=200_000, params=431_080, nonzero=43_108))
    report.add(ArtifactRow("model_int8.tflite", "prune 90%", "int8", keras_metric=0.9901,
                           litert_metric=0.9897, raw_bytes=450_000, gzip_bytes=75_000,
                           latency_b1_ms=0.2, latency_b32_ms=5.0, params=431_080, nonzero=43_108))
    return report


def row_line(table, name):
    return next(line for line in table.splitlines() if line.startswith(f"| {name} "))


def test_table_shows_accuracy_in_percent_bytes_with_separators_and_ratio():
    table = sample_report().markdown_table()
    line = row_line(table, "model_int8.tflite")
    assert "98.97%" in line and "99.01%" in line
    assert "450,000" in line and "75,000" in line
    assert "21.3x" in line
    assert "43,108 (10.0%)" in line
    assert "Keras acc" in table.splitlines()[0] and "Ratio" in table.splitlines()[0]


def test_unmeasured_values_are_shown_as_a_dash():
    line = row_line(sample_report().markdown_table(), "model.keras")
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4] == "-"  # LiteRT accuracy
    assert cells[9] == "-" and cells[10] == "-"  # latencies


def test_table_rows_have_one_cell_per_column_even_with_pipes_in_notes():
    report = Report(rows=[ArtifactRow("a|b.tflite", "baseline", "float32", notes="x | y")])
    lines = report.markdown_table().splitlines()
    assert len(lines) == 3
    assert len({line.replace("\\|", "").count("|") for line in lines}) == 1


def test_ratio_is_baseline_float32_gzip_bytes_over_the_artifacts():
    report = sample_report()
    assert report.rows[0].ratio == pytest.approx(1.0)
    assert report.rows[1].ratio == pytest.approx(1_600_000 / 200_000)
    assert report.rows[2].ratio == pytest.approx(1_600_000 / 75_000)


def test_ratio_prefers_the_baseline_float32_row_over_other_float32_rows():
    report = Report()
    report.add(ArtifactRow("model_float32.tflite", "prune 90%", "float32", gzip_bytes=400))
    assert report.rows[0].ratio == pytest.approx(1.0)  # the only float32 row, for now
    report.add(ArtifactRow("baseline_float32.tflite", "baseline", "float32", gzip_bytes=1600))
    assert report.reference_row().name == "baseline_float32.tflite"
    assert report.rows[0].ratio == pytest.approx(4.0)


def test_ratio_is_none_without_a_float32_row():
    report = Report(rows=[ArtifactRow("model_int8.tflite", "prune 90%", "int8", gzip_bytes=10)])
    assert report.reference_row() is None
    assert report.rows[0].ratio is None
    cells = [c.strip() for c in row_line(report.markdown_table(), "model_int8.tflite").strip("|").split("|")]
    assert cells[8] == "-"


def test_lost_is_signed_by_the_metric_direction_and_shown_in_its_units():
    accuracy = sample_report()
    # Higher is better: the int8 row (98.97% against the baseline's 99.12%) lost 0.15 pt.
    assert accuracy.lost(accuracy.rows[2]) == pytest.approx(0.9912 - 0.9897)
    assert "+0.15 pt" in row_line(accuracy.markdown_table(), "model_int8.tflite")
    mae = Report(metric={"name": "mae", "higher_is_better": False, "percent": False})
    mae.add(ArtifactRow("baseline_float32.tflite", "baseline", "float32", litert_metric=40.0, gzip_bytes=10))
    worse = mae.add(ArtifactRow("model_int8.tflite", "prune 80%", "int8", litert_metric=40.5, gzip_bytes=5))
    better = mae.add(ArtifactRow("model_float32.tflite", "prune 80%", "float32", litert_metric=39.0, gzip_bytes=8))
    assert mae.lost(worse) == pytest.approx(0.5) and mae.lost(better) == pytest.approx(-1.0)
    table = mae.markdown_table()
    assert "Keras mae" in table.splitlines()[0] and "LiteRT mae" in table.splitlines()[0]
    assert "40.5" in row_line(table, "model_int8.tflite") and "+0.5" in row_line(table, "model_int8.tflite")
    assert "%" not in row_line(table, "model_int8.tflite").split("|")[5]
    again = Report.from_dict(json.loads(mae.to_json()))
    assert again.metric["higher_is_better"] is False and again.lost(again.rows[1]) == pytest.approx(0.5)


def test_reports_written_before_metrics_still_load():
    row = ArtifactRow.from_dict({"name": "a.tflite", "technique": "baseline", "fmt": "float32",
                                 "keras_accuracy": 0.9, "litert_accuracy": 0.89})
    assert (row.keras_metric, row.litert_metric) == (0.9, 0.89)
    assert Report.from_dict({"rows": [row.to_dict()]}).metric["name"] == "accuracy"


def test_str_is_the_markdown_table():
    report = sample_report()
    assert str(report) == report.markdown_table()


def test_dict_round_trip_gives_an_equal_report():
    report = sample_report()
    again = Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report
    assert again.rows[2].ratio == pytest.approx(report.rows[2].ratio)


def test_from_dict_rejects_unknown_keys():
    data = sample_report().to_dict()
    data["rows"][0]["colour"] = "red"
    with pytest.raises(ValueError, match="colour"):
        Report.from_dict(data)
    with pytest.raises(ValueError, match="extra"):
        Report.from_dict({"rows": [], "extra": 1})


def test_add_rejects_what_is_not_a_row():
    with pytest.raises(TypeError, match="ArtifactRow"):
        Report().add(42)


def test_write_creates_json_markdown_png_and_html(tmp_path):
    paths = sample_report().write(tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == [
        "report.html", "report.json", "report.md", "size_vs_accuracy.png"]
    assert sorted(paths) == ["html", "json", "markdown", "png"]
    assert Report.read(tmp_path / "out") == sample_report()
    assert (tmp_path / "out" / "size_vs_accuracy.png").read_bytes().startswith(PNG_SIGNATURE)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert markdown.startswith("# LeNet-5 on MNIST")
    assert "21.3x" in markdown and "(size_vs_accuracy.png)" in markdown


def test_html_is_self_contained_with_the_plot_as_a_base64_png(tmp_path):
    sample_report().write(tmp_path)
    page = (tmp_path / "report.html").read_text()
    prefix = 'src="data:image/png;base64,'
    assert prefix in page
    encoded = page.split(prefix, 1)[1].split('"', 1)[0]
    assert base64.b64decode(encoded).startswith(PNG_SIGNATURE)
    assert "<style>" in page and "<table" in page
    assert "model_int8.tflite" in page and "21.3x" in page
    assert "size_vs_accuracy.png" not in page  # nothing linked from outside


def test_html_escapes_names():
    page = Report(rows=[ArtifactRow("<script>.tflite", "baseline", "float32")]).html()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_write_leaves_no_temp_files_and_replaces_old_reports(tmp_path):
    sample_report().write(tmp_path)
    smaller = Report("Second", rows=[ArtifactRow("a.tflite", "baseline", "float32", gzip_bytes=5)])
    smaller.write(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [
        "report.html", "report.json", "report.md", "size_vs_accuracy.png"]
    assert Report.read(tmp_path / "report.json").title == "Second"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_atomic_write_gives_ordinary_file_permissions(tmp_path):
    path = atomic_write(tmp_path / "a.txt", "text")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_plot_without_measurements_still_draws(tmp_path):
    png = Report(rows=[ArtifactRow("a.tflite", "baseline", "float32")]).plot(tmp_path / "p.png")
    assert png.startswith(PNG_SIGNATURE)
    assert (tmp_path / "p.png").read_bytes() == png


def test_without_matplotlib_plot_hints_at_the_install_and_write_skips_the_png(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install"):
        sample_report().plot()
    with pytest.warns(UserWarning, match="matplotlib"):
        paths = sample_report().write(tmp_path)
    assert "png" not in paths
    assert "data:image/png" not in (tmp_path / "report.html").read_text()


def test_importing_report_does_not_load_tensorflow():
    # (matplotlib cannot be checked this way: Keras itself imports it.)
    code = "import sys, keras_compress.core.report; assert 'tensorflow' not in sys.modules"
    env = dict(os.environ, KERAS_BACKEND="numpy")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
