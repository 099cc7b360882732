"""Pruning masks from importance scores, in `keras.ops`.

Every function takes a tensor of non-negative scores (for magnitude pruning,
`abs(weights)`) and returns a float mask of the same shape: 1 keeps a weight,
0 prunes it. Counts are exact: `magnitude_mask(s, 0.9)` zeroes exactly
`round(0.9 * size)` entries, whatever the ties.
"""

import math

from keras import ops


def _check_sparsity(sparsity):
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1). Received: sparsity={sparsity}")


def sparsity(x):
    """Fraction of exact zeros in `x`, as a Python float.

    Example:
    >>> sparsity(np.array([0.0, 1.0, 0.0, 2.0]))
    0.5
    """
    x = ops.convert_to_tensor(x)
    size = math.prod(x.shape)
    if size == 0:
        return 0.0
    zeros = ops.sum(ops.cast(ops.equal(x, 0), "int32"))
    return float(ops.convert_to_numpy(zeros)) / size


def magnitude_mask(scores, sparsity):
    """Keeps the largest scores, zeroing exactly `round(sparsity * size)`.

    Args:
        scores: tensor of any shape; larger means more important.
        sparsity: fraction to prune, in [0, 1).

    Returns:
        A float32 mask with the shape of `scores`.

    Raises:
        ValueError: if `sparsity` is outside [0, 1).

    Example:
    >>> magnitude_mask(np.array([[0.1, -3.0], [2.0, 0.5]]) ** 2, 0.5)
    [[0., 1.], [1., 0.]]
    """
    _check_sparsity(sparsity)
    scores = ops.convert_to_tensor(scores, "float32")
    shape = tuple(scores.shape)
    size = math.prod(shape)
    num_pruned = min(int(round(float(sparsity) * size)), size - 1)
    if num_pruned <= 0:
        return ops.ones(shape, "float32")
    num_kept = size - num_pruned
    _, kept = ops.top_k(ops.reshape(scores, (size,)), num_kept, sorted=False)
    mask = ops.scatter(ops.expand_dims(kept, -1), ops.ones((num_kept,), "float32"), (size,))
    return ops.reshape(mask, shape)


def _as_matrix(x):
    """Views a kernel as (inputs, outputs): all leading axes by the last one."""
    shape = tuple(x.shape)
    if len(shape) < 2:
        raise ValueError(
            f"structured masks need a tensor of rank >= 2. Received: shape={shape}"
        )
    return ops.reshape(x, (math.prod(shape[:-1]), shape[-1])), shape


def _pad_to(x, rows, cols, value=0.0):
    pad_r, pad_c = rows - x.shape[0], cols - x.shape[1]
    if pad_r == 0 and pad_c == 0:
        return x
    return ops.pad(x, [[0, pad_r], [0, pad_c]], constant_values=value)


def block_mask(scores, sparsity, block_shape=(1, 4)):
    """Prunes whole blocks, ranked by the mean score inside each block.

    The tensor is viewed as a matrix (inputs, outputs), the leading axes
    flattened into rows; edge blocks that do not fill the shape are ranked by
    the mean of the entries they do hold.

    Args:
        scores: tensor of rank >= 2.
        sparsity: fraction of blocks to prune, in [0, 1).
        block_shape: `(rows, cols)` of a block.

    Returns:
        A float32 mask with the shape of `scores`, constant over each block.

    Example:
    >>> block_mask(np.abs(kernel), 0.5, (1, 4))
    """
    _check_sparsity(sparsity)
    block_rows, block_cols = (int(b) for b in block_shape)
    if block_rows < 1 or block_cols < 1:
        raise ValueError(f"block_shape entries must be >= 1. Received: block_shape={block_shape}")
    matrix, shape = _as_matrix(ops.convert_to_tensor(scores, "float32"))
    rows, cols = matrix.shape
    grid_r, grid_c = -(-rows // block_rows), -(-cols // block_cols)
    padded = _pad_to(matrix, grid_r * block_rows, grid_c * block_cols)
    counts = _pad_to(ops.ones((rows, cols), "float32"), grid_r * block_rows, grid_c * block_cols)

    def block_sum(x):
        x = ops.reshape(x, (grid_r, block_rows, grid_c, block_cols))
        return ops.sum(x, axis=(1, 3))

    block_scores = block_sum(padded) / block_sum(counts)
    grid_mask = magnitude_mask(block_scores, sparsity)
    full = ops.repeat(ops.repeat(grid_mask, block_rows, axis=0), block_cols, axis=1)
    return ops.reshape(full[:rows, :cols], shape)


def n_m_mask(scores, n=2, m=4):
    """Keeps the `n` largest of every `m` consecutive weights along the inputs.

    Groups run along the reduction axis (rows of the (inputs, outputs) view),
    the layout sparse tensor cores accelerate for 2:4. A last group shorter
    than `m` keeps at most `n` of its entries.

    Args:
        scores: tensor of rank >= 2.
        n: weights kept per group, 1 <= n < m.
        m: group size.

    Returns:
        A float32 mask with the shape of `scores`.

    Raises:
        ValueError: if not `1 <= n < m`.

    Example:
    >>> n_m_mask(np.abs(kernel), 2, 4)   # 50% sparse, 2 of every 4
    """
    n, m = int(n), int(m)
    if not 1 <= n < m:
        raise ValueError(f"N:M sparsity needs 1 <= n < m. Received: n={n}, m={m}")
    matrix, shape = _as_matrix(ops.convert_to_tensor(scores, "float32"))
    rows, cols = matrix.shape
    groups = -(-rows // m)
    # Padding scores below any real one so that padding is never kept.
    padded = _pad_to(matrix, groups * m, cols, value=-1.0)
    grouped = ops.transpose(ops.reshape(padded, (groups, m, cols)), (0, 2, 1))
    _, kept = ops.top_k(grouped, n, sorted=False)
    mask = ops.sum(ops.one_hot(kept, m, dtype="float32"), axis=-2)
    mask = ops.reshape(ops.transpose(mask, (0, 2, 1)), (groups * m, cols))
    return ops.reshape(mask[:rows], shape)
