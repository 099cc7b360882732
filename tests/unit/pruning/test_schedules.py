import pytest

from keras_compress import PruneConfig, schedules


def test_polynomial_decay_matches_tfmot_formula():
    s = schedules.polynomial_decay(0.5, 0.9, begin_step=100, end_step=1100, power=3)
    assert s(50) == 0.0
    assert s(100) == pytest.approx(0.5)
    assert s(600) == pytest.approx(0.9 + (0.5 - 0.9) * 0.5**3)
    assert s(1100) == pytest.approx(0.9)
    assert s(5000) == pytest.approx(0.9)


def test_constant_schedule_starts_at_begin_step():
    s = schedules.constant(0.8, begin_step=10)
    assert (s(9), s(10), s(10_000)) == (0.0, 0.8, 0.8)


def test_polynomial_needs_end_after_begin():
    with pytest.raises(ValueError, match="end_step must be greater than begin_step"):
        schedules.polynomial_decay(0.1, 0.5, 10, 10)


def test_config_updates_every_frequency_steps_and_at_end_step():
    cfg = PruneConfig(0.9, schedule="polynomial", begin_step=10, end_step=55, frequency=20)
    assert [s for s in range(100) if cfg.should_update(s)] == [10, 30, 50, 55]


def test_callable_schedule_is_accepted_and_scaled_per_layer():
    cfg = PruneConfig(0.8, schedule=lambda step: min(0.8, step / 100), layer_targets={"fc": 0.4})
    fn = cfg.schedule_fn(0.4)
    assert fn(50) == pytest.approx(0.25)
    assert fn(1000) == pytest.approx(0.4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"target_sparsity": 1.0}, "target_sparsity must be a number in \\[0, 1\\)"),
        ({"target_sparsity": -0.1}, "target_sparsity"),
        ({"schedule": "cosine"}, "schedule must be one of"),
        ({"schedule": "polynomial"}, "needs end_step"),
        ({"pattern": "2:4"}, "pattern must be one of"),
        ({"pattern": "n:m", "n": 4, "m": 4}, "1 <= n < m"),
        ({"frequency": 0}, "frequency must be an integer >= 1"),
        ({"block_shape": (0, 4)}, "block_shape"),
        ({"layer_targets": {"fc": 1.2}}, "layer_targets"),
        ({"layer_targets": {"(": 0.5}}, "not a valid regex"),
    ],
)
def test_bad_config_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruneConfig(**kwargs)


def test_config_round_trips_and_tolerates_missing_keys():
    cfg = PruneConfig(0.9, schedule="polynomial", initial_sparsity=0.5, end_step=300, layer_targets={"fc1": 0.95})
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg
    assert PruneConfig.from_dict({"target_sparsity": 0.3}) == PruneConfig(0.3)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="Unknown key\\(s\\) for PruneConfig: \\['sparsity'\\]"):
        PruneConfig.from_dict({"sparsity": 0.5})
