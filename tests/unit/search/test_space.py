"""Search spaces, objectives and constraints: parsing and every bad input, before any trial runs."""

import pytest

from keras_compress.search import Constraint, ObjectiveError, SearchSpace, SpaceError
from keras_compress.search.objectives import check_objectives

TEMPLATE = {"steps": [{"prune": {"target_sparsity": "${sparsity}", "end_step": "auto"}},
                      {"finetune": {"epochs": "${epochs}", "learning_rate": "${lr}"}},
                      {"export": {"formats": ["int8"]}}]}
PARAMETERS = {"sparsity": {"low": 0.5, "high": 0.95}, "epochs": {"low": 1, "high": 3},
              "lr": {"low": 1e-4, "high": 1e-2, "log": True}}


class FixedTrial:
    """What the space asks of an Optuna trial, answering with fixed values."""

    def __init__(self, values):
        self.values = values

    def suggest_float(self, name, low, high, log=False, step=None):
        assert low <= self.values[name] <= high
        return self.values[name]

    suggest_int = suggest_float

    def suggest_categorical(self, name, choices):
        assert self.values[name] in choices
        return self.values[name]


def test_a_space_fills_its_template_into_a_valid_recipe():
    space = SearchSpace.from_dict({"recipe": TEMPLATE, "parameters": PARAMETERS})
    kinds = {p.name: p.kind for p in space.parameters}
    assert kinds == {"sparsity": "float", "epochs": "int", "lr": "float"}
    values = {p.name: p.suggest(FixedTrial({"sparsity": 0.8, "epochs": 2, "lr": 1e-3})) for p in space.parameters}
    recipe = space.recipe(values)
    assert recipe.steps[0].settings["target_sparsity"] == 0.8 and recipe.steps[1].epochs == 2
    assert space.fill(values)["steps"][1]["finetune"]["learning_rate"] == 1e-3


def test_a_space_loads_from_yaml_text_and_choices_work():
    space = SearchSpace.load("""
recipe:
  steps:
    - cluster: {num_clusters: "${clusters}"}
    - export: {formats: [float32]}
parameters:
  clusters: {choices: [8, 16, 32]}
""")
    assert space.parameters[0].kind == "categorical" and space.recipe({"clusters": 16}).steps[0].num_clusters == 16


@pytest.mark.parametrize("parameters, template, message", [
    ({"sparsity": {"low": 0.9, "high": 0.5}, "epochs": {"low": 1, "high": 3}, "lr": {"low": 1e-4, "high": 1e-2}},
     TEMPLATE, r"'sparsity' has an empty range"),
    ({"sparsity": {"low": 0.5, "high": 0.9}, "epochs": {"low": 1, "high": 3}}, TEMPLATE,
     r"without a range: \['lr'\]"),
    ({**PARAMETERS, "extra": {"low": 1, "high": 2}}, TEMPLATE, r"\['extra'\] are not used"),
    ({**PARAMETERS, "lr": {"low": 0.0, "high": 1e-2, "log": True}}, TEMPLATE, "log range needs low > 0"),
    ({**PARAMETERS, "lr": {"choices": []}}, TEMPLATE, "non-empty list"),
    ({**PARAMETERS, "lr": {"low": 1e-4, "hgh": 1e-2}}, TEMPLATE, r"unknown key\(s\) \['hgh'\]"),
    ({**PARAMETERS, "sparsity": {"low": 0.5, "high": 1.5}}, TEMPLATE, "not valid with"),
    ({"sparsity": {"low": 0.5, "high": 0.9}}, {"steps": [{"prune": {"target_sparsity": "${sparsity}",
                                                                   "bogus_key": 1}}]}, "not valid with"),
])
def test_bad_spaces_are_one_clear_error(parameters, template, message):
    with pytest.raises(SpaceError, match=message):
        SearchSpace.from_dict({"recipe": template, "parameters": parameters})


def test_a_missing_space_file_and_bad_yaml_are_clear():
    with pytest.raises(SpaceError, match="not found"):
        SearchSpace.load("no_such_space.yaml")
    with pytest.raises(SpaceError, match="mapping with keys 'recipe'"):
        SearchSpace.load("just a string\nsecond line")


def test_objectives_and_constraints_are_checked():
    assert check_objectives(["metric", "latency_b1_ms"]) == ("metric", "latency_b1_ms")
    with pytest.raises(ObjectiveError, match=r"unknown objective\(s\) \['speed'\]"):
        check_objectives(["metric", "speed"])
    with pytest.raises(ObjectiveError, match="at least one"):
        check_objectives([])
    limit = Constraint.parse("lost <= 0.005")
    assert limit.violation(0.001) < 0 < limit.violation(0.01) and str(limit) == "lost <= 0.005"
    assert Constraint.parse("metric >= 0.9").violation(0.95) < 0
    with pytest.raises(ObjectiveError, match="unknown measure 'size'"):
        Constraint.parse("size <= 10")
    with pytest.raises(ObjectiveError, match="MEASURE <= NUMBER"):
        Constraint.parse("lost < 0.1")


def test_a_step_with_when_runs_only_in_trials_whose_flag_is_true():
    space = SearchSpace.load("""
recipe:
  steps:
    - prune: {target_sparsity: "${sparsity}"}
      when: "${prune}"
    - quantize: {}
    - export: {formats: [int8]}
parameters:
  sparsity: {low: 0.5, high: 0.9}
  prune: {choices: [true, false]}
""")
    assert [s.name for s in space.recipe({"sparsity": 0.7, "prune": True}).steps] == ["prune", "quantize", "export"]
    without = space.fill({"sparsity": 0.7, "prune": False})
    assert without["steps"] == [{"quantize": {}}, {"export": {"formats": ["int8"]}}]  # what best_recipe.yaml holds
    with pytest.raises(SpaceError, match="'when' must be true or false"):
        SearchSpace.from_dict({"recipe": {"steps": [{"prune": {"target_sparsity": 0.5}, "when": "${p}"}]},
                               "parameters": {"p": {"choices": ["yes", "no"]}}})
