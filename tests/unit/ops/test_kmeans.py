import numpy as np
import pytest
from keras import ops

from keras_compress.ops import kmeans as km


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


@pytest.mark.parametrize("method", km.INITS)
def test_every_init_gives_k_sorted_centroids_within_range(method):
    values = np.random.default_rng(0).normal(size=500).astype("float32")
    c = np_(km.init_centroids(values, 8, method, seed=1))
    assert c.shape == (8,)
    assert np.all(np.diff(c) >= 0)
    assert values.min() <= c.min() and c.max() <= values.max()


def test_linear_init_spans_min_to_max():
    np.testing.assert_allclose(np_(km.init_centroids(np.array([0.0, 1.0, 2.0, 3.0]), 4, "linear")), [0, 1, 2, 3])


def test_density_init_takes_quantiles():
    values = np.arange(100, dtype="float32")
    np.testing.assert_allclose(np_(km.init_centroids(values, 4, "density")), [12, 37, 62, 87])


def test_kmeans_finds_two_obvious_clusters():
    centroids, labels = km.kmeans(np.array([0.0, 0.1, 1.0, 1.1], "float32"), np.array([0.0, 1.0], "float32"))
    np.testing.assert_allclose(np_(centroids), [0.05, 1.05], atol=1e-6)
    np.testing.assert_array_equal(np_(labels), [0, 0, 1, 1])


def test_shared_values_take_segment_means_and_keep_the_zero_segment_zero():
    weights = np.array([[1.0, 3.0], [5.0, 0.7]], "float32")
    segments = np.array([[0, 0], [1, 2]], "int32")  # segment 2 (the last) is the pruned-zero one
    counts = np.array([2, 1, 1], "float32")
    np.testing.assert_allclose(np_(km.shared_values(weights, segments, counts)), [[2.0, 2.0], [5.0, 0.0]])


def test_bad_init_and_k_are_rejected():
    with pytest.raises(ValueError, match="init must be one of"):
        km.init_centroids(np.ones(4), 2, "uniform")
    with pytest.raises(ValueError, match="num_clusters must be >= 1"):
        km.init_centroids(np.ones(4), 0, "linear")


def test_nearest_values_pick_the_nearest_centroid_per_tensor_and_per_channel():
    w = np.array([[0.1, 0.9], [0.6, -0.2], [0.0, 0.45]], "float32")
    np.testing.assert_allclose(np_(km.nearest_values(w, np.array([0.0, 1.0], "float32"))),
                               [[0, 1], [1, 0], [0, 0]])
    per_channel = np.array([[0.0, 1.0], [-0.5, 0.5]], "float32")  # channel 0 then channel 1
    mask = np.array([[1, 1], [1, 1], [1, 0]], "float32")
    np.testing.assert_allclose(np_(km.nearest_values(w, per_channel, mask)),
                               [[0, 0.5], [1, -0.5], [0, 0]])


@pytest.mark.parametrize("per_channel", [False, True])
def test_nearest_values_send_members_gradients_to_centroids_and_straight_to_weights(per_channel):
    import builders

    w = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3]], "float32")
    centroids = np.array([[0.0, 1.0], [0.0, 1.0]] if per_channel else [0.0, 1.0], "float32")
    upstream = np.arange(1.0, 7.0, dtype="float32").reshape(3, 2)
    grad_w = builders.autodiff_gradient(
        lambda v: ops.sum(km.nearest_values(v, centroids) * upstream), w)
    np.testing.assert_allclose(grad_w, upstream)  # straight through
    grad_c = builders.autodiff_gradient(
        lambda c: ops.sum(km.nearest_values(ops.convert_to_tensor(w), c) * upstream), centroids)
    # Members of centroid 0: 0.1 (1), 0.2 (3), 0.3 (6); of centroid 1: 0.9 (2), 0.8 (4), 0.7 (5).
    expected = [[1 + 3, 5], [6, 2 + 4]] if per_channel else [1 + 3 + 6, 2 + 4 + 5]
    np.testing.assert_allclose(grad_c, expected)
