"""Early stopping of unpromising trials: a trial stops after a fine-tuning step once it cannot win.

Two rules, both read after every training step of a trial's recipe, on the
Keras model as it stands (the report's metric on the test split, the same
figure its Keras row will show):

- **Constraints** (any study, multi-objective included): a trial whose
  model already misses a `metric` or `lost` constraint by more than `margin`
  is stopped: the steps after it (clustering, quantization, conversion,
  LiteRT evaluation) would not bring the metric back above the bound.
- **Optuna's pruner** (single-objective studies whose objective is the
  metric; Optuna's pruners do not support several objectives): the
  intermediate metric is reported with `trial.report`, and a `MedianPruner`
  stops a trial below the median of earlier trials at the same step.

A stopped trial is Optuna's PRUNED state, with the reason in its
`stopped` user attribute; nothing of it is left on disk.
"""

METRIC_MEASURES = ("metric", "lost")


def pruner(objectives):
    """The Optuna pruner for these objectives: a `MedianPruner` when the only objective is the metric, else none."""
    import optuna

    if tuple(objectives) == ("metric",):
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def watcher(trial, constraints, objectives, margin=0.0):
    """The `on_step` callback of one trial's `run_recipe`: raises `optuna.TrialPruned` when the trial cannot win.

    Args:
        trial: the Optuna trial.
        constraints: the search's `Constraint`s (those on `metric` and `lost` are checked).
        objectives: the objective names (Optuna's pruner is asked only when it is `("metric",)`).
        margin: how far past a constraint's bound the intermediate value may be before the trial stops.
    """
    import optuna

    watched = [c for c in constraints if c.measure in METRIC_MEASURES]
    report_to_pruner = tuple(objectives) == ("metric",)

    def on_step(run, index, step):
        if not getattr(step, "trains", False) or not (watched or report_to_pruner):
            return
        value = run.score_model(run.model)
        figures = {"metric": value, "lost": run.metric.lost(run.report.rows[0].keras_metric, value)}
        trial.set_user_attr(f"after_step_{index}", figures)
        for constraint in watched:
            if constraint.violation(figures[constraint.measure]) > margin:
                reason = (f"after step {index} ({step.name}) the Keras model's {constraint.measure} is "
                          f"{figures[constraint.measure]:.6g}, outside {constraint}")
                trial.set_user_attr("stopped", reason)
                raise optuna.TrialPruned(reason)
        if report_to_pruner:
            trial.report(value, index)
            if trial.should_prune():
                reason = f"after step {index} ({step.name}) the metric {value:.6g} is worse than the median of earlier trials at this step"
                trial.set_user_attr("stopped", reason)
                raise optuna.TrialPruned(reason)

    return on_step
