import numpy as np
import pytest

import builders
import keras_compress as kc


@pytest.fixture(scope="module")
def trained_pair():
    builders.seeded(0)
    model = builders.compile_tiny(builders.functional())
    x, y = builders.dense_data(256)
    model.fit(x, y, epochs=20, batch_size=64, verbose=0)
    return model, x


def test_a_model_explains_exactly_like_itself_and_unlike_a_stranger(trained_pair):
    model, x = trained_pair
    same = kc.importance.explanation_fidelity(model, model, x[:8])
    assert same["rank_correlation"] == pytest.approx(1.0) and same["top_overlap"] == pytest.approx(1.0)
    stranger = builders.functional()  # untrained, other weights
    other = kc.importance.explanation_fidelity(model, stranger, x[:8])
    assert other["rank_correlation"] < 0.6


def test_light_pruning_keeps_the_explanations_close(trained_pair):
    model, x = trained_pair
    pruned = builders.functional()
    pruned.set_weights(model.get_weights())
    kc.prune(pruned, kc.PruneConfig(0.2))
    kc.strip(pruned)
    result = kc.importance.explanation_fidelity(model, pruned, x[:8])
    assert result["rank_correlation"] > 0.8 and result["inputs"] == 8


def test_the_labels_first_feature_dominates_the_attribution(trained_pair):
    # dense_data's label is the argmax of the first 4 features: they should explain most.
    model, x = trained_pair
    classes = np.argmax(model.predict(x[:8], verbose=0), axis=1)
    values = kc.importance.fidelity.shap_values(model, x[:8], classes)
    assert values.shape == (8, 16)
    assert np.abs(values[:, :4]).sum() > np.abs(values[:, 4:]).sum()


def test_bad_inputs(trained_pair):
    model, x = trained_pair
    with pytest.raises(ValueError, match="at least one input"):
        kc.importance.explanation_fidelity(model, model, x[:0])
    with pytest.raises(ValueError, match="top_fraction"):
        kc.importance.explanation_fidelity(model, model, x[:2], top_fraction=0)
