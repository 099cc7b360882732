import keras
import numpy as np
import pytest

import builders
import keras_compress as kc
from keras_compress import importance

W = np.array([[0.5, -1.0], [2.0, 0.25]], "float32")
X = np.array([[2.0, 0.0]], "float32")
Y = np.array([[1.0, -1.0]], "float32")


def linear_model():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(2, use_bias=False, name="lin")(inputs))
    model.get_layer("lin").kernel.assign(W)
    return model


def hand_gradient():
    # loss = mean_j (x W - y)_j^2  ->  dL/dW_ij = x_i * (o_j - y_j)  (the 2 and the 1/2 cancel)
    residual = X @ W - Y
    return X.T @ residual


MSE = keras.losses.MeanSquaredError()


def test_taylor_and_fisher_match_hand_computed_gradients():
    g = hand_gradient()
    taylor = importance.score(linear_model(), (X, Y), "taylor", loss=MSE)
    np.testing.assert_allclose(taylor["lin/kernel"], np.abs(W * g), rtol=1e-5)
    fisher = importance.score(linear_model(), (X, Y), "fisher", loss=MSE)
    np.testing.assert_allclose(fisher["lin/kernel"], g * g, rtol=1e-5)


@pytest.mark.parametrize("hessian", importance.HESSIANS)
def test_obd_saliency_matches_the_exact_hessian_diagonal(hessian):
    model = linear_model()
    obd = importance.score(model, (X, Y), "obd", loss=MSE, hessian=hessian)
    if hessian == "hutchinson":
        # d2L/dW_ij^2 = x_i^2 (x = [2, 0] makes the off-diagonal terms vanish).
        h = np.repeat((X.T ** 2), 2, axis=1)
    else:
        h = hand_gradient() ** 2
    np.testing.assert_allclose(obd["lin/kernel"], 0.5 * h * W * W, rtol=1e-3, atol=1e-6)
    np.testing.assert_array_equal(np.array(model.get_layer("lin").kernel.value), W)  # restored


def test_magnitude_needs_no_data():
    np.testing.assert_array_equal(importance.score(linear_model(), None, "magnitude")["lin/kernel"], np.abs(W))


@pytest.mark.parametrize("method", importance.METHODS)
def test_names_cover_every_trainable_variable(method):
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="a"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(4, name="b")])
    x, y = builders.dense_data(32)
    scores = importance.score(model, (x, y), method, batch_size=16)
    assert sorted(scores) == sorted(["a/kernel", "a/bias", "bn/gamma", "bn/beta", "b/kernel", "b/bias"])
    for v in model.trainable_variables:
        name = v.path.split("/", 1)[1] if v.path.startswith(model.name + "/") else v.path
        assert scores[name].shape == tuple(v.shape)
        assert np.all(np.isfinite(scores[name])) and np.all(scores[name] >= 0)
    assert set(importance.aggregate(scores, by="layer")) == {"a", "bn", "b"}
    assert importance.aggregate(scores, by="channel")["a/kernel"].shape == (8,)


def test_names_are_the_same_for_a_model_built_in_code_and_loaded_from_a_file(tmp_path):
    model = kc.zoo.lenet_300_100()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert sorted(importance.score(model, None, "magnitude")) == sorted(importance.score(loaded, None, "magnitude"))
    kc.prune(loaded, kc.PruneConfig(0.5), scores=importance.score(model, None, "magnitude"))


def test_bad_inputs_are_named():
    model = linear_model()
    with pytest.raises(ValueError, match="Unknown importance method. Allowed"):
        importance.score(model, (X, Y), "snip")
    with pytest.raises(ValueError, match="needs labelled data"):
        importance.score(model, (X, None), "taylor")
    with pytest.raises(ValueError, match="needs labelled data"):
        importance.score(model, X, "fisher")
    frozen = linear_model()
    frozen.trainable = False
    with pytest.raises(ValueError, match="has no trainable variables"):
        importance.score(frozen, (X, Y), "taylor")


def test_pruning_by_scores_keeps_the_highest_scoring_weights():
    model = linear_model()
    scores = {"lin/kernel": np.array([[4.0, 1.0], [2.0, 3.0]], "float32")}  # not the magnitude order
    kc.prune(model, kc.PruneConfig(0.5), scores=scores)
    kernel = np.array(model.get_layer("lin").kernel.value)
    np.testing.assert_array_equal(kernel != 0, [[True, False], [False, True]])
    with pytest.raises(ValueError, match="Missing: \\['lin/kernel'\\]"):
        kc.prune(linear_model(), kc.PruneConfig(0.5), scores={})
