"""Warm start from the sensitivity curves, and the early-stopping rule of a trial."""

import keras
import numpy as np
import optuna
import pytest

from keras_compress import importance
from keras_compress.search import Constraint, SearchSpace, early, warm


def trained():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(512, 16)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int64")
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="relu", name="wide"),
                              keras.layers.Dense(8, activation="relu", name="narrow"),
                              keras.layers.Dense(2, name="out")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=20, verbose=0)
    return model, (x, y)


def space(prune, parameters, when=None):
    step = {"prune": prune, **({"when": when} if when else {})}
    return SearchSpace.from_dict({"recipe": {"steps": [step, {"finetune": {"epochs": 1}}, {"strip": {}}]},
                                  "parameters": parameters})


def test_warm_trials_follow_the_curves_inside_the_ranges():
    model, data = trained()
    before = [w.copy() for w in model.get_weights()]
    s = space({"target_sparsity": 0.5, "layer_targets": {"wide": "${wide}", "narrow": "${narrow}", "out": 0.0}},
              {"wide": {"low": 0.3, "high": 0.95}, "narrow": {"low": 0.1, "high": 0.9},
               "flag": {"choices": [True, False]}}, when="${flag}")
    trials = warm.sensitivity_trials(model, data, s, count=3)
    assert [w for w in model.get_weights()] and all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert len(trials) == 3 and all(t["flag"] is True for t in trials)
    for t in trials:
        assert 0.3 <= t["wide"] <= 0.95 and 0.1 <= t["narrow"] <= 0.9
    # Rising global sparsity, spread over what the ranges allow.
    totals = [t["wide"] * 16 * 64 + t["narrow"] * 64 * 8 for t in trials]
    assert totals == sorted(totals) and totals[0] < totals[-1]
    # The values are what `allocate` gives on the same curves.
    curves = importance.sensitivity(model, data)
    sizes = {n: curves["sizes"][n] for n in ("wide/kernel", "narrow/kernel", "out/kernel")}
    bounds = {"wide/kernel": (0.3, 0.95), "narrow/kernel": (0.1, 0.9), "out/kernel": (0.0, 0.0)}
    least = (0.3 * sizes["wide/kernel"] + 0.1 * sizes["narrow/kernel"]) / sum(sizes.values())
    most = (0.95 * sizes["wide/kernel"] + 0.9 * sizes["narrow/kernel"]) / sum(sizes.values())
    middle = importance.allocate({n: curves["curves"][n] for n in sizes}, sizes, curves["baseline"],
                                 (least + most) / 2, bounds=bounds)
    assert trials[1]["wide"] == pytest.approx(middle["wide/kernel"])
    assert trials[1]["narrow"] == pytest.approx(middle["narrow/kernel"])


def test_a_global_target_and_categorical_choices_are_warm_started_too():
    model, data = trained()
    s = space({"target_sparsity": "${sparsity}", "layer_targets": {"out": "${out}"}},
              {"sparsity": {"low": 0.5, "high": 0.9}, "out": {"choices": [0.0, 0.25, 0.5]}})
    trials = warm.sensitivity_trials(model, data, s, count=2)
    assert len(trials) == 2
    assert all(0.5 <= t["sparsity"] <= 0.9 and t["out"] in (0.0, 0.25, 0.5) for t in trials)


def test_a_space_that_searches_no_pruning_target_has_no_warm_trials():
    model, data = trained()
    s = SearchSpace.from_dict({"recipe": {"steps": [{"prune": {"target_sparsity": 0.8}},
                                                    {"finetune": {"epochs": "${epochs}"}}]},
                               "parameters": {"epochs": {"low": 1, "high": 3}}})
    assert warm.plan(s) is None and warm.sensitivity_trials(model, data, s) == []


class Step:
    name, trains = "finetune", True


class FakeRun:
    """What the watcher reads of a run: its model's score, the metric's direction and the baseline row."""

    def __init__(self, value, baseline=0.9):
        from keras_compress import metrics

        self.value, self.model, self.metric = value, None, metrics.get("accuracy")
        self.report = type("R", (), {"rows": [type("Row", (), {"keras_metric": baseline})()]})()

    def score_model(self, model):
        return self.value


def test_a_trial_that_misses_a_metric_constraint_stops_with_its_reason():
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    watch = early.watcher(trial, [Constraint.parse("lost <= 0.01"), Constraint.parse("gzip_bytes <= 10")],
                          ("metric", "gzip_bytes"))
    watch(FakeRun(0.895), 2, Step())  # 0.5 pt lost: inside the bound, goes on
    assert trial.user_attrs["after_step_2"]["lost"] == pytest.approx(0.005)
    with pytest.raises(optuna.TrialPruned):
        watch(FakeRun(0.85), 4, Step())
    assert "lost is 0.05" in trial.user_attrs["stopped"] and "lost <= 0.01" in trial.user_attrs["stopped"]
    # A margin lets it go on; a step that does not train is not judged.
    early.watcher(trial, [Constraint.parse("lost <= 0.01")], ("metric", "gzip_bytes"), margin=0.05)(
        FakeRun(0.85), 4, Step())
    early.watcher(trial, [Constraint.parse("lost <= 0.01")], ("metric", "gzip_bytes"))(
        FakeRun(0.1), 1, type("Strip", (), {"name": "strip", "trains": False})())


def test_a_single_objective_study_uses_the_median_pruner():
    assert isinstance(early.pruner(("metric",)), optuna.pruners.MedianPruner)
    assert isinstance(early.pruner(("metric", "gzip_bytes")), optuna.pruners.NopPruner)
    study = optuna.create_study(direction="maximize", pruner=early.pruner(("metric",)))
    for value in (0.9, 0.91, 0.92):
        trial = study.ask()
        early.watcher(trial, [], ("metric",))(FakeRun(value), 2, Step())
        study.tell(trial, value)
    worse = study.ask()
    with pytest.raises(optuna.TrialPruned):
        early.watcher(worse, [], ("metric",))(FakeRun(0.5), 2, Step())
    assert "median" in worse.user_attrs["stopped"]
