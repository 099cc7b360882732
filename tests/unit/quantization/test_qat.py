import keras
import numpy as np
import pytest
from keras import layers, ops

import builders
import keras_compress as kc
from keras_compress.ops import fake_quant as fq
from keras_compress.quantization import api as qat


def bn_model(seed=0):
    """Conv -> BN -> ReLU6 -> Depthwise -> BN -> ReLU -> Add -> Concatenate -> Dense, BN stats set."""
    builders.seeded(seed)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(6.0, name="relu6")(x)
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = layers.BatchNormalization(name="dw_bn")(y)
    y = layers.ReLU(name="dw_relu")(y)
    z = layers.Add(name="add")([x, y])
    z = layers.Concatenate(name="concat")([z, x])
    z = layers.MaxPooling2D(name="pool")(z)
    z = layers.GlobalAveragePooling2D(name="gap")(z)
    outputs = layers.Dense(4, activation="softmax", name="out")(z)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for bn in (model.get_layer("bn"), model.get_layer("dw_bn")):
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, n))
        bn.beta.assign(rng.normal(size=n) * 0.1)
        bn.moving_mean.assign(rng.normal(size=n) * 0.1)
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, n))
    return model


def images(n=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 8, 8, 3)).astype("float32")


def test_batchnorm_folding_keeps_the_float_function():
    model = bn_model()
    x = images()
    expected = ops.convert_to_numpy(model(x, training=False))
    kc.quantize(model, kc.QATConfig())
    restore = qat.detach_for_saving(model)  # folded, no fake quantization
    np.testing.assert_allclose(ops.convert_to_numpy(model(x, training=False)), expected, rtol=1e-4, atol=1e-5)
    restore()
    assert model.get_layer("conv").bias is not None  # folding gave it a bias


def test_plan_follows_litert_fusion():
    model = bn_model()
    kc.quantize(model, kc.QATConfig(), calibration_data=images())
    rows = {r["layer"]: r for r in kc.quantization_summary(model)}
    assert rows["conv"]["treatment"] == "weights (output fused)"
    assert rows["bn"]["treatment"] == "folded into conv"
    assert rows["dw_bn"]["treatment"] == "folded into dw"
    assert rows["relu6"]["treatment"] == "output" and rows["relu6"]["range"][0] == 0.0
    assert rows["relu6"]["range"][1] <= 6.0
    # The Add feeds only the Concatenate, whose int8 kernel gives its inputs its own scale: no range of its own.
    assert rows["add"]["treatment"] == "output fused" and rows["concat"]["treatment"] == "output"
    assert rows["pool"]["treatment"] == "pass-through"
    assert rows["out"]["treatment"] == "weights+output"  # quantized before the softmax
    assert rows["conv"]["per_channel"] and not rows["out"]["per_channel"]
    assert any(r["treatment"] == "input" and r["range"] == (0.0, pytest.approx(1.0, abs=0.01))
               for r in rows.values())


def test_qat_model_is_close_to_the_float_model_after_calibration():
    model = bn_model()
    x = images(64)
    expected = ops.convert_to_numpy(model(x, training=False))
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    got = ops.convert_to_numpy(model(x, training=False))
    assert not np.array_equal(got, expected)  # it does quantize
    np.testing.assert_allclose(got, expected, atol=0.03)


def test_fit_moves_the_ranges_and_trains():
    model = builders.functional()
    x, y = builders.dense_data(128)
    kc.quantize(model, kc.QATConfig(ema_decay=0.5))
    assert all(v is None for v in kc.quantization.quantization_ranges(model).values())
    builders.compile_tiny(model)
    before = model.get_layer("hidden").kernel.numpy().copy()
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    ranges = kc.quantization.quantization_ranges(model)
    assert ranges["hidden/output"][0] == 0.0 and ranges["hidden/output"][1] > 0.1
    assert ranges["out/output"][0] < 0.0 < ranges["out/output"][1]
    assert not np.array_equal(before, model.get_layer("hidden").kernel.numpy())
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_strip_leaves_weights_on_the_int8_grid_and_a_plain_model(tmp_path):
    model = bn_model()
    kc.quantize(model, kc.QATConfig(), calibration_data=images())
    kc.strip(model)
    assert not kc.is_quantized(model)
    kernel = model.get_layer("conv").kernel.numpy()
    scale = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0) / 127
    np.testing.assert_allclose(kernel / scale, np.round(kernel / scale), atol=1e-3)
    names = [v.path for v in model.variables]
    assert not any("qat_" in name for name in names)
    x = images()
    expected = ops.convert_to_numpy(model(x, training=False))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x, training=False)), expected, atol=1e-6)


def test_pruned_zeros_stay_zero_through_qat():
    model = builders.functional()
    x, y = builders.dense_data(128)
    kc.prune(model, kc.PruneConfig(0.75))
    kc.strip(model)
    zeros = model.get_layer("hidden").kernel.numpy() == 0
    assert zeros.mean() == pytest.approx(0.75, abs=0.01)
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    builders.compile_tiny(model)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    kernel = model.get_layer("hidden").kernel.numpy()
    assert np.all(kernel[zeros] == 0.0)
    kc.strip(model)
    assert np.all(model.get_layer("hidden").kernel.numpy()[zeros] == 0.0)


@pytest.mark.parametrize("case", sorted(builders.LAYER_CASES))
def test_each_layer_type_quantizes_and_runs(case):
    model = builders.layer_model(case)
    x = builders.layer_input(case, 16)
    expected = ops.convert_to_numpy(model(x))
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    layer = model.layers[1]
    rows = {r["layer"]: r for r in kc.quantization_summary(model)}
    if case.startswith("conv3d"):  # LiteRT has no int8 3D convolution
        assert rows[layer.name]["treatment"] == "float op, output quantized"
        assert "no int8 kernel" in rows[layer.name]["reason"]
    else:
        assert rows[layer.name]["treatment"].startswith("weights"), rows[layer.name]
    got = ops.convert_to_numpy(model(x))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=0.15 * (np.abs(expected).max() + 1e-3))


def test_separable_convolution_channels_first_adds_its_bias_per_channel():
    model = keras.Sequential([keras.Input((4, 9, 8)),
                              layers.SeparableConv2D(5, 3, data_format="channels_first", name="sep")])
    bias = np.linspace(-1.0, 1.0, 5).astype("float32")  # a wrong broadcast would be far off
    model.get_layer("sep").bias.assign(bias)
    x = np.random.default_rng(0).uniform(0, 1, (16, 4, 9, 8)).astype("float32")
    expected = ops.convert_to_numpy(model(x))
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    got = ops.convert_to_numpy(model(x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max())


@pytest.mark.parametrize("kind", sorted(builders.MODEL_KINDS))
def test_every_model_kind_trains_under_qat(kind):
    model = builders.MODEL_KINDS[kind]()
    x, y = builders.dense_data(64)
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    builders.compile_tiny(model)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    ranges = kc.quantization.quantization_ranges(model)
    assert ranges and all(value is not None for value in ranges.values())
    kc.strip(model)
    assert np.isfinite(ops.convert_to_numpy(model(x))).all()


def test_layers_without_a_rule_stay_float_and_are_named():
    builders.seeded()
    inputs = keras.Input((5, 4))
    x = layers.GRU(6, name="gru")(inputs)
    outputs = layers.Dense(2, name="out")(x)
    model = keras.Model(inputs, outputs)
    kc.quantize(model, kc.QATConfig())
    rows = {r["layer"]: r for r in kc.quantization_summary(model)}
    floats = {r["layer"]: r["reason"] for r in rows.values() if r["treatment"] == "float"}
    assert any("no quantization rule" in reason for reason in floats.values()), floats
    assert rows["out"]["treatment"].startswith("weights")


def test_layer_filter_leaves_layers_float():
    model = builders.functional()
    kc.quantize(model, kc.QATConfig(layers="out"))
    rows = {r["layer"]: r for r in kc.quantization_summary(model)}
    assert rows["hidden"]["treatment"] == "float"
    assert rows["out"]["treatment"].startswith("weights")


def test_subclassed_model_keeps_its_batchnorm_unfolded():
    @keras.saving.register_keras_serializable(package="tests_qat")
    class WithBN(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = layers.Dense(8)
            self.norm = layers.BatchNormalization()
            self.out = layers.Dense(2)

        def call(self, x, training=None):
            return self.out(self.norm(self.dense(x), training=training))

    builders.seeded()
    model = WithBN()
    x, _ = builders.dense_data(32)
    model(x)
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    treatments = {r["layer"]: r["treatment"] for r in kc.quantization_summary(model)}
    assert treatments[model.norm.name] == "output"
    # Not folded: folding would have set the variance to 1 - epsilon.
    np.testing.assert_array_equal(model.norm.moving_variance.numpy(), 1.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(calibration_data=np.zeros((0, 16), "float32")), ValueError, "calibration_data is empty"),
        (dict(calibration_data=np.zeros((4, 7), "float32")), ValueError, "calibration_data sample"),
        (dict(calibration_data=np.full((4, 16), np.nan, "float32")), ValueError, "NaN or inf"),
        (dict(calibration_data=np.array([["a"] * 16])), ValueError, "numeric"),
        (dict(config=kc.PruneConfig(0.5)), TypeError, "config must be a QATConfig"),
        (dict(config="int3"), ValueError, "Unknown Keras quantization mode"),
        (dict(config="gptq"), ValueError, "needs calibration settings"),
    ],
)
def test_bad_input_raises_and_leaves_the_model_untouched(kwargs, error, match):
    model = builders.functional()
    before = [v.numpy().copy() for v in model.variables]
    with pytest.raises(error, match=match):
        kc.quantize(model, **kwargs)
    assert not kc.is_quantized(model)
    assert "call" not in vars(model.get_layer("hidden"))
    assert len(model.variables) == len(before)
    for a, b in zip(before, model.variables):
        np.testing.assert_array_equal(a, b.numpy())


def test_nan_weights_and_double_quantize_and_no_trainable_variables_are_refused():
    model = builders.functional()
    kernel = model.get_layer("hidden").kernel
    kernel.assign(np.where(np.eye(*kernel.shape) > 0, np.nan, kernel.numpy()))
    with pytest.raises(ValueError, match="NaN or inf"):
        kc.quantize(model)
    model = builders.functional()
    kc.quantize(model)
    with pytest.raises(ValueError, match="already prepared for QAT"):
        kc.quantize(model)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="has no weights to quantize"):
        kc.quantize(model)


def test_frozen_layers_are_quantized_and_stay_frozen():
    model = builders.functional()
    frozen = model.get_layer("hidden")
    frozen.trainable = False
    kc.quantize(model)
    rows = {r["layer"]: r for r in kc.quantization_summary(model)}
    assert rows["hidden"]["treatment"].startswith("weights") and rows["hidden"]["weight_bits"] == 8
    assert not frozen.kernel.trainable and frozen.trainable_variables == []


@pytest.mark.parametrize("field, value", [("weight_bits", 9), ("activation_bits", 1), ("ema_decay", 1.0),
                                          ("per_channel", "yes")])
def test_config_validation(field, value):
    with pytest.raises((ValueError, TypeError), match=field):
        kc.QATConfig(**{field: value})


def test_config_round_trips():
    config = kc.QATConfig(weight_bits=4, layers="conv")
    assert kc.QATConfig.from_dict(config.to_dict()) == config
    assert not config.deployable and kc.QATConfig().deployable


def test_four_bit_weights_use_at_most_fifteen_levels():
    model = builders.functional()
    x, _ = builders.dense_data(32)
    kc.quantize(model, kc.QATConfig(weight_bits=4), calibration_data=x)
    kc.strip(model)
    kernel = model.get_layer("hidden").kernel.numpy()
    assert len(np.unique(kernel)) <= 15


def test_qat_on_a_clustered_model_keeps_the_clusters():
    model = builders.functional()
    x, y = builders.dense_data(128)
    kc.cluster(model, kc.ClusterConfig(num_clusters=8, init="linear"))
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    builders.compile_tiny(model)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    kc.strip(model)  # QAT's strip runs first and hands clustering its constraint back
    assert not kc.is_quantized(model) and not kc.is_clustered(model)
    for name in ("hidden", "out"):
        variable = model.get_layer(name).kernel
        assert variable.constraint is None
        kernel = variable.numpy()
        assert len(np.unique(kernel)) <= 8
        scale = np.abs(kernel).max() / 127  # Dense: one scale per tensor
        np.testing.assert_allclose(kernel / scale, np.round(kernel / scale), atol=1e-3)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_keras_modes_delegate_to_keras_model_quantize(mode):
    model = builders.functional()
    x, _ = builders.dense_data(32)
    expected = ops.convert_to_numpy(model(x))
    kc.quantize(model, mode)
    assert model.get_layer("hidden").quantization_mode == mode
    assert not kc.is_quantized(model)  # not QAT
    got = ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(got, expected, atol=0.1 if mode == "int8" else 0.6)


def test_keras_config_objects_and_filters_pass_through():
    model = builders.functional()
    kc.quantize(model, keras.quantizers.Int8QuantizationConfig(), layers="hidden")
    assert model.get_layer("hidden").quantization_mode == "int8"
    assert model.get_layer("out").quantization_mode is None


def test_quantize_and_strip_after_predict_use_the_new_forward_pass():
    # Keras reuses a compiled predict step; one traced before quantize would
    # skip the folded bias (a layer built without one) and the fake quantization.
    model = bn_model()
    x = images(64)
    float_out = model.predict(x, verbose=0)
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    eager = ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, atol=1e-6)
    assert not np.allclose(model.predict(x, verbose=0), float_out, atol=1e-6)
    restore = qat.detach_for_saving(model)
    np.testing.assert_allclose(model.predict(x, verbose=0), float_out, rtol=1e-4, atol=1e-5)
    restore()
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, atol=1e-6)
    kc.strip(model)
    np.testing.assert_allclose(model.predict(x, verbose=0), ops.convert_to_numpy(model(x, training=False)),
                               atol=1e-6)


def _on_grid(values, low, step):
    k = (values - low) / step
    return np.allclose(k, np.round(k), atol=1e-3)


@pytest.mark.parametrize("activation, low, step", [
    ("softmax", 0.0, 1 / 256), ("sigmoid", 0.0, 1 / 256), ("tanh", -1.0, 1 / 128),
])
def test_fixed_range_outputs_are_on_the_runtime_grid_when_predicting(activation, low, step):
    builders.seeded(0)
    inputs = keras.Input((6,))
    hidden = layers.Dense(8, activation="relu", name="hidden")(inputs)
    fused = layers.Dense(4, activation=activation, name="fused")(hidden)  # activation inside Dense
    alone = layers.Activation(activation, name="alone")(layers.Dense(4, name="logits")(hidden))
    model = keras.Model(inputs, [fused, alone])
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32") * 3
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    for out in model.predict(x, verbose=0):
        assert _on_grid(out, low, step), activation
    # Training sees exact values: a class rounded to 0 would lose its gradient.
    for out in model(x, training=True):
        assert not _on_grid(ops.convert_to_numpy(out), low, step)


def test_softmax_layer_output_is_on_the_runtime_grid_and_ties_as_on_device():
    builders.seeded(0)
    inputs = keras.Input((6,))
    outputs = layers.Softmax(name="softmax")(layers.Dense(22, name="logits")(inputs))
    model = keras.Model(inputs, outputs)
    kc.quantize(model, kc.QATConfig())
    # Logits range [-4, 127/32]: an int8 grid of steps of 1/32 with zero point 0.
    model.get_layer("logits").kernel.assign(np.zeros((6, 22), "float32"))
    model.get_layer("logits").bias.assign(np.array([1.0, 1.03125] + [0.96875] * 20, "float32"))
    ranges = kc.quantization.quantization_ranges(model)
    kc.quantization.set_quantization_ranges(
        model, {name: (-4.0, 127 / 32) if name == "logits/output" else (-1.0, 1.0) for name in ranges})
    probabilities = model.predict(np.zeros((2, 6), "float32"), verbose=0)
    assert _on_grid(probabilities, 0.0, 1 / 256)
    # Logit 1 is one int8 step above logit 0, but their probabilities
    # (11.95/256, 12.33/256) share a softmax output step: equal on the device, so equal here,
    # and an argmax takes the first, as on the device.
    assert probabilities[0, 0] == probabilities[0, 1]
    assert np.argmax(probabilities[0]) == 0
    float_probabilities = ops.convert_to_numpy(model(np.zeros((2, 6), "float32"), training=True))
    assert np.argmax(float_probabilities[0]) == 1


@pytest.mark.parametrize("assignment", ["fixed", "nearest"])
def test_folding_into_a_clustered_kernel_keeps_the_function_through_training_steps(assignment):
    # Folding scales each output channel differently; a cluster spanning
    # channels must become one shared value per channel, or the clustering
    # constraint averages the scaled values after the first step. A
    # nearest-centroid weight is first frozen to its current assignments.
    model = bn_model()
    x = images(64)
    kc.cluster(model, kc.ClusterConfig(num_clusters=4, init="linear", assignment=assignment))
    expected = model.predict(x, verbose=0)
    kc.quantize(model, kc.QATConfig(train_batchnorm=False))  # no calibration: no fake quantization yet
    restore = qat.detach_for_saving(model)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)
    restore()
    model.compile(keras.optimizers.SGD(learning_rate=0.0), "mse")
    model.fit(x, expected, epochs=1, batch_size=32, verbose=0)  # constraints applied, nothing learned
    restore = qat.detach_for_saving(model)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)
    restore()
    kc.strip(model)
    conv = model.get_layer("conv").kernel.numpy().reshape(-1, 6)
    dw = model.get_layer("dw").kernel.numpy().reshape(-1, 6)
    for kernel in (conv, dw):
        assert max(len(np.unique(kernel[:, c])) for c in range(6)) <= 4


def integer_dense_reference(model, x):
    """What LiteRT's int8 FULLY_CONNECTED computes, in integers: int8 input and
    weights, int32 bias (scale input x weight scale), accumulator, rounding to
    the output's int8 grid. Returns the dequantized output."""
    ranges = kc.quantization.quantization_ranges(model)
    s_in, z_in = (float(v) for v in fq.quant_params(*ranges[f"{model.name}/input"]))
    s_out, z_out = (float(v) for v in fq.quant_params(*ranges["fc/output"]))
    layer = model.get_layer("fc")
    w = ops.convert_to_numpy(layer.kernel.value).astype("float64")
    b = ops.convert_to_numpy(layer.bias.value).astype("float64")
    s_w = np.abs(w).max() / 127  # Dense: one scale per tensor
    x_q = np.clip(np.floor(x / s_in + 0.5) + z_in, -128, 127)
    acc = (x_q - z_in) @ np.round(w / s_w) + np.round(b / (s_in * s_w))
    y_q = np.clip(np.floor(acc * s_in * s_w / s_out + 0.5) + z_out, -128, 127)
    return (y_q - z_out) * s_out, s_out


def test_inference_adds_the_int32_bias_the_int8_kernel_adds(monkeypatch):
    model = keras.Sequential([keras.Input((2,)), layers.Dense(8, name="fc")], name="net")
    rng = np.random.default_rng(1)
    model.get_layer("fc").kernel.assign(rng.normal(size=(2, 8)).astype("float32"))
    model.get_layer("fc").bias.assign(rng.normal(size=8).astype("float32"))
    x = rng.uniform(-1, 1, (16384, 2)).astype("float32")
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    expected, step = integer_dense_reference(model, x)
    got = model.predict(x, verbose=0, batch_size=4096)
    # Float rounding may put a rare value near a half step on the other side.
    assert np.sum(np.abs(got - expected) > 0.5 * step) <= 2
    np.testing.assert_allclose(got, expected, atol=1.01 * step)
    # The float bias (what training uses) misses some of those levels.
    monkeypatch.setattr("keras_compress.quantization.patching._integer_inference", lambda state: False)
    qat.reset_compiled_functions(model)
    with_float_bias = model.predict(x, verbose=0, batch_size=4096)
    assert np.sum(np.abs(with_float_bias - expected) > 0.5 * step) >= 50  # 126 of 131,072 here


def two_inputs():
    builders.seeded()
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    x = layers.Concatenate()([layers.Dense(8, activation="relu", name="da")(a),
                              layers.Dense(8, activation="relu", name="db")(b)])
    return keras.Model([a, b], layers.Dense(3, name="out")(x))


def test_a_model_with_two_inputs_calibrates_from_a_list_or_a_dict_by_name():
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(64, 6)).astype("float32"), (3 * rng.normal(size=(64, 4))).astype("float32")
    ranges = []
    for calibration in ([x1, x2], {"b": x2, "a": x1}):
        model = two_inputs()
        kc.quantize(model, kc.QATConfig(), calibration_data=calibration)
        ranges.append({name.split("/")[-1] if "input" in name else name: value
                       for name, value in kc.quantization.quantization_ranges(model).items()
                       if "concatenate" not in name})
    assert ranges[0] == ranges[1]
    # Each input's range is its own data's (b spans about 3x a's).
    (a_low, a_high), (b_low, b_high) = ranges[0]["input0"], ranges[0]["input1"]
    assert a_low <= x1.min() and a_high >= x1.max() and b_high - b_low > 2 * (a_high - a_low)
    with pytest.raises(ValueError, match=r"calibration_data has no \['b'\]: the model's inputs are \['a', 'b'\]"):
        kc.quantize(two_inputs(), kc.QATConfig(), calibration_data={"a": x1})
    with pytest.raises(ValueError, match="calibration_data must hold one array per model input"):
        kc.quantize(two_inputs(), kc.QATConfig(), calibration_data=x1)
    with pytest.raises(ValueError, match="every input must hold the same number of samples"):
        kc.quantize(two_inputs(), kc.QATConfig(), calibration_data=[x1, x2[:10]])


def test_a_model_built_on_a_dict_of_inputs_calibrates_with_its_nested_dict_backbone():
    """As keras-hub's text backbones are used: `{"ids": ..., "mask": ...}` into a nested Functional that
    takes the same dict (calibration used to call the model with a list, which such a backbone refuses)."""
    builders.seeded()
    ids, mask = keras.Input((5,), dtype="int32", name="ids"), keras.Input((5,), dtype="int32", name="mask")
    embedded = layers.Embedding(20, 4, name="embed")(ids)
    gated = layers.Multiply()([embedded, layers.Reshape((5, 1))(ops.cast(mask, "float32"))])
    backbone = keras.Model({"ids": ids, "mask": mask}, layers.GlobalAveragePooling1D()(gated), name="backbone")
    inputs = {"mask": keras.Input((5,), dtype="int32", name="mask"), "ids": keras.Input((5,), dtype="int32", name="ids")}
    model = keras.Model(inputs, layers.Dense(3, name="head")(backbone(inputs)))
    rng = np.random.default_rng(0)
    data = {"ids": rng.integers(0, 20, (16, 5)).astype("int32"), "mask": np.ones((16, 5), "int32")}
    before = keras.ops.convert_to_numpy(model(data))
    kc.quantize(model, kc.QATConfig(), calibration_data=data)
    assert "head/output" in kc.quantization.quantization_ranges(model)
    low, high = kc.quantization.quantization_ranges(model)["head/output"]
    # The head's range is measured on these logits (its int8 weights move them by less than a step).
    np.testing.assert_allclose([low, high], [min(before.min(), 0), max(before.max(), 0)], atol=(high - low) / 255)

def _folded_reference(model, x, ranges):
    """The same weights quantized with BatchNormalization folded once and frozen, on the same ranges."""
    from keras_compress.quantization.planning import _ensure_bias

    reference = bn_model()
    _ensure_bias(reference.get_layer("conv"), 6)  # the bias quantize gave the training model's conv
    reference.set_weights(_float_weights(model))
    kc.quantize(reference, kc.QATConfig(train_batchnorm=False))
    kc.quantization.set_quantization_ranges(
        reference, {name.replace(model.name, reference.name): value for name, value in ranges.items()})
    return reference


def _float_weights(model):
    restore = qat.detach_for_saving(model)
    try:
        return model.get_weights()
    finally:
        restore()


def test_a_training_batchnorm_keeps_learning_and_is_folded_at_inference():
    model = bn_model()
    x = images(64)
    kc.quantize(model, kc.QATConfig(train_batchnorm=True), calibration_data=x)
    rows = {r["layer"]: r for r in kc.quantization_summary(model)}
    assert rows["bn"]["treatment"] == "folded into conv" and "batch statistics" in rows["bn"]["reason"]
    assert rows["dw_bn"]["treatment"] == "folded into dw"
    bn = model.get_layer("bn")
    assert bn.trainable and model.get_layer("conv").bias is not None  # a zero bias, for the fold
    before = {name: bn.get_weights()[i].copy() for i, name in enumerate(("gamma", "beta", "mean", "var"))}
    model.compile(keras.optimizers.SGD(learning_rate=0.05), "mse")
    model.fit(x, np.zeros((64, 4), "float32"), epochs=2, batch_size=16, verbose=0)
    after = dict(zip(("gamma", "beta", "mean", "var"), bn.get_weights()))
    for name in before:  # the scale and offset train; the moving statistics follow the batches
        assert not np.allclose(before[name], after[name]), name
    # In training the normalization uses the batch's statistics, not the moving ones.
    out = ops.convert_to_numpy(model(x, training=True))
    assert not np.allclose(out, model.predict(x, verbose=0), atol=1e-3)
    # At inference the model is what folding the moving statistics once gives, on the same ranges.
    ranges = kc.quantization.quantization_ranges(model)
    reference = _folded_reference(model, x, ranges)
    np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # strip folds it: the normalization becomes an identity and the kernel holds the folded, rounded weights.
    expected = model.predict(x, verbose=0)
    kc.strip(model)
    kc.strip(reference)
    assert np.allclose(model.get_layer("bn").moving_mean.numpy(), 0.0)
    np.testing.assert_allclose(model.get_layer("conv").get_weights()[0],
                               reference.get_layer("conv").get_weights()[0], rtol=1e-5, atol=1e-7)
    assert np.max(np.abs(model.predict(x, verbose=0) - expected)) < 0.05  # float now, no activation grids


def test_a_training_batchnorm_on_a_clustered_kernel_keeps_its_clusters_per_channel():
    model = bn_model()
    x = images(64)
    kc.cluster(model, kc.ClusterConfig(num_clusters=4))
    kc.quantize(model, kc.QATConfig(train_batchnorm=True), calibration_data=x)
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    model.fit(x, np.zeros((64, 4), "float32"), epochs=1, batch_size=16, verbose=0)
    kc.strip(model)
    for name in ("conv", "dw"):
        kernel = model.get_layer(name).kernel.numpy().reshape(-1, 6)
        assert max(len(np.unique(kernel[:, c])) for c in range(6)) <= 4


def test_a_batchnorm_after_a_per_tensor_kernel_is_folded_and_frozen():
    # Dense weights take one scale per tensor in LiteRT: folding per-channel scales does not commute with
    # the rounding, so the normalization is folded once and frozen even with train_batchnorm.
    builders.seeded(0)
    inputs = keras.Input((6,))
    x = layers.BatchNormalization(name="bn")(layers.Dense(5, name="fc")(inputs))
    model = keras.Model(inputs, layers.Dense(2, name="out")(x))
    kc.quantize(model, kc.QATConfig(train_batchnorm=True), calibration_data=np.ones((8, 6), "float32"))
    rows = {r["layer"]: r for r in kc.quantization_summary(model)}
    assert rows["bn"]["treatment"] == "folded into fc" and rows["bn"]["reason"] is None
    assert not model.get_layer("bn").trainable


def test_recalibrating_batchnorm_leaves_the_qat_ranges_alone():
    from keras_compress.training.batchnorm import recalibrate_batchnorm

    model = bn_model()
    x = images(64)
    kc.quantize(model, kc.QATConfig(train_batchnorm=True), calibration_data=x)
    ranges = kc.quantization.quantization_ranges(model)
    assert recalibrate_batchnorm(model, x * 3.0 + 1.0, batch_size=16) == 2
    assert kc.quantization.quantization_ranges(model) == ranges
    assert not np.allclose(model.get_layer("bn").moving_mean.numpy(), 0.0)


@pytest.mark.parametrize("inline", [False, True])
def test_swish_and_hard_swish_are_computed_as_the_int8_ops_they_export_as(inline):
    builders.seeded(0)
    inputs = keras.Input((6,))
    if inline:
        swish = layers.Dense(8, activation="swish", name="swish")(inputs)
        hard = layers.Dense(8, activation="hard_swish", name="hard")(inputs)
    else:
        swish = layers.Activation("swish", name="swish")(layers.Dense(8)(inputs))
        hard = layers.Activation("hard_swish", name="hard")(layers.Dense(8)(inputs))
    model = keras.Model(inputs, [swish, hard])
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32") * 3
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    ranges = kc.quantization.quantization_ranges(model)
    final = "activation" if inline else "output"
    for name in ("swish/" + final, "hard/" + final, "hard/hard_swish_shifted", "hard/hard_swish_gate"):
        assert name in ranges, sorted(ranges)
    swish_out, hard_out = model.predict(x, verbose=0)
    # An int8 grid holds 0 (the zero point is nudged onto it): multiples of the step.
    step = lambda name: (ranges[name][1] - ranges[name][0]) / 255  # noqa: E731
    assert _on_grid(swish_out, 0.0, step("swish/" + final))
    # Hard swish's gate is on its own int8 range; the output on the layer's.
    low, high = ranges["hard/hard_swish_gate"]
    assert high == pytest.approx(1.0, abs=0.02) and low == pytest.approx(0.0, abs=1e-6)
    assert _on_grid(hard_out, 0.0, step("hard/" + final))
    if inline:
        return
    # By hand from the int8 tensor before each activation: swish's sigmoid on LOGISTIC's grid, hard swish's
    # relu6(x + 3) and gate each on their ranges.
    def grid(values, name):
        return ops.convert_to_numpy(fq.fake_quant_activation(values, *ranges[name]))

    # (A model over the same layers: their calls are QAT's; the model's own input range applied by hand.)
    before = keras.Model(inputs, [model.get_layer("swish").input, model.get_layer("hard").input])
    swish_in, hard_in = before.predict(grid(x, f"{model.name}/input"), verbose=0)

    gate = np.clip(np.floor(256.0 / (1.0 + np.exp(-swish_in.astype("float64"))) + 0.5), 0, 255) / 256
    np.testing.assert_allclose(swish_out, grid((swish_in * gate).astype("float32"), "swish/output"), atol=1e-6)
    shifted = grid(np.clip(hard_in + 3.0, 0.0, 6.0), "hard/hard_swish_shifted")
    gate = grid(shifted / 6.0, "hard/hard_swish_gate")
    np.testing.assert_allclose(hard_out, grid(hard_in * gate, "hard/output"), atol=1e-6)
