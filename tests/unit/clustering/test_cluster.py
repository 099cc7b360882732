import os

import keras
import numpy as np
import pytest

import builders
import keras_compress as kc
from keras_compress.clustering.api import fix_assignments


def kernels(model):
    return [v for v in model.trainable_variables if len(v.shape) >= 2]


def distinct_nonzero(array):
    array = np.asarray(array)
    return np.unique(array[array != 0]).size


def computed_kernels(model):
    """What each clustered layer computes with: its kernels' weight views (nearest: their centroids)."""
    from keras_compress.core import calls, walk

    return [np.array(calls.view_value(layer, v)) for layer in walk.iter_layers(model)
            for v in layer._trainable_variables if len(v.shape) >= 2]


@pytest.mark.parametrize("assignment", ["fixed", "nearest"])
@pytest.mark.parametrize("kind", sorted(builders.MODEL_KINDS))
def test_training_keeps_at_most_k_values_and_strip_leaves_a_plain_model(kind, assignment, tmp_path):
    model = builders.compile_tiny(builders.MODEL_KINDS[kind]())
    kc.cluster(model, kc.ClusterConfig(num_clusters=4, init="linear", assignment=assignment))
    x, y = builders.dense_data(64)
    before = computed_kernels(model)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[kc.ClusteringCallback()])
    after = computed_kernels(model)
    for b, a in zip(before, after):
        assert distinct_nonzero(a) <= 4
        assert not np.array_equal(a, b)  # the shared values were fine-tuned
    outputs = np.array(model(x))
    kc.strip(model)
    assert not kc.is_clustered(model)
    assert all(v.constraint is None for v in model.trainable_variables)
    np.testing.assert_allclose(np.array(model(x)), outputs, rtol=1e-5, atol=1e-5)
    path = os.path.join(tmp_path, "clustered.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for k in kernels(loaded):
        assert distinct_nonzero(k.value) <= 4


def test_per_channel_codebooks_hold_k_values_per_output_channel():
    model = builders.functional()
    kc.cluster(model, kc.ClusterConfig(num_clusters=3, per_channel=True, init="density"))
    kc.strip(model)
    kernel = np.array(model.get_layer("hidden").kernel.value)  # (16, 32)
    assert all(distinct_nonzero(kernel[:, c]) <= 3 for c in range(kernel.shape[1]))
    assert distinct_nonzero(kernel) > 3


@pytest.mark.parametrize("zero_cluster", [False, True])
def test_pruned_zeros_stay_exactly_zero_and_take_no_centroid(zero_cluster):
    model = builders.compile_tiny(builders.functional())
    kc.prune(model, kc.PruneConfig(0.75))
    kc.strip(model)
    zeros = [np.array(k.value) == 0 for k in kernels(model)]
    kc.cluster(model, kc.ClusterConfig(num_clusters=4, init="kmeans++", zero_cluster=zero_cluster))
    x, y = builders.dense_data(64)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[kc.ClusteringCallback()])
    kc.strip(model)
    for was_zero, k in zip(zeros, kernels(model)):
        value = np.array(k.value)
        assert np.all(value[was_zero] == 0.0)
        if not zero_cluster:  # only zero-joining may add zeros
            np.testing.assert_array_equal(value == 0, was_zero)
        assert np.unique(value).size <= (4 if zero_cluster else 5)  # the zero one of the 4, or a fifth


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("zero_cluster", [False, True])
def test_a_kept_weight_near_zero_joins_the_zero_only_with_zero_cluster(zero_cluster, per_channel):
    builders.seeded(0)
    model = builders.compile_tiny(builders.MODEL_KINDS["functional"]())
    kernel = model.get_layer("hidden").kernel
    value = kernel.numpy()
    value[np.abs(value) < np.quantile(np.abs(value), 0.5)] = 0.0  # half pruned
    kernel.assign(value)
    pruned = value == 0
    kc.cluster(model, kc.ClusterConfig(num_clusters=4, per_channel=per_channel, zero_cluster=zero_cluster),
               layers="hidden")
    row, col = np.argwhere(~pruned)[0]
    latent = kernel.numpy()
    latent[row, col] = 1e-7  # a kept weight trained to (almost) zero: nearest the pinned zero, if any
    kernel.assign(latent)
    x, _ = builders.dense_data(8)
    seen = np.array(model(x))
    fix_assignments(model, [kernel])  # as QAT does
    np.testing.assert_allclose(np.array(model(x)), seen, rtol=1e-5, atol=1e-5)  # frozen: the same choices
    kc.strip(model)
    stripped = kernel.numpy()
    assert np.all(stripped[pruned] == 0.0)
    assert (stripped[row, col] == 0.0) == zero_cluster
    zeros = np.count_nonzero(stripped == 0)
    assert zeros > pruned.sum() if zero_cluster else zeros == pruned.sum()


def test_periodic_reassignment_ends_with_k_values():
    model = builders.compile_tiny(builders.sequential())
    kc.cluster(model, kc.ClusterConfig(num_clusters=4, reassign_every=3))
    x, y = builders.dense_data(64)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kc.ClusteringCallback()])
    kc.strip(model)
    assert all(distinct_nonzero(k.value) <= 4 for k in kernels(model))


def test_a_model_still_being_pruned_must_be_stripped_first():
    model = builders.functional()
    kc.prune(model)
    with pytest.raises(ValueError, match="call keras_compress.strip\\(model\\) first"):
        kc.cluster(model)


def test_nothing_to_cluster_and_bad_configs_are_named():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Rescaling(2.0)])
    with pytest.raises(ValueError, match="has no clusterable weights"):
        kc.cluster(model)
    with pytest.raises(ValueError, match="num_clusters must be an integer in \\[2, 65536\\]"):
        kc.ClusterConfig(num_clusters=1)
    with pytest.raises(ValueError, match="init must be one of"):
        kc.ClusterConfig(init="uniform")
    with pytest.raises(TypeError, match="config must be a ClusterConfig"):
        kc.cluster(builders.functional(), kc.PruneConfig())


@pytest.mark.parametrize("train_centroids", [True, False])
def test_adam_moves_each_cluster_as_one_parameter(train_centroids):
    """Adam's first step moves a parameter by exactly its learning rate (m/sqrt(v) = ±1).

    With centroid training every member of a cluster gets the cluster's mean
    gradient, so each shared value moves by exactly the learning rate; with
    per-weight steps averaged afterwards, members pulling in opposite
    directions cancel and most clusters move less.
    """
    builders.seeded(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, use_bias=False, name="fc")])
    model.get_layer("fc").kernel.assign(np.random.default_rng(0).normal(size=(8, 6)).astype("float32"))
    kc.cluster(model, kc.ClusterConfig(num_clusters=4, init="linear", train_centroids=train_centroids,
                                       assignment="fixed", kmeans_iterations=10))
    lr = 0.01
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    x = np.random.default_rng(1).normal(size=(32, 8)).astype("float32")
    y = np.random.default_rng(2).normal(size=(32, 6)).astype("float32")
    before = np.array(model.get_layer("fc").kernel.value)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[kc.ClusteringCallback()])
    after = np.array(model.get_layer("fc").kernel.value)
    centroids = np.unique(before)
    moves = np.array([np.unique(after[before == c]) - c for c in centroids], dtype=object)
    assert all(len(m) == 1 for m in moves)  # still one value per cluster
    moves = np.abs(np.concatenate(moves).astype("float64"))
    if train_centroids:
        np.testing.assert_allclose(moves, lr, rtol=1e-3)
    else:
        assert moves.min() < 0.5 * lr, moves  # 0.0005 of 0.01 here


def test_centroid_training_changes_only_the_gradient_not_the_outputs():
    builders.seeded(0)
    model = builders.compile_tiny(builders.MODEL_KINDS["functional"]())
    x, _ = builders.dense_data(16)
    kc.cluster(model, kc.ClusterConfig(num_clusters=4, assignment="fixed"))
    clustered_output = np.array(model(x))
    plain = keras.models.clone_model(model)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(clustered_output, np.array(plain(x)), rtol=1e-5, atol=1e-6)
    kc.strip(model)
    assert "call" not in vars(model.layers[1])  # the layers are their classes again


@pytest.mark.parametrize("per_channel", [False, True])
def test_nearest_assignment_moves_weights_between_clusters_and_strips_to_k_values(per_channel):
    builders.seeded(0)
    model = builders.compile_tiny(builders.MODEL_KINDS["functional"]())
    x, y = builders.dense_data(64)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # the optimizer is built before clustering
    kernel = model.get_layer("hidden").kernel
    kernel.assign(np.where(np.abs(kernel.numpy()) < 0.1, 0.0, kernel.numpy()))  # some pruned zeros
    zeros = kernel.numpy() == 0
    trainable = len(model.trainable_variables)
    config = kc.ClusterConfig(num_clusters=4, init="linear", assignment="nearest", per_channel=per_channel)
    kc.cluster(model, config)
    assert len(model.trainable_variables) == trainable + 2  # a codebook per kernel
    centroids_before = [np.array(v.value) for v in model.trainable_variables if "centroids" in v.path]
    latent_before = kernel.numpy().copy()
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[kc.ClusteringCallback()])
    centroids_after = [np.array(v.value) for v in model.trainable_variables if "centroids" in v.path]
    assert any(not np.allclose(a, b) for a, b in zip(centroids_after, centroids_before))
    assert not np.allclose(kernel.numpy(), latent_before)  # the latent weights train too
    clustered_output = np.array(model(x))
    kc.strip(model)
    np.testing.assert_allclose(np.array(model(x)), clustered_output, rtol=1e-5, atol=1e-6)
    assert len(model.trainable_variables) == trainable and not kc.is_clustered(model)
    stripped = model.get_layer("hidden").kernel.numpy()
    assert np.all(stripped[zeros] == 0.0)
    columns = stripped.T if per_channel else stripped.reshape(1, -1)
    assert max(distinct_nonzero(c) for c in columns) <= 4


def test_nearest_assignment_refuses_reassign_every():
    with pytest.raises(ValueError, match="reassign_every must be None"):
        kc.ClusterConfig(assignment="nearest", reassign_every=10)
    with pytest.raises(ValueError, match="assignment must be one of"):
        kc.ClusterConfig(assignment="closest")


@pytest.mark.parametrize("biases", [False, True])
def test_biases_are_clustered_only_when_asked(biases):
    builders.seeded(0)
    model = builders.compile_tiny(builders.functional())
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.random.default_rng(1).normal(size=layer.bias.shape))
    before = {layer.name: layer.bias.numpy().copy() for layer in model.layers if getattr(layer, "bias", None) is not None}
    kc.cluster(model, kc.ClusterConfig(num_clusters=3, per_channel=True, biases=biases))
    x, y = builders.dense_data(64)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kc.ClusteringCallback()])
    kc.strip(model)
    for name, old in before.items():
        bias = model.get_layer(name).bias.numpy()
        if biases:  # one codebook per bias vector, even with per-channel kernel codebooks
            assert np.unique(bias).size <= 3 < old.size
        else:  # trained freely
            assert np.unique(bias).size == old.size


def test_qat_of_clustered_biases_folds_batchnorm_and_exports_what_keras_predicts(tmp_path):
    pytest.importorskip("tensorflow")
    from keras import layers

    from keras_compress.export.interpreter import litert_predict
    from keras_compress.export.litert import export_litert

    builders.seeded(0)
    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(4, 3, name="conv")(inputs)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.ReLU()(h)
    outputs = layers.Dense(3, name="head")(layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype("float32")
    rng = np.random.default_rng(1)
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)])
    kc.cluster(model, kc.ClusterConfig(num_clusters=4, biases=True))
    clustered_out = np.array(model.predict(x, verbose=0))
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    path = export_litert(model, str(tmp_path / "m.tflite"), fmt="int8")
    keras_out = np.array(model.predict(x, verbose=0))
    # The folded bias keeps one value per channel (averaging its old clusters would undo the fold).
    assert np.max(np.abs(keras_out - clustered_out)) <= 0.05 * np.abs(clustered_out).max()
    litert_out = litert_predict(path, x)
    scale = np.abs(keras_out).max() / 127
    assert np.max(np.abs(litert_out - keras_out)) <= 2 * scale
    kc.strip(model)
    assert np.unique(model.get_layer("head").bias.numpy()).size <= 4  # no BN after the head: still shared
