"""Distillation as a fine-tuning loss: the student learns the teacher and keeps its compression state."""

import keras
import numpy as np
import pytest

import keras_compress as kc
from builders import seeded
from keras_compress.cli.recipe import RecipeError, load_recipe
from keras_compress.training import FinetuneConfig, distill, finetune


def mlp(seed, width=32):
    seeded(seed)
    inputs = keras.Input((16,))
    x = keras.layers.Dense(width, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


def data(n=512):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 16)).astype("float32"), rng.integers(0, 4, n).astype("int32")


def agreement(a, b, x):
    return float(np.mean(np.argmax(a.predict(x, verbose=0), 1) == np.argmax(b.predict(x, verbose=0), 1)))


def test_a_student_distilled_on_the_teacher_alone_learns_to_agree_with_it():
    x, _ = data()
    teacher = mlp(1, width=64)
    out = teacher.get_layer("out")
    out.kernel.assign(np.array(out.kernel) * 10.0)  # a confident teacher: its softened logits carry its choice
    labels = np.argmax(teacher.predict(x, verbose=0), 1).astype("int32")
    noise = np.random.default_rng(1).integers(0, 4, len(x)).astype("int32")  # labels say nothing
    student = mlp(2)
    before = agreement(student, teacher, x)
    finetune(student, x, noise, FinetuneConfig(epochs=30, batch_size=64, learning_rate=1e-2,
                                               temperature=1.0, distillation_weight=1.0), teacher=teacher)
    assert agreement(student, teacher, x) > max(0.8, before + 0.3)
    assert not np.array_equal(labels, noise)


def test_a_pruned_student_keeps_exact_zeros_and_strips_to_a_plain_model():
    x, y = data()
    teacher = mlp(1)
    student = mlp(1)
    student.set_weights(teacher.get_weights())
    kc.prune(student, kc.PruneConfig(target_sparsity=0.75))
    distiller, callbacks = distill(student, teacher, temperature=4.0, learning_rate=1e-3)
    assert [type(c).__name__ for c in callbacks] == ["PruningCallback"]
    before = np.array(student.get_layer("hidden").kernel)
    distiller.fit(x, y, epochs=2, batch_size=64, callbacks=callbacks, verbose=0)
    kernel = np.array(student.get_layer("hidden").kernel)
    assert float(np.mean(kernel == 0)) == pytest.approx(0.75, abs=0.01)
    assert not np.array_equal(kernel[kernel != 0], before[before != 0])
    kc.strip(student)
    assert not kc.is_pruned(student)


def test_bad_distillation_settings_are_named():
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        distill(mlp(1), mlp(2), temperature=0)
    with pytest.raises(ValueError, match="'teacher' must be null, 'original', a path to a .keras file, or a list"):
        FinetuneConfig(teacher="best")
    with pytest.raises(RecipeError, match=r"recipe step 1 \(finetune\): 'distillation_weight' must be in \[0, 1\]"):
        load_recipe("steps:\n  - finetune: {teacher: original, distillation_weight: 2}\n")
    step = load_recipe("steps:\n  - finetune: {teacher: original, temperature: 4}\n").steps[0]
    assert step.teacher == "original" and step.temperature == 4.0


def test_feature_distillation_pulls_a_named_layer_towards_the_teacher_s():
    x, y = data()
    teacher, student = mlp(1), mlp(2)

    def feature_gap():
        grab = lambda m: keras.Model(m.inputs, m.get_layer("hidden").output).predict(x, verbose=0)  # noqa: E731
        return float(np.mean((grab(teacher) - grab(student)) ** 2))

    before = feature_gap()
    distiller, callbacks = distill(student, teacher, distillation_weight=1.0, learning_rate=1e-2,
                                   features=[("hidden", "hidden")])
    distiller.fit(x, y, epochs=10, batch_size=64, callbacks=callbacks, verbose=0)
    assert feature_gap() < 0.5 * before


def test_a_list_of_teachers_is_an_ensemble_of_two_or_more():
    step = load_recipe("steps:\n  - finetune: {teacher: [original, other.keras]}\n").steps[0]
    assert step.to_config().teacher == ("original", "other.keras")
    for bad in ("[original]", "[original, best]", "[]"):
        with pytest.raises(RecipeError, match="a list of 2 or more of these"):
            load_recipe(f"steps:\n  - finetune: {{teacher: {bad}}}\n")
