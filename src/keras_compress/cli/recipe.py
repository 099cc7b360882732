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

`load_recipe` checks everything (keys, types, ranges, the prune settings
through `PruneConfig`'s own validation) before anything runs, and raises one
`RecipeError` naming the step, the bad key and what is allowed. Steps are
numbered from 1 in messages.
"""

import dataclasses
import math
import os
import re
from typing import Any

import yaml

# Mirrors keras_compress.export.litert.FORMATS (which imports TensorFlow
# lazily; recipes are parsed without it). tests/integration pins the match.
LITERT_FORMATS = ("float32", "float16", "dynamic_int8", "int8")
# "archive" is keras-compress's own compact format (export/archive.py).
EXPORT_FORMATS = ("keras", "archive") + LITERT_FORMATS
DATASETS = ("mnist", "fashion_mnist")
AUTO = "auto"
# `end_step: auto` ends the sparsity ramp after this share of the fine-tuning steps.
AUTO_END_FRACTION = 2.0 / 3.0

TOP_LEVEL_KEYS = ("model", "data", "steps")
STEP_NAMES = ("prune", "cluster", "quantize", "finetune", "strip", "export")
PRUNE_KEYS = (
    "target_sparsity", "schedule", "initial_sparsity", "begin_step", "end_step",
    "frequency", "power", "pattern", "block_shape", "n", "m", "layer_targets", "layers",
)
CLUSTER_KEYS = (
    "num_clusters", "init", "per_channel", "preserve_sparsity", "kmeans_iterations",
    "reassign_every", "seed", "layers",
)
QUANTIZE_KEYS = (
    "weight_bits", "activation_bits", "per_channel", "ema_decay", "fold_batchnorm",
    "preserve_zeros", "quantize_inputs", "layers", "calibration_samples",
)
FINETUNE_KEYS = ("epochs", "batch_size", "learning_rate")
STRIP_KEYS = ()
EXPORT_KEYS = ("formats", "calibration_samples", "int8_io")
STEP_KEYS = {"prune": PRUNE_KEYS, "cluster": CLUSTER_KEYS, "quantize": QUANTIZE_KEYS, "finetune": FINETUNE_KEYS, "strip": STRIP_KEYS, "export": EXPORT_KEYS}


class RecipeError(ValueError):
    """A recipe that cannot run: bad YAML, unknown key or step, wrong type or range.

    Example:
    >>> try:
    ...     load_recipe("steps: [{shrink: {}}]")
    ... except RecipeError as error:
    ...     print(error)
    recipe step 1: unknown step 'shrink'. Allowed steps: ['prune', 'finetune', 'strip', 'export']
    """


@dataclasses.dataclass(frozen=True)
class PruneStep:
    """Prune with `PruneConfig(**settings)` on the layers matching `layers`.

    Attributes:
        settings: keyword arguments for `PruneConfig`; `end_step` may be
            `"auto"`, resolved by the runner to 2/3 of the fine-tuning steps
            that follow.
        layers: regex filter on layer names / variable paths, or `None` (all).

    Example:
    >>> step = PruneStep({"target_sparsity": 0.9})
    >>> step.to_config().target_sparsity
    0.9
    """

    settings: dict = dataclasses.field(default_factory=dict)
    layers: str | None = None

    @property
    def name(self):
        """The step's name in a recipe: `"prune"`."""
        return "prune"

    @property
    def auto_targets(self) -> bool:
        """Whether `layer_targets` is `"auto"`: per-layer targets from a sensitivity analysis."""
        return self.settings.get("layer_targets") == AUTO

    @property
    def auto_end_step(self) -> bool:
        """Whether `end_step` is `"auto"` and must be resolved before running."""
        return self.settings.get("end_step") == AUTO

    def to_config(self, end_step=None):
        """Builds the `PruneConfig`, with `end_step` resolved when it was `"auto"`.

        Args:
            end_step: the resolved end step; required if `auto_end_step`.

        Returns:
            A `keras_compress.PruneConfig`.

        Raises:
            ValueError: if `end_step` is `"auto"` and no `end_step` was given,
                or if `PruneConfig` rejects the settings.

        Example:
        >>> PruneStep({"schedule": "polynomial", "end_step": "auto"}).to_config(end_step=600).end_step
        600
        """
        from keras_compress.pruning import PruneConfig

        settings = dict(self.settings)
        if self.auto_targets:
            settings.pop("layer_targets")  # resolved by the runner, on the model and data
        if self.auto_end_step:
            if end_step is None:
                raise ValueError("end_step is 'auto': pass the resolved end_step to to_config()")
            settings["end_step"] = int(end_step)
        return PruneConfig(**settings)

    def to_dict(self):
        """Returns the step as it would be written in a recipe (a single-key dict)."""
        body = {key: (list(value) if isinstance(value, tuple) else value) for key, value in self.settings.items()}
        if self.layers is not None:
            body["layers"] = self.layers
        return {"prune": body}


@dataclasses.dataclass(frozen=True)
class FinetuneStep:
    """Train for `epochs` with Adam at `learning_rate` (with `PruningCallback` while pruning).

    Example:
    >>> FinetuneStep(epochs=2, learning_rate=1e-4).batch_size
    128
    """

    epochs: int = 1
    batch_size: int = 128
    learning_rate: float = 1e-4

    @property
    def name(self):
        """The step's name in a recipe: `"finetune"`."""
        return "finetune"

    def steps_per_epoch(self, num_samples: int) -> int:
        """Training steps in one epoch over `num_samples` samples.

        Example:
        >>> FinetuneStep(batch_size=128).steps_per_epoch(60000)
        469
        """
        return math.ceil(num_samples / self.batch_size)

    def to_dict(self):
        """Returns the step as it would be written in a recipe."""
        return {"finetune": {"epochs": self.epochs, "batch_size": self.batch_size,
                             "learning_rate": self.learning_rate}}


@dataclasses.dataclass(frozen=True)
class StripStep:
    """Remove pruning state (the runner also strips before exporting).

    Example:
    >>> StripStep().to_dict()
    {'strip': {}}
    """

    @property
    def name(self):
        """The step's name in a recipe: `"strip"`."""
        return "strip"

    def to_dict(self):
        """Returns the step as it would be written in a recipe."""
        return {"strip": {}}


@dataclasses.dataclass(frozen=True)
class ExportStep:
    """Write the artifacts: `"keras"` for `model.keras`, LiteRT formats as `model_<fmt>.tflite`.

    Example:
    >>> ExportStep().formats
    ('keras', 'float32', 'int8')
    """

    formats: tuple = ("keras", "float32", "int8")
    calibration_samples: int = 256
    int8_io: bool = False  # the int8 artifact takes and returns int8 tensors

    @property
    def name(self):
        """The step's name in a recipe: `"export"`."""
        return "export"

    def to_dict(self):
        """Returns the step as it would be written in a recipe."""
        body = {"formats": list(self.formats), "calibration_samples": self.calibration_samples}
        if self.int8_io:
            body["int8_io"] = True
        return {"export": body}


@dataclasses.dataclass(frozen=True)
class ClusterStep:
    """Cluster with `ClusterConfig(**settings)` on the layers matching `layers`.

    The runner strips any earlier pruning first (its zeros are kept when
    `preserve_sparsity` is true, the default).

    Example:
    >>> ClusterStep({"num_clusters": 16}).to_config().num_clusters
    16
    """

    settings: dict = dataclasses.field(default_factory=dict)
    layers: str | None = None

    @property
    def name(self):
        return "cluster"

    def to_config(self):
        """Builds the `ClusterConfig` (raises ValueError on a bad value)."""
        from keras_compress.clustering import ClusterConfig

        return ClusterConfig(**self.settings)

    def to_dict(self):
        """Returns the step as it would be written in a recipe."""
        body = dict(self.settings)
        if self.layers is not None:
            body["layers"] = self.layers
        return {"cluster": body}


@dataclasses.dataclass(frozen=True)
class QuantizeStep:
    """Prepare for quantization-aware training with `QATConfig(**settings)`.

    The runner strips earlier pruning or clustering first (pruned zeros stay
    zero: `preserve_zeros` defaults to true), initialises the activation
    ranges on `calibration_samples` training images, and the `finetune`
    steps after it train with fake quantization. The export step writes the
    `int8` LiteRT artifact from the trained ranges.

    Example:
    >>> QuantizeStep({"weight_bits": 8}).to_config().weight_bits
    8
    """

    settings: dict = dataclasses.field(default_factory=dict)
    calibration_samples: int = 1000

    @property
    def name(self):
        return "quantize"

    def to_config(self):
        """Builds the `QATConfig` (raises ValueError on a bad value)."""
        from keras_compress.quantization import QATConfig

        return QATConfig(**self.settings)

    def to_dict(self):
        """Returns the step as it would be written in a recipe."""
        return {"quantize": {**self.settings, "calibration_samples": self.calibration_samples}}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe: what `load_recipe` returns and `run_recipe` runs.

    Attributes:
        steps: the steps, in order (`PruneStep`, `FinetuneStep`, `StripStep`,
            `ExportStep`).
        model: a description of the model the recipe was written for, or `None`.
        data: the default dataset name, or `None`.

    Example:
    >>> recipe = load_recipe(DEMO_RECIPE)
    >>> [step.name for step in recipe.steps]
    ['prune', 'finetune', 'strip', 'export']
    """

    steps: tuple = ()
    model: str | None = None
    data: str | None = None

    @property
    def export_step(self):
        """The recipe's `ExportStep`, or `None` when it has none (the runner then exports with defaults)."""
        return next((s for s in self.steps if isinstance(s, ExportStep)), None)

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


def _where(index, name=None):
    return f"recipe step {index}" + (f" ({name})" if name else "")


def _fail(where, message):
    raise RecipeError(f"{where}: {message}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int(where, key, value, minimum=None):
    if not _is_int(value):
        _fail(where, f"'{key}' must be an integer. Received: {key}={value!r} ({_type_name(value)})")
    if minimum is not None and value < minimum:
        _fail(where, f"'{key}' must be an integer >= {minimum}. Received: {key}={value!r}")
    return value


def _as_number(where, key, value):
    # PyYAML (YAML 1.1) reads `1e-4` as a string; accept numeric strings.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(where, f"'{key}' must be a number. Received: {key}={value!r} ({_type_name(value)})")
    return float(value)


def _as_string(where, key, value):
    if not isinstance(value, str):
        _fail(where, f"'{key}' must be a string. Received: {key}={value!r} ({_type_name(value)})")
    return value


def _as_regex(where, key, value):
    _as_string(where, key, value)
    try:
        re.compile(value)
    except re.error as error:
        _fail(where, f"'{key}' is not a valid regular expression ({error}). Received: {key}={value!r}")
    return value


def _check_keys(where, body, allowed):
    for key in body:
        if key not in allowed:
            _fail(where, f"unknown key {key!r}. Allowed keys: {list(allowed)}")


def _parse_prune(where, body):
    settings = {}
    layers = None
    for key, value in body.items():
        if key == "layers":
            layers = None if value is None else _as_regex(where, key, value)
        elif key in ("target_sparsity", "initial_sparsity", "power"):
            settings[key] = _as_number(where, key, value)
        elif key in ("begin_step", "n", "m"):
            settings[key] = _as_int(where, key, value, minimum=0)
        elif key == "frequency":
            settings[key] = _as_int(where, key, value, minimum=1)
        elif key == "end_step":
            if value is not None and value != AUTO and (not _is_int(value) or value < 0):
                _fail(where, f"'end_step' must be an integer >= 0, null or 'auto'. "
                             f"Received: end_step={value!r} ({_type_name(value)})")
            settings[key] = value
        elif key in ("schedule", "pattern"):
            settings[key] = _as_string(where, key, value)
        elif key == "block_shape":
            if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_int(v) for v in value):
                _fail(where, "'block_shape' must be a list of two integers, e.g. [1, 4]. "
                             f"Received: block_shape={value!r}")
            settings[key] = tuple(value)
        elif key == "layer_targets":
            if value is not None and value != AUTO:
                if not isinstance(value, dict):
                    _fail(where, "'layer_targets' must be 'auto' or a mapping {layer regex: sparsity}. "
                                 f"Received: layer_targets={value!r} ({_type_name(value)})")
                value = {_as_regex(where, "layer_targets key", k): _as_number(where, f"layer_targets[{k!r}]", v)
                         for k, v in value.items()}
            settings[key] = value
    step = PruneStep(settings, layers)
    # PruneConfig owns the ranges (sparsity in [0, 1), n < m, ...). An `auto`
    # end step is checked with the smallest value it can resolve to.
    begin = settings.get("begin_step", 0)
    try:
        step.to_config(end_step=begin + 1 if step.auto_end_step else None)
    except (ValueError, TypeError) as error:
        _fail(where, str(error))
    return step


def _parse_cluster(where, body):
    settings = {}
    layers = None
    for key, value in body.items():
        if key == "layers":
            layers = None if value is None else _as_regex(where, key, value)
        elif key == "init":
            settings[key] = _as_string(where, key, value)
        elif key in ("per_channel", "preserve_sparsity"):
            if not isinstance(value, bool):
                _fail(where, f"{key!r} must be true or false. Received: {key}={value!r} ({_type_name(value)})")
            settings[key] = value
        elif key == "reassign_every":
            settings[key] = None if value is None else _as_int(where, key, value, minimum=1)
        else:  # num_clusters, kmeans_iterations, seed
            settings[key] = _as_int(where, key, value, minimum=0)
    step = ClusterStep(settings, layers)
    try:
        step.to_config()
    except (ValueError, TypeError) as error:
        _fail(where, str(error))
    return step


def _parse_quantize(where, body):
    settings = {}
    samples = QuantizeStep().calibration_samples
    for key, value in body.items():
        if key == "layers":
            settings[key] = None if value is None else _as_regex(where, key, value)
        elif key in ("per_channel", "fold_batchnorm", "preserve_zeros", "quantize_inputs"):
            if not isinstance(value, bool):
                _fail(where, f"{key!r} must be true or false. Received: {key}={value!r} ({_type_name(value)})")
            settings[key] = value
        elif key == "ema_decay":
            settings[key] = _as_number(where, key, value)
        elif key == "calibration_samples":
            samples = _as_int(where, key, value, minimum=1)
        else:  # weight_bits, activation_bits
            settings[key] = _as_int(where, key, value, minimum=0)
    step = QuantizeStep(settings, samples)
    try:
        step.to_config()
    except (ValueError, TypeError) as error:
        _fail(where, str(error))
    return step


def _parse_finetune(where, body):
    defaults = FinetuneStep()
    epochs = _as_int(where, "epochs", body.get("epochs", defaults.epochs), minimum=0)
    batch_size = _as_int(where, "batch_size", body.get("batch_size", defaults.batch_size), minimum=1)
    learning_rate = _as_number(where, "learning_rate", body.get("learning_rate", defaults.learning_rate))
    if learning_rate <= 0:
        _fail(where, f"'learning_rate' must be > 0. Received: learning_rate={learning_rate!r}")
    return FinetuneStep(epochs, batch_size, learning_rate)


def _parse_export(where, body):
    defaults = ExportStep()
    formats = body.get("formats", list(defaults.formats))
    if isinstance(formats, str):
        formats = [formats]
    if not isinstance(formats, list) or not formats:
        _fail(where, f"'formats' must be a non-empty list drawn from {list(EXPORT_FORMATS)}. "
                     f"Received: formats={formats!r}")
    for fmt in formats:
        if fmt not in EXPORT_FORMATS:
            _fail(where, f"unknown export format {fmt!r}. Allowed formats: {list(EXPORT_FORMATS)}")
    duplicates = sorted({fmt for fmt in formats if formats.count(fmt) > 1})
    if duplicates:
        _fail(where, f"export format(s) listed twice: {duplicates}")
    samples = body.get("calibration_samples", defaults.calibration_samples)
    samples = _as_int(where, "calibration_samples", samples, minimum=1)
    int8_io = body.get("int8_io", False)
    if not isinstance(int8_io, bool):
        _fail(where, f"'int8_io' must be true or false. Received: int8_io={int8_io!r} ({_type_name(int8_io)})")
    if int8_io and "int8" not in formats:
        _fail(where, "'int8_io: true' makes the int8 artifact's input and output int8: add int8 to formats")
    return ExportStep(tuple(formats), samples, int8_io)


_PARSERS = {
    "prune": _parse_prune,
    "cluster": _parse_cluster,
    "quantize": _parse_quantize,
    "finetune": _parse_finetune,
    "strip": lambda where, body: StripStep(),
    "export": _parse_export,
}


def _parse_step(index, entry):
    where = _where(index)
    if not isinstance(entry, dict) or len(entry) != 1:
        _fail(where, "each step must be a mapping with exactly one key, the step name, e.g. "
                     f"'- finetune: {{epochs: 1}}'. Allowed steps: {list(STEP_NAMES)}. Received: {entry!r}")
    (name, body), = entry.items()
    if name not in STEP_NAMES:
        _fail(where, f"unknown step {name!r}. Allowed steps: {list(STEP_NAMES)}")
    where = _where(index, name)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        _fail(where, f"settings must be a mapping of {list(STEP_KEYS[name])}. Received: {body!r} ({_type_name(body)})")
    _check_keys(where, body, STEP_KEYS[name])
    return _PARSERS[name](where, body)


def _check_order(steps):
    exports = [i for i, step in enumerate(steps, 1) if isinstance(step, ExportStep)]
    if len(exports) > 1:
        _fail(_where(exports[1], "export"), f"a recipe exports once; export steps found at {exports}")
    if exports and exports[0] != len(steps):
        _fail(_where(exports[0], "export"), "export must be the last step")
    pruning = False
    for i, step in enumerate(steps, 1):
        if isinstance(step, PruneStep):
            if pruning:
                _fail(_where(i, "prune"), "the model is still being pruned by an earlier prune step; "
                                          "add a '- strip: {}' step before pruning again")
            pruning = True
        elif isinstance(step, (StripStep, ClusterStep, QuantizeStep)):
            pruning = False  # the runner strips pruning before clustering or QAT
    quantized = False
    for i, step in enumerate(steps, 1):
        if isinstance(step, QuantizeStep):
            if quantized:
                _fail(_where(i, "quantize"), "the model is already prepared for QAT by an earlier "
                                             "quantize step; a recipe quantizes once")
            quantized = True
        elif quantized and isinstance(step, (PruneStep, ClusterStep)):
            _fail(_where(i, step.name), f"{step.name} after quantize: prune and cluster first, "
                                        "then quantize (QAT keeps pruned zeros)")
    for i, step in enumerate(steps, 1):
        if isinstance(step, PruneStep) and step.auto_end_step:
            # The ramp spans the fine-tuning until the next prune step (which
            # needs the model stripped first) or the end.
            following = []
            for later in steps[i:]:
                if isinstance(later, PruneStep):
                    break
                following.append(later)
            if not any(isinstance(s, FinetuneStep) and s.epochs > 0 for s in following):
                _fail(_where(i, "prune"), "end_step: auto needs a finetune step with epochs >= 1 "
                                          "after this prune step")


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
    (FinetuneStep(epochs=1, batch_size=128, learning_rate=0.0001),)
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
    if dataset is not None and dataset not in DATASETS:
        raise RecipeError(f"recipe: unknown dataset. Allowed: {list(DATASETS)}. Received: data={dataset!r}")
    steps = data["steps"]
    if not isinstance(steps, list) or not steps:
        raise RecipeError(f"recipe: 'steps' must be a non-empty list. Received: steps={steps!r}")
    parsed = tuple(_parse_step(i, entry) for i, entry in enumerate(steps, 1))
    _check_order(parsed)
    return Recipe(parsed, model, dataset)


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
        where = "recipe" if source is None else f"recipe {source!r}"
        raise RecipeError(f"{where} is not valid YAML: {detail}") from None
    return parse_recipe(data)


def resolve_auto_end_step(step: PruneStep, finetune_steps, num_samples: int) -> int:
    """The end step `end_step: auto` stands for: 2/3 of the fine-tuning steps that follow.

    Args:
        step: the `PruneStep`.
        finetune_steps: the `FinetuneStep`s its ramp spans.
        num_samples: training samples per epoch.

    Returns:
        `begin_step + round(2/3 * total steps)`, at least `begin_step + 1`.

    Example:
    >>> resolve_auto_end_step(PruneStep({"end_step": "auto"}), [FinetuneStep(3, 128)], 60000)
    938
    """
    total = sum(s.epochs * s.steps_per_epoch(num_samples) for s in finetune_steps)
    begin = step.settings.get("begin_step", 0)
    return begin + max(1, round(AUTO_END_FRACTION * total))


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
