"""Knowledge distillation as a fine-tuning loss, on Keras's own `keras.distillation.Distiller`.

A compressed model (pruned, channel-pruned, clustered, prepared for QAT) is
fine-tuned against the original model's outputs: the student learns from
the labels and from the teacher's softened logits (Hinton et al. 2015). The
student stays the same model object with its compression state working
(masks stay exact zeros, clusters stay shared, QAT ranges keep training:
their constraints and callbacks act on the student's variables inside the
Distiller's train step) and strips to a plain model afterwards.
"""

import keras

from keras_compress.core import state as core_state


def distill(student, teacher, *, temperature=3.0, distillation_weight=0.5, learning_rate=1e-4,
            features=None):
    """Wraps `student` and `teacher` in a compiled `keras.distillation.Distiller`, ready for `fit`.

    Args:
        student: the model to train (possibly under compression).
        teacher: the model whose outputs it learns from (frozen).
        temperature: softmax temperature of `LogitsDistillation`, > 0.
        distillation_weight: weight of the distillation loss in [0, 1]; the
            labels' loss gets `1 - distillation_weight`.
        learning_rate: Adam's learning rate.
        features: optional `[(teacher layer name, student layer name), ...]`
            for `FeatureDistillation` between layers of matching shapes (a
            channel-pruned student's narrowed layers do not match their
            teacher's: name layers whose width was kept, such as a block's
            output in a residual stream left whole, or leave it out).

    Returns:
        `(distiller, callbacks)`: the compiled Distiller (call `fit` on it)
        and the callbacks the student's compression state needs in `fit`.

    Raises:
        ValueError: on a bad temperature or weight, or on models whose
            inputs or outputs differ (Keras's own check).

    Example:
    >>> distiller, callbacks = keras_compress.training.distill(pruned, original, temperature=4.0)
    >>> distiller.fit(x, y, epochs=2, callbacks=callbacks)
    >>> model = keras_compress.strip(pruned)
    """
    from keras import distillation

    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"temperature must be a number > 0. Received: temperature={temperature!r}")
    if isinstance(distillation_weight, bool) or not isinstance(distillation_weight, (int, float)) or not (
            0 <= distillation_weight <= 1):
        raise ValueError(f"distillation_weight must be a number in [0, 1]. "
                         f"Received: distillation_weight={distillation_weight!r}")
    # A KLDivergence instance, not the default "kl_divergence": Keras 3.15 resolves that
    # string to a plain function, misses its softmax branch and takes the KL of raw
    # logits (negative losses, a student that learns nothing from the teacher).
    losses = [distillation.LogitsDistillation(temperature=float(temperature), loss=keras.losses.KLDivergence())]
    weights = [1.0]
    for teacher_layer, student_layer in features or ():
        losses.append(distillation.FeatureDistillation(teacher_layer_name=teacher_layer,
                                                       student_layer_name=student_layer))
        weights.append(1.0)
    distiller = distillation.Distiller(
        teacher=teacher, student=student, distillation_losses=losses,
        distillation_loss_weights=weights, student_loss_weight=1.0 - float(distillation_weight),
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return distiller, list(core_state.training_callbacks(student).values())
