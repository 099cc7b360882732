"""Metrics: each kind, its direction, the model's compile config, multi-output selection, bad input."""

import keras
import numpy as np
import pytest

from keras_compress import metrics
from keras_compress.data import Split
from keras_compress.metrics import MetricError


def identity(x):
    return x


def test_names_resolve_with_their_direction():
    assert metrics.get("mae").higher_is_better is False
    assert metrics.get("mse").higher_is_better is False
    assert metrics.get("auc").higher_is_better is True and metrics.get("auc").percent
    accuracy = metrics.get("accuracy")
    assert accuracy.higher_is_better and accuracy.percent
    assert accuracy.lost(0.9, 0.85) == pytest.approx(0.05)
    assert metrics.get("mae").lost(2.0, 2.5) == pytest.approx(0.5)
    with pytest.raises(MetricError, match="unknown metric 'f2_score_typo'"):
        metrics.get("f2_score_typo")


@pytest.mark.parametrize("y_true, y_pred, expected", [
    (np.array([0, 1, 2, 1]), np.eye(3)[[0, 1, 1, 1]], 0.75),  # sparse labels, class scores
    (np.eye(3)[[0, 1, 2, 1]], np.eye(3)[[0, 1, 1, 1]], 0.75),  # one-hot labels
    (np.array([0, 1, 1, 0]), np.array([[0.2], [0.9], [0.1], [0.4]]), 0.75),  # one sigmoid output
])
def test_accuracy_is_the_one_compile_would_pick_for_the_shapes(y_true, y_pred, expected):
    split = Split.from_arrays(y_pred.astype("float32"), y_true, name="test")
    assert metrics.get("accuracy").score(identity, split, batch_size=3) == pytest.approx(expected)


def test_keras_metrics_go_batch_by_batch_and_match_numpy():
    rng = np.random.default_rng(0)
    pred, true = rng.normal(size=(100, 1)).astype("float32"), rng.normal(size=(100, 1)).astype("float32")
    split = Split.from_arrays(pred, true, name="test")
    assert metrics.get("mae").score(identity, split, batch_size=7) == pytest.approx(np.mean(np.abs(pred - true)),
                                                                                    rel=1e-5)


def test_a_function_of_y_true_and_y_pred_sees_every_prediction_at_once():
    seen = []

    def median_error(y_true, y_pred):
        seen.append(len(y_true))
        return float(np.median(np.abs(y_true - y_pred[:, 0])))

    median_error.higher_is_better = False
    metric = metrics.get(median_error)
    assert metric.kind == "function" and metric.higher_is_better is False
    split = Split.from_arrays(np.arange(10.0)[:, None], np.zeros(10), name="test")
    assert metric.score(identity, split, batch_size=3) == pytest.approx(4.5) and seen == [10]


def test_a_task_metric_receives_the_predictor():
    def mean_action(predict):
        return float(np.mean(np.argmax(predict(np.eye(4, dtype="float32")), axis=-1)))

    metric = metrics.get(mean_action)
    assert metric.kind == "task"
    assert metric.score(lambda x: x[:, ::-1]) == pytest.approx(1.5)


def test_entry_point_metrics_and_their_errors(tmp_path, monkeypatch):
    (tmp_path / "user_metrics.py").write_text(
        "import numpy as np\n"
        "def hit_rate(y_true, y_pred):\n    return float(np.mean(y_true == np.argmax(y_pred, -1)))\n"
        "def broken(y_true, y_pred):\n    raise ZeroDivisionError('no samples')\n"
        "def nan(y_true, y_pred):\n    return float('nan')\n"
        "def three(a, b, c):\n    return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    split = Split.from_arrays(np.eye(2, dtype="float32"), np.array([0, 0]), name="test")
    assert metrics.get("user_metrics:hit_rate").score(identity, split) == pytest.approx(0.5)
    with pytest.raises(MetricError, match=r"'broken' raised ZeroDivisionError: no samples"):
        metrics.get("user_metrics:broken").score(identity, split)
    with pytest.raises(MetricError, match="not a finite number"):
        metrics.get("user_metrics:nan").score(identity, split)
    with pytest.raises(MetricError, match="must take"):
        metrics.get("user_metrics:three")
    with pytest.raises(MetricError, match="has no function 'missing'"):
        metrics.get("user_metrics:missing")


def _regressor():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    return model


def test_default_is_the_compiled_metric_else_the_loss_else_a_clear_error(tmp_path):
    model = _regressor()
    with pytest.raises(MetricError, match="--metric NAME"):
        metrics.get(None, model)
    model.compile("sgd", loss="mse", metrics=["mae"])
    assert metrics.get(None, model).name == "mae"
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    metric = metrics.get(None, loaded, compile_config=metrics.compile_config(path))
    assert metric.name == "mae" and metric.higher_is_better is False
    loss_only = _regressor()
    loss_only.compile("sgd", loss=keras.losses.Huber())
    metric = metrics.get(None, loss_only)
    assert metric.higher_is_better is False
    split = Split.from_arrays(np.zeros((4, 1), "float32"), np.full((4, 1), 0.5, "float32"), name="test")
    assert metric.score(identity, split) == pytest.approx(0.125)  # huber(0.5) = 0.5 * 0.5^2
    assert isinstance(metrics.loss_from_compile(metrics.compile_config(path)), (keras.losses.Loss, object))


def test_name_at_output_measures_one_output_of_a_multi_output_model():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, [keras.layers.Dense(3, name="kind")(inputs),
                                 keras.layers.Dense(1, name="price")(inputs)])
    y = {"kind": np.array([0, 1]), "price": np.array([[1.0], [3.0]], "float32")}
    split = Split.from_arrays(np.zeros((2, 2), "float32"), [y["kind"], y["price"]], name="test")

    def predict(x):
        return [np.eye(3, dtype="float32")[[0, 2]], np.array([[2.0], [2.0]], "float32")]

    names = metrics.output_names(model)
    assert list(names) == ["kind", "price"]
    assert metrics.get("mae@price").score(predict, split, output_names=names) == pytest.approx(1.0)
    assert metrics.get("accuracy@kind").score(predict, split, output_names=names) == pytest.approx(0.5)
    assert metrics.get("accuracy@0").score(predict, split, output_names=names) == pytest.approx(0.5)
