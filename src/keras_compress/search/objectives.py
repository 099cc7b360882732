"""What a search optimises and what it must respect, read from a trial's report on its real artifact."""

import dataclasses
import re

# objective name -> (ArtifactRow field, "minimize" | "maximize"); "metric" takes the metric's own direction.
MEASURES = {
    "metric": (None, None),
    "lost": (None, "minimize"),
    "gzip_bytes": ("gzip_bytes", "minimize"),
    "raw_bytes": ("raw_bytes", "minimize"),
    "latency_b1_ms": ("latency_b1_ms", "minimize"),
    "latency_b32_ms": ("latency_b32_ms", "minimize"),
    "macs": ("macs", "minimize"),
    "nonzero": ("nonzero", "minimize"),
}
_CONSTRAINT = re.compile(r"^\s*(\w+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


class ObjectiveError(ValueError):
    """An objective, constraint or artifact the search cannot measure."""


def check_objectives(names):
    """The objective names as a tuple; an unknown one is an `ObjectiveError` naming the allowed."""
    names = tuple(names)
    if not names:
        raise ObjectiveError(f"a search needs at least one objective. Allowed: {sorted(MEASURES)}")
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise ObjectiveError(f"unknown objective(s) {unknown}. Allowed: {sorted(MEASURES)}")
    if len(set(names)) != len(names):
        raise ObjectiveError(f"objectives must be distinct. Received: {list(names)}")
    return names


@dataclasses.dataclass(frozen=True)
class Constraint:
    """`measure <= bound` or `measure >= bound`, e.g. `lost <= 0.005` or `latency_b1_ms <= 2`."""

    measure: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text):
        match = _CONSTRAINT.match(str(text))
        if not match:
            raise ObjectiveError(f"a constraint is 'MEASURE <= NUMBER' or 'MEASURE >= NUMBER'. Received: {text!r}")
        measure, op, bound = match.groups()
        if measure not in MEASURES:
            raise ObjectiveError(f"constraint {text!r}: unknown measure {measure!r}. Allowed: {sorted(MEASURES)}")
        return cls(measure, op, float(bound))

    def violation(self, value):
        """How far `value` is outside the bound (<= 0: satisfied), Optuna's constraint convention."""
        if value is None:
            return float("inf")
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self):
        return f"{self.measure} {self.op} {self.bound:g}"


def choose_row(report, artifact=None):
    """The row a trial is judged by: `artifact` by file name, else the int8 LiteRT file, else the last LiteRT row."""
    rows = [r for r in report.rows if r.technique != "baseline"]
    if artifact:
        for row in rows:
            if row.name == artifact:
                return row
        raise ObjectiveError(f"the trial wrote no artifact {artifact!r}. It wrote: {[r.name for r in rows]}")
    for row in rows:
        if row.name.endswith("_int8.tflite"):
            return row
    litert = [r for r in rows if r.name.endswith(".tflite")]
    if not litert:
        raise ObjectiveError(f"the trial wrote no LiteRT artifact to measure. It wrote: {[r.name for r in rows]}")
    return litert[-1]


def measure(report, row, name):
    """The value of one measure for a trial's chosen row."""
    if name == "metric":
        return row.accuracy
    if name == "lost":
        return report.lost(row)
    return getattr(row, MEASURES[name][0])


def directions(objectives, metric):
    """Optuna directions of the objectives; the metric's follows `metric.higher_is_better`."""
    out = []
    for name in objectives:
        if name == "metric":
            out.append("maximize" if metric.higher_is_better else "minimize")
        else:
            out.append(MEASURES[name][1])
    return out
