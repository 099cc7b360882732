"""bench/compare.py's own code paths on a tiny model: rows, ratios, failures, output.

No tfmot and no virtual environment is created here: the tfmot path is only
checked to fail cleanly (a `failed` row with its reason) when its venv is
missing and creating it is turned off.
"""

import dataclasses
import json
import os
import sys

import keras
import pytest

import keras_compress as kc

pytestmark = pytest.mark.tensorflow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))

import compare  # noqa: E402


def tiny_cnn():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, name="conv1"),
            keras.layers.MaxPooling2D(4, name="pool1"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="fc2"),
        ],
        name="tiny_cnn",
    )


SETTINGS = compare.Settings(baseline_epochs=1, epochs=1, batch_size=64, overhead_samples=256, overhead_pairs=1,
                            latency_runs=3, calibration_samples=16, frequency=2, create_venv=False)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    (x, y), (x_test, y_test) = kc.datasets.load("mnist")
    data = (x[:512], y[:512]), (x_test[:256], y_test[:256])
    out = tmp_path_factory.mktemp("compare")
    context = compare.ModelContext("tiny_cnn", "mnist", tiny_cnn, data, SETTINGS, str(out / "work"),
                                   out_root=str(out))
    compare.train_baseline(context)
    return context


@pytest.fixture(scope="module")
def rows(ctx):
    return compare.benchmark_model(ctx, ["keras-compress", "keras"])


def test_every_row_has_every_field(rows):
    assert rows
    for row in rows:
        assert set(compare.ROW_FIELDS) <= set(row), row
        assert row["status"] in ("ok", "failed")
        if row["status"] == "failed":
            assert row["reason"], row


def test_ratios_are_against_the_float32_baseline_artifact(rows):
    reference = next(r for r in rows if r["toolkit"] == compare.REFERENCE_TOOLKIT)
    assert reference["status"] == "ok" and reference["ratio"] == pytest.approx(1.0)
    measured = [r for r in rows if r["gzip_bytes"]]
    assert len(measured) >= 6
    for row in measured:
        assert row["ratio"] == pytest.approx(reference["gzip_bytes"] / row["gzip_bytes"])
        assert 0.0 <= row["litert_accuracy"] <= 1.0 and row["latency_b1_ms"] > 0


def test_keras_compress_rows_cover_ptq_and_pruning(rows):
    ours = {(r["technique"], r["format"]): r for r in rows if r["toolkit"] == "keras-compress"}
    assert {fmt for _, fmt in ours} >= {"float16", "dynamic_int8", "int8", "float32"}
    assert all(r["status"] == "ok" for r in ours.values()), ours
    pruned = ours[("prune 90%", "float32")]
    assert pruned["kernel_sparsity"] == pytest.approx(0.9, abs=0.01)
    assert pruned["finetune_s"] > 0 and pruned["overhead"] > 0
    assert ours[("prune 90% + PTQ int8", "int8")]["ratio"] > 1.0


def test_keras_compress_rows_cover_clustering_qat_and_the_chain(rows):
    ours = {(r["technique"], r["format"]): r for r in rows if r["toolkit"] == "keras-compress"}
    clustered = ours[("cluster 16 (linear init)", "float32")]
    assert clustered["max_unique_per_kernel"] <= 16 and clustered["overhead"] > 0
    qat = ours[("QAT int8", "int8")]
    assert qat["overhead"] > 0 and abs(qat["litert_accuracy"] - qat["keras_accuracy"]) <= 0.01
    chain = ours[("prune 90% -> cluster 16 -> QAT", "int8")]
    assert chain["kernel_sparsity"] == pytest.approx(0.9, abs=0.01)
    assert chain["max_unique_per_channel"] <= 16 + 1  # per-channel int8 grids: 16 shared values and zero
    assert len(chain["stage_seconds"]) == 3
    # The best recipe: the same overall sparsity, allocated per layer by sensitivity, and its own row.
    best = ours[("best recipe: prune 90% (auto per-layer targets) -> cluster 16 (+ biases) -> QAT", "int8")]
    assert best["status"] == "ok", best["reason"]
    assert best["kernel_sparsity"] == pytest.approx(0.9, abs=0.01) and best["max_unique_per_channel"] <= 16 + 1


def test_keras_quantize_rows_are_measured_or_say_why_not(rows):
    keras_rows = [r for r in rows if r["toolkit"] == "keras"]
    assert {r["technique"] for r in keras_rows} == {'model.quantize("int8")', 'model.quantize("int4")'}
    for row in keras_rows:
        assert row["keras_accuracy"] is not None or row["status"] == "failed"
        assert row["status"] == "ok" or row["reason"]


def test_a_failing_toolkit_yields_a_failed_row_not_an_exception(ctx):
    def broken(_):
        raise RuntimeError("this toolkit is broken")

    rows = compare.benchmark_model(ctx, ["keras"], runners={"keras": broken})
    failed = [r for r in rows if r["toolkit"] == "keras"]
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    assert "this toolkit is broken" in failed[0]["reason"] and failed[0]["ratio"] is None


def test_missing_tfmot_venv_fails_each_technique_with_a_reason(ctx, tmp_path):
    venv = tmp_path / "no-venv"
    original = ctx.settings
    ctx.settings = dataclasses.replace(original, tfmot_venv=str(venv), create_venv=False)
    try:
        rows = compare.run_tfmot(ctx)
    finally:
        ctx.settings = original
    assert len(rows) == len(compare.TFMOT_TECHNIQUES)
    assert all(r["status"] == "failed" and "tfmot unavailable" in r["reason"] for r in rows)
    assert not venv.exists()


def test_results_are_written_as_json_and_markdown(ctx, rows, tmp_path):
    result = {"machine": compare.machine(), "command": "pytest", "settings": dataclasses.asdict(ctx.settings),
              "models": {"tiny_cnn": dict(ctx.info, dataset="mnist")}, "rows": rows, "wall_s": 1.0,
              "test_samples": len(ctx.x_test), "versions": compare.versions(), "tfmot_versions": None}
    compare.write_results(result, str(tmp_path))
    assert json.loads((tmp_path / "compare.json").read_text())["rows"][0]["model"] == "tiny_cnn"
    text = (tmp_path / "compare.md").read_text()
    assert "Fine-tuning budget" in text and "| keras-compress | prune 90% |" in text


def test_quick_mode_is_lenet5_on_a_subset_with_one_epoch():
    _, models, toolkits, settings = compare.parse_args(["--quick", "--toolkits", "keras-compress"])
    assert models == ["lenet5"] and toolkits == ["keras-compress"]
    assert settings.epochs == 1 and settings.train_samples <= 10000
    with pytest.raises(SystemExit):
        compare.parse_args(["--toolkits", "pytorch"])


def _row(toolkit, technique, seed, accuracy, ratio):
    return dict(dict.fromkeys(compare.ROW_FIELDS), model="m", dataset="d", toolkit=toolkit, technique=technique,
                format="int8", status="ok", seed=seed, litert_accuracy=accuracy, keras_accuracy=accuracy,
                ratio=ratio, gzip_bytes=1000 / ratio)


def test_several_seeds_are_read_against_their_spread():
    settings = dataclasses.asdict(compare.Settings(seeds=(0, 1, 2)))
    rows = []
    for seed, (ours, theirs) in enumerate([(0.990, 0.980), (0.992, 0.984), (0.994, 0.982)]):
        rows += [_row("keras-compress", "QAT int8", seed, ours, 4.0 + seed * 0.1),
                 _row("tfmot", "QAT int8", seed, theirs, 4.1),
                 _row("keras-compress", "prune 90%", seed, 0.95 + 0.01 * (seed - 1), 5.0),
                 _row("tfmot", "prune 90%", seed, 0.951, 6.0),
                 _row("keras-compress", compare.best_label(settings), seed, 0.99, 33.0),
                 _row("tfmot", "prune 90% -> cluster 16 -> PCQAT", seed, 0.98, 32.0)]
    result = {"rows": rows, "settings": settings, "models": {"m": {"dataset": "d"}}, "machine": "-", "versions": {},
              "command": "-", "wall_s": 1.0, "test_samples": 10}
    reading = {r["technique"]: r for r in compare.readings(result)}
    # QAT: 99.2% ± 0.2 against 98.2% ± 0.2: ahead; ratio 4.1 ± 0.1 against 4.1 ± 0: level.
    assert reading["QAT int8"]["accuracy"] == "ahead" and reading["QAT int8"]["ratio"] == "level"
    # Pruning: 95.0% ± 1.0 against 95.1%: level; ratio 5.0 against 6.0 with no spread: behind.
    assert reading["prune 90%"]["accuracy"] == "level" and reading["prune 90%"]["ratio"] == "behind"
    # The best recipe is read against tfmot's chain.
    best = reading[compare.best_label(settings)]
    assert best["theirs"]["technique"] == "prune 90% -> cluster 16 -> PCQAT" and best["ratio"] == "ahead"
    entry = next(e for e in compare.aggregate(rows) if e["toolkit"] == "keras-compress" and e["technique"] == "QAT int8")
    assert entry["litert_accuracy"] == pytest.approx(0.992) and entry["litert_accuracy_spread"] == pytest.approx(0.002)
    text = compare.markdown(result)
    assert "| m | QAT int8 | 99.20% ± 0.20 | 98.20% ± 0.20 | ahead |" in text


def test_seeds_on_the_command_line():
    _, _, _, settings = compare.parse_args(["--seeds", "3,4", "--toolkits", "keras"])
    assert settings.seeds == (3, 4) and settings.seed == 3 and settings.baseline_seed == 0
    with pytest.raises(SystemExit):
        compare.parse_args(["--seeds", "1,1"])
