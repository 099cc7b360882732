import keras
import numpy as np
import pytest
from keras import ops

import builders
import keras_compress as kc
from keras_compress.importance import ImportanceRegularizerCallback, ImportanceRegularizerConfig, regularize
from keras_compress.ops import regularizers as reg_ops


def test_coefficients_have_mean_one_and_punish_unimportant_weights_more():
    scores = np.array([[0.0, 1.0], [2.0, 5.0]], "float32")
    c = ops.convert_to_numpy(reg_ops.importance_coefficients(scores, epsilon=0.1))
    assert c.mean() == pytest.approx(1.0, rel=1e-5)
    assert c[0, 0] > c[0, 1] > c[1, 0] > c[1, 1]
    # By hand: normalised s/mean = [0, .5, 1, 2.5]; 1/(n + .1) then / mean.
    raw = 1.0 / (np.array([[0.0, 0.5], [1.0, 2.5]]) + 0.1)
    np.testing.assert_allclose(c, raw / raw.mean(), rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(reg_ops.importance_coefficients(np.zeros(3))), 1.0, rtol=1e-6)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_penalty_gradient_matches_finite_differences(norm):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3)).astype("float64")
    w[np.abs(w) < 0.05] = 0.1  # keep away from |w|'s kink at 0
    coefficients = rng.uniform(0.2, 3.0, size=(4, 3))
    regularizer = kc.importance.ImportanceRegularizer(keras.Variable(coefficients.astype("float32")), 0.01, norm)
    got = builders.autodiff_gradient(regularizer, w.astype("float32"))

    def penalty(values):
        term = np.abs(values) if norm == "l1" else values**2
        return 0.01 * np.sum(coefficients.astype("float32") * term)

    numeric = np.zeros_like(w)
    h = 1e-5
    for index in np.ndindex(w.shape):
        up, down = w.copy(), w.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (penalty(up) - penalty(down)) / (2 * h)
    np.testing.assert_allclose(got, numeric, rtol=1e-3, atol=1e-6)


def test_fit_adds_the_weighted_penalty_and_the_callback_refreshes_it():
    model = builders.functional()
    x, y = builders.dense_data(128)
    config = ImportanceRegularizerConfig(strength=1e-3, refresh_every=2)
    regularize(model, config, (x, y))
    kernel = model.get_layer("hidden").kernel
    state = kc.importance.regularizer.get_state(model)
    item = next(i for i in state.weights if i.variable is kernel)
    expected = 1e-3 * np.sum(item.coefficients.numpy() * np.abs(kernel.numpy()))
    losses = [float(ops.convert_to_numpy(loss)) for loss in model.losses]
    assert any(loss == pytest.approx(expected, rel=1e-5) for loss in losses)
    before = item.coefficients.numpy().copy()
    builders.compile_tiny(model)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[ImportanceRegularizerCallback()])
    assert state.step == 4
    assert not np.allclose(before, item.coefficients.numpy())  # refreshed at step 2


def test_strip_restores_the_weights_own_regularizers(tmp_path):
    model = builders.functional()
    x, y = builders.dense_data(64)
    regularize(model, ImportanceRegularizerConfig(), (x, y))
    assert model.losses
    kc.strip(model)
    assert not model.losses
    assert model.get_layer("hidden").kernel.regularizer is None
    model.save(str(tmp_path / "m.keras"))
    keras.saving.load_model(str(tmp_path / "m.keras"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(norm="l3"), "norm must be one of"),
    (dict(method="random"), "method must be one of"),
    (dict(strength=-1.0), "strength must be a number >= 0"),
    (dict(refresh_every=0), "refresh_every"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImportanceRegularizerConfig(**kwargs)


def test_scoring_methods_need_data():
    with pytest.raises(ValueError, match="needs data"):
        regularize(builders.functional(), ImportanceRegularizerConfig(method="taylor"))
