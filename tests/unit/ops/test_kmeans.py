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
