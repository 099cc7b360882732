"""What a search found: the Pareto front as a table and plots, and the best trials written as recipes."""

import base64
import html
import io
import json
import os

import yaml

from keras_compress.core.files import atomic_write

RESULTS_JSON = "search.json"
RESULTS_MD = "search.md"
RESULTS_HTML = "search.html"
BEST_RECIPE = "best_recipe.yaml"


class SearchResult:
    """The finished trials of a study, its feasible Pareto front, and the files written from them.

    Attributes:
        study: the `optuna.Study`.
        objectives: the objective names, in the study's order.
        constraints: the `Constraint`s every reported trial is checked against.
        out_dir: where `write` puts `search.json`, `search.md`, `search.html` and the best recipes.
    """

    def __init__(self, study, space, objectives, constraints, metric, out_dir):
        self.study, self.space, self.objectives = study, space, tuple(objectives)
        self.constraints, self.metric, self.out_dir = tuple(constraints), metric, out_dir
        self.files = {}

    # -- trials --------------------------------------------------------------

    def completed(self):
        """Completed trials, by number."""
        import optuna

        return sorted(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: t.number)

    def failed(self):
        """Failed trials with their recorded reasons: `[(number, reason)]`."""
        import optuna

        return [(t.number, t.user_attrs.get("error", "unknown")) for t in
                self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))]

    def stopped(self):
        """Trials stopped early (`search.early`) with the reason: `[(number, reason)]`."""
        import optuna

        return [(t.number, t.user_attrs.get("stopped", "pruned")) for t in
                self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))]

    @staticmethod
    def feasible(trial):
        return all(v <= 0 for v in trial.user_attrs.get("constraints", []))

    def pareto(self):
        """The feasible trials no other feasible trial dominates (better or equal on every objective, better on one)."""
        directions = [d.name.lower() for d in self.study.directions]
        pool = [t for t in self.completed() if self.feasible(t)]

        def better_or_equal(a, b, direction):
            return a >= b if direction == "maximize" else a <= b

        def dominates(a, b):
            pairs = list(zip(a.values, b.values, directions))
            return all(better_or_equal(x, y, d) for x, y, d in pairs) and any(x != y for x, y, _ in pairs)

        return [t for t in pool if not any(dominates(other, t) for other in pool if other is not t)]

    def best(self, objective=None):
        """The feasible trial best on `objective` (default: the metric if searched, else the first objective)."""
        objective = objective or ("metric" if "metric" in self.objectives else self.objectives[0])
        index = self.objectives.index(objective)
        direction = self.study.directions[index].name.lower()
        pool = [t for t in self.completed() if self.feasible(t)]
        if not pool:
            return None
        # Ties on the chosen objective go to the trial better on the others (a Pareto trial).
        front = set(t.number for t in self.pareto())
        key = (lambda t: (-t.values[index] if direction == "maximize" else t.values[index], t.number not in front))
        return min(pool, key=key)

    # -- rendering -----------------------------------------------------------

    def _value(self, name, value):
        if value is None:
            return "-"
        if name in ("metric", "lost") and self.metric.percent:
            return f"{100 * value:.2f}%" if name == "metric" else f"{100 * value:+.2f} pt"
        if name in ("gzip_bytes", "raw_bytes", "macs", "nonzero"):
            return f"{int(value):,}"
        return f"{value:.4g}"

    def table(self):
        """All completed trials as a Markdown table; Pareto-front trials are marked with *."""
        front = {t.number for t in self.pareto()}
        names = [p.name for p in self.space.parameters]
        measures = list(dict.fromkeys(list(self.objectives) + ["lost"] + [c.measure for c in self.constraints]))
        header = ["trial", "front", *names, *measures, "feasible"]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for t in self.completed():
            figures = t.user_attrs.get("figures", {})
            cells = [str(t.number), "*" if t.number in front else ""]
            cells += [f"{t.params[n]:.4g}" if isinstance(t.params.get(n), float) else str(t.params.get(n))
                      for n in names]
            cells += [self._value(m, figures.get(m)) for m in measures]
            cells.append("yes" if self.feasible(t) else "no")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plots(self):
        """PNG bytes of metric versus size and metric versus latency, by name; {} without matplotlib."""
        try:
            from matplotlib.figure import Figure
        except ImportError:
            return {}
        front = {t.number for t in self.pareto()}
        scale = 100.0 if self.metric.percent else 1.0
        out = {}
        for x_name, label in (("gzip_bytes", "gzip bytes of the artifact"),
                              ("latency_b1_ms", "LiteRT latency at batch 1 (ms)")):
            figure = Figure(figsize=(6, 4), dpi=100)
            axes = figure.add_subplot()
            for on_front in (False, True):
                points = [(t.user_attrs["figures"].get(x_name), t.user_attrs["figures"].get("metric"))
                          for t in self.completed() if (t.number in front) == on_front]
                points = [(x, scale * y) for x, y in points if x is not None and y is not None]
                if points:
                    axes.scatter(*zip(*points), c="C1" if on_front else "C0",
                                 label="Pareto front" if on_front else "other trials", zorder=3 if on_front else 2)
            axes.set_xlabel(label)
            axes.set_ylabel(f"{self.metric.name}{' (%)' if scale == 100.0 else ''}")
            axes.grid(True, alpha=0.3)
            axes.legend(fontsize=8)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", bbox_inches="tight")
            out[f"{self.metric.name}_vs_{x_name}"] = buffer.getvalue()
        return out

    def to_dict(self):
        best = self.best()
        return {
            "study": self.study.study_name, "objectives": list(self.objectives),
            "constraints": [str(c) for c in self.constraints], "metric": self.metric.describe(),
            "trials": [{"number": t.number, "params": t.params, "values": list(t.values), "feasible": self.feasible(t),
                        **{k: t.user_attrs.get(k) for k in ("figures", "artifact", "dir", "seconds", "warm_start")}}
                       for t in self.completed()],
            "failed": [{"number": n, "error": e} for n, e in self.failed()],
            "stopped": [{"number": n, "reason": r} for n, r in self.stopped()],
            "pareto": [t.number for t in self.pareto()],
            "best": None if best is None else best.number,
        }

    def write(self):
        """Writes the results and, for the metric and each other objective, the best feasible trial as a recipe.

        `best_recipe.yaml` is the feasible trial with the best metric; `best_<objective>.yaml` the feasible
        trial best on that objective. Each runs with `keras-compress compress` as it is.
        """
        files = {}
        for objective in self.objectives:
            trial = self.best(objective)
            if trial is None:
                continue
            name = BEST_RECIPE if objective == ("metric" if "metric" in self.objectives else self.objectives[0]) \
                else f"best_{objective}.yaml"
            comment = (f"# keras-compress search: trial {trial.number} of study {self.study.study_name!r}, best "
                       f"feasible trial on {objective}; its artifacts are in {trial.user_attrs.get('dir')}/\n")
            files[name] = atomic_write(os.path.join(self.out_dir, name),
                                       comment + yaml.safe_dump(trial.user_attrs["recipe"], sort_keys=False))
        files["json"] = atomic_write(os.path.join(self.out_dir, RESULTS_JSON),
                                     json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        text = self.markdown()
        files["markdown"] = atomic_write(os.path.join(self.out_dir, RESULTS_MD), text)
        figures = "".join(f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,'
                          f'{base64.b64encode(png).decode()}"></figure>' for n, png in self.plots().items())
        page = (f"<!doctype html><meta charset='utf-8'><title>search {html.escape(self.study.study_name)}</title>"
                f"<h1>keras-compress search: {html.escape(self.study.study_name)}</h1>{figures}"
                f"<pre>{html.escape(text)}</pre>")
        files["html"] = atomic_write(os.path.join(self.out_dir, RESULTS_HTML), page)
        self.files = files
        return files

    def markdown(self):
        best = self.best()
        lines = [f"# Search: {self.study.study_name}", "",
                 f"Objectives: {', '.join(self.objectives)}; constraints: "
                 f"{', '.join(map(str, self.constraints)) or 'none'}; metric: {self.metric.name} "
                 f"({'higher' if self.metric.higher_is_better else 'lower'} is better).", "",
                 self.table(), ""]
        if best is not None:
            lines += [f"Best feasible trial: {best.number} (written as `{BEST_RECIPE}`).", ""]
        if self.failed():
            lines += ["Failed trials:", ""] + [f"- {n}: {e}" for n, e in self.failed()] + [""]
        if self.stopped():
            lines += ["Trials stopped early:", ""] + [f"- {n}: {r}" for n, r in self.stopped()] + [""]
        return "\n".join(lines)
