"""The recipe's `finetune` step (`FinetuneConfig`'s fields) and `trainable` step (`TrainableConfig`'s).

    - finetune: {epochs: 3, batch_size: 128, learning_rate: 1.0e-4}
    - finetune: {epochs: 2, teacher: original, temperature: 4.0, distillation_weight: 0.7}

With a `teacher`, the fine-tuning distils (`keras_compress.training.distill`):
`original` is the model as it was before the recipe's first step.
"""

import dataclasses
import math
import os

from keras_compress.core.steps import RecipeError, Step, register_step, where
from keras_compress.training.config import FinetuneConfig
from keras_compress.training.trainable import TrainableConfig


@register_step
@dataclasses.dataclass(frozen=True)
class FinetuneStep(Step):
    """Train for `epochs` with Adam at `learning_rate` (with each technique's callback).

    Example:
    >>> FinetuneStep({"epochs": 2, "learning_rate": 1e-4}).batch_size
    128
    """

    name = "finetune"
    config_class = FinetuneConfig
    trains = True

    def steps_per_epoch(self, num_samples: int) -> int:
        """Training steps in one epoch over `num_samples` samples."""
        return self.to_config().steps_per_epoch(num_samples)

    def prepare(self, run, index, steps):
        """The teacher: a copy of the model before the recipe's first step, a `.keras` file, or their average."""
        teacher = self.to_config().teacher
        if teacher is None:
            return None
        if ("teacher", teacher) in run.cache:  # steps naming the same teacher share it (built, measured once)
            return run.cache[("teacher", teacher)]
        members = [_load_teacher(run, index, t) for t in (teacher if isinstance(teacher, tuple) else (teacher,))]
        if len(members) == 1:
            chosen = members[0]
        else:
            from keras_compress import ensemble

            try:
                chosen = ensemble.average(members, name="teacher_ensemble")
            except ensemble.EnsembleError as error:
                raise RecipeError(f"{where(index, self.name)}: the teacher ensemble: {error}") from None
        student = [tuple(t.shape[1:]) for t in run.model.outputs]
        given = [tuple(t.shape[1:]) for t in chosen.outputs]
        if given != student:
            raise RecipeError(f"{where(index, self.name)}: the teacher's outputs {given} do not match the "
                              f"model's {student}")
        run.cache[("teacher", teacher)] = chosen
        return chosen

    def run(self, run, index):
        from keras_compress.training import finetune

        config = self.to_config()
        if config.epochs:
            run.log(f"step {index}: finetune {config.epochs} epoch(s) x "
                    f"{config.steps_per_epoch(run.num_train_samples)} steps, learning rate {config.learning_rate:g}")
        teacher = run.prepared.get(index)
        if teacher is not None and config.epochs:
            _measure_teacher(run, teacher, config.teacher)
        record = finetune(run.model, run.data.train, None, config, teacher=teacher,
                          verbose=1 if run.progress else 0, loss=run.loss)
        if config.epochs and not run.techniques:
            run.techniques.append("finetune")
        return {"step": index, **record}


def _load_teacher(run, index, teacher):
    import keras

    if teacher == "original":
        if "original" not in run.cache:
            clone = keras.models.clone_model(run.model)
            clone.set_weights(run.model.get_weights())
            run.cache["original"] = clone
        return run.cache["original"]
    if not os.path.isfile(teacher):
        raise FileNotFoundError(f"{where(index, 'finetune')}: teacher file not found: {teacher!r}")
    try:
        return keras.saving.load_model(teacher, compile=False)
    except Exception as error:  # noqa: BLE001 - a corrupt or foreign file: one clear error
        raise ValueError(f"{where(index, 'finetune')}: the teacher file {teacher!r} does not load as a Keras "
                         f"model: {type(error).__name__}: {' '.join(str(error).split())[:300]}") from None


def _measure_teacher(run, teacher, described):
    """A report row for the teacher (once per teacher): its own metric on the test split, beside the artifacts."""
    from keras_compress.core.report import ArtifactRow

    if any(seen is teacher for seen in run.cache.get("measured_teachers", [])):
        return
    run.cache.setdefault("measured_teachers", []).append(teacher)
    names = described if isinstance(described, tuple) else (described,)
    label = "the model before the recipe" if names == ("original",) else ", ".join(
        "original" if n == "original" else os.path.basename(n) for n in names)
    stats = run.stats(teacher)
    run.report.add(ArtifactRow(name=f"teacher: {teacher.name}", technique="teacher (not an artifact)", fmt="keras",
                               notes=f"distillation teacher ({'average of ' if len(names) > 1 else ''}{label})",
                               **stats))


@register_step
@dataclasses.dataclass(frozen=True)
class TrainableStep(Step):
    """Freeze or unfreeze layers by name (transfer learning: unfreeze a backbone's last blocks, then fine-tune).

    Example:
    >>> TrainableStep({"layers": "block_16", "trainable": True}).to_config().trainable
    True
    """

    name = "trainable"
    config_class = TrainableConfig

    def prepare(self, run, index, steps):
        # The regex must match a layer of this model: tried on the model now, undone at once.
        from keras_compress.training.trainable import set_trainable

        flags = {id(layer): layer.trainable for layer in run.model._flatten_layers(include_self=True, recursive=True)}
        try:
            set_trainable(run.model, self.to_config())
        except ValueError as error:
            raise RecipeError(f"{where(index, self.name)}: {error}") from None
        finally:
            for layer in run.model._flatten_layers(include_self=True, recursive=True):
                if layer.trainable != flags[id(layer)]:
                    layer.trainable = flags[id(layer)]
        return None

    def run(self, run, index):
        from keras_compress.training.trainable import set_trainable

        config = self.to_config()
        changed = set_trainable(run.model, config)
        trainable = sum(math.prod(v.shape) for v in run.model.trainable_variables)
        run.log(f"step {index}: {'unfreeze' if config.trainable else 'freeze'} {len(changed)} layer(s); "
                f"{trainable:,} trainable parameters")
        return {"step": index, "layers": changed, "trainable": config.trainable, "trainable_parameters": trainable}
