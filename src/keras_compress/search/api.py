"""`search`: an Optuna study over recipe parameters, each trial a real `run_recipe` on a copy of the model.

Every trial writes and measures real artifacts (the `.tflite` file in the
LiteRT interpreter), so its objectives are the report's figures, never a
proxy. The study lives in an Optuna storage: a SQLite file in the output
folder by default (running the same search again resumes it), or any
Optuna storage URL, through which several workers on several machines share
one study (Optuna's own distributed mode).
"""

import os
import time

from keras_compress.search import early, warm
from keras_compress.search import objectives as obj
from keras_compress.search.space import SearchSpace

INSTALL_HINT = 'pip install "keras-compress[search]"  (or: pip install optuna)'
STUDY_DB = "study.db"
SAMPLERS = ("tpe", "nsga2", "random")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError(f"keras-compress search needs Optuna. Install it with: {INSTALL_HINT}") from None
    return optuna


def storage_for(storage, out_dir):
    """An Optuna storage: `None` -> a SQLite file in `out_dir`; `journal:PATH` -> a journal file; else the URL.

    Raises:
        ValueError: if the storage cannot be opened (the URL and the reason).
    """
    optuna = _optuna()
    if storage is None:
        storage = f"sqlite:///{os.path.abspath(os.path.join(out_dir, STUDY_DB))}"
    # Two workers opening a new SQLite file at once race to create its tables: the loser retries.
    attempts = 5 if storage.startswith("sqlite") else 1
    for attempt in range(attempts):
        try:
            if storage.startswith("journal:"):
                from optuna.storages.journal import JournalFileBackend

                return optuna.storages.JournalStorage(JournalFileBackend(storage[len("journal:"):]))
            return optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}}
                                              if storage.startswith("sqlite") else {})
        except Exception as error:  # noqa: BLE001 - SQLAlchemy and drivers raise many types
            if attempt + 1 < attempts and "no such" not in str(error) and "unable to open" not in str(error):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise ValueError(f"cannot open the study storage {storage!r}: {type(error).__name__}: {error}") from None


def _create_or_load(optuna, **settings):
    """`(study, created)`: the study, and whether this call created it (only its creator warm-starts it)."""
    try:
        return optuna.create_study(load_if_exists=False, **settings), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.create_study(load_if_exists=True, **settings), False


def _sampler(name, seed, constraints):
    optuna = _optuna()
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}. Allowed: {list(SAMPLERS)}")
    constraints_func = (lambda trial: trial.user_attrs.get("constraints", [float("inf")] * len(constraints))) \
        if constraints else None
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints_func)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints_func, multivariate=True)


def _copy(model):
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def search(model, data, space, *, objectives=("metric", "gzip_bytes"), constraints=(), trials=20, out_dir,
           storage=None, study_name="keras-compress", sampler="tpe", seed=0, metric=None, loss=None,
           artifact=None, latency_runs=20, progress=True, tracking=None, warm_start="sensitivity",
           warm_trials=warm.WARM_TRIALS, early_stopping=True, stop_margin=0.0):
    """Searches `space` for recipes that trade the metric against size or latency, on real artifacts.

    Each trial draws values, fills the recipe template, and runs it with
    `run_recipe` on a fresh copy of `model` into `out_dir/trials/NNNN/`; its
    objectives are read from that report's chosen row (the int8 LiteRT file
    unless `artifact` names another). A trial that fails is recorded as
    failed with its reason and the study goes on. Runs until the study holds
    `trials` finished trials (so re-running resumes, and several workers on
    one storage share the count; a failed or stopped trial counts).

    A new study does not begin blind: its first `warm_trials` trials take
    their pruning targets from one sensitivity analysis of the model
    (`search.warm`), the sampler drawing the rest. Unpromising trials stop
    after a fine-tuning step (`search.early`): one that already misses a
    metric constraint, and, in a study whose only objective is the metric,
    one that Optuna's median pruner rejects.

    Args:
        model: the trained Keras model (not modified).
        data: a `keras_compress.data.Dataset` or `((x, y), (x_test, y_test))`.
        space: a `SearchSpace`, a dict, or a YAML path.
        objectives: names from `objectives.MEASURES` ("metric", "gzip_bytes", "latency_b1_ms", "macs", ...).
        constraints: strings such as `"lost <= 0.005"` or `"latency_b1_ms <= 2"`.
        trials: finished trials the study should hold.
        out_dir: where trials, the study and the results go.
        storage: an Optuna storage URL (`sqlite:///...`, `postgresql://...`, `journal:PATH`); `None`: SQLite
            in `out_dir`.
        study_name: the study's name in the storage.
        sampler: "tpe" (default, multivariate), "nsga2" or "random"; seeded with `seed`.
        metric, loss: as for `run_recipe` (the model's compiled metric and loss by default).
        artifact: the artifact file a trial is judged by (default: `model_int8.tflite`, else the last `.tflite`).
        latency_runs: timed invokes per latency measurement.
        progress: log each trial on stderr.
        tracking: `None`, or a dict of `keras_compress.tracking.log_report` settings (`uri`, `experiment`,
            `register_as`): the study is an MLflow run, each trial a nested run under it with its figures
            and files; `register_as` registers the best trial's artifact.
        warm_start: `"sensitivity"` (default): the first trials from the sensitivity curves (on the validation
            split, else the last training samples); a list of `{parameter: value}` dicts to try first; or
            `None`. Only the call that creates the study warm-starts it (resuming or joining does not).
        warm_trials: how many sensitivity-derived trials.
        early_stopping: stop unpromising trials after a fine-tuning step (see `search.early`).
        stop_margin: how far past a metric constraint a trial's intermediate value may go before it stops.

    Returns:
        A `SearchResult` (`keras_compress.search.results`): the study, the Pareto front, the written files.

    Raises:
        SpaceError, ObjectiveError, ValueError: for a bad space, objective, constraint, sampler or storage,
            before any trial runs.
        ImportError: if Optuna is not installed.

    Example:
    >>> result = kc.search.search(model, data, "space.yaml", trials=30, out_dir="runs/search",
    ...                           constraints=["lost <= 0.005"])
    >>> print(result.table())
    """
    import sys

    from keras_compress import metrics as metrics_module
    from keras_compress.cli.runner import check_data_fits, run_recipe
    from keras_compress.data import as_dataset
    from keras_compress.search.results import SearchResult

    optuna = _optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial has our own one-line log instead
    if not isinstance(space, SearchSpace):
        space = SearchSpace.from_dict(space) if isinstance(space, dict) else SearchSpace.load(space)
    objectives = obj.check_objectives(objectives)
    constraints = tuple(c if isinstance(c, obj.Constraint) else obj.Constraint.parse(c) for c in constraints)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer. Received: trials={trials!r}")
    _check_warm(warm_start, space)
    data = as_dataset(data)
    check_data_fits(model, data)
    resolved = metrics_module.get(metric, model)
    if loss is None and getattr(model, "compiled", False):
        loss = getattr(model, "loss", None)  # each trial's copy is not compiled: keep the model's own loss
    os.makedirs(out_dir, exist_ok=True)
    study, created = _create_or_load(optuna, storage=storage_for(storage, out_dir), study_name=study_name,
                                     directions=obj.directions(objectives, resolved),
                                     sampler=_sampler(sampler, seed, constraints),
                                     pruner=early.pruner(objectives) if early_stopping else None)
    study.set_user_attr("objectives", list(objectives))
    study.set_user_attr("constraints", [str(c) for c in constraints])
    study.set_user_attr("metric", resolved.describe())

    def log(message):
        if progress:
            print(f"[keras-compress search] {message}", file=sys.stderr, flush=True)

    tracker = [None]  # the study's MLflow run while tracking

    def objective(trial):
        values = {p.name: p.suggest(trial) for p in space.parameters}
        trial_dir = os.path.join(out_dir, "trials", f"{trial.number:04d}")
        trial.set_user_attr("recipe", space.fill(values))
        trial.set_user_attr("dir", os.path.relpath(trial_dir, out_dir))
        start = time.perf_counter()
        watch = early.watcher(trial, constraints, objectives, stop_margin) if early_stopping else None
        try:
            report = run_recipe(_copy(model), space.recipe(values), data, trial_dir, progress=False,
                                metric=resolved, loss=loss, latency_runs=latency_runs, seed=seed,
                                title=f"search trial {trial.number}", on_step=watch)
            row = obj.choose_row(report, artifact)
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
            log(f"trial {trial.number} stopped early: {trial.user_attrs.get('stopped')}")
            raise
        except Exception as error:  # noqa: BLE001 - a failed trial is a result: recorded, the study goes on
            trial.set_user_attr("error", f"{type(error).__name__}: {' '.join(str(error).split())[:500]}")
            log(f"trial {trial.number} failed: {trial.user_attrs['error']}")
            raise
        figures = {name: obj.measure(report, row, name) for name in obj.MEASURES}
        trial.set_user_attr("figures", figures)
        trial.set_user_attr("artifact", row.name)
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        trial.set_user_attr("constraints", [c.violation(figures[c.measure]) for c in constraints])
        log(f"trial {trial.number}: {values} -> " + ", ".join(f"{n}={figures[n]:.6g}" for n in objectives))
        if tracker[0] is not None:
            tracker[0].trial(trial.number, report, trial_dir)
        return tuple(figures[name] for name in objectives)

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    if warm_start and created:
        began = time.perf_counter()
        for values in _warm_values(warm_start, model, data, space, warm_trials, log, resolved):
            study.enqueue_trial(values, user_attrs={"warm_start": True}, skip_if_exists=True)
        study.set_user_attr("warm_start_seconds", round(time.perf_counter() - began, 2))
    left = trials - len(study.get_trials(deepcopy=False, states=finished))
    with _tracked(tracking, study_name) as track:
        if left > 0:
            tracker[0] = track
            study.optimize(objective, n_trials=left, catch=(Exception,),
                           callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished)])
        result = SearchResult(study, space, objectives, constraints, resolved, out_dir)
        result.write()
        if track is not None:
            track.finish(result)
    return result


def _check_warm(warm_start, space):
    """A user's warm-start list checked against the space (before any trial runs)."""
    if warm_start in (None, False, "sensitivity"):
        return
    if isinstance(warm_start, dict) or not isinstance(warm_start, (list, tuple)) or \
            not all(isinstance(v, dict) for v in warm_start):
        raise ValueError("warm_start must be 'sensitivity', a list of {parameter: value} dicts, or None. "
                         f"Received: {warm_start!r}")
    names = {p.name for p in space.parameters}
    for values in warm_start:
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"warm_start names unknown parameter(s) {unknown}. Parameters: {sorted(names)}")


def _warm_values(warm_start, model, data, space, count, log, metric):
    """The values of the first trials: from the sensitivity curves, or as the user gave them."""
    if warm_start != "sensitivity":
        return list(warm_start)
    from keras_compress.pruning.steps import AUTO_TARGET_SAMPLES

    held_out = data.validation.take(warm.SAMPLES) if data.validation is not None \
        else data.train.last(AUTO_TARGET_SAMPLES)
    try:
        values = warm.sensitivity_trials(model, held_out, space, count, metric=metric)
    except (ValueError, TypeError) as error:  # an aid, not a requirement: the sampler starts alone
        log(f"warm start skipped: {type(error).__name__}: {error}")
        return []
    log(f"warm start: {len(values)} trial(s) from the sensitivity curves: {values}")
    return values


class _Tracker:
    """The study's MLflow run; each trial's report is logged as a nested run."""

    def __init__(self, settings):
        self.settings = settings
        self.reports = {}

    def trial(self, number, report, trial_dir):
        from keras_compress import tracking

        self.reports[number] = (report, trial_dir)
        tracking.log_report(report, trial_dir, nested=True, run_name=f"trial {number}")

    def finish(self, result):
        import mlflow

        mlflow.log_params({"objectives": ",".join(result.objectives),
                           "constraints": ";".join(map(str, result.constraints)) or "none"})
        best = result.best()
        for name in result.files:
            if name.endswith(".yaml") or name in ("json", "markdown", "html"):
                mlflow.log_artifact(result.files[name])
        if best is not None:
            mlflow.set_tag("best_trial", best.number)
            if self.settings.get("register_as") and best.number in self.reports:
                from keras_compress import tracking
                from keras_compress.search.objectives import choose_row

                report, _ = self.reports[best.number]
                with mlflow.start_run(run_name=f"best trial {best.number}", nested=True) as run:
                    mlflow.log_artifacts(os.path.join(result.out_dir, best.user_attrs["dir"]))
                    row = choose_row(report)
                    version = tracking.register(run.info.run_id, row.name, self.settings["register_as"],
                                                {"metric": row.accuracy, "gzip_bytes": row.gzip_bytes,
                                                 "trial": best.number})
                mlflow.set_tag("registered", f"{self.settings['register_as']} v{version}")


class _tracked:
    """Context: the study's MLflow run when tracking, else nothing."""

    def __init__(self, settings, study_name):
        self.settings, self.study_name, self.tracker = settings, study_name, None

    def __enter__(self):
        if not self.settings:
            return None
        from keras_compress import tracking

        tracking.connect(self.settings.get("uri"), self.settings.get("experiment", tracking.DEFAULT_EXPERIMENT))
        import mlflow

        self.run = mlflow.start_run(run_name=f"search {self.study_name}")
        self.tracker = _Tracker(self.settings)
        return self.tracker

    def __exit__(self, *exc):
        if self.tracker is not None:
            import mlflow

            mlflow.end_run("FAILED" if exc[0] else "FINISHED")
        return False
