"""Loss gradients with respect to a model's trainable variables, per backend.

Keras 3 has no backend-neutral `grad`, so this is the one place that speaks
to each backend's autodiff: `tf.GradientTape` under TensorFlow (TensorFlow is
the backend there, not an extra import), `jax.grad` over Keras's stateless
call under JAX, and `torch.autograd` under PyTorch.
"""

import keras
import numpy as np


def loss_gradients(model, x, y, loss_fn, variables=None):
    """Gradients of `loss_fn(y, model(x))` for `variables` (default: trainable).

    Args:
        model: a built Keras model.
        x, y: one batch of inputs and labels.
        loss_fn: a Keras loss (callable `(y_true, y_pred) -> scalar`).
        variables: the variables to differentiate (subset of the model's
            trainable variables, in any order).

    Returns:
        A list of NumPy arrays, one per variable.

    Raises:
        ValueError: if the backend is not tensorflow, jax or torch.
    """
    variables = list(model.trainable_variables if variables is None else variables)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=False))
        grads = tape.gradient(loss, [v.value for v in variables])
        return [np.zeros(v.shape, np.float32) if g is None else np.asarray(g) for g, v in zip(grads, variables)]
    if backend == "jax":
        import jax

        trainable = model.trainable_variables
        non_trainable = model.non_trainable_variables
        position = {id(v): i for i, v in enumerate(trainable)}

        def compute(values):
            outputs, _ = model.stateless_call(values, [v.value for v in non_trainable], x, training=False)
            return loss_fn(y, outputs)

        grads = jax.grad(compute)([v.value for v in trainable])
        return [np.asarray(grads[position[id(v)]]) for v in variables]
    if backend == "torch":
        import torch

        for v in variables:
            v.value.grad = None
        loss = loss_fn(y, model(x, training=False))
        grads = torch.autograd.grad(loss, [v.value for v in variables], allow_unused=True)
        return [np.zeros(v.shape, np.float32) if g is None else g.detach().cpu().numpy() for g, v in zip(grads, variables)]
    raise ValueError(f"gradients need the tensorflow, jax or torch backend. Received: backend={backend!r}")
