"""`PruningCallback`: moves the pruning masks along their schedule in `fit`."""

import keras

from keras_compress.core.state import states_for_training
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

    def on_train_begin(self, logs=None):
        self._states = states_for_training(self.model, api.get_state, "PruningCallback", "prune")

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
