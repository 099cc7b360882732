"""Ensembles: averaged and stacked outputs against hand-computed ones, and every bad input."""

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress.ensemble import EnsembleError, average, kind_of, stacking


def member(seed, outputs=3, activation=None, inputs=(6,)):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(inputs), keras.layers.Flatten(),
                             keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(outputs, activation=activation)], name=f"member{seed}")


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def data(n=300, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 6)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5).astype("int64")


def test_average_of_logits_members_is_the_log_of_their_mean_probabilities():
    models = [member(s) for s in range(3)]
    x, _ = data(20)
    ensemble = average(models)
    out = ensemble.predict(x, verbose=0)
    expected = np.mean([softmax(m.predict(x, verbose=0)) for m in models], axis=0)
    np.testing.assert_allclose(softmax(out), expected, atol=1e-6)
    np.testing.assert_allclose(np.exp(out), expected, atol=1e-6)  # log-probabilities: they sum to one
    assert all(m.trainable for m in models)  # members are shared, not frozen or copied
    assert ensemble.count_params() == sum(m.count_params() for m in models)


def test_average_of_probabilities_and_of_values():
    x, _ = data(10)
    probs = [member(s, activation="softmax") for s in range(2)]
    assert kind_of(probs[0]) == "probabilities"
    np.testing.assert_allclose(average(probs).predict(x, verbose=0),
                               np.mean([m.predict(x, verbose=0) for m in probs], axis=0), atol=1e-6)
    values = [member(s, outputs=1) for s in range(3)]
    assert kind_of(values[0]) == "values"
    np.testing.assert_allclose(average(values).predict(x, verbose=0),
                               np.mean([m.predict(x, verbose=0) for m in values], axis=0), atol=1e-6)


def test_an_ensemble_saves_and_loads_as_plain_keras(tmp_path):
    models = [member(s) for s in range(2)]
    models.append(keras.models.clone_model(models[0]))  # the same name twice: two files of one architecture
    models[2].set_weights([w + 0.1 for w in models[0].get_weights()])
    x, _ = data(8)
    ensemble = average(models)
    ensemble.save(tmp_path / "e.keras")
    loaded = keras.saving.load_model(tmp_path / "e.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), ensemble.predict(x, verbose=0), atol=1e-6)
    expected = np.mean([softmax(m.predict(x, verbose=0)) for m in models], axis=0)
    np.testing.assert_allclose(np.exp(loaded.predict(x, verbose=0)), expected, atol=1e-6)


def test_stacking_with_scikit_learn_equals_the_fitted_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    x, y = data(400)
    models = []
    for s in range(3):
        m = member(s)
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x[:200], y[:200], epochs=3, verbose=0)
        models.append(m)
    held_x, held_y = x[200:300], y[200:300]
    stacked = stacking(models, (held_x, held_y))
    features = np.concatenate([softmax(m.predict(held_x, verbose=0).astype("float64")) for m in models], axis=1)
    reference = LogisticRegression(max_iter=2000, random_state=0).fit(features, held_y)
    test_features = np.concatenate([softmax(m.predict(x[300:], verbose=0).astype("float64")) for m in models], axis=1)
    np.testing.assert_allclose(softmax(stacked.predict(x[300:], verbose=0).astype("float64")),
                               reference.predict_proba(test_features), atol=1e-4)
    # The Keras meta-learner (no scikit-learn) learns a working combiner too.
    keras_stacked = stacking(models, (held_x, held_y), meta="keras")
    accuracy = np.mean(np.argmax(keras_stacked.predict(x[300:], verbose=0), axis=-1) == y[300:])
    members_best = max(np.mean(np.argmax(m.predict(x[300:], verbose=0), -1) == y[300:]) for m in models)
    assert accuracy >= members_best - 0.05


def test_stacking_values_is_a_linear_regression_over_the_members():
    x, _ = data(200)
    target = (2 * x[:, 0] - x[:, 1]).reshape(-1, 1)
    models = [member(s, outputs=1) for s in range(2)]
    stacked = stacking(models, (x[:100], target[:100]))
    a, b = (m.predict(x[100:], verbose=0) for m in models)
    out = stacked.predict(x[100:], verbose=0)
    # The output is an affine function of the members' outputs: residual of a least-squares fit is ~0.
    design = np.concatenate([a, b, np.ones_like(a)], axis=1)
    coef, *_ = np.linalg.lstsq(design, out, rcond=None)
    np.testing.assert_allclose(design @ coef, out, atol=1e-4)


def test_an_ensemble_is_a_distillation_teacher():
    x, y = data(256)
    teacher = average([member(s) for s in range(2)])
    student = member(7)
    before = [w.copy() for w in student.get_weights()]
    kc.finetune(student, x, y, kc.training.FinetuneConfig(epochs=1, batch_size=64), teacher=teacher)
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))


@pytest.mark.parametrize("models, message", [
    ("not a list", "a list of at least 2 Keras models"),
    ([], "a list of at least 2"),
    (["one"], "a list of at least 2"),
    ([member(0), "x"], "member 1 is not a Keras model"),
    ([member(0), member(1, outputs=4)], r"member 1 \('member1'\) has \[\(6,\)\] -> \[\(4,\)\]"),
    ([member(0), member(1, inputs=(7,))], "same inputs"),
    ([member(0), member(1, activation="softmax")], "different kinds"),
])
def test_bad_ensembles_are_one_clear_error(models, message):
    with pytest.raises(EnsembleError, match=message):
        average(models)


def test_bad_stacking_settings():
    models = [member(0), member(1)]
    x, y = data(50)
    with pytest.raises(EnsembleError, match="meta must be one of"):
        stacking(models, (x, y), meta="forest")
    with pytest.raises(EnsembleError, match="same number of samples"):
        stacking(models, (x, y[:10]))
    with pytest.raises(EnsembleError, match="held_out must be"):
        stacking(models, x)
    with pytest.raises(EnsembleError, match="every class 0..2"):
        stacking(models, (x, np.minimum(y, 1)))
    with pytest.raises(EnsembleError, match="kind must be one of"):
        average(models, kind="votes")
