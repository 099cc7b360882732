"""`PruneConfig`: what to prune, how much, when and in which pattern."""

import dataclasses
import re
from typing import Any, Callable

from keras_compress.core.config import BaseConfig
from keras_compress.pruning import schedules

SCHEDULES = ("constant", "polynomial")
PATTERNS = ("unstructured", "block", "n:m")


def _check_fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1). Received: {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class PruneConfig(BaseConfig):
    """Magnitude pruning settings.

    Args:
        target_sparsity: final fraction of zeros in each pruned tensor, [0, 1).
        schedule: `"constant"` (the target from `begin_step` on),
            `"polynomial"` (tfmot's polynomial decay from `initial_sparsity`
            to the target between `begin_step` and `end_step`), or any
            callable `step -> sparsity` (not serialisable).
        initial_sparsity: start of the polynomial ramp.
        begin_step: first training step at which masks are updated.
        end_step: last step at which masks are updated; `None` means never
            stop for a constant or callable schedule. Required for
            `"polynomial"`.
        frequency: masks are updated every `frequency` steps (and at
            `end_step`).
        power: exponent of the polynomial ramp.
        pattern: `"unstructured"`, `"block"` (whole `block_shape` blocks) or
            `"n:m"` (keep `n` of every `m` along the inputs; the sparsity is
            then `1 - n/m` and `target_sparsity` is ignored).
        block_shape: `(rows, cols)` of a block in the (inputs, outputs) view.
        n, m: the N:M pattern.
        layer_targets: `{regex: sparsity}`; a tensor whose layer name or
            variable path matches a regex (first match wins) gets that final
            sparsity instead of `target_sparsity`.
        include_frozen: also prune the weights of frozen layers (a
            transfer-learning backbone set `trainable = False`); their masks
            apply as for any weight, and fine-tuning leaves the kept values
            as they are. Default `False`: frozen means "leave it alone".

    Raises:
        ValueError: on a value outside its allowed range.

    Example:
    >>> cfg = PruneConfig(target_sparsity=0.9, schedule="polynomial",
    ...                   initial_sparsity=0.5, end_step=2000)
    """

    # Field metadata tells a recipe what a YAML value may be (core/steps.py):
    # `minimum` for integers, `recipe_kind` where Python also takes a callable.
    target_sparsity: float = 0.5
    schedule: Any = dataclasses.field(default="constant", metadata={"recipe_kind": "str"})
    initial_sparsity: float = 0.0
    begin_step: int = dataclasses.field(default=0, metadata={"minimum": 0})
    end_step: int | None = dataclasses.field(default=None, metadata={"minimum": 0})
    frequency: int = dataclasses.field(default=100, metadata={"minimum": 1})
    power: float = 3.0
    pattern: str = "unstructured"
    block_shape: tuple[int, int] = (1, 4)
    n: int = dataclasses.field(default=2, metadata={"minimum": 0})
    m: int = dataclasses.field(default=4, metadata={"minimum": 0})
    layer_targets: dict[str, float] | None = None
    include_frozen: bool = False

    def __post_init__(self):
        _check_fraction("target_sparsity", self.target_sparsity)
        _check_fraction("initial_sparsity", self.initial_sparsity)
        if not callable(self.schedule) and self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {list(SCHEDULES)} or a callable step -> sparsity. "
                f"Received: schedule={self.schedule!r}"
            )
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {list(PATTERNS)}. Received: pattern={self.pattern!r}")
        for name in ("begin_step", "frequency", "n", "m"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "frequency" else 0):
                low = 1 if name == "frequency" else 0
                raise ValueError(f"{name} must be an integer >= {low}. Received: {name}={value!r}")
        if self.end_step is not None and (
            not isinstance(self.end_step, int) or self.end_step < self.begin_step
        ):
            raise ValueError(
                "end_step must be None or an integer >= begin_step. Received: "
                f"begin_step={self.begin_step}, end_step={self.end_step!r}"
            )
        if self.schedule == "polynomial":
            if self.end_step is None or self.end_step <= self.begin_step:
                raise ValueError(
                    "schedule='polynomial' needs end_step > begin_step. Received: "
                    f"begin_step={self.begin_step}, end_step={self.end_step!r}"
                )
            if self.initial_sparsity > self.target_sparsity:
                raise ValueError(
                    "initial_sparsity must not exceed target_sparsity. Received: "
                    f"initial_sparsity={self.initial_sparsity}, target_sparsity={self.target_sparsity}"
                )
        if self.pattern == "n:m" and not 1 <= self.n < self.m:
            raise ValueError(f"pattern 'n:m' needs 1 <= n < m. Received: n={self.n}, m={self.m}")
        block = tuple(self.block_shape)
        if len(block) != 2 or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in block):
            raise ValueError(f"block_shape must be two integers >= 1. Received: block_shape={self.block_shape!r}")
        object.__setattr__(self, "block_shape", block)
        if self.layer_targets is not None:
            if not isinstance(self.layer_targets, dict):
                raise ValueError(
                    "layer_targets must be a dict {layer regex: sparsity}. "
                    f"Received: layer_targets={self.layer_targets!r}"
                )
            for pattern, value in self.layer_targets.items():
                try:
                    re.compile(pattern)
                except (re.error, TypeError) as error:
                    raise ValueError(f"layer_targets key {pattern!r} is not a valid regex: {error}") from None
                _check_fraction(f"layer_targets[{pattern!r}]", value)

    def __hash__(self):  # the generated hash fails on the layer_targets dict
        return hash(repr(self))

    def final_sparsity(self, target=None):
        """The sparsity a tensor with final `target` reaches (1 - n/m for N:M)."""
        if self.pattern == "n:m":
            return 1.0 - self.n / self.m
        return self.target_sparsity if target is None else target

    def schedule_fn(self, target) -> Callable[[int], float]:
        """The callable `step -> sparsity` for a tensor whose final target is `target`."""
        if callable(self.schedule):
            base = self.schedule
            scale = target / self.target_sparsity if self.target_sparsity > 0 else 1.0
            return lambda step: min(float(base(step)) * scale, target)
        if self.schedule == "constant":
            return schedules.constant(target, self.begin_step)
        return schedules.polynomial_decay(
            min(self.initial_sparsity, target), target, self.begin_step, self.end_step, self.power
        )

    def should_update(self, step):
        """Whether masks are recomputed at training step `step`."""
        if step < self.begin_step:
            return False
        if self.end_step is not None and step > self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step
