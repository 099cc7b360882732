"""Explanation fidelity: does the compressed model look at what the original looks at?

SHAP attributions (the `shap` package's permutation explainer, model-agnostic)
of the original and the compressed model, for the class the original
predicts, on the same inputs; their Spearman rank correlation per input,
and the overlap of their top-10% features. 1.0 means the same ranking.
"""

import numpy as np


def _require_shap():
    try:
        import shap
    except ImportError as error:
        raise ImportError(
            f"explanation_fidelity needs the `shap` package ({error}). "
            'Install it with: pip install "keras-compress[explain]"'
        ) from error
    return shap


def _predict_fn(model, shape):
    def predict(flat):
        batch = np.asarray(flat, np.float32).reshape((-1,) + shape)
        if hasattr(model, "predict") and not hasattr(model, "interpreter"):
            out = model.predict(batch, batch_size=1024, verbose=0)
        else:
            out = model.predict(batch)
        out = np.asarray(out, np.float64)
        out = out - out.max(axis=1, keepdims=True)  # logits or probabilities: softmax either way
        return np.exp(out) / np.exp(out).sum(axis=1, keepdims=True)

    return predict


def _spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


def shap_values(model, x, classes, background=None, max_evals=None, seed=0):
    """SHAP attributions of `model` for `classes[i]` on each `x[i]`, shape `(n, features)`."""
    shap = _require_shap()
    x = np.asarray(x, np.float32)
    shape = x.shape[1:]
    flat = x.reshape(len(x), -1)
    background = np.zeros((1, flat.shape[1]), np.float32) if background is None else \
        np.asarray(background, np.float32).reshape(-1, flat.shape[1])
    explainer = shap.explainers.Permutation(_predict_fn(model, shape), shap.maskers.Independent(background),
                                            seed=seed)
    result = explainer(flat, max_evals=max_evals or 2 * flat.shape[1] + 1, silent=True)
    values = np.asarray(result.values)  # (n, features, classes)
    return values[np.arange(len(x)), :, np.asarray(classes)]


def explanation_fidelity(original, compressed, x, background=None, max_evals=None, top_fraction=0.1, seed=0):
    """How similar the SHAP attributions of two models are on inputs `x`.

    Args:
        original: the reference model (Keras model, or anything with
            `.predict(x)` returning class scores, e.g. a `LiteRTModel`).
        compressed: the model to compare (same kinds).
        x: a few inputs (10-50), shape `(n, *input_shape)`.
        background: the masker's reference input(s); default all zeros
            (MNIST's background colour).
        max_evals: model evaluations per input (default `2 * features + 1`,
            one permutation each way).
        top_fraction: the share of features counted as "top" for the overlap.
        seed: the explainer's seed (both models get the same permutations).

    Returns:
        `{"rank_correlation": mean Spearman correlation, "per_input": [...],
        "top_overlap": mean overlap of the top features, "inputs": n}`.

    Raises:
        ImportError: if `shap` is not installed.
        ValueError: for empty `x` or `top_fraction` outside (0, 1].

    Example:
    >>> kc.importance.explanation_fidelity(model, LiteRTModel("m_int8.tflite"), x_test[:20])
    """
    x = np.asarray(x, np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must hold at least one input, shape (n, *input_shape). Received: shape={x.shape}")
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1]. Received: {top_fraction!r}")
    shape = x.shape[1:]
    classes = np.argmax(_predict_fn(original, shape)(x.reshape(len(x), -1)), axis=1)
    a = shap_values(original, x, classes, background, max_evals, seed)
    b = shap_values(compressed, x, classes, background, max_evals, seed)
    k = max(1, int(round(top_fraction * a.shape[1])))
    correlations, overlaps = [], []
    for row_a, row_b in zip(a, b):
        correlations.append(_spearman(row_a, row_b))
        top_a = set(np.argsort(-np.abs(row_a))[:k])
        top_b = set(np.argsort(-np.abs(row_b))[:k])
        overlaps.append(len(top_a & top_b) / k)
    return {"rank_correlation": float(np.mean(correlations)), "per_input": correlations,
            "top_overlap": float(np.mean(overlaps)), "inputs": int(len(x))}
