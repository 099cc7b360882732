"""`PruningCallback`: moves the pruning masks along their schedule in `fit`."""

import keras

from keras_compress.core import walk
from keras_compress.pruning import api


class PruningCallback(keras.callbacks.Callback):
    """Updates pruning masks during `fit`, following each config's schedule.

    The step counter lives in the pruning state, so several `fit` calls
    continue one schedule. Between mask updates the callback does nothing on
    the hot path: keeping pruned weights at zero is done inside the compiled
    train step by the weights' mask constraints.

    Args:
        verbose: if true, prints the sparsity reached at each mask update.

    Raises:
        ValueError: at the start of `fit`, if no layer of the model is being
            pruned (forgetting `prune` is a mistake worth stopping for).

    Example:
    >>> model.fit(x, y, epochs=2, callbacks=[keras_compress.PruningCallback()])
    """

    def __init__(self, verbose=False):
        super().__init__()
        self.verbose = verbose
        self._states = []
        self._update_steps = set()

    def on_train_begin(self, logs=None):
        model = self.model
        self._states = [
            state for layer in walk.iter_layers(model)
            if (state := api.get_state(layer)) is not None
        ]
        if not self._states:
            raise ValueError(
                f"PruningCallback found no pruned layers in model {model.name!r}: "
                "call keras_compress.prune(model, config) before fit."
            )
        # A train step traced before `prune` set the mask constraints would
        # not apply them: rebuild it once, not on every `fit` (tracing costs).
        if any(state.needs_retrace for state in self._states):
            model.make_train_function(force=True)
            for state in self._states:
                state.needs_retrace = False

    # Only a batch-begin hook: a batch-end hook would make Keras turn off its
    # asynchronous callback dispatch and wait for every step's logs.
    def on_train_batch_begin(self, batch, logs=None):
        due = [state for state in self._states if state.config.should_update(state.step)]
        for state in self._states:
            state.step += 1
        if not due:
            return
        model = self.model  # on JAX this syncs the training state into the variables
        for state in due:
            step = state.step - 1
            api.update_masks(state, step)
            if self.verbose:
                rows = api.pruning_summary(model)
                mean = sum(r["sparsity"] for r in rows if "sparsity" in r) / max(1, len(rows))
                print(f"\n[pruning] step {step}: mean sparsity {mean:.3f}")
        if keras.backend.backend() == "jax":
            # JAX's compiled step holds the masks as constants; recompile it.
            model.make_train_function(force=True)
