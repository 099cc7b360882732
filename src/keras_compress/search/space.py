"""A search space: a recipe template whose values may be `${name}`, and the range of each name.

    recipe:
      steps:
        - prune: {target_sparsity: "${sparsity}", end_step: auto}
        - finetune: {epochs: "${epochs}", learning_rate: "${learning_rate}"}
        - strip: {}
        - export: {formats: [int8]}
    parameters:
      sparsity: {low: 0.5, high: 0.95}
      epochs: {low: 1, high: 3, type: int}
      learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
      clusters: {choices: [8, 16, 32]}

Any recipe value can be searched this way (global and per-layer sparsity,
channel fractions, cluster counts, which layers a step applies to, bit
widths, epochs, learning rates), and whether a step runs at all: a step
written with `when: "${flag}"` beside it is left out of a trial whose flag
is false (`flag: {choices: [true, false]}`):

    - cluster: {num_clusters: "${clusters}"}
      when: "${cluster}"

The space is checked in full before any
trial runs: every `${name}` has a range, every range is used and non-empty,
and the template filled at each range's ends is a valid recipe.
"""

import dataclasses
import math
import re

from keras_compress.core.steps import RecipeError

_PLACEHOLDER = re.compile(r"^\$\{(\w+)\}$")
_RANGE_KEYS = {"low", "high", "log", "type", "step", "choices"}


class SpaceError(ValueError):
    """A search space that cannot be searched: names what is wrong."""


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One searched value: a float or int range (`log` for a log scale) or a list of `choices`."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: str = "float"  # "float", "int" or "categorical"
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial):
        """The value an Optuna trial draws for this parameter."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)

    def ends(self):
        """The values at the range's ends (or every choice): what the space check fills in."""
        if self.kind == "categorical":
            return list(self.choices)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


def _parameter(name, spec):
    if not isinstance(spec, dict):
        raise SpaceError(f"search space: parameter {name!r} must be a mapping with low/high or choices. "
                         f"Received: {spec!r}")
    unknown = sorted(set(spec) - _RANGE_KEYS)
    if unknown:
        raise SpaceError(f"search space: parameter {name!r} has unknown key(s) {unknown}. "
                         f"Allowed: {sorted(_RANGE_KEYS)}")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"search space: parameter {name!r}: choices must be a non-empty list. "
                             f"Received: {choices!r}")
        return Parameter(name, kind="categorical", choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"search space: parameter {name!r} needs low and high, or choices")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        raise SpaceError(f"search space: parameter {name!r}: low and high must be numbers. "
                         f"Received: low={low!r}, high={high!r}")
    if not low < high:
        raise SpaceError(f"search space: parameter {name!r} has an empty range: low={low!r} must be < high={high!r}")
    kind = spec.get("type") or ("int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind not in ("int", "float"):
        raise SpaceError(f"search space: parameter {name!r}: type must be int or float. Received: {kind!r}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise SpaceError(f"search space: parameter {name!r}: a log range needs low > 0. Received: low={low!r}")
    return Parameter(name, low=low, high=high, log=log, kind=kind, step=spec.get("step"))


def _placeholders(value, found):
    if isinstance(value, dict):
        for item in value.values():
            _placeholders(item, found)
    elif isinstance(value, list):
        for item in value:
            _placeholders(item, found)
    elif isinstance(value, str):
        match = _PLACEHOLDER.match(value.strip())
        if match:
            found.append(match.group(1))
    return found


def _step_runs(item, values):
    """Whether a template step runs: no `when`, or its `when` fills to a true value."""
    if not (isinstance(item, dict) and "when" in item):
        return True
    flag = _fill(item["when"], values)
    if not isinstance(flag, bool):
        raise SpaceError(f"search space: a step's 'when' must be true or false (a choices: [true, false] "
                         f"parameter). Received: when={flag!r}")
    return flag


def _fill(value, values):
    if isinstance(value, dict) and isinstance(value.get("steps"), list):  # the recipe: optional steps
        steps = [{k: _fill(v, values) for k, v in item.items() if k != "when"} if isinstance(item, dict)
                 else _fill(item, values) for item in value["steps"] if _step_runs(item, values)]
        return {**{k: _fill(v, values) for k, v in value.items() if k != "steps"}, "steps": steps}
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    if isinstance(value, str):
        match = _PLACEHOLDER.match(value.strip())
        if match:
            return values[match.group(1)]
    return value


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A recipe template and its parameters.

    Example:
    >>> space = SearchSpace.from_dict(yaml.safe_load(open("space.yaml")))
    >>> space.recipe({"sparsity": 0.8, "epochs": 2, "learning_rate": 1e-3}).steps[0].target_sparsity
    0.8
    """

    template: dict
    parameters: tuple

    @classmethod
    def from_dict(cls, data):
        """Parses and checks a space (see the module docstring).

        Raises:
            SpaceError: for a malformed space, a `${name}` without a range, a range never used, an empty range,
                or a template that is not a valid recipe at a range's ends.
        """
        if not isinstance(data, dict) or set(data) - {"recipe", "parameters"} or "recipe" not in data:
            raise SpaceError("a search space is a mapping with keys 'recipe' (a recipe template) and 'parameters'. "
                             f"Received: {sorted(data) if isinstance(data, dict) else type(data).__name__}")
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict) or not parameters:
            raise SpaceError("search space: 'parameters' must name at least one searched value")
        parsed = tuple(_parameter(name, spec) for name, spec in parameters.items())
        used = _placeholders(data["recipe"], [])
        unknown = sorted(set(used) - set(parameters))
        if unknown:
            raise SpaceError(f"search space: the recipe uses ${{...}} names without a range: {unknown}. "
                             f"Parameters: {sorted(parameters)}")
        unused = sorted(set(parameters) - set(used))
        if unused:
            raise SpaceError(f"search space: parameter(s) {unused} are not used in the recipe (write them as "
                             "\"${name}\" where they go)")
        space = cls(data["recipe"], parsed)
        for end in (0, -1):
            values = {p.name: p.ends()[end] for p in parsed}
            try:
                space.recipe(values)
            except (RecipeError, ValueError, TypeError) as error:
                raise SpaceError(f"search space: the recipe is not valid with {values}: {error}") from None
        return space

    @classmethod
    def load(cls, path_or_text):
        """Reads a space from a YAML file (or YAML text)."""
        import os

        import yaml

        text = path_or_text
        if isinstance(path_or_text, (str, os.PathLike)) and os.path.isfile(path_or_text):
            with open(path_or_text, encoding="utf-8") as f:
                text = f.read()
        elif isinstance(path_or_text, str) and "\n" not in path_or_text and path_or_text.endswith((".yaml", ".yml")):
            raise SpaceError(f"search space file not found: {path_or_text!r}")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise SpaceError(f"search space is not valid YAML: {error}") from None
        return cls.from_dict(data)

    def fill(self, values):
        """The recipe template with `values` in place of `${name}`, as plain data (what YAML writes)."""
        return _fill(self.template, values)

    def recipe(self, values):
        """The `Recipe` for one set of values (raises `RecipeError` if they make it invalid)."""
        from keras_compress.cli.recipe import parse_recipe

        return parse_recipe(self.fill(values))
