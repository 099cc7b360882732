"""Experiment tracking with MLflow: a compression run's recipe, figures and files, and the model registry.

    >>> from keras_compress import tracking
    >>> run_id = tracking.log_report(report, "runs/mlp", register="mlp-int8")   # after run_recipe

On the CLI: `keras-compress compress ... --track [--register NAME] [--tracking-uri URI]` and the same on
`search` (each trial a nested run under the study's run). The default store is a SQLite file in the
current folder (`sqlite:///./mlflow.db`, files in `./mlartifacts`): embedded, nothing to start. `--tracking-uri` or
`MLFLOW_TRACKING_URI` points at a team's tracking server instead. MLflow is an optional extra
(`pip install "keras-compress[tracking]"`).
"""

import os
import platform

INSTALL_HINT = 'pip install "keras-compress[tracking]"  (or: pip install mlflow)'
DEFAULT_EXPERIMENT = "keras-compress"
DEFAULT_DB = "mlflow.db"
_PARAM_LIMIT = 6000  # characters MLflow keeps of one parameter value


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise ImportError(f"tracking needs MLflow. Install it with: {INSTALL_HINT}") from None
    return mlflow


def tracking_uri(uri=None):
    """The store to log to: `uri`, else `MLFLOW_TRACKING_URI`, else a SQLite file in the current folder."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath(DEFAULT_DB)}"


def connect(uri=None, experiment=DEFAULT_EXPERIMENT):
    """Points MLflow at the store and experiment; a store that does not answer is one clear error, now.

    Raises:
        ValueError: if the tracking store cannot be reached (the URI and the reason).
    """
    mlflow = _mlflow()
    uri = tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        # MLflow's own client retries for minutes; a server that does not answer should be said at once.
        import urllib.request

        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10)
        except OSError as error:
            raise ValueError(f"cannot reach the MLflow tracking store {uri!r}: {error}") from None
    mlflow.set_tracking_uri(uri)
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        if uri.startswith("sqlite:///") and client.get_experiment_by_name(experiment) is None:
            # A SQLite store keeps its files beside the database, not in ./mlruns of whatever folder runs it.
            folder = os.path.join(os.path.dirname(uri[len("sqlite:///"):]), "mlartifacts")
            client.create_experiment(experiment, artifact_location=os.path.abspath(folder))
        else:
            client.search_experiments(max_results=1)
        mlflow.set_experiment(experiment)
    except Exception as error:  # noqa: BLE001 - MLflow raises its own and the HTTP client's types
        raise ValueError(f"cannot reach the MLflow tracking store {uri!r}: {type(error).__name__}: "
                         f"{' '.join(str(error).split())[:300]}") from None
    return uri


def callback(uri=None, experiment=DEFAULT_EXPERIMENT, run_name=None):
    """A Keras callback that logs each epoch's loss and metrics to MLflow (MLflow's own `MlflowCallback`).

    Connects first (a store that does not answer is one clear error, now) and starts a run when none is
    active; pass it to `kc.finetune(..., callbacks=[...])` or any `fit`.

    Example:
    >>> kc.finetune(pruned, x, y, FinetuneConfig(epochs=3), callbacks=[kc.tracking.callback()])
    """
    mlflow = _mlflow()
    connect(uri, experiment)
    if mlflow.active_run() is None:
        mlflow.start_run(run_name=run_name)
    import mlflow.keras

    return mlflow.keras.MlflowCallback()


def flatten(value, prefix=""):
    """A nested recipe as flat `step1.prune.target_sparsity`-style parameters."""
    out = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
    elif isinstance(value, list):
        for index, item in enumerate(value, 1):
            label = next(iter(item)) if isinstance(item, dict) and len(item) == 1 else None
            if label is not None:
                out.update(flatten(item[label], f"{prefix}step{index}.{label}."))
            else:
                out.update(flatten(item, f"{prefix}{index}."))
    else:
        out[prefix.rstrip(".")] = str(value)[:_PARAM_LIMIT]
    return out


def report_metrics(report):
    """MLflow metrics of every artifact row: `<artifact>.<measure>` for the metric, sizes, ratio, latency, MACs."""
    out = {}
    for row in report.rows:
        stem = row.name if row.technique != "baseline" else f"baseline.{row.name}"
        for key, value in (("keras_metric", row.keras_metric), ("litert_metric", row.litert_metric),
                           ("raw_bytes", row.raw_bytes), ("gzip_bytes", row.gzip_bytes), ("ratio", row.ratio),
                           ("latency_b1_ms", row.latency_b1_ms), ("latency_b32_ms", row.latency_b32_ms),
                           ("speedup_b1", row.speedup_b1), ("macs", row.macs), ("nonzero", row.nonzero)):
            if value is not None:
                out[f"{stem}.{key}"] = float(value)
        lost = report.lost(row)
        if lost is not None:
            out[f"{stem}.lost"] = float(lost)
    return out


def _tags(report):
    import keras

    return {"keras_compress": __import__("keras_compress").__version__, "keras": keras.__version__,
            "backend": keras.backend.backend(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "metric": report.metric.get("name", "accuracy")}


def register(run_id, artifact, name, figures):
    """Adds `artifact` (a file logged by run `run_id`) to the Model Registry as a new version of `name`.

    Returns:
        The new version number (a string).
    """
    _mlflow()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if "already exists" not in str(error).lower() and "RESOURCE_ALREADY_EXISTS" not in str(error):
            raise
    run = client.get_run(run_id)
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact}", run_id=run_id,
                                          tags={k: str(v) for k, v in figures.items()},
                                          description=f"keras-compress artifact {artifact}")
    return version.version


def log_report(report, out_dir, *, uri=None, experiment=DEFAULT_EXPERIMENT, run_name=None, register_as=None,
               artifact=None, nested=False, log_files=True):
    """Logs one compression run to MLflow: the recipe as parameters, every row's figures, the files, the tags.

    Args:
        report: the `Report` of `run_recipe`.
        out_dir: its output folder (its files are logged as artifacts when `log_files`).
        uri: the tracking store (see `tracking_uri`).
        experiment: the MLflow experiment.
        run_name: the run's name (default: the report's title).
        register_as: a Model Registry name: the chosen artifact becomes its next version, its figures as tags.
        artifact: the file to register (default: `model_int8.tflite`, else the last `.tflite`).
        nested: log as a child of the active run (search trials under their study's run).
        log_files: log the output folder's files (report, plots, `.tflite`, `.keras`).

    Returns:
        The MLflow run id.

    Example:
    >>> run_id = tracking.log_report(report, "runs/demo", register_as="lenet5-int8")
    """
    mlflow = _mlflow()
    if not nested:
        connect(uri, experiment)
    with mlflow.start_run(run_name=run_name or report.title, nested=nested) as run:
        recipe = report.meta.get("recipe", {})
        params = flatten(recipe.get("steps", []))
        params.update({f"recipe.{key}": str(value) for key, value in recipe.items() if key != "steps"})
        for key in ("data", "splits", "model", "model_file"):
            if report.meta.get(key) is not None:
                params[key] = str(report.meta[key])[:_PARAM_LIMIT]
        params["metric"] = report.metric.get("name", "accuracy")
        mlflow.log_params(params)
        mlflow.log_metrics(report_metrics(report))
        mlflow.set_tags(_tags(report))
        if log_files:
            mlflow.log_artifacts(os.fspath(out_dir))
        if register_as:
            from keras_compress.search.objectives import choose_row

            row = choose_row(report, artifact)
            figures = {"metric": row.accuracy, "gzip_bytes": row.gzip_bytes, "ratio": row.ratio,
                       "latency_b1_ms": row.latency_b1_ms, "lost": report.lost(row)}
            version = register(run.info.run_id, row.name, register_as, figures)
            mlflow.set_tag("registered", f"{register_as} v{version}")
        return run.info.run_id
