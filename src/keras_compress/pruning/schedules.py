"""Sparsity schedules: plain callables `step -> sparsity` (as in optax).

Any function of the training step works where a schedule does; the two
built-ins also carry `begin_step` / `end_step`, which `PruneConfig` uses as
the window in which masks are updated when the config does not set one.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ConstantSparsity:
    """`sparsity` from `begin_step` on; 0 before.

    Example:
    >>> ConstantSparsity(0.9, begin_step=100)(50), ConstantSparsity(0.9, begin_step=100)(100)
    (0.0, 0.9)
    """

    sparsity: float
    begin_step: int = 0
    end_step: int | None = None

    def __call__(self, step):
        return float(self.sparsity) if step >= self.begin_step else 0.0


@dataclasses.dataclass(frozen=True)
class PolynomialDecay:
    """Sparsity rising from `initial_sparsity` to `final_sparsity` (tfmot's).

    `s(t) = final + (initial - final) * (1 - p) ** power` with
    `p = clip((t - begin_step) / (end_step - begin_step), 0, 1)`: fast
    pruning early, when there are many redundant weights, and slow near the
    end. Before `begin_step` the sparsity is 0.

    Example:
    >>> s = PolynomialDecay(0.5, 0.9, begin_step=0, end_step=1000)
    >>> s(0), s(1000)
    (0.5, 0.9)
    """

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    power: float = 3.0

    def __post_init__(self):
        if self.end_step <= self.begin_step:
            raise ValueError(
                "end_step must be greater than begin_step. Received: "
                f"begin_step={self.begin_step}, end_step={self.end_step}"
            )

    def __call__(self, step):
        if step < self.begin_step:
            return 0.0
        progress = min(1.0, (step - self.begin_step) / (self.end_step - self.begin_step))
        span = self.initial_sparsity - self.final_sparsity
        return float(self.final_sparsity + span * (1.0 - progress) ** self.power)


def constant(sparsity, begin_step=0, end_step=None):
    """Returns a `ConstantSparsity` schedule."""
    return ConstantSparsity(sparsity, begin_step, end_step)


def polynomial_decay(initial_sparsity, final_sparsity, begin_step, end_step, power=3.0):
    """Returns a `PolynomialDecay` schedule (tfmot's polynomial decay)."""
    return PolynomialDecay(initial_sparsity, final_sparsity, begin_step, end_step, power)
