import os

import keras
import numpy as np
import pytest
from keras import layers

import builders
import keras_compress as kc
from keras_compress.ops import sparsity


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def pruned_paths(model):
    return [r["path"] for r in kc.pruning_summary(model) if "target" in r]


@pytest.mark.parametrize("case", sorted(builders.LAYER_CASES))
def test_each_layer_type_has_its_weights_pruned(case):
    model = builders.layer_model(case)
    layer = model.layers[1]
    kc.prune(model, kc.PruneConfig(0.75), layers=lambda l: l is layer)
    rows = [r for r in kc.pruning_summary(model) if "target" in r]
    assert len(rows) == builders.LAYER_CASES[case][2]
    for row in rows:
        assert row["sparsity"] == pytest.approx(0.75, abs=0.01)
    model(builders.layer_input(case))  # still runs


def test_multi_head_attention_denses_are_found():
    model = builders.attention_model()
    kc.prune(model, kc.PruneConfig(0.5), layers=lambda l: not isinstance(l, layers.Dense) or "einsum" in l.name)
    paths = pruned_paths(model)
    for part in ("query", "key", "value", "attention_output"):
        assert any(part in p for p in paths), (part, paths)


def test_custom_layer_names_its_own_prunable_weights():
    class Gated(layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 4), name="w")
            self.gate = self.add_weight(shape=(shape[-1], 4), name="gate")

        def call(self, x):
            return x @ (self.w * self.gate)

        def get_prunable_weights(self):
            return [self.w]

    inputs = keras.Input((8,))
    model = keras.Model(inputs, Gated(name="gated")(inputs))
    kc.prune(model, kc.PruneConfig(0.5))
    assert pruned_paths(model) == ["gated/w"]
    skipped = {r["path"]: r["skipped"] for r in kc.pruning_summary(model) if "skipped" in r}
    assert "gated/gate" in skipped


@pytest.mark.parametrize("kind", sorted(builders.MODEL_KINDS))
def test_every_model_kind_trains_with_exact_zeros_after_each_step(kind):
    model = builders.compile_tiny(builders.MODEL_KINDS[kind]())
    kc.prune(model, kc.PruneConfig(0.8, schedule="polynomial", initial_sparsity=0.2, end_step=6, frequency=2))
    paths = pruned_paths(model)
    assert len(paths) == 2
    seen = []

    class CheckZeros(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            state = kc.pruning.api.get_state(self.model)  # self.model syncs JAX state
            for pruned in state.weights:
                mask = np.array(pruned.mask.value)
                value = np.array(pruned.variable.value)
                assert np.all(value[mask == 0] == 0.0)
            seen.append(np.mean([sparsity(p.variable.value) for p in state.weights]))

    x, y = builders.dense_data(96)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kc.PruningCallback(), CheckZeros()])
    assert len(seen) == 12
    assert seen[0] == pytest.approx(0.2, abs=0.02)
    assert seen[-1] == pytest.approx(0.8, abs=0.01)
    assert all(b >= a - 1e-9 for a, b in zip(seen, seen[1:]))  # never un-prunes


def test_schedule_continues_across_fit_calls():
    model = builders.compile_tiny(builders.sequential())
    kc.prune(model, kc.PruneConfig(0.9, schedule="polynomial", initial_sparsity=0.0, end_step=8, frequency=1, begin_step=0))
    x, y = builders.dense_data(32)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kc.PruningCallback()])
    mid = np.mean([r["sparsity"] for r in kc.pruning_summary(model) if "sparsity" in r])
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[kc.PruningCallback()])
    end = np.mean([r["sparsity"] for r in kc.pruning_summary(model) if "sparsity" in r])
    assert 0.3 < mid < 0.9
    assert end == pytest.approx(0.9, abs=0.01)


def test_strip_gives_identical_outputs_and_a_plain_model(tmp_path):
    model = builders.compile_tiny(builders.nested())
    kc.prune(model, kc.PruneConfig(0.7))
    x, y = builders.dense_data(32)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kc.PruningCallback()])
    before = np.array(model(x))
    kc.strip(model)
    assert not kc.is_pruned(model)
    assert all(v.constraint is None for v in model.trainable_variables)
    np.testing.assert_allclose(np.array(model(x)), before, rtol=1e-6, atol=1e-6)
    path = os.path.join(tmp_path, "pruned.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom objects
    np.testing.assert_allclose(np.array(loaded(x)), before, rtol=1e-6, atol=1e-6)
    kernels = [w for w in loaded.weights if len(w.shape) == 2]
    assert [round(sparsity(w.value), 2) for w in kernels] == [0.7, 0.7]


def test_strip_keeps_the_users_own_constraint():
    inputs = keras.Input((16,))
    model = keras.Model(inputs, layers.Dense(4, kernel_constraint=keras.constraints.MaxNorm(0.5))(inputs))
    original = model.layers[1].kernel.constraint
    kc.prune(model, kc.PruneConfig(0.5))
    builders.compile_tiny(model)
    x, y = builders.dense_data(16)
    model.fit(x, y, verbose=0, callbacks=[kc.PruningCallback()])
    kernel = np.array(model.layers[1].kernel.value)
    assert np.all(np.linalg.norm(kernel, axis=0) <= 0.5 + 1e-5)
    kc.strip(model)
    assert model.layers[1].kernel.constraint is original


def test_block_and_n_m_patterns_hold_after_training():
    x, y = builders.dense_data(32)
    model = builders.compile_tiny(builders.sequential())
    kc.prune(model, kc.PruneConfig(0.5, pattern="block", block_shape=(1, 4)))
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[kc.PruningCallback()])
    kernel = np.array(model.layers[0].kernel.value)  # (16, 32)
    blocks = (kernel != 0).reshape(16, 8, 4)
    assert np.all(blocks.all(-1) | ~blocks.any(-1))
    assert sparsity(kernel) == pytest.approx(0.5)

    model = builders.compile_tiny(builders.sequential())
    kc.prune(model, kc.PruneConfig(pattern="n:m", n=2, m=4))
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[kc.PruningCallback()])
    kernel = np.array(model.layers[0].kernel.value)
    assert np.all((kernel != 0).reshape(4, 4, 32).sum(axis=1) == 2)


def test_layer_filter_and_per_layer_targets():
    model = builders.functional()
    kc.prune(model, kc.PruneConfig(0.5, layer_targets={"^out$": 0.25}), layers="hidden|out")
    got = {r["path"]: r["sparsity"] for r in kc.pruning_summary(model) if "sparsity" in r}
    assert got == {"hidden/kernel": pytest.approx(0.5), "out/kernel": pytest.approx(0.25)}
    model2 = builders.functional()
    kc.prune(model2, kc.PruneConfig(0.5), layers="hidden")
    assert pruned_paths(model2) == ["hidden/kernel"]


def test_zero_sparsity_is_a_no_op():
    model = builders.functional()
    before = weights_of(model)
    kc.prune(model, kc.PruneConfig(0.0))
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)


def test_model_with_no_prunable_weights_is_rejected_and_untouched():
    model = keras.Sequential([keras.Input((4, 4)), layers.Flatten(), layers.Rescaling(2.0)])
    with pytest.raises(ValueError, match="has no prunable weights"):
        kc.prune(model)
    assert not kc.is_pruned(model)


def test_filter_matching_nothing_leaves_the_model_untouched():
    model = builders.functional()
    before = weights_of(model)
    with pytest.raises(ValueError, match="has no prunable weights \\(layers='nothing'\\)"):
        kc.prune(model, kc.PruneConfig(0.5), layers="nothing")
    assert not kc.is_pruned(model)
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)


def test_pruning_twice_and_unbuilt_models_are_rejected():
    model = builders.functional()
    kc.prune(model)
    with pytest.raises(ValueError, match="already being pruned"):
        kc.prune(model)
    unbuilt = keras.Sequential([layers.Dense(3)])
    with pytest.raises(ValueError, match="is not built"):
        kc.prune(unbuilt)
    with pytest.raises(TypeError, match="config must be a PruneConfig"):
        kc.prune(builders.functional(), {"target_sparsity": 0.5})


def test_callback_without_pruned_model_fails_loudly():
    model = builders.compile_tiny(builders.functional())
    x, y = builders.dense_data(8)
    with pytest.raises(ValueError, match="PruningCallback found nothing to drive .* call keras_compress.prune"):
        model.fit(x, y, verbose=0, callbacks=[kc.PruningCallback()])


def test_a_model_trained_before_pruning_keeps_its_zeros_in_later_fits():
    model = builders.compile_tiny(builders.functional())
    x, y = builders.dense_data(32)
    model.fit(x, y, batch_size=8, verbose=0)  # traces a train step without masks
    kc.prune(model, kc.PruneConfig(0.6))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[kc.PruningCallback()])
    for row in kc.pruning_summary(model):
        if "sparsity" in row:
            assert row["sparsity"] == pytest.approx(0.6, abs=0.005)


def test_later_fit_calls_reuse_the_compiled_train_step():
    # (JAX also recompiles after each mask update; none falls in the second fit.)
    model = builders.compile_tiny(builders.functional())
    kc.prune(model, kc.PruneConfig(0.5))
    x, y = builders.dense_data(16)
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[kc.PruningCallback()])
    first = model.train_function
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[kc.PruningCallback()])
    assert model.train_function is first
