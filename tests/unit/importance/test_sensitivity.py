import numpy as np
import pytest

import builders
import keras_compress as kc
from keras_compress import importance


def test_allocate_meets_the_global_target_exactly_and_spares_the_sensitive_layer():
    curves = {"a": {0.5: 0.5, 0.9: 0.1}, "b": {0.5: 0.99, 0.9: 0.97}}
    sizes = {"a": 100, "b": 900}
    plan = importance.allocate(curves, sizes, baseline=1.0, target_sparsity=0.6)
    assert sum(plan[n] * sizes[n] for n in sizes) == pytest.approx(0.6 * 1000, abs=1e-6)
    assert plan["b"] > plan["a"]
    assert plan["a"] < 0.1  # the fragile layer is barely touched


def test_allocate_rejects_unreachable_targets():
    with pytest.raises(ValueError, match="target_sparsity must be in"):
        importance.allocate({"a": {0.5: 0.5}}, {"a": 10}, 1.0, 0.999)


def test_auto_layer_targets_prune_to_the_global_sparsity():
    model = builders.compile_tiny(builders.functional())
    x, y = builders.dense_data(256)
    model.fit(x, y, epochs=5, verbose=0)
    trained = [np.array(w) for w in model.get_weights()]
    curves = importance.sensitivity(model, (x, y), sparsities=(0.5, 0.9))
    assert set(curves["curves"]) == {"hidden/kernel", "out/kernel"}
    targets = importance.auto_layer_targets(model, (x, y), 0.8, sparsities=(0.5, 0.9))
    # sensitivity analysis restored every weight exactly
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(trained, model.get_weights()))
    kc.prune(model, kc.PruneConfig(0.8, layer_targets=targets))
    kernels = [w for w in model.get_weights() if w.ndim == 2]
    zeros = sum(int((k == 0).sum()) for k in kernels)
    total = sum(k.size for k in kernels)
    assert abs(zeros - 0.8 * total) <= len(kernels)  # exact up to rounding, one weight per tensor


def test_prune_targets_auto_meets_the_global_sparsity_in_one_call():
    model = builders.compile_tiny(builders.functional())
    x, y = builders.dense_data(256)
    model.fit(x, y, epochs=5, verbose=0)
    kc.prune(model, kc.PruneConfig(0.8), targets="auto", data=(x, y))
    rows = [r for r in kc.pruning_summary(model) if "target" in r]
    assert len({round(r["target"], 3) for r in rows}) == 2  # the two layers get their own targets
    kernels = [w for w in model.get_weights() if w.ndim == 2]
    zeros = sum(int((k == 0).sum()) for k in kernels)
    assert abs(zeros - 0.8 * sum(k.size for k in kernels)) <= len(kernels)


@pytest.mark.parametrize("kwargs, match", [(dict(targets="auto"), "pass data="),
                                            (dict(targets="best"), "targets must be None, 'auto' or a dict")])
def test_prune_targets_errors(kwargs, match):
    model = builders.functional()
    with pytest.raises(ValueError, match=match):
        kc.prune(model, kc.PruneConfig(0.8), **kwargs)
    assert not kc.is_pruned(model)


@pytest.mark.parametrize("kind, values", [("bits", (8, 2)), ("clusters", (16, 2))])
def test_sensitivity_to_bits_and_clusters_falls_with_coarser_grids_and_restores_weights(kind, values):
    model = builders.compile_tiny(builders.functional())
    x, y = builders.dense_data(256)
    model.fit(x, y, epochs=10, verbose=0)
    trained = [np.array(w) for w in model.get_weights()]
    result = importance.sensitivity(model, (x, y), sparsities=values, kind=kind)
    assert result["kind"] == kind
    fine, coarse = values
    for curve in result["curves"].values():
        assert curve[fine] >= result["baseline"] - 0.03  # 8 bits / 16 clusters barely hurt
        assert curve[coarse] <= curve[fine] + 1e-9
    assert min(c[coarse] for c in result["curves"].values()) < result["baseline"]
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(trained, model.get_weights()))


@pytest.mark.parametrize("kind, values, match", [("bits", (9,), "bit widths"), ("clusters", (1,), "cluster counts"),
                                                  ("entropy", (1,), "kind must be one of")])
def test_sensitivity_rejects_bad_values(kind, values, match):
    with pytest.raises(ValueError, match=match):
        importance.sensitivity(builders.functional(), builders.dense_data(8), sparsities=values, kind=kind)


def test_allocate_keeps_each_weight_inside_its_bounds_and_fixed_weights_fixed():
    curves = {"a": {0.5: 0.5, 0.9: 0.1}, "b": {0.5: 0.99, 0.9: 0.97}, "c": {0.5: 0.9, 0.9: 0.8}}
    sizes = {"a": 100, "b": 900, "c": 500}
    bounds = {"a": (0.3, 0.6), "b": (0.5, 0.8), "c": (0.4, 0.4)}
    plan = importance.allocate(curves, sizes, baseline=1.0, target_sparsity=0.6, bounds=bounds)
    assert sum(plan[n] * sizes[n] for n in sizes) == pytest.approx(0.6 * 1500, abs=1e-6)
    assert plan["c"] == 0.4  # fixed
    assert 0.3 <= plan["a"] <= 0.6 and 0.5 <= plan["b"] <= 0.8
    # The tolerant layer takes every extra zero; the fragile one stays at its floor.
    assert plan["a"] == pytest.approx(0.3) and plan["b"] == pytest.approx((900 - 200 - 30) / 900)
    with pytest.raises(ValueError, match=r"target_sparsity must be in \[0.4533, 0.6533\]"):
        importance.allocate(curves, sizes, 1.0, 0.7, bounds=bounds)


def test_sensitivity_takes_a_users_score():
    model = builders.compile_tiny(builders.functional())
    x, y = builders.dense_data(64)
    calls = []

    def score(m, xs, ys):
        calls.append(len(xs))
        return -float(np.mean(np.abs(m.predict_on_batch(xs))))

    result = importance.sensitivity(model, (x, y), sparsities=(0.5, 0.9), score=score)
    assert result["baseline"] == pytest.approx(-float(np.mean(np.abs(model.predict_on_batch(x)))))
    assert len(calls) == 1 + 2 * len(result["curves"]) and set(calls) == {64}
