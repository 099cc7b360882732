"""Choosing weights: frozen layers (transfer learning) are left alone unless a technique is asked to take them."""

import keras
import numpy as np

import builders
import keras_compress as kc
from keras_compress.core import walk


def frozen_hidden():
    model = builders.functional()
    model.get_layer("hidden").trainable = False
    return model


def test_frozen_weights_are_chosen_only_when_asked():
    model = frozen_hidden()
    chosen, skipped = walk.find_weights(model)
    assert [r.path for r in chosen] == [model.get_layer("out").kernel.path]
    assert (model.get_layer("hidden").kernel.path, walk.SKIP_NOT_TRAINABLE) in skipped
    chosen, _ = walk.find_weights(model, include_frozen=True)
    assert {r.layer.name for r in chosen} == {"hidden", "out"}
    # State variables a layer made non-trainable itself stay out.
    bn_model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 1, name="c"),
                                 keras.layers.BatchNormalization(name="bn")])
    bn_model.trainable = False
    chosen, _ = walk.find_weights(bn_model, include_frozen=True)
    assert [r.layer.name for r in chosen] == ["c"]


def test_pruning_and_clustering_take_frozen_weights_when_asked():
    model = kc.prune(frozen_hidden(), kc.PruneConfig(0.75, include_frozen=True))
    kc.strip(model)
    kernel = np.asarray(model.get_layer("hidden").kernel)
    assert float(np.mean(kernel == 0)) == 0.75
    assert not model.get_layer("hidden").kernel.trainable
    left = kc.strip(kc.prune(frozen_hidden(), kc.PruneConfig(0.75)))
    assert float(np.mean(np.asarray(left.get_layer("hidden").kernel) == 0)) == 0.0
    clustered = kc.strip(kc.cluster(frozen_hidden(), kc.ClusterConfig(num_clusters=4, include_frozen=True)))
    assert len(np.unique(np.asarray(clustered.get_layer("hidden").kernel))) <= 4
    untouched = kc.strip(kc.cluster(frozen_hidden(), kc.ClusterConfig(num_clusters=4)))
    assert len(np.unique(np.asarray(untouched.get_layer("hidden").kernel))) > 4
