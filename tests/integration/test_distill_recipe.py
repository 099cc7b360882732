"""Distillation in a recipe: an ensemble of teachers, the teacher's own row in the report, bad teachers."""

import json
import os

import keras
import numpy as np
import pytest

from keras_compress.cli.main import main

pytestmark = pytest.mark.tensorflow  # the recipes export LiteRT

RECIPE = """
steps:
  - prune: {{target_sparsity: 0.5, schedule: constant}}
  - finetune: {{epochs: 1, batch_size: 64, teacher: {teacher}}}
  - finetune: {{epochs: 1, batch_size: 64, teacher: {teacher}}}
  - export: {{formats: [float32]}}
"""


def compress(folder, tmp_path, teacher, out="out"):
    (tmp_path / "r.yaml").write_text(RECIPE.format(teacher=teacher))
    return main(["compress", str(folder / "tiny.keras"), "--data", str(folder / "data.npz"), "--recipe",
                 str(tmp_path / "r.yaml"), "--out", str(tmp_path / out), "--quiet"])


def test_an_ensemble_teacher_distils_and_is_a_row_of_the_report(tiny, tmp_path):
    other = keras.saving.load_model(tiny / "tiny.keras")
    other.set_weights([w * 0.9 for w in other.get_weights()])
    other.save(tmp_path / "other.keras")
    assert compress(tiny, tmp_path, f"[original, {tmp_path / 'other.keras'}]") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    teachers = [r for r in report["rows"] if r["technique"].startswith("teacher")]
    assert len(teachers) == 1  # measured once, though two steps distil from it
    row = teachers[0]
    assert "average of original, other.keras" in row["notes"] and row["raw_bytes"] is None
    # Its metric is the ensemble's own on the test split, measured here by hand.
    data = np.load(tiny / "data.npz")
    models = [keras.saving.load_model(tiny / "tiny.keras"), other]
    probs = np.mean([keras.ops.convert_to_numpy(keras.ops.softmax(m.predict(data["x_test"], verbose=0)))
                     for m in models], axis=0)
    assert row["keras_metric"] == pytest.approx(float(np.mean(np.argmax(probs, -1) == data["y_test"])), abs=1e-6)
    assert row["params"] == 2 * models[0].count_params()
    steps = report["meta"]["finetune"]
    assert [s["distilled_from"] for s in steps] == ["teacher_ensemble"] * 2


def test_bad_teachers_are_one_clear_error_and_write_nothing(tiny, tmp_path, capsys):
    (tmp_path / "broken.keras").write_bytes(b"not a zip file")
    assert compress(tiny, tmp_path, str(tmp_path / "broken.keras")) == 2
    assert "does not load as a Keras model" in capsys.readouterr().err
    wide = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    wide.save(tmp_path / "wide.keras")
    assert compress(tiny, tmp_path, str(tmp_path / "wide.keras")) == 2
    assert "the teacher's outputs [(5,)] do not match the model's [(10,)]" in capsys.readouterr().err
    assert compress(tiny, tmp_path, f"[original, {tmp_path / 'wide.keras'}]") == 2
    assert "the teacher ensemble" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_ensemble_command_writes_a_teacher_and_measures_it(tiny, tmp_path, capsys):
    other = keras.saving.load_model(tiny / "tiny.keras")
    other.set_weights([w * 0.9 for w in other.get_weights()])
    other.save(tmp_path / "other.keras")
    members = [str(tiny / "tiny.keras"), str(tmp_path / "other.keras")]
    assert main(["ensemble", *members, "--out", str(tmp_path / "avg.keras"), "--data", str(tiny / "data.npz")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["tiny.keras", "other.keras", "average of 2"]
    data = np.load(tiny / "data.npz")
    loaded = keras.saving.load_model(tmp_path / "avg.keras")
    probs = np.mean([keras.ops.convert_to_numpy(keras.ops.softmax(keras.saving.load_model(m).predict(
        data["x_test"], verbose=0))) for m in members], axis=0)
    np.testing.assert_allclose(np.exp(loaded.predict(data["x_test"], verbose=0)), probs, atol=1e-5)
    assert f"{100 * np.mean(np.argmax(probs, -1) == data['y_test']):.2f}%" in lines[-1]
    # Stacking needs held-out samples: the data's validation split.
    assert main(["ensemble", *members, "--method", "stacking", "--out", str(tmp_path / "s.keras"),
                 "--data", str(tiny / "data.npz")]) == 2
    assert "validation split" in capsys.readouterr().err
    assert main(["ensemble", *members, "--method", "stacking", "--out", str(tmp_path / "s.keras"),
                 "--data", f"{tiny / 'data.npz'}?validation_fraction=0.25"]) == 0
    assert keras.saving.load_model(tmp_path / "s.keras").get_layer("ensemble_stacking_meta") is not None
    # Members that do not fit together: one line, nothing written.
    wide = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    wide.save(tmp_path / "wide.keras")
    capsys.readouterr()
    assert main(["ensemble", members[0], str(tmp_path / "wide.keras"), "--out", str(tmp_path / "bad.keras")]) == 2
    assert "same inputs and give the same outputs" in capsys.readouterr().err
    assert not (tmp_path / "bad.keras").exists() and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp.keras")]
