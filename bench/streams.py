"""Entry points for `bench/user_data.py --case streaming`: a dataset too big to hold, made batch by batch.

    keras-compress evaluate lenet.keras --data "streams:million?n=1000000"

Each batch is drawn from its own seed, so every pass yields the same samples
and no pass holds more than one batch (1,000,000 x 28 x 28 float32 = 3.1 GB).
"""

import keras
import numpy as np


class Generated(keras.utils.PyDataset):
    """`n` random 28x28x1 images in [0, 1] with labels 0-9, `batch` per item, drawn from `seed + index`."""

    def __init__(self, n, batch=1000, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.n, self.batch, self.seed = int(n), int(batch), int(seed)

    def __len__(self):
        return -(-self.n // self.batch)

    def __getitem__(self, index):
        count = min(self.batch, self.n - index * self.batch)
        rng = np.random.default_rng(self.seed + index)
        x = rng.random((count, 28, 28, 1), dtype=np.float32)
        y = (x[:, :14].mean(axis=(1, 2, 3)) * 10).astype(np.int32) % 10
        return x, y


def million(n=1_000_000, batch=1000):
    """Train and test splits of `n` generated samples each."""
    return {"train": Generated(n, batch, seed=0), "test": Generated(n, batch, seed=10_000_000)}
