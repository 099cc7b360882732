"""Structured pruning: channel groups for each coupling kind, exact removal, MACs, bad input."""

import os

import keras
import numpy as np
import pytest
from keras import layers

from builders import TinySubclassed, seeded
from keras_compress import zoo
from keras_compress.core.channels import ChannelGraph
from keras_compress.core.macs import macs
from keras_compress.structured import ChannelPruneConfig, channel_groups, plan_channels, prune_channels
from keras_compress.structured.api import _in_axis, _short_name


def plain_cnn():
    seeded()
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Conv2D(12, 3, name="c2")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(4, name="head")(x))


def residual():
    seeded(1)
    inputs = keras.Input((10, 10, 3))
    stem = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="a1")(stem)
    x = layers.Conv2D(8, 3, padding="same", name="a2")(x)
    x = layers.Add(name="add")([stem, x])
    y = layers.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    x = layers.Add(name="add2")([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(4, name="head")(x))


def squeeze_excite():
    seeded(2)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(12, 3, padding="same", activation="relu", name="conv")(inputs)
    gate = layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = layers.Dense(4, activation="relu", name="squeeze")(gate)
    gate = layers.Dense(12, activation="sigmoid", name="excite")(gate)
    x = layers.Multiply(name="scale")([x, gate])
    x = layers.Conv2D(6, 1, name="after")(x)
    return keras.Model(inputs, layers.Dense(3, name="head")(layers.Flatten()(x)))


def dense_concat():
    seeded(3)
    inputs = keras.Input((8, 8, 2))
    a = layers.Conv2D(6, 3, padding="same", name="a")(inputs)
    b = layers.Conv2D(4, 3, padding="same", name="b")(a)
    x = layers.Concatenate(name="cat")([a, b])
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2D(5, 1, name="trans")(x)
    return keras.Model(inputs, layers.Dense(3, name="head")(layers.GlobalAveragePooling2D()(x)))


def flatten_dense():
    seeded(4)
    inputs = keras.Input((6, 6, 1))
    x = layers.Conv2D(5, 3, activation="relu", name="conv")(inputs)
    x = layers.Flatten()(x)
    x = layers.Dense(7, activation="relu", name="fc")(x)
    return keras.Model(inputs, layers.Dense(3, name="head")(x))


def nested_backbone():
    seeded(5)
    inner_in = keras.Input((8, 8, 3))
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="bb_conv1")(inner_in)
    y = layers.BatchNormalization(name="bb_bn")(y)
    y = layers.Conv2D(10, 3, padding="same", name="bb_conv2")(y)
    backbone = keras.Model(inner_in, y, name="backbone")
    inputs = keras.Input((8, 8, 3))
    x = backbone(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(6, activation="relu", name="neck")(x)
    return keras.Model(inputs, layers.Dense(3, name="head")(x))


def transpose_sequential():
    seeded(6)
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        layers.Conv2D(6, 3, padding="same", name="enc"),
        layers.Conv2DTranspose(5, 3, strides=2, padding="same", name="dec"),
        layers.Conv2D(2, 1, name="out"),
    ])


MODELS = {"plain_cnn": plain_cnn, "residual": residual, "squeeze_excite": squeeze_excite,
          "dense_concat": dense_concat, "flatten_dense": flatten_dense, "nested_backbone": nested_backbone,
          "transpose_sequential": transpose_sequential}


def groups_by_name(model):
    return {g["name"]: g for g in channel_groups(model)}


def test_a_convolution_is_coupled_with_its_normalization_depthwise_and_consumer():
    groups = groups_by_name(plain_cnn())
    assert groups["c1"]["layers"] == ["c1", "bn1", "dw", "c2"] and groups["c1"]["channels"] == 8
    assert groups["c2"]["layers"] == ["c2", "head"] and groups["c2"]["prunable"]
    assert not groups["head"]["prunable"] and groups["head"]["reasons"] == ["feeds a model output"]


def test_a_residual_stream_is_one_group():
    groups = groups_by_name(residual())
    assert set(groups["stem"]["producers"]) == {"stem", "a2", "sep"}
    assert {"a1", "sep", "head"} <= set(groups["stem"]["layers"])
    assert groups["a1"]["layers"] == ["a1", "a2"]


def test_a_squeeze_excitation_gate_is_coupled_with_what_it_scales():
    groups = groups_by_name(squeeze_excite())
    assert set(groups["conv"]["producers"]) == {"conv", "excite"}
    assert {"squeeze", "after"} <= set(groups["conv"]["layers"])
    assert groups["squeeze"]["layers"] == ["squeeze", "excite"]


def test_a_concatenation_keeps_each_input_in_its_own_group_with_offsets():
    model = dense_concat()
    graph = ChannelGraph(model)
    by_name = {g.name: g for g in graph.groups()}
    offsets = {(m.layer.name, m.role): m.offset for m in by_name["b"].members}
    assert offsets[("trans", "in")] == 6 and offsets[("bn", "chan")] == 6
    assert {(m.layer.name, m.role): m.offset for m in by_name["a"].members}[("trans", "in")] == 0


def test_flatten_before_dense_carries_the_spatial_tiling():
    graph = ChannelGraph(flatten_dense())
    member = next(m for m in graph.groups()[0].members if m.layer.name == "fc")
    assert (member.width, member.tile) == (5, 16)


def test_a_nested_backbone_is_read_through():
    groups = groups_by_name(nested_backbone())
    assert groups["bb_conv1"]["layers"] == ["bb_conv1", "bb_bn", "bb_conv2"]
    assert groups["bb_conv2"]["layers"] == ["bb_conv2", "neck"] and groups["bb_conv2"]["prunable"]


def test_a_layer_it_cannot_reason_about_is_a_wall_not_an_error():
    seeded()
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, name="before")(inputs)
    x = layers.Permute((2, 1, 3), name="odd")(x)
    x = layers.Conv2D(4, 3, name="after")(x)
    groups = groups_by_name(keras.Model(inputs, layers.Dense(2, name="head")(layers.Flatten()(x))))
    assert not groups["before"]["prunable"]
    assert "odd (Permute) is not supported" in groups["before"]["reasons"][0]
    assert groups["after"]["prunable"]


def _zero_removed_inputs(model, removed):
    """Zeroes the consumers' weights of the channels that will be removed (their effect becomes zero)."""
    for group in ChannelGraph(model).groups():
        drop = removed.get(group.name)
        if drop is None:
            continue
        for member in group.members:
            if member.role != "in":
                continue
            for variable in member.layer.weights:
                axis = _in_axis(member.layer, _short_name(variable))
                if axis is None or variable.ndim < 2:
                    continue
                value = np.array(variable)
                index = [p * member.width + member.offset + k for p in range(member.tile) for k in drop]
                moved = np.moveaxis(value, axis, 0)
                moved[index] = 0
                variable.assign(np.moveaxis(moved, 0, axis))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_removing_channels_with_zero_effect_gives_identical_outputs(kind):
    model = MODELS[kind]()
    fraction = 0.5
    removed = {g.name: list(range(int(np.floor(fraction * g.size)))) for g in ChannelGraph(model).groups() if g.prunable}
    assert removed, "the model has no prunable group"
    _zero_removed_inputs(model, removed)

    def importance(group):
        scores = np.ones(group.size)
        scores[removed[group.name]] = 0.0
        return scores

    x = np.random.default_rng(0).normal(size=(4, *model.input_shape[1:])).astype("float32")
    small = prune_channels(model, ChannelPruneConfig(fraction=fraction, importance=importance))
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    assert small.count_params() < model.count_params()
    assert macs(small)["total"] < macs(model)["total"]


def test_the_pruned_model_saves_and_loads_without_custom_objects(tmp_path):
    model = residual()
    small = prune_channels(model, ChannelPruneConfig(fraction=0.5))
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(1).normal(size=(2, 10, 10, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), small.predict(x, verbose=0), rtol=1e-6)
    assert loaded.get_layer("a1").filters == 3 and loaded.get_layer("stem").filters == 4


def test_macs_match_hand_counts():
    counts = macs(zoo.lenet5())
    assert counts["layers"]["conv1"] == 24 * 24 * 5 * 5 * 1 * 20
    assert counts["layers"]["conv2"] == 8 * 8 * 5 * 5 * 20 * 50
    assert counts["layers"]["fc1"] == 800 * 500 and counts["layers"]["fc2"] == 500 * 10
    assert counts["total"] == 2_293_000
    sep = macs(residual())["layers"]["sep"]
    assert sep == 10 * 10 * (9 * 8 + 8 * 8)


def test_the_planned_macs_are_the_built_models_macs():
    for builder in (zoo.mobilenet_v2_tiny, residual, dense_concat, squeeze_excite):
        model = builder()
        plan = plan_channels(model, ChannelPruneConfig(fraction=0.5, round_to=2))
        from keras_compress.structured.api import build_pruned

        assert plan.macs_after == macs(build_pruned(model, plan))["total"]


def test_round_to_and_min_channels_bound_the_kept_counts():
    model = plain_cnn()
    small = prune_channels(model, ChannelPruneConfig(fraction=0.9, round_to=4))
    assert small.get_layer("c1").filters == 4 and small.get_layer("c2").filters == 4
    small = prune_channels(model, ChannelPruneConfig(fraction=0.9, min_channels=6))
    assert small.get_layer("c1").filters == 6


def test_a_macs_target_is_met():
    model = zoo.mobilenet_v2_tiny()
    plan = plan_channels(model, ChannelPruneConfig(fraction=0.9, macs_target=0.5))
    assert plan.macs_after <= 0.5 * plan.macs_before
    assert plan.macs_after > 0.3 * plan.macs_before  # bisection, not the upper bound
    with pytest.raises(ValueError, match="macs_target=0.01 cannot be met"):
        plan_channels(model, ChannelPruneConfig(fraction=0.5, macs_target=0.01))


def test_a_params_target_is_met_on_the_built_model():
    model = zoo.mobilenet_v2_tiny()
    small = prune_channels(model, ChannelPruneConfig(fraction=0.9, params_target=0.4))
    assert 0.25 * model.count_params() < small.count_params() <= 0.4 * model.count_params()
    with pytest.raises(ValueError, match="params_target=0.001 cannot be met"):
        plan_channels(model, ChannelPruneConfig(fraction=0.5, params_target=0.001))
    with pytest.raises(ValueError, match="set one budget"):
        ChannelPruneConfig(macs_target=0.5, params_target=0.5)
    with pytest.raises(ValueError, match="params_target must be None or a number in"):
        ChannelPruneConfig(params_target=1.5)


def test_a_latency_target_bisects_on_the_measured_latency_of_each_built_model(monkeypatch):
    from keras_compress.structured import api

    measured = []

    def fake_latency(model, work_dir, runs):  # deterministic: a latency proportional to the MACs
        measured.append(model)
        return 1e-3 * macs(model)["total"] / 1e6

    monkeypatch.setattr(api, "measure_latency", fake_latency)
    model = zoo.mobilenet_v2_tiny()
    small = prune_channels(model, ChannelPruneConfig(fraction=0.9, latency_target=0.5))
    assert measured[0] is model and len(measured) > 10  # the baseline, then one model per bisection step
    assert 0.35 * macs(model)["total"] < macs(small)["total"] <= 0.5 * macs(model)["total"]
    with pytest.raises(ValueError, match="latency_target=0.001 cannot be met"):
        plan_channels(model, ChannelPruneConfig(fraction=0.5, latency_target=0.001))
    with pytest.raises(ValueError, match="set one budget"):
        ChannelPruneConfig(params_target=0.5, latency_target=0.5)
    with pytest.raises(ValueError, match="allocation='sensitivity' spends a MACs budget"):
        ChannelPruneConfig(allocation="sensitivity", latency_target=0.5)
    with pytest.raises(ValueError, match="latency_runs must be an integer >= 1"):
        ChannelPruneConfig(latency_runs=0)


@pytest.mark.tensorflow
def test_the_latency_budget_times_a_real_float32_litert_file(tmp_path):
    pytest.importorskip("tensorflow")
    from keras_compress.structured.api import measure_latency

    seconds = measure_latency(plain_cnn(), str(tmp_path), 5)
    assert 0 < seconds < 1.0 and os.listdir(tmp_path) == ["probe.tflite"]


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "random"])
def test_every_importance_prunes_the_same_counts(importance):
    small = prune_channels(plain_cnn(), ChannelPruneConfig(fraction=0.5, importance=importance))
    assert small.get_layer("c1").filters == 4 and small.get_layer("c2").filters == 6


def test_l1_keeps_the_largest_filters():
    model = flatten_dense()
    kernel = np.array(model.get_layer("conv").kernel)
    kernel[..., [0, 2]] *= 100.0
    model.get_layer("conv").kernel.assign(kernel)
    small = prune_channels(model, ChannelPruneConfig(fraction=0.6))
    np.testing.assert_allclose(np.array(small.get_layer("conv").kernel), kernel[..., [0, 2]])


def test_bad_input_fails_clearly_and_leaves_the_model_untouched():
    model = plain_cnn()
    before = [np.array(w) for w in model.weights]
    with pytest.raises(ValueError, match="fraction must be a number in \\[0, 1\\)"):
        ChannelPruneConfig(fraction=1.0)
    with pytest.raises(ValueError, match="importance must be one of"):
        ChannelPruneConfig(importance="taylor2")
    with pytest.raises(ValueError, match="exclude='nothing_here' matches no layer"):
        prune_channels(model, ChannelPruneConfig(exclude="nothing_here"))
    with pytest.raises(TypeError, match="ChannelPruneConfig"):
        prune_channels(model, {"fraction": 0.5})
    sub = TinySubclassed()
    sub(np.zeros((1, 16), "float32"))
    with pytest.raises(ValueError, match="needs a Functional or Sequential model"):
        prune_channels(sub, ChannelPruneConfig())
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, np.array(new))


def test_exclude_leaves_matching_groups_whole():
    small = prune_channels(plain_cnn(), ChannelPruneConfig(fraction=0.5, exclude="^c2$"))
    assert small.get_layer("c2").filters == 12 and small.get_layer("c1").filters == 4


@pytest.mark.parametrize("importance", ["taylor", "fisher"])
def test_data_driven_importances_need_data_and_prune_the_same_counts(importance):
    model = plain_cnn()
    with pytest.raises(ValueError, match="pass data=\\(x, y\\)"):
        prune_channels(model, ChannelPruneConfig(importance=importance))
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(32, 12, 12, 3)).astype("float32"), rng.integers(0, 4, 32).astype("int32"))
    small = prune_channels(model, ChannelPruneConfig(fraction=0.5, importance=importance), data=data)
    assert small.get_layer("c1").filters == 4 and small.get_layer("c2").filters == 6


def test_magnitude_importance_ignores_normalization_statistics():
    model = plain_cnn()
    bn = model.get_layer("bn1")
    variance = np.ones(8, "float32")
    variance[:4] = 1e6  # huge moving variances must not make channels 0-3 look important
    bn.moving_variance.assign(variance)
    kernel = np.array(model.get_layer("c1").kernel)
    kernel[..., 4:] *= 10.0
    model.get_layer("c1").kernel.assign(kernel)
    small = prune_channels(model, ChannelPruneConfig(fraction=0.5))
    np.testing.assert_allclose(np.array(small.get_layer("c1").kernel), kernel[..., 4:])


def test_the_shipped_structured_recipe_parses_and_round_trips():
    import pathlib

    import yaml

    from keras_compress.cli.recipe import load_recipe

    path = pathlib.Path(__file__).resolve().parents[3] / "recipes" / "structured.yaml"
    recipe = load_recipe(path)
    assert recipe.steps[0].to_config() == ChannelPruneConfig(fraction=0.5, importance="l1", round_to=4)
    assert load_recipe(yaml.safe_dump(recipe.to_dict())) == recipe


@pytest.mark.parametrize("kind", ["bn_scale", "group_lasso"])
def test_sparsity_training_shrinks_the_penalised_channels_and_strips_off(kind):
    from keras_compress import strip
    from keras_compress.structured import channel_sparsity

    model = plain_cnn()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 12, 12, 3)).astype("float32"), rng.integers(0, 4, 64).astype("int32")
    def target_of(m):
        return m.get_layer("bn1").gamma if kind == "bn_scale" else m.get_layer("c1").kernel

    control = plain_cnn()  # the same model and data without the penalty
    zoo.compile_for_classification(control, 1e-2)
    keras.utils.set_random_seed(0)
    control.fit(x, y, epochs=5, batch_size=16, verbose=0)
    target = target_of(model)
    channel_sparsity(model, 0.05, kind)
    assert target.regularizer is not None and len(model.losses) >= 1
    zoo.compile_for_classification(model, 1e-2)
    keras.utils.set_random_seed(0)
    model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert float(np.abs(np.array(target)).sum()) < 0.9 * float(np.abs(np.array(target_of(control))).sum())
    strip(model)
    assert target.regularizer is None
    with pytest.raises(ValueError, match="kind must be one of"):
        channel_sparsity(model, 0.1, "l0")


def test_sensitivity_allocation_meets_the_budget_and_spares_the_fragile_group():
    model = plain_cnn()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 12, 12, 3)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)  # the model is 100% right on its own labels
    # c2's channels all matter (each feeds the head strongly); c1's barely do.
    head = np.array(model.get_layer("head").kernel) * 10
    model.get_layer("head").kernel.assign(head)
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    with pytest.raises(ValueError, match="set macs_target"):
        ChannelPruneConfig(allocation="sensitivity")
    config = ChannelPruneConfig(allocation="sensitivity", macs_target=0.7)
    with pytest.raises(ValueError, match="pass data"):
        plan_channels(model, config)
    plan = plan_channels(model, config, data=(x, y))
    assert plan.macs_after <= 0.7 * plan.macs_before
    summary = plan.summary()
    assert set(summary["fraction"]) == {"c1", "c2"}
    assert {name for name, curve in plan.curves.items()} == {"c1", "c2"}
    for curve in plan.curves.values():
        assert curve[0] == (0.0, 1.0) and len(curve) == 4
    with pytest.raises(ValueError, match="cannot be met"):
        plan_channels(model, ChannelPruneConfig(allocation="sensitivity", macs_target=0.01), data=(x, y))


def test_recalibration_sets_the_moving_statistics_to_the_data_s_own():
    from keras_compress.structured import recalibrate_batchnorm

    seeded()
    inputs = keras.Input((6,))
    bn = layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, bn(inputs))
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(512, 6)) * 3 + 5).astype("float32")
    bn.trainable = False  # frozen layers are recalibrated too, and stay frozen
    assert recalibrate_batchnorm(model, x, batches=4, batch_size=128) == 1
    np.testing.assert_allclose(np.array(bn.moving_mean), x.mean(axis=0), rtol=1e-4)
    batch_vars = np.stack([x[i * 128:(i + 1) * 128].var(axis=0) for i in range(4)])
    np.testing.assert_allclose(np.array(bn.moving_variance), batch_vars.mean(axis=0), rtol=1e-3)
    assert bn.momentum == 0.99 and bn.trainable is False
    gamma = np.array(bn.gamma)
    np.testing.assert_array_equal(gamma, np.ones(6))  # no weight trained


def test_macs_of_a_variable_length_sequence_model_list_what_they_cannot_count():
    seeded()
    inputs = keras.Input((None, 4))
    x = layers.Conv1D(8, 3, name="conv")(inputs)
    x = layers.GlobalAveragePooling1D()(x)
    counts = macs(keras.Model(inputs, layers.Dense(2, name="head")(x)))
    assert counts["not_counted"] == ["conv"] and counts["layers"] == {"head": 16}
