import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import yaml

from keras_compress.cli.recipe import (
    DEMO_RECIPE,
    EXPORT_FORMATS,
    PRUNE_KEYS,
    ExportStep,
    FinetuneStep,
    PruneStep,
    Recipe,
    RecipeError,
    StripStep,
    load_recipe,
    parse_recipe,
    resolve_auto_end_step,
)

REPO = pathlib.Path(__file__).resolve().parents[2]


def recipe_text(steps, **top):
    """YAML for a recipe with the given step list (Python values) and top-level keys."""
    return yaml.safe_dump({**top, "steps": steps}, sort_keys=False)


def test_demo_recipe_parses_into_prune_finetune_strip_export():
    recipe = load_recipe(DEMO_RECIPE)
    assert [type(s) for s in recipe.steps] == [PruneStep, FinetuneStep, StripStep, ExportStep]
    prune, finetune, _, export = recipe.steps
    assert prune.settings["target_sparsity"] == 0.9
    assert prune.settings["schedule"] == "polynomial"
    assert prune.settings["initial_sparsity"] == 0.5
    assert prune.auto_end_step
    assert finetune.epochs >= 1 and finetune.learning_rate <= 1e-3
    assert set(export.formats) == {"keras", "float32", "int8"}
    assert (recipe.model, recipe.data) == ("lenet5", "mnist")


def test_recipes_demo_yaml_is_the_demo_recipe():
    path = REPO / "recipes" / "demo.yaml"
    assert path.read_text() == DEMO_RECIPE
    assert load_recipe(path) == load_recipe(str(path)) == load_recipe(DEMO_RECIPE)


def test_recipe_round_trips_through_to_dict():
    recipe = load_recipe(DEMO_RECIPE)
    assert load_recipe(yaml.safe_dump(recipe.to_dict())) == recipe
    assert parse_recipe(recipe.to_dict()) == recipe


def test_every_prune_key_is_accepted():
    body = {"target_sparsity": 0.75, "schedule": "polynomial", "initial_sparsity": 0.25,
            "begin_step": 2, "end_step": 40, "frequency": 5, "power": 2, "pattern": "block",
            "block_shape": [2, 2], "n": 1, "m": 4, "layer_targets": {"fc2": 0.5}, "include_frozen": True,
            "layers": "conv|fc"}
    assert set(body) == set(PRUNE_KEYS)
    step = load_recipe(recipe_text([{"prune": body}])).steps[0]
    assert step.layers == "conv|fc"
    config = step.to_config()
    assert config.block_shape == (2, 2) and config.layer_targets == {"fc2": 0.5}
    assert config.end_step == 40 and config.power == 2.0


def test_auto_end_step_resolves_to_two_thirds_of_the_finetuning_steps():
    recipe = load_recipe(DEMO_RECIPE)
    prune, finetune = recipe.steps[:2]
    total = finetune.epochs * finetune.steps_per_epoch(60000)
    assert resolve_auto_end_step(prune, [finetune], 60000) == round(2 * total / 3)
    assert prune.to_config(end_step=100).end_step == 100
    with pytest.raises(ValueError, match="auto"):
        prune.to_config()


def test_yaml_exponent_without_a_dot_is_read_as_a_number():
    # PyYAML (YAML 1.1) reads 1e-4 as the string "1e-4".
    step = load_recipe("steps:\n  - finetune: {learning_rate: 1e-4}\n").steps[0]
    assert step.learning_rate == pytest.approx(1e-4)


def test_empty_step_bodies_take_the_defaults():
    recipe = load_recipe("steps:\n  - prune:\n  - finetune:\n  - strip:\n  - export:\n")
    assert recipe.steps == (PruneStep({}, None), FinetuneStep(), StripStep(), ExportStep())


def test_a_missing_recipe_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="recipe file not found"):
        load_recipe(str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError):
        load_recipe(tmp_path / "nope.yaml")


def test_recipe_error_is_a_value_error():
    assert issubclass(RecipeError, ValueError)


PRUNE_OK = {"target_sparsity": 0.5}

BAD_RECIPES = {
    "unknown top-level key": (
        recipe_text([{"strip": {}}], modle="lenet5"), ["unknown top-level key 'modle'", "Allowed keys"]),
    "no steps": ("model: lenet5\n", ["missing required key 'steps'"]),
    "empty steps": ("steps: []\n", ["'steps' must be a non-empty list"]),
    "steps not a list": ("steps: {prune: {}}\n", ["'steps' must be a non-empty list"]),
    "unknown dataset": (recipe_text([{"strip": {}}], data="cifar10"), ["unknown dataset", "cifar10"]),
    "model not a string": (recipe_text([{"strip": {}}], model=3), ["'model' must be a string"]),
    "unknown step": (recipe_text([{"strip": {}}, {"shrink": {}}]), ["recipe step 2:", "unknown step 'shrink'", "Allowed steps"]),
    "two keys in one step": (recipe_text([{"prune": {}, "strip": {}}]), ["recipe step 1", "exactly one key"]),
    "step is a string": ("steps: [prune]\n", ["recipe step 1", "exactly one key"]),
    "settings not a mapping": (recipe_text([{"finetune": 3}]), ["recipe step 1 (finetune)", "must be a mapping"]),
    "unknown prune key": (
        recipe_text([{"finetune": {"epochs": 1}}, {"prune": {"sparsity": 0.5}}]),
        ["recipe step 2 (prune): unknown key 'sparsity'. Allowed keys: ['target_sparsity'"]),
    "sparsity 1.0": (recipe_text([{"prune": {"target_sparsity": 1.0}}]), ["recipe step 1 (prune)", "target_sparsity", "[0, 1)"]),
    "negative sparsity": (recipe_text([{"prune": {"target_sparsity": -0.1}}]), ["recipe step 1 (prune)", "target_sparsity"]),
    "sparsity not a number": (recipe_text([{"prune": {"target_sparsity": "high"}}]), ["'target_sparsity' must be a number"]),
    "sparsity is a bool": (recipe_text([{"prune": {"target_sparsity": True}}]), ["'target_sparsity' must be a number"]),
    "initial above target": (
        recipe_text([{"prune": {"target_sparsity": 0.5, "initial_sparsity": 0.8, "schedule": "polynomial", "end_step": 10}}]),
        ["recipe step 1 (prune)", "initial_sparsity"]),
    "unknown schedule": (recipe_text([{"prune": {"schedule": "cosine"}}]), ["recipe step 1 (prune)", "schedule", "cosine"]),
    "unknown pattern": (recipe_text([{"prune": {"pattern": "diagonal"}}]), ["recipe step 1 (prune)", "pattern"]),
    "polynomial without end_step": (recipe_text([{"prune": {"schedule": "polynomial"}}]), ["recipe step 1 (prune)", "end_step"]),
    "end_step a word": (recipe_text([{"prune": {"end_step": "later"}}]), ["'end_step' must be an integer >= 0, null or 'auto'"]),
    "auto end_step without finetune": (
        recipe_text([{"prune": {"schedule": "polynomial", "end_step": "auto"}}, {"export": {}}]),
        ["recipe step 1 (prune)", "end_step: auto needs a finetune"]),
    "auto end_step with zero epochs": (
        recipe_text([{"prune": {"end_step": "auto"}}, {"finetune": {"epochs": 0}}]),
        ["end_step: auto needs a finetune"]),
    "frequency zero": (recipe_text([{"prune": {"frequency": 0}}]), ["'frequency' must be an integer >= 1"]),
    "begin_step a float": (recipe_text([{"prune": {"begin_step": 1.5}}]), ["'begin_step' must be an integer"]),
    "block_shape of three": (recipe_text([{"prune": {"block_shape": [1, 2, 3]}}]), ["'block_shape' must be a list of two integers"]),
    "n not below m": (recipe_text([{"prune": {"pattern": "n:m", "n": 4, "m": 4}}]), ["recipe step 1 (prune)", "n:m"]),
    "bad layers regex": (recipe_text([{"prune": {"layers": "conv("}}]), ["'layers' is not a valid regular expression"]),
    "layers not a string": (recipe_text([{"prune": {"layers": 3}}]), ["'layers' must be a string"]),
    "layer_targets a list": (recipe_text([{"prune": {"layer_targets": ["fc1"]}}]), ["'layer_targets' must be 'auto' or a mapping"]),
    "layer_targets sparsity 1": (recipe_text([{"prune": {"layer_targets": {"fc1": 1.0}}}]), ["recipe step 1 (prune)", "layer_targets"]),
    "prune twice without strip": (
        recipe_text([{"prune": PRUNE_OK}, {"finetune": {}}, {"prune": PRUNE_OK}]),
        ["recipe step 3 (prune)", "strip"]),
    "unknown finetune key": (recipe_text([{"finetune": {"lr": 0.1}}]), ["recipe step 1 (finetune): unknown key 'lr'", "'learning_rate'"]),
    "negative epochs": (recipe_text([{"finetune": {"epochs": -1}}]), ["recipe step 1 (finetune)", "'epochs' must be an integer >= 0"]),
    "fractional epochs": (recipe_text([{"finetune": {"epochs": 1.5}}]), ["'epochs' must be an integer"]),
    "epochs is a bool": (recipe_text([{"finetune": {"epochs": True}}]), ["'epochs' must be an integer"]),
    "zero batch size": (recipe_text([{"finetune": {"batch_size": 0}}]), ["'batch_size' must be an integer >= 1"]),
    "zero learning rate": (recipe_text([{"finetune": {"learning_rate": 0}}]), ["'learning_rate' must be > 0"]),
    "learning rate a word": (recipe_text([{"finetune": {"learning_rate": "fast"}}]), ["'learning_rate' must be a number"]),
    "strip with a key": (recipe_text([{"strip": {"now": True}}]), ["recipe step 1 (strip): unknown key 'now'. Allowed keys: []"]),
    "unknown export format": (recipe_text([{"export": {"formats": ["float32", "onnx"]}}]), ["recipe step 1 (export)", "unknown export format 'onnx'"]),
    "duplicate export format": (recipe_text([{"export": {"formats": ["int8", "int8"]}}]), ["listed twice", "int8"]),
    "empty export formats": (recipe_text([{"export": {"formats": []}}]), ["'formats' must be a non-empty list"]),
    "unknown export key": (recipe_text([{"export": {"format": ["int8"]}}]), ["recipe step 1 (export): unknown key 'format'", "'formats'"]),
    "zero calibration samples": (recipe_text([{"export": {"calibration_samples": 0}}]), ["'calibration_samples' must be an integer >= 1"]),
    "export not last": (recipe_text([{"export": {}}, {"finetune": {}}]), ["recipe step 1 (export)", "last step"]),
    "two exports": (recipe_text([{"export": {}}, {"export": {}}]), ["recipe step 2 (export)", "exports once"]),
    "invalid yaml": ("steps: [\n", ["not valid YAML"]),
    "duplicate key": ("steps:\n  - finetune: {epochs: 1, epochs: 2}\n", ["duplicate key 'epochs'"]),
    "empty document": ("# nothing here\n", ["recipe is empty"]),
    "a list, not a mapping": ("- prune: {}\n", ["recipe must be a mapping"]),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_a_bad_recipe_raises_recipe_error_naming_the_problem(case):
    text, expected = BAD_RECIPES[case]
    with pytest.raises(RecipeError) as info:
        load_recipe(text)
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message


def test_bad_recipe_files_name_the_problem_too(tmp_path):
    path = tmp_path / "recipe.yml"
    path.write_text(textwrap.dedent("""\
        steps:
          - prune: {target_sparsity: 0.9, sparsity: 0.9}
    """))
    with pytest.raises(RecipeError, match=r"recipe step 1 \(prune\): unknown key 'sparsity'"):
        load_recipe(str(path))


def test_every_export_format_is_accepted():
    export = load_recipe(recipe_text([{"export": {"formats": list(EXPORT_FORMATS)}}])).export_step
    assert export.formats == EXPORT_FORMATS


def test_load_recipe_rejects_what_is_neither_path_nor_text():
    with pytest.raises(TypeError, match="path or YAML text"):
        load_recipe(42)
    assert isinstance(load_recipe(b"steps: [strip: {}]".decode()), Recipe)


def test_cli_modules_import_without_tensorflow():
    code = ("import sys; import keras_compress.cli.recipe, keras_compress.cli.runner, "
            "keras_compress.cli.main, keras_compress.core.report; "
            "assert 'tensorflow' not in sys.modules")
    env = dict(os.environ, KERAS_BACKEND="numpy")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize(
    "body,match",
    [
        ("{clusters: 8}", "recipe step 1 \\(cluster\\): unknown key 'clusters'"),
        ("{num_clusters: 1}", "num_clusters must be an integer in \\[2, 65536\\]"),
        ("{init: uniform}", "init must be one of"),
        ("{per_channel: 'yes'}", "'per_channel' must be true or false"),
        ("{reassign_every: 0}", "reassign_every"),
    ],
)
def test_bad_cluster_steps_are_named(body, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(f"steps:\n  - cluster: {body}\n")


def test_a_cluster_step_round_trips():
    recipe = load_recipe("steps:\n  - cluster: {num_clusters: 16, init: linear, per_channel: true, layers: fc}\n")
    step = recipe.steps[0]
    assert step.to_config().num_clusters == 16 and step.layers == "fc"
    assert load_recipe(yaml.safe_dump(recipe.to_dict())) == recipe


@pytest.mark.parametrize(
    "steps,match",
    [
        ("  - quantize: {bits: 8}\n", "recipe step 1 \\(quantize\\): unknown key 'bits'"),
        ("  - quantize: {weight_bits: 9}\n", "weight_bits must be an int in \\[2, 8\\]"),
        ("  - quantize: {per_channel: 1}\n", "'per_channel' must be true or false"),
        ("  - quantize: {calibration_samples: 0}\n", "calibration_samples"),
        ("  - quantize: {}\n  - quantize: {}\n", "recipe step 2 \\(quantize\\): the model is already prepared"),
        ("  - quantize: {}\n  - prune: {target_sparsity: 0.5}\n", "recipe step 2 \\(prune\\): prune after quantize"),
        ("  - quantize: {}\n  - export: {formats: [int8], per_channel: false}\n",
         "recipe step 2 \\(export\\): per_channel: false sets .* set per_channel: false in the quantize step"),
    ],
)
def test_bad_quantize_steps_are_named(steps, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe("steps:\n" + steps)


def test_per_tensor_export_without_quantize_or_int8_is_accepted():
    assert load_recipe("steps:\n  - export: {formats: [int8], per_channel: false}\n").steps[0].per_channel is False
    load_recipe("steps:\n  - quantize: {per_channel: false}\n  - export: {formats: [int8]}\n")
    load_recipe("steps:\n  - quantize: {}\n  - export: {formats: [float32], per_channel: false}\n")


def test_shipped_qat_recipes_parse_and_round_trip():
    for name in ("qat.yaml", "prune_qat.yaml"):
        recipe = load_recipe(os.path.join(os.path.dirname(__file__), "..", "..", "recipes", name))
        step = next(s for s in recipe.steps if s.name == "quantize")
        assert step.to_config().deployable and step.calibration_samples == 1000
        assert load_recipe(yaml.safe_dump(recipe.to_dict())) == recipe


def test_export_int8_io_is_validated_and_round_trips():
    recipe = load_recipe("steps:\n  - export: {formats: [int8], int8_io: true}\n")
    assert recipe.steps[0].int8_io
    assert load_recipe(yaml.safe_dump(recipe.to_dict())) == recipe
    with pytest.raises(RecipeError, match="add int8 to formats"):
        load_recipe("steps:\n  - export: {formats: [float32], int8_io: true}\n")
    with pytest.raises(RecipeError, match="'int8_io' must be true or false"):
        load_recipe("steps:\n  - export: {formats: [int8], int8_io: 1}\n")


def test_layer_targets_auto_is_accepted_and_left_to_the_runner():
    recipe = load_recipe("steps:\n  - prune: {target_sparsity: 0.9, layer_targets: auto}\n")
    step = recipe.steps[0]
    assert step.auto_targets and step.to_config().layer_targets is None
    assert load_recipe(yaml.safe_dump(recipe.to_dict())) == recipe
    with pytest.raises(RecipeError, match="'layer_targets' must be 'auto' or a mapping"):
        load_recipe("steps:\n  - prune: {layer_targets: best}\n")


def test_every_shipped_recipe_loads():
    import glob

    folder = os.path.join(os.path.dirname(__file__), "..", "..", "recipes")
    paths = sorted(glob.glob(os.path.join(folder, "*.yaml")))
    assert len(paths) >= 4
    for path in paths:
        assert load_recipe(path).steps, path
