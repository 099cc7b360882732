"""`ChannelPruneConfig`: how many whole channels to remove, and which."""

import dataclasses
import re
from typing import Any

from keras_compress.core.config import BaseConfig

ALLOCATIONS = ("uniform", "sensitivity")
IMPORTANCES = ("l1", "l2", "bn_scale", "random", "taylor", "fisher")
DATA_IMPORTANCES = ("taylor", "fisher")  # measured on data: prune_channels(..., data=(x, y))


@dataclasses.dataclass(frozen=True)
class ChannelPruneConfig(BaseConfig):
    """Structured (channel) pruning settings.

    Args:
        fraction: share of each prunable group's channels removed, in [0, 1).
        importance: how channels are ranked within a group: `"l1"` or `"l2"`
            (magnitude of every coupled weight: the producers' filters, the
            normalization scales, the consumers' input rows), `"bn_scale"`
            (|gamma| of the group's BatchNormalizations: network slimming;
            groups without one fall back to `"l1"`), `"random"` (a control),
            `"taylor"` / `"fisher"` (first-order Taylor and empirical Fisher
            scores of the named-weights analysis, summed over the coupled
            weights; need `data`), or a callable `group -> scores` (not
            serialisable).
        macs_target: keep at most this share of the model's MACs, in (0, 1]:
            the fraction is then found by bisection (the same for every
            group) and `fraction` is its upper bound. `None`: use `fraction`.
        params_target: keep at most this share of the model's parameters, in
            (0, 1]: a budget in parameters instead of MACs, found the same way
            (each bisection step counts the parameters of the model it
            builds). Not with `macs_target`.
        latency_target: keep at most this share of the model's measured
            LiteRT batch-1 latency, in (0, 1]: each bisection step exports
            the model it builds to a float32 `.tflite` and times it (median
            of `latency_runs` invokes, one interpreter thread), so it costs
            a conversion per step (12 steps) and needs TensorFlow; timings
            are noisy, so leave a margin. One budget at a time.
        latency_runs: timed invokes per latency measurement, >= 1.
        round_to: kept channel counts are multiples of this (SIMD kernels
            run fastest on multiples of 4 or 8), never more than the group has.
        min_channels: a group keeps at least this many channels.
        exclude: regex on layer names: the output channels of a matching
            layer stay whole (with every channel coupled to them); its input
            channels may still shrink with the layers that make them.
        seed: seed of `"random"` importance.
        allocation: `"uniform"` (every group loses the same share) or
            `"sensitivity"` (each group's accuracy is measured with a
            quarter, half and three quarters of its channels removed, the
            others intact, and the `macs_target` budget is spent where it
            costs least accuracy per MAC saved; needs `macs_target` and `data`).

    Raises:
        ValueError: on a value outside its allowed range.

    Example:
    >>> cfg = ChannelPruneConfig(fraction=0.5, round_to=8)
    """

    fraction: float = 0.5
    importance: Any = dataclasses.field(default="l1", metadata={"recipe_kind": "str"})
    macs_target: float | None = None
    round_to: int = dataclasses.field(default=1, metadata={"minimum": 1})
    min_channels: int = dataclasses.field(default=1, metadata={"minimum": 1})
    exclude: str | None = dataclasses.field(default=None, metadata={"recipe_kind": "regex"})
    seed: int = 0
    allocation: str = "uniform"
    params_target: float | None = None
    latency_target: float | None = None
    latency_runs: int = dataclasses.field(default=200, metadata={"minimum": 1})

    def __post_init__(self):
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) or not 0 <= self.fraction < 1:
            raise ValueError(f"fraction must be a number in [0, 1). Received: fraction={self.fraction!r}")
        if not callable(self.importance) and self.importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {list(IMPORTANCES)} or a callable group -> scores. "
                             f"Received: importance={self.importance!r}")
        if self.macs_target is not None and (
            isinstance(self.macs_target, bool) or not isinstance(self.macs_target, (int, float))
            or not 0 < self.macs_target <= 1
        ):
            raise ValueError(f"macs_target must be None or a number in (0, 1]. Received: macs_target={self.macs_target!r}")
        if self.params_target is not None and (
            isinstance(self.params_target, bool) or not isinstance(self.params_target, (int, float))
            or not 0 < self.params_target <= 1
        ):
            raise ValueError("params_target must be None or a number in (0, 1]. "
                             f"Received: params_target={self.params_target!r}")
        if self.latency_target is not None and (
            isinstance(self.latency_target, bool) or not isinstance(self.latency_target, (int, float))
            or not 0 < self.latency_target <= 1
        ):
            raise ValueError("latency_target must be None or a number in (0, 1]. "
                             f"Received: latency_target={self.latency_target!r}")
        budgets = {name: getattr(self, name) for name in ("macs_target", "params_target", "latency_target")
                   if getattr(self, name) is not None}
        if len(budgets) > 1:
            raise ValueError("set one budget: macs_target, params_target or latency_target. Received: "
                             + ", ".join(f"{k}={v!r}" for k, v in budgets.items()))
        if self.allocation == "sensitivity" and (self.params_target is not None or self.latency_target is not None):
            other = "params_target" if self.params_target is not None else "latency_target"
            raise ValueError("allocation='sensitivity' spends a MACs budget: use macs_target with it "
                             f"(received {other}={budgets[other]!r})")
        if isinstance(self.latency_runs, bool) or not isinstance(self.latency_runs, int) or self.latency_runs < 1:
            raise ValueError(f"latency_runs must be an integer >= 1. Received: latency_runs={self.latency_runs!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {list(ALLOCATIONS)}. Received: allocation={self.allocation!r}")
        if self.allocation == "sensitivity" and self.macs_target is None:
            raise ValueError("allocation='sensitivity' spends a budget: set macs_target (a share of the MACs, "
                             "e.g. 0.4)")
        for name in ("round_to", "min_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1. Received: {name}={value!r}")
        if self.exclude is not None:
            try:
                re.compile(self.exclude)
            except (re.error, TypeError) as error:
                raise ValueError(f"exclude must be a regular expression ({error}). Received: exclude={self.exclude!r}") from None
