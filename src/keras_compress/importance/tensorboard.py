"""`CompressionTensorBoard`: sparsity, importance and QAT ranges as TensorBoard scalars.

At the end of every `every` epochs it writes, under `log_dir`:
- `sparsity/<weight>`: the fraction of exact zeros of each compressible
  weight, and `sparsity/global`;
- `importance/<weight>/mean` and `/max` (importance scores on `data`,
  when given) — how the model's reliance on each layer moves in training;
- `qat/<site>/min` and `/max`: the activation ranges of a QAT model.

It writes with `tf.summary` (TensorBoard's own format), so TensorFlow must
be installed; the model may train under any backend.
"""

import keras
import numpy as np

from keras_compress.core import walk


class CompressionTensorBoard(keras.callbacks.Callback):
    """Writes compression scalars for TensorBoard during `fit`.

    Args:
        log_dir: the folder TensorBoard reads (`tensorboard --logdir ...`).
        data: optional `(x, y)` samples for importance statistics.
        method: importance method for those statistics.
        every: write every this many epochs.

    Example:
    >>> model.fit(x, y, epochs=3, callbacks=[kc.PruningCallback(),
    ...           kc.importance.CompressionTensorBoard("runs/tb", data=(x[:1024], y[:1024]))])
    """

    def __init__(self, log_dir, data=None, method="taylor", every=1):
        super().__init__()
        try:
            import tensorflow as tf
        except ImportError as error:
            raise ImportError(
                f"CompressionTensorBoard writes with tf.summary; TensorFlow could not be imported ({error}). "
                'Install it with: pip install "keras-compress[export,tensorboard]"'
            ) from error
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "CompressionTensorBoard writes with tf.summary, which needs the `tensorboard` package. "
                'Install it with: pip install "keras-compress[tensorboard]"'
            )
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1. Received: every={every!r}")
        self._tf = tf
        self.log_dir = str(log_dir)
        self.data = data
        self.method = method
        self.every = every
        self._writer = None

    def scalars(self):
        """The scalars written now: `{tag: value}`."""
        model = self.model
        values = {}
        chosen, _ = walk.find_weights(model)
        zeros = total = 0
        for ref in chosen:
            array = np.asarray(keras.ops.convert_to_numpy(ref.variable.value))
            name = walk.weight_name(model, ref.variable)
            values[f"sparsity/{name}"] = float(np.mean(array == 0))
            zeros += int(np.sum(array == 0))
            total += array.size
        values["sparsity/global"] = zeros / max(1, total)
        if self.data is not None:
            from keras_compress.importance.api import score

            names = {walk.weight_name(model, ref.variable) for ref in chosen}
            for name, array in score(model, self.data, method=self.method, max_batches=8).items():
                if name in names:
                    values[f"importance/{name}/mean"] = float(np.mean(array))
                    values[f"importance/{name}/max"] = float(np.max(array))
        from keras_compress.quantization import api as qat

        if qat.is_quantized(model):
            for site, value in qat.quantization_ranges(model).items():
                if value is not None:
                    values[f"qat/{site}/min"], values[f"qat/{site}/max"] = value
        return values

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        if self._writer is None:
            self._writer = self._tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for tag, value in self.scalars().items():
                self._tf.summary.scalar(tag, value, step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
