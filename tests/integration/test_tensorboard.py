"""CompressionTensorBoard writes sparsity, importance and QAT-range scalars that TensorBoard reads."""

import glob

import numpy as np
import pytest

import builders
import keras_compress as kc

pytestmark = pytest.mark.tensorflow
tf = pytest.importorskip("tensorflow")


def read_scalars(log_dir):
    values = {}
    for path in glob.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    return values


def test_pruning_fit_logs_sparsity_and_importance_per_epoch(tmp_path):
    model = builders.functional()
    x, y = builders.dense_data(128)
    kc.prune(model, kc.PruneConfig(0.5))
    builders.compile_tiny(model)
    callback = kc.importance.CompressionTensorBoard(str(tmp_path), data=(x, y))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[kc.PruningCallback(), callback])
    scalars = read_scalars(tmp_path)
    assert [step for step, _ in scalars["sparsity/global"]] == [0, 1]
    assert scalars["sparsity/hidden/kernel"][-1][1] == pytest.approx(0.5, abs=0.01)
    assert scalars["importance/hidden/kernel/mean"][-1][1] > 0
    assert np.isfinite(scalars["importance/out/kernel/max"][-1][1])


def test_qat_fit_logs_the_ranges(tmp_path):
    model = builders.functional()
    x, y = builders.dense_data(64)
    kc.quantize(model, kc.QATConfig(), calibration_data=x)
    builders.compile_tiny(model)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0,
              callbacks=[kc.importance.CompressionTensorBoard(str(tmp_path))])
    scalars = read_scalars(tmp_path)
    assert scalars["qat/hidden/output/min"][0][1] == 0.0
    assert scalars["qat/hidden/output/max"][0][1] > 0.0
