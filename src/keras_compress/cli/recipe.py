"""Recipes: YAML files that say how to compress a model, validated up front.

A recipe has an optional `model` (a description, recorded in the report),
an optional `data` (the default dataset), and a list of `steps`, each a
single-key mapping run in order::

    model: lenet5
    data: mnist
    steps:
      - prune: {target_sparsity: 0.9, schedule: polynomial, initial_sparsity: 0.5,
                end_step: auto, layers: "conv|fc"}
      - finetune: {epochs: 3, batch_size: 128, learning_rate: 1.0e-4}
      - strip: {}
      - export: {formats: [keras, float32, int8], calibration_samples: 256}

A step *is* its technique's config: the step registry (`core/steps.py`) maps
each name to a `Step` class in the technique's own folder, whose keys,
types and defaults come from the config dataclass and whose validation is
the dataclass's `__post_init__`. This module knows no step by name: it
reads the YAML, checks the top level, lets each step parse its mapping and
check its place among the others, and raises one `RecipeError` naming the
step (numbered from 1), the bad key and what is allowed.
"""

import dataclasses
import os
from typing import Any

import yaml

from keras_compress.core.steps import AUTO, RecipeError, Step, registered, step_class, where
from keras_compress.datasets import DATASETS
from keras_compress.export.config import EXPORT_FORMATS, LITERT_FORMATS

TOP_LEVEL_KEYS = ("model", "data", "metric", "steps")

# Names kept from before the step registry (tests and scripts import them).
_STEP_MODULE_NAMES = {
    "PruneStep": ("keras_compress.pruning.steps", "PruneStep"),
    "ClusterStep": ("keras_compress.clustering.steps", "ClusterStep"),
    "QuantizeStep": ("keras_compress.quantization.steps", "QuantizeStep"),
    "FinetuneStep": ("keras_compress.training.steps", "FinetuneStep"),
    "ExportStep": ("keras_compress.export.steps", "ExportStep"),
    "StripStep": ("keras_compress.core.steps", "StripStep"),
    "resolve_auto_end_step": ("keras_compress.pruning.steps", "resolve_auto_end_step"),
    "AUTO_END_FRACTION": ("keras_compress.pruning.steps", "AUTO_END_FRACTION"),
}
_KEY_LISTS = {"PRUNE_KEYS": "prune", "CLUSTER_KEYS": "cluster", "QUANTIZE_KEYS": "quantize",
              "FINETUNE_KEYS": "finetune", "STRIP_KEYS": "strip", "EXPORT_KEYS": "export"}


def __getattr__(name):
    # Resolved on first use, so that importing this module imports no technique.
    import importlib

    if name in _STEP_MODULE_NAMES:
        module, attr = _STEP_MODULE_NAMES[name]
        return getattr(importlib.import_module(module), attr)
    if name in _KEY_LISTS:
        return tuple(step_class(_KEY_LISTS[name]).keys())
    if name == "STEP_NAMES":
        return step_names()
    if name == "STEP_KEYS":
        return {step: tuple(cls.keys()) for step, cls in registered().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def step_names():
    """The registered step names, sorted: what a recipe's steps may be called."""
    return tuple(sorted(registered()))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe: what `load_recipe` returns and `run_recipe` runs.

    Attributes:
        steps: the steps, in order (each a `Step` from the registry).
        model: a description of the model the recipe was written for, or `None`.
        data: the default data spec (`keras_compress.data`: a built-in name, a file, a folder, an entry
            point), or `None`.
        metric: the metric every row measures (`keras_compress.metrics.get`), or `None` for the one the
            model was compiled with.

    Example:
    >>> recipe = load_recipe(DEMO_RECIPE)
    >>> [step.name for step in recipe.steps]
    ['prune', 'finetune', 'strip', 'export']
    """

    steps: tuple = ()
    model: str | None = None
    data: str | None = None
    metric: str | None = None

    @property
    def export_step(self):
        """The recipe's export step, or `None` when it has none (the runner then exports with defaults)."""
        return next((s for s in self.steps if s.name == "export"), None)

    def to_dict(self):
        """Returns a plain dict that `load_recipe` (via YAML) reads back to an equal recipe.

        Example:
        >>> recipe = load_recipe(DEMO_RECIPE)
        >>> load_recipe(yaml.safe_dump(recipe.to_dict())) == recipe
        True
        """
        out = {}
        if self.model is not None:
            out["model"] = self.model
        if self.data is not None:
            out["data"] = self.data
        if self.metric is not None:
            out["metric"] = self.metric
        out["steps"] = [step.to_dict() for step in self.steps]
        return out


# -- parsing --------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects duplicate keys (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: let PyYAML report it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _type_name(value):
    return type(value).__name__


def _parse_step(index, entry):
    names = list(step_names())
    if not isinstance(entry, dict) or len(entry) != 1:
        raise RecipeError(f"{where(index)}: each step must be a mapping with exactly one key, the step name, "
                          f"e.g. '- finetune: {{epochs: 1}}'. Allowed steps: {names}. Received: {entry!r}")
    (name, body), = entry.items()
    cls = step_class(name) if isinstance(name, str) else None
    if cls is None:
        raise RecipeError(f"{where(index)}: unknown step {name!r}. Allowed steps: {names}")
    return cls.parse(index, body)


def _read_source(path_or_text):
    """Returns (text, path) for a path, or (text, None) for YAML text."""
    if isinstance(path_or_text, os.PathLike):
        path = os.fspath(path_or_text)
    elif isinstance(path_or_text, str):
        looks_like_path = "\n" not in path_or_text and (
            os.path.isfile(path_or_text) or path_or_text.lower().endswith((".yaml", ".yml"))
        )
        if not looks_like_path:
            return path_or_text, None
        path = path_or_text
    else:
        raise TypeError(
            "load_recipe expects a path or YAML text. "
            f"Received: {type(path_or_text).__name__}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"recipe file not found: {path!r}")
    with open(path, encoding="utf-8") as f:
        return f.read(), path


def parse_recipe(data: Any) -> Recipe:
    """Validates an already-parsed recipe (a dict, as from YAML) and builds a `Recipe`.

    Args:
        data: a dict with `steps` and optionally `model` and `data`.

    Returns:
        A `Recipe`.

    Raises:
        RecipeError: on any problem; the message names the step (numbered
            from 1), the bad key and the allowed keys or values.

    Example:
    >>> parse_recipe({"steps": [{"finetune": {"epochs": 1}}]}).steps
    (FinetuneStep(settings={'epochs': 1}),)
    """
    if data is None:
        raise RecipeError("recipe is empty: it needs at least 'steps'")
    if not isinstance(data, dict):
        raise RecipeError(f"recipe must be a mapping with keys {list(TOP_LEVEL_KEYS)}. Received: {_type_name(data)}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise RecipeError(f"recipe: unknown top-level key {key!r}. Allowed keys: {list(TOP_LEVEL_KEYS)}")
    if "steps" not in data:
        raise RecipeError(f"recipe: missing required key 'steps'. Allowed keys: {list(TOP_LEVEL_KEYS)}")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise RecipeError(f"recipe: 'model' must be a string. Received: model={model!r} ({_type_name(model)})")
    dataset = data.get("data")
    if dataset is not None:
        from keras_compress.data.spec import DataError, parse

        try:
            parse(dataset)
        except DataError as error:
            raise RecipeError(f"recipe: unknown dataset 'data': {error}") from None
    metric = data.get("metric")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise RecipeError(f"recipe: 'metric' must be a metric name or package.module:function. "
                          f"Received: metric={metric!r} ({_type_name(metric)})")
    steps = data["steps"]
    if not isinstance(steps, list) or not steps:
        raise RecipeError(f"recipe: 'steps' must be a non-empty list. Received: steps={steps!r}")
    parsed = tuple(_parse_step(i, entry) for i, entry in enumerate(steps, 1))
    for index, step in enumerate(parsed, 1):
        step.check_order(index, parsed)
    return Recipe(parsed, model, dataset, metric)


def load_recipe(path_or_text) -> Recipe:
    """Reads and validates a recipe from a YAML file or YAML text.

    Nothing runs here: every key, type and range is checked so that a
    recipe that loads is a recipe that can run.

    Args:
        path_or_text: a path (`str` naming an existing file or ending in
            `.yaml`/`.yml`, or `os.PathLike`), or the YAML text itself.

    Returns:
        A `Recipe`.

    Raises:
        FileNotFoundError: if a recipe path does not exist.
        RecipeError: on invalid YAML or an invalid recipe, e.g.
            `recipe step 2 (prune): unknown key 'sparsity'. Allowed keys: [...]`.
        TypeError: if `path_or_text` is neither a path nor a string.

    Example:
    >>> recipe = load_recipe("recipes/demo.yaml")
    >>> recipe.steps[0].settings["target_sparsity"]
    0.9
    """
    text, source = _read_source(path_or_text)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        location = "recipe" if source is None else f"recipe {source!r}"
        raise RecipeError(f"{location} is not valid YAML: {detail}") from None
    return parse_recipe(data)


DEMO_RECIPE = """\
# keras-compress demo: LeNet-5 on MNIST, pruned to over 90% while fine-tuning,
# then exported as Keras, float32 LiteRT and full-integer int8 LiteRT.
model: lenet5
data: mnist
steps:
  - prune:
      target_sparsity: 0.9
      schedule: polynomial      # tfmot's ramp: fast early, slow near the end
      initial_sparsity: 0.5
      begin_step: 0
      end_step: auto            # 2/3 of the fine-tuning steps; the rest recovers
      frequency: 50
      # Per-layer targets, as Deep Compression found for LeNet-5: the first
      # conv (500 weights) is fragile, fc1 (400,000) is most of the model.
      # Overall sparsity: 92.2%.
      layer_targets: {conv1: 0.5, conv2: 0.85, fc1: 0.93, fc2: 0.8}
  - finetune:
      epochs: 3
      batch_size: 128
      learning_rate: 1.0e-4
  - strip: {}
  - export:
      formats: [keras, float32, int8]
      calibration_samples: 256
"""
