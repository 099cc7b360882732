import numpy as np
import pytest
from keras import ops

from keras_compress.ops import block_mask, magnitude_mask, n_m_mask, sparsity


def np_(x):
    return ops.convert_to_numpy(x)


def test_magnitude_mask_keeps_the_largest_by_hand():
    scores = np.array([[0.1, 3.0], [2.0, 0.5]], "float32")
    np.testing.assert_array_equal(np_(magnitude_mask(scores, 0.5)), [[0, 1], [1, 0]])


@pytest.mark.parametrize("target", [0.0, 0.1, 0.5, 0.9, 0.97])
def test_magnitude_mask_prunes_an_exact_count(target):
    scores = np.abs(np.random.default_rng(1).normal(size=(37, 11))).astype("float32")
    mask = np_(magnitude_mask(scores, target))
    assert int((mask == 0).sum()) == round(target * scores.size)
    # Every kept score is at least as large as every pruned one.
    if 0 < target:
        assert scores[mask == 1].min() >= scores[mask == 0].max()


def test_magnitude_mask_exact_count_holds_with_ties():
    scores = np.ones((8, 8), "float32")
    assert int((np_(magnitude_mask(scores, 0.75)) == 0).sum()) == 48


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        magnitude_mask(np.ones((4, 4)), bad)


def test_block_mask_zeroes_whole_blocks():
    scores = np.abs(np.random.default_rng(2).normal(size=(3, 3, 4, 8))).astype("float32")
    mask = np_(block_mask(scores, 0.5, (1, 4))).reshape(36, 8)
    blocks = mask.reshape(36, 2, 4)
    # Each 1x4 block is all kept or all pruned, and half of them are pruned.
    assert np.all((blocks.min(-1) == blocks.max(-1)))
    assert (blocks[..., 0] == 0).sum() == 36


def test_block_mask_ranks_blocks_by_mean_score():
    scores = np.array([[1, 1, 9, 9], [2, 2, 0, 0]], "float32")
    mask = np_(block_mask(scores, 0.5, (1, 2)))
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1], [1, 1, 0, 0]])


def test_block_mask_handles_shapes_not_divisible_by_the_block():
    scores = np.abs(np.random.default_rng(3).normal(size=(5, 7))).astype("float32")
    mask = np_(block_mask(scores, 0.5, (2, 3)))
    assert mask.shape == (5, 7)
    assert 0 < (mask == 0).sum() < 35


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_n_m_mask_keeps_n_of_every_m_along_the_inputs(n, m):
    scores = np.abs(np.random.default_rng(4).normal(size=(3, 3, 8, 5))).astype("float32")
    mask = np_(n_m_mask(scores, n, m)).reshape(72, 5)
    groups = mask.reshape(72 // m, m, 5)
    assert np.all(groups.sum(axis=1) == n)
    # Kept entries are the largest of their group.
    s = scores.reshape(72 // m, m, 5)
    assert np.all(np.where(groups == 1, s, np.inf).min(1) >= np.where(groups == 0, s, -np.inf).max(1))


def test_n_m_mask_rejects_n_not_below_m():
    with pytest.raises(ValueError, match="1 <= n < m"):
        n_m_mask(np.ones((4, 4)), 4, 4)


def test_sparsity_counts_exact_zeros():
    assert sparsity(np.array([0.0, 1e-30, 0.0, 2.0])) == 0.5
