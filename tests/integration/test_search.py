"""`keras-compress search` end to end on a tiny model: trials on real artifacts, the Pareto front, the best
recipe running with `compress`, resuming, two workers on one SQLite study, failed trials recorded."""

import json
import os
import subprocess
import sys

import keras
import optuna
import pytest
import yaml

import keras_compress as kc
from keras_compress.cli.main import main

pytestmark = pytest.mark.tensorflow  # every trial exports LiteRT



def search_cli(folder, out, trials, *extra):
    return main(["search", str(folder / "tiny.keras"), "--data", str(folder / "data.npz"), "--space",
                 str(folder / "space.yaml"), "--trials", str(trials), "--out", str(out), "--quiet", *extra])


def test_search_finds_a_front_writes_a_runnable_best_recipe_and_resumes(tiny, tmp_path, capsys):
    out = tmp_path / "search"
    assert search_cli(tiny, out, 3, "--constraint", "lost <= 0.05", "--no-early-stopping") == 0
    results = json.loads((out / "search.json").read_text())
    assert len(results["trials"]) == 3 and results["objectives"] == ["metric", "gzip_bytes"]
    for trial in results["trials"]:
        assert os.path.isfile(out / trial["dir"] / "model_int8.tflite")  # measured on the real artifact
        assert trial["figures"]["gzip_bytes"] == kc.evaluate.sizes(out / trial["dir"] / "model_int8.tflite")[
            "gzip_bytes"]
    front = [t for t in results["trials"] if t["number"] in results["pareto"]]
    assert front
    for a in front:  # no front trial is dominated by another feasible trial
        for b in results["trials"]:
            if b["feasible"] and b is not a:
                assert not (b["values"][0] >= a["values"][0] and b["values"][1] <= a["values"][1]
                            and b["values"] != a["values"])
    best = next(t for t in results["trials"] if t["number"] == results["best"])
    assert best["feasible"] and best["values"][0] == max(t["values"][0] for t in results["trials"] if t["feasible"])
    recipe = yaml.safe_load((out / "best_recipe.yaml").read_text())
    assert recipe["steps"][0]["prune"]["target_sparsity"] == pytest.approx(best["params"]["sparsity"])
    assert "search.md" in os.listdir(out) and "<img" in (out / "search.html").read_text()
    capsys.readouterr()
    # The written recipe runs as it is.
    assert main(["compress", str(tiny / "tiny.keras"), "--data", str(tiny / "data.npz"), "--recipe",
                 str(out / "best_recipe.yaml"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    int8 = next(r for r in again["rows"] if r["name"] == "model_int8.tflite")
    assert int8["nonzero"] == best["figures"]["nonzero"]
    # Re-running the command resumes the study: one more trial, not four.
    assert search_cli(tiny, out, 4, "--constraint", "lost <= 0.05", "--no-early-stopping") == 0
    study = optuna.load_study(study_name="keras-compress", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 4


def test_two_workers_share_one_study_and_count_every_trial_once(tiny, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    command = [sys.executable, "-m", "keras_compress", "search", str(tiny / "tiny.keras"), "--data",
               str(tiny / "data.npz"), "--space", str(tiny / "space.yaml"), "--trials", "4", "--storage", storage,
               "--study", "shared", "--sampler", "random"]
    workers = [subprocess.Popen(command + ["--out", str(tmp_path / f"worker{i}"), "--seed", str(i)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    logs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err[-2000:] for _, err in logs]
    ran = [[int(line.split()[3].rstrip(":")) for line in err.splitlines() if line.startswith(
        "[keras-compress search] trial ")] for _, err in logs]
    study = optuna.load_study(study_name="shared", storage=storage)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) == sum(len(r) for r in ran) >= 4
    assert sorted(ran[0] + ran[1]) == sorted(numbers)  # each trial ran in exactly one worker


def test_a_failing_trial_is_recorded_with_its_reason_and_the_study_goes_on(tiny, tmp_path):
    space = yaml.safe_load((tiny / "space.yaml").read_text())
    space["recipe"]["steps"][0]["prune"]["layers"] = "${layers}"
    space["parameters"]["layers"] = {"choices": ["fc1", "no_such_layer"]}
    model = keras.saving.load_model(tiny / "tiny.keras")
    result = kc.search(model, kc.data.load(str(tiny / "data.npz")), space, trials=4, out_dir=tmp_path / "s",
                       sampler="random", seed=3, progress=False, metric="accuracy")
    failed = result.failed()
    assert failed and all("no_such_layer" in reason or "matched no" in reason for _, reason in failed)
    assert len(result.completed()) + len(failed) == 4


@pytest.mark.parametrize("extra, message", [
    (["--objective", "speed"], "unknown objective(s) ['speed']"),
    (["--constraint", "size <= 3"], "unknown measure 'size'"),
    (["--storage", "nosuchdb://x"], "cannot open the study storage"),
])
def test_bad_search_input_is_one_line_before_any_trial(tiny, tmp_path, capsys, extra, message):
    assert search_cli(tiny, tmp_path / "s", 2, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "s" / "trials").exists()


def test_a_new_study_starts_from_the_sensitivity_curves_and_stops_hopeless_trials_early(tiny, tmp_path):
    from keras_compress.search import SearchSpace, warm

    model = keras.saving.load_model(tiny / "tiny.keras")
    data = kc.data.load(str(tiny / "data.npz"))
    space = SearchSpace.load(str(tiny / "space.yaml"))
    expected = warm.sensitivity_trials(model, data.train.last(2000), space, count=2,
                                       metric=kc.metrics.get("accuracy"))
    # No model can lose less than nothing: every trial misses the constraint after its fine-tuning step.
    result = kc.search(model, data, space, trials=3, out_dir=tmp_path / "s", constraints=["lost <= -0.5"],
                       warm_trials=2, progress=False, metric="accuracy")
    trials = sorted(result.study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 3
    assert [t.params["sparsity"] for t in trials[:2]] == pytest.approx([e["sparsity"] for e in expected])
    assert [t.user_attrs.get("warm_start") for t in trials] == [True, True, None]
    assert all("after step 2 (finetune)" in reason and "lost <= -0.5" in reason for _, reason in result.stopped())
    assert len(result.stopped()) == 3 and not result.completed()
    # A stopped trial leaves nothing on disk: no artifacts, no half-written folder.
    assert not (tmp_path / "s" / "trials").exists() or not os.listdir(tmp_path / "s" / "trials")
    assert "Trials stopped early" in (tmp_path / "s" / "search.md").read_text()
    # Resuming does not warm-start again, and stopped trials count towards the total.
    again = kc.search(model, data, space, trials=4, out_dir=tmp_path / "s", constraints=["lost <= -0.5"],
                      warm_trials=2, progress=False, metric="accuracy", early_stopping=False)
    assert len(again.study.trials) == 4 and again.study.trials[-1].user_attrs.get("warm_start") is None
    assert again.study.trials[-1].state == optuna.trial.TrialState.COMPLETE  # run to the end when asked
