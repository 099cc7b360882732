"""The step registry: a recipe step is its technique's config, and nothing else keeps its keys."""

import dataclasses
import inspect
import pathlib

import pytest
import yaml

import keras_compress
from keras_compress.cli.recipe import load_recipe
from keras_compress.core import steps
from keras_compress.core.config import BaseConfig
from keras_compress.core.steps import Key, RecipeError, Step, register_step

SRC = pathlib.Path(keras_compress.__file__).parent


def _public_configs():
    """Every BaseConfig subclass that a technique's package exports."""
    import importlib

    found = {}
    for package in sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").exists()):
        module = importlib.import_module(f"keras_compress.{package}")
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if inspect.isclass(value) and issubclass(value, BaseConfig) and value is not BaseConfig:
                found[value.__name__] = value
    return found


def test_built_in_steps_are_found_in_their_technique_folders():
    registry = steps.registered()
    assert {"prune", "cluster", "quantize", "finetune", "strip", "export"} <= set(registry)
    assert registry["prune"].__module__ == "keras_compress.pruning.steps"
    assert registry["cluster"].__module__ == "keras_compress.clustering.steps"
    assert registry["quantize"].__module__ == "keras_compress.quantization.steps"
    assert registry["export"].__module__ == "keras_compress.export.steps"


def test_every_public_config_has_a_step_that_accepts_all_its_fields():
    configs = _public_configs()
    assert {"PruneConfig", "ClusterConfig", "QATConfig", "FinetuneConfig", "ExportConfig"} <= set(configs)
    by_config = {cls.config_class: cls for cls in steps.registered().values() if cls.config_class}
    # The importance regulariser is a training loss, not a recipe step (yet).
    for name, config in configs.items():
        if name == "ImportanceRegularizerConfig":
            continue
        assert config in by_config, f"{name} has no recipe step"
        step = by_config[config]
        fields = {f.name for f in dataclasses.fields(config) if f.init and f.name != "version"}
        assert fields <= set(step.keys()), f"{step.name} does not accept {sorted(fields - set(step.keys()))}"


@pytest.mark.parametrize("name", ["prune", "cluster", "quantize", "finetune", "export"])
def test_a_step_written_with_every_default_builds_the_default_config(name):
    cls = steps.step_class(name)
    config = cls.config_class()
    body = {key: value for key, value in config.to_dict().items() if key != "version"}
    step = load_recipe(yaml.safe_dump({"steps": [{name: body}]})).steps[0]
    assert step.to_config() == config


def test_keys_and_types_come_from_the_dataclass_fields():
    keys = steps.step_class("prune").config_keys()
    assert keys["target_sparsity"].kind == "number"
    assert keys["frequency"] == Key("int", 100, minimum=1)
    assert keys["block_shape"].kind == "list" and keys["block_shape"].length == 2
    assert keys["end_step"].nullable and keys["end_step"].auto
    assert steps.step_class("cluster").config_keys()["assignment"].kind == "str"
    assert steps.step_class("quantize").config_keys()["layers"].kind == "regex"


def test_a_new_config_field_is_a_recipe_key_without_other_changes():
    @dataclasses.dataclass(frozen=True)
    class ShrinkConfig(BaseConfig):
        factor: float = 0.5
        rounds: int = dataclasses.field(default=1, metadata={"minimum": 1})
        verbose: bool = False

        def __post_init__(self):
            if not 0 < self.factor < 1:
                raise ValueError(f"factor must be in (0, 1). Received: factor={self.factor!r}")

    @register_step
    @dataclasses.dataclass(frozen=True)
    class ShrinkStep(Step):
        name = "shrink_for_test"
        config_class = ShrinkConfig

        def run(self, run, index):
            return {"step": index}

    try:
        step = load_recipe("steps:\n  - shrink_for_test: {factor: 0.25, rounds: 3}\n").steps[0]
        assert step.to_config() == ShrinkConfig(0.25, 3)
        with pytest.raises(RecipeError, match=r"recipe step 1 \(shrink_for_test\): factor must be in \(0, 1\)"):
            load_recipe("steps:\n  - shrink_for_test: {factor: 2}\n")
        with pytest.raises(RecipeError, match="'rounds' must be an integer >= 1"):
            load_recipe("steps:\n  - shrink_for_test: {rounds: 0}\n")
        with pytest.raises(RecipeError, match=r"unknown key 'size'. Allowed keys: \['factor', 'rounds', 'verbose'\]"):
            load_recipe("steps:\n  - shrink_for_test: {size: 2}\n")
        with pytest.raises(RecipeError, match="'verbose' must be true or false"):
            load_recipe("steps:\n  - shrink_for_test: {verbose: 2}\n")
    finally:
        steps._REGISTRY.pop("shrink_for_test", None)


def test_registering_a_second_class_under_a_taken_name_fails():
    @dataclasses.dataclass(frozen=True)
    class Other(Step):
        name = "prune"

    with pytest.raises(ValueError, match="already registered"):
        register_step(Other)
    with pytest.raises(TypeError, match="Step subclass"):
        register_step(dict)


def test_the_recipe_module_and_the_runner_name_no_technique():
    for module in ("recipe.py", "runner.py"):
        text = (SRC / "cli" / module).read_text()
        code = text.split('DEMO_RECIPE = """')[0]
        for word in ("PruneConfig", "ClusterConfig", "QATConfig", "is_pruned", "PruningCallback",
                     "ClusteringCallback", "isinstance(step,"):
            assert word not in code, f"cli/{module} names {word}"


@pytest.mark.parametrize("value,expected", [
    ("1e-4", 1e-4), (3, 3.0),
])
def test_numbers_read_from_yaml_strings_and_integers(value, expected):
    assert Key("number").read("here", "x", value) == pytest.approx(expected)


def test_describe_allowed_joins_null_and_auto():
    assert Key("int", minimum=0, nullable=True, auto=True).describe_allowed() == "an integer >= 0, null or 'auto'"
    assert Key("list", length=2, item="int").describe_allowed() == "a list of two integers"


def test_a_step_without_run_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Idle(Step):
        name = "idle_for_test"

    with pytest.raises(TypeError, match="must define run"):
        register_step(Idle)
    assert "idle_for_test" not in steps.registered()


def test_a_step_with_an_auto_setting_reads_its_fields():
    from keras_compress.cli.recipe import load_recipe

    step = load_recipe("steps:\n  - prune: {target_sparsity: 0.8, end_step: auto}\n"
                       "  - finetune: {epochs: 1}\n").steps[0]
    assert step.target_sparsity == 0.8 and step.end_step == "auto" and step.frequency == 100
