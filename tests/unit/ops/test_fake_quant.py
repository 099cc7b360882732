import numpy as np
import pytest
from keras import ops

import builders

from keras_compress.ops import fake_quant as fq


def reference_weight(w, bits, axis):
    """Symmetric narrow-range quantization, written out by hand."""
    levels = 2 ** (bits - 1) - 1
    if axis is None:
        m = np.abs(w).max()
    else:
        m = np.abs(np.moveaxis(w, axis, -1)).reshape(-1, w.shape[axis]).max(axis=0)
        shape = [1] * w.ndim
        shape[axis] = -1
        m = m.reshape(shape)
    scale = m / levels
    return np.clip(np.floor(w / scale + 0.5), -levels, levels) * scale


def reference_activation(x, low, high, bits):
    """Asymmetric quantization with TensorFlow's zero-point nudging."""
    low, high = min(low, 0.0), max(high, 0.0)
    levels = 2**bits - 1
    scale = (high - low) / levels
    zero = np.round(-low / scale)
    q = np.clip(np.floor(x / scale + zero + 0.5), 0, levels)
    return (q - zero) * scale


@pytest.mark.parametrize("axis", [None, -1, 0])
@pytest.mark.parametrize("bits", [8, 4])
def test_weight_fake_quant_matches_hand_computed(axis, bits):
    w = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    got = ops.convert_to_numpy(fq.fake_quant_weight(w, bits, axis))
    np.testing.assert_allclose(got, reference_weight(w, bits, axis), rtol=1e-5, atol=1e-6)
    # At most 2 * (2**(bits-1) - 1) + 1 levels per channel, largest magnitude exact.
    channels = got.T if axis == -1 else got if axis == 0 else got.reshape(1, -1)
    for row in channels:
        assert len(np.unique(row)) <= 2 ** bits - 1


def test_weight_fake_quant_keeps_zeros_and_all_zero_channels():
    w = np.array([[0.0, 0.5], [0.0, -1.0], [0.0, 0.0]], "float32")
    got = ops.convert_to_numpy(fq.fake_quant_weight(w, 8, -1))
    assert np.all(got[:, 0] == 0.0)
    assert got[2, 1] == 0.0
    assert got[1, 1] == pytest.approx(-1.0, abs=1e-7)
    assert np.isfinite(got).all()


def test_activation_fake_quant_matches_hand_computed():
    x = np.linspace(-3.1, 5.3, 97).astype("float32")
    got = ops.convert_to_numpy(fq.fake_quant_activation(x, -2.0, 4.0, 8))
    np.testing.assert_allclose(got, reference_activation(x, -2.0, 4.0, 8), atol=1e-5)
    assert got.min() >= -2.0 - 1e-6 and got.max() <= 4.0 + 0.03  # clipped to the range


def test_activation_range_always_contains_zero():
    x = np.array([0.0, 1.0, 2.0], "float32")
    got = ops.convert_to_numpy(fq.fake_quant_activation(x, 0.5, 2.0, 8))
    assert got[0] == 0.0  # 0 exact even though the observed range started at 0.5


def test_moving_range_first_batch_sets_then_averages():
    low, high = fq.moving_range(0.0, 0.0, np.array([-1.0, 3.0]), 0.9, 0.0)
    assert float(low) == -1.0 and float(high) == 3.0
    low, high = fq.moving_range(low, high, np.array([-2.0, 1.0]), 0.9, 1.0)
    assert float(low) == pytest.approx(0.9 * -1.0 + 0.1 * -2.0)
    assert float(high) == pytest.approx(0.9 * 3.0 + 0.1 * 1.0)


def test_quant_params_match_the_converters_int8_scheme():
    scale, zero = fq.quant_params(-1.0, 3.0, 8)
    assert float(scale) == pytest.approx(4.0 / 255)
    assert float(zero) == round(1.0 / (4.0 / 255)) - 128


def test_fold_batchnorm_equals_dense_then_normalization():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 4)).astype("float32")
    kernel, bias = rng.normal(size=(4, 3)), rng.normal(size=3)
    gamma, beta, mean = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3)
    var = rng.uniform(0.5, 2.0, size=3)
    expected = ((x @ kernel + bias) - mean) / np.sqrt(var + 1e-3) * gamma + beta
    k, b = fq.fold_batchnorm(kernel, bias, gamma, beta, mean, var, 1e-3)
    np.testing.assert_allclose(x @ ops.convert_to_numpy(k) + ops.convert_to_numpy(b), expected, rtol=1e-5, atol=1e-5)
    k, b = fq.fold_batchnorm(kernel, None, None, None, mean, var, 1e-3)
    np.testing.assert_allclose(x @ ops.convert_to_numpy(k) + ops.convert_to_numpy(b),
                               (x @ kernel - mean) / np.sqrt(var + 1e-3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [1, 9, 8.0, True, "8"])
def test_bad_bit_widths_are_refused(bits):
    with pytest.raises(ValueError, match="num_bits must be an int in \\[2, 8\\]"):
        fq.check_bits(bits)


def test_bias_fake_quant_is_the_int32_grid_of_input_times_weight_scale():
    bias = np.array([0.10003, -0.2, 0.0, 1e-9], "float32")
    limit = np.array([1.27, 2.54, 1.27, 1.27], "float32")  # weight scales 0.01, 0.02, 0.01, 0.01
    got = ops.convert_to_numpy(fq.fake_quant_bias(bias, 0.5, limit, 8))
    scale = 0.5 * limit.astype("float64") / 127  # 0.005, 0.01, 0.005, 0.005
    np.testing.assert_allclose(got, np.round(bias / scale) * scale, rtol=1e-6, atol=1e-9)
    assert got[0] == pytest.approx(0.1, rel=1e-6)  # 20.006 levels -> 20
    assert got[2] == 0.0 and got[3] == 0.0
    # Per-tensor weights: a scalar limit; 4-bit weights: scale limit / 7.
    got4 = ops.convert_to_numpy(fq.fake_quant_bias(bias, 0.5, np.float32(0.7), 4))
    np.testing.assert_allclose(got4, np.round(bias / 0.05) * 0.05, atol=1e-7)
    # An all-zero (pruned) channel: the weight range is 1e-8, so 0.5 would need
    # ~8e10 levels; the converter widens that scale instead, so the bias stays.
    limit = np.array([1e-8, 1.27], "float32")
    got = ops.convert_to_numpy(fq.fake_quant_bias(np.array([0.5, 0.5], "float32"), 0.02, limit, 8))
    assert got[0] == np.float32(0.5)
    assert got[1] == pytest.approx(np.round(0.5 / 2e-4) * 2e-4, rel=1e-6)


def test_bias_fake_quant_passes_the_gradient_straight_through():
    def loss(b):
        return ops.sum(fq.fake_quant_bias(b, 0.1, 1.0, 8) * np.array([2.0, 3.0], "float32"))

    grad = builders.autodiff_gradient(loss, np.array([0.1234, -0.5], "float32"))
    np.testing.assert_allclose(grad, [2.0, 3.0])


def test_bias_min_limit_is_the_smallest_range_whose_bias_grid_holds_the_bias():
    bias = np.array([0.5, -2.0, 0.0], "float32")
    limit = ops.convert_to_numpy(fq.bias_min_limit(bias, 0.02, 8))
    levels = np.abs(bias) / (0.02 * limit.astype("float64") / 127)
    assert np.all(levels[:2] <= 2**31 - 1) and np.all(levels[:2] > 0.98 * 2**31)  # just enough
    assert limit[2] == 0.0
    assert float(fq.bias_min_limit(bias, 0.02, 8, per_tensor=True)) == pytest.approx(limit[1])


def test_an_average_rounds_half_away_from_zero_in_signed_levels_as_litert_pools_do():
    scale = 1.0 / 255  # range [0, 1]: zero point -128
    values = np.array([1.5, 200.5, 128.5, 3.25, 3.75], "float32") * scale  # levels -126.5, 72.5, 0.5, ...
    got = np.asarray(ops.convert_to_numpy(fq.fake_quant_average(values, 0.0, 1.0))) / scale
    # -126.5 -> -127 (1 above the zero point); 72.5 -> 73 (201); 0.5 -> 1 (129); 3.25 -> 3; 3.75 -> 4
    np.testing.assert_allclose(got, [1.0, 201.0, 129.0, 3.0, 4.0], atol=1e-3)
    plain = np.asarray(ops.convert_to_numpy(fq.fake_quant_activation(values, 0.0, 1.0))) / scale
    assert round(float(plain[0])) == 2  # a plain fake quantization rounds that tie up


def test_swish_as_litert_multiplies_by_the_sigmoid_on_logistics_fixed_grid():
    x = np.linspace(-6.0, 6.0, 601).astype("float32")
    sigmoid = 1.0 / (1.0 + np.exp(-x.astype("float64")))
    on_grid = ops.convert_to_numpy(fq.swish_as_litert(ops.convert_to_tensor(x)))
    exact = ops.convert_to_numpy(fq.swish_as_litert(ops.convert_to_tensor(x), sigmoid_on_grid=False))
    np.testing.assert_allclose(exact, x * sigmoid, rtol=1e-5, atol=1e-6)
    gate = np.clip(np.floor(sigmoid * 256 + 0.5), 0, 255) / 256  # LOGISTIC's int8 output: 1/256, zero point -128
    np.testing.assert_allclose(on_grid, x * gate, rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(on_grid - exact)) > 1e-3  # the grid is a real difference, not float noise


def test_requantize_uses_xnnpacks_eight_bit_ratio_and_rounds_half_up():
    # Input grid: scale 1, zero point 0. Output grid: scale 1.1, zero point 0. XNNPACK's multiplier is
    # round(256 / 1.1) = 233: level 50 -> floor(50 * 233 / 256 + 0.5) = 46, where 50 / 1.1 = 45.45 rounds to 45.
    levels = np.arange(-128, 128).astype("float32")
    got = np.asarray(ops.convert_to_numpy(fq.requantize(levels, -128.0, 127.0, -140.8, 139.7))) / 1.1
    expected = np.clip(np.floor(levels * 233 / 256 + 0.5), -128, 127)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    plain = np.round(levels / 1.1)
    assert 0 < np.sum(expected != plain) < 20  # a real difference from a plain rounding, on a few levels
    assert got[50 + 128] == pytest.approx(46.0, abs=1e-4)


def test_requantize_outside_xnnpacks_ratios_is_a_plain_rounding_and_passes_the_gradient():
    # Ratio 1 / 300 (below 2**-8): LiteRT's builtin kernel, a 32-bit multiplier.
    levels = np.arange(-128, 128).astype("float32")
    got = np.asarray(ops.convert_to_numpy(fq.requantize(levels, -128.0, 127.0, -128.0 * 300, 127.0 * 300))) / 300
    np.testing.assert_allclose(got, np.round(levels / 300), atol=1e-4)
    grad = builders.autodiff_gradient(lambda t: ops.sum(fq.requantize(t, -128.0, 127.0, -140.8, 139.7)), levels)
    np.testing.assert_allclose(grad, np.ones(256), atol=1e-6)


def test_layer_normalization_as_litert_rounds_the_integer_mean_half_to_even():
    scale, zero = fq.quant_params(-1.0, 1.0, 8)
    scale, zero = float(ops.convert_to_numpy(scale)), float(ops.convert_to_numpy(zero))
    # Levels whose mean is a tie: 2.5 goes to 2, 3.5 to 4 (half away from zero would give 3 and 4).
    levels = np.array([[1, 2, 3, 4], [2, 3, 4, 5]], "float32")
    x = (levels - zero) * scale
    gamma, beta = np.array([1.0, 2.0, 0.5, 1.0], "float32"), np.array([0.0, 0.1, 0.0, -0.1], "float32")
    got = ops.convert_to_numpy(fq.layer_normalization_as_litert(x, gamma, beta, 1e-3, -1.0, 1.0))
    mean = (np.array([[2.0], [4.0]], "float32") - zero) * scale
    centered = x - mean
    want = centered / np.sqrt((centered ** 2).mean(-1, keepdims=True) + 1e-3) * gamma + beta
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    exact = ops.convert_to_numpy(ops.layer_normalization(x, gamma, beta, -1, 1e-3))
    assert np.abs(got - exact).max() > 1e-3  # the rounded mean is not the exact one
