"""`keras-compress`: compress, evaluate and export Keras models from the shell.

    keras-compress compress MODEL.keras --data SPEC --recipe RECIPE.yaml --out DIR [--metric NAME]
    keras-compress evaluate MODEL.keras|MODEL.tflite --data SPEC [--metric NAME]
    keras-compress export MODEL.keras --format int8 --data SPEC --out model.tflite
    keras-compress demo [--out runs/demo] [--epochs 2]

SPEC names the user's data (`keras_compress.data`): mnist, fashion_mnist,
FILE.npz, FILE.csv?target=COLUMN, an image FOLDER, or package.module:function.
The metric is by default the one the model was compiled with (read from its
`.keras` file); `--metric` names another (`keras_compress.metrics`).

TensorFlow's and LiteRT's own start-up lines are held back unless
`--verbose` is given (before the command: `keras-compress --verbose ...`).

Every input is checked (model file, recipe, data against the model) before
anything is written. Errors are reported as one line on stderr,
`keras-compress: error: ...`, with exit code 2; pass `--traceback` (or set
`KERAS_COMPRESS_DEBUG=1`) to see the full traceback instead.
"""

import argparse
import os
import sys

from keras_compress.cli.artifacts import _cmd_evaluate, _cmd_export
from keras_compress.cli.inputs import EXIT_OK, _loss, _metric, _one_line, _shown, load_data, load_model  # noqa: F401
from keras_compress.cli.recipe import DEMO_RECIPE, LITERT_FORMATS, RecipeError, load_recipe

PROG = "keras-compress"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
DEMO_MODEL = "lenet5"
DEMO_DATA = "mnist"
DEMO_BASELINE_EPOCHS = 2


# -- shared helpers ---------------------------------------------------------


def _integer_at_least(low, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be a {what} integer. Received: {text!r}")
        return value

    return parse


_positive_int = _integer_at_least(1, "positive")
_count = _integer_at_least(0, "non-negative")


# -- subcommands ----------------------------------------------------------------


def _cmd_compress(args):
    from keras_compress.cli.runner import check_data_fits, run_recipe

    recipe = load_recipe(args.recipe)
    dataset = args.data or recipe.data
    if dataset is None:
        raise ValueError("no dataset: pass --data or set 'data' in the recipe")
    model = load_model(args.model)
    data = load_data(dataset, args.subset, model)
    check_data_fits(model, data)
    metric = _metric(args, model, default=recipe.metric)
    meta = {"model_file": os.path.abspath(args.model), "recipe_file": os.path.abspath(args.recipe),
            **data.describe()}
    tracked = args.track or args.register
    if tracked:
        from keras_compress import tracking

        tracking.connect(args.tracking_uri, args.experiment)  # a store that does not answer fails now
    report = run_recipe(model, recipe, data, args.out, progress=not args.quiet,
                        title=f"keras-compress: {model.name} on {dataset}", meta=meta, metric=metric,
                        loss=_loss(args))
    print(report)
    print(f"\nWrote {os.path.abspath(args.out)} (report.html, report.md, report.json)")
    if tracked:
        run_id = tracking.log_report(report, args.out, uri=args.tracking_uri, experiment=args.experiment,
                                     register_as=args.register)
        print(f"Logged to MLflow ({tracking.tracking_uri(args.tracking_uri)}): run {run_id}"
              + (f", registered as {args.register}" if args.register else ""))
    return EXIT_OK


def cache_dir():
    """The folder where `demo` keeps trained baselines: `$KERAS_COMPRESS_CACHE` or `~/.cache/keras-compress`.

    Returns:
        The folder path (not created).

    Example:
    >>> cache_dir()
    '/home/me/.cache/keras-compress'
    """
    return os.environ.get("KERAS_COMPRESS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "keras-compress")


def demo_baseline(epochs=DEMO_BASELINE_EPOCHS, data=None, subset=None, progress=True):
    """Returns a trained LeNet-5 for the demo, trained once and cached.

    The model is cached in `cache_dir()` as
    `lenet5-mnist-e{epochs}[-s{subset}]-{backend}.keras` and reused when it
    loads; otherwise it is trained on MNIST and saved atomically.

    Args:
        epochs: training epochs for a fresh baseline.
        data: MNIST as from `load_data` (loaded when `None`).
        subset: the subset size the data was cut to (part of the cache key).
        progress: show Keras's progress bar while training.

    Returns:
        `(model, path)`: the trained model and its cached file.

    Raises:
        FileNotFoundError: if MNIST is needed and cannot be found.

    Example:
    >>> model, path = demo_baseline(epochs=2)
    """
    import keras

    from keras_compress import zoo

    subset_key = f"-s{subset}" if subset else ""
    name = f"{DEMO_MODEL}-{DEMO_DATA}-e{epochs}{subset_key}-{keras.backend.backend()}.keras"
    path = os.path.join(cache_dir(), name)
    if os.path.isfile(path):
        try:
            model = load_model(path)
            if progress:
                print(f"[keras-compress] using the cached baseline {path}", file=sys.stderr)
            return model, path
        except ValueError as error:
            print(f"[keras-compress] retraining: {_one_line(error)}", file=sys.stderr)
    from keras_compress.data import as_dataset

    data = load_data(DEMO_DATA, subset) if data is None else as_dataset(data)
    x_train, y_train = data.train.take()
    if progress:
        print(f"[keras-compress] training the baseline {DEMO_MODEL} on {DEMO_DATA} "
              f"({epochs} epochs, cached as {path})", file=sys.stderr)
    model = zoo.build(DEMO_MODEL)
    zoo.train(model, x_train, y_train, epochs=epochs, batch_size=128, learning_rate=1e-3,
              verbose=1 if progress else 0)
    os.makedirs(cache_dir(), exist_ok=True)
    # Keras insists on the .keras suffix, so the temp name keeps it.
    tmp = os.path.join(cache_dir(), f".{os.getpid()}.tmp-{name}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return model, path


def _cmd_analyze(args):
    from keras_compress.cli.runner import check_data_fits
    from keras_compress.importance.analysis import analyze

    if not 0.0 < args.target_sparsity < 1.0:
        raise ValueError(f"--target-sparsity must be in (0, 1). Received: {args.target_sparsity}")
    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"model file not found: {args.model!r}")
    model = load_model(args.model)
    data = load_data(args.data, model=model)
    check_data_fits(model, data)
    x, y = data.train.take(args.samples)
    summary = analyze(model, (x, y), args.out, method=args.method,
                      target_sparsity=args.target_sparsity, max_samples=args.samples)
    for row in summary["weights"]:
        print(f"{row['name']:<32} {row['params']:>10,} params  suggested target "
              f"{100 * row['suggested_target']:5.1f}%")
    print(f"\nWrote {os.path.abspath(args.out)} (analysis.md, analysis.json, 3 PNG figures)")
    return EXIT_OK


def _cmd_search(args):
    from keras_compress.search import SearchSpace, search

    space = SearchSpace.load(args.space)  # checked in full before the model and data are read
    model = load_model(args.model)
    data = load_data(args.data, args.subset, model)
    metric = _metric(args, model)
    result = search(model, data, space, objectives=args.objective or ("metric", "gzip_bytes"),
                    constraints=args.constraint or (), trials=args.trials, out_dir=args.out, storage=args.storage,
                    study_name=args.study, sampler=args.sampler, seed=args.seed, metric=metric,
                    loss=_loss(args), progress=not args.quiet,
                    warm_start=None if args.warm_trials == 0 else "sensitivity", warm_trials=args.warm_trials,
                    early_stopping=not args.no_early_stopping,
                    tracking={"uri": args.tracking_uri, "experiment": args.experiment,
                              "register_as": args.register} if args.track or args.register else None)
    print(result.table())
    best = result.best()
    print(f"\nWrote {os.path.abspath(args.out)} (search.md, search.html, search.json"
          + (f", best_recipe.yaml: trial {best.number}" if best is not None else "; no feasible trial") + ")")
    return EXIT_OK


def _cmd_demo(args):
    from keras_compress.cli.runner import run_recipe

    recipe = load_recipe(DEMO_RECIPE)
    data = load_data(DEMO_DATA, args.subset)
    model, path = demo_baseline(args.epochs, data, args.subset, progress=not args.quiet)
    meta = {"model_file": path, "baseline_epochs": args.epochs, "recipe_file": "(built-in demo recipe)",
            **data.describe()}
    report = run_recipe(model, recipe, data, args.out, progress=not args.quiet,
                        title="keras-compress demo: LeNet-5 on MNIST", meta=meta, metric="accuracy")
    print(report)
    print(f"\nWrote {os.path.abspath(args.out)} (report.html, report.md, report.json)")
    return EXIT_OK


# -- parser and entry point -------------------------------------------------


_DATA_HELP = ("mnist, fashion_mnist, FILE.npz, FILE.csv?target=COLUMN, an image FOLDER (one subfolder per class), "
              "or package.module:function")


def _tracking_arguments(parser):
    parser.add_argument("--track", action="store_true",
                        help="log the run to MLflow (default store: ./mlflow.db, or MLFLOW_TRACKING_URI)")
    parser.add_argument("--register", metavar="NAME",
                        help="with --track: add the int8 artifact to the MLflow Model Registry as NAME")
    parser.add_argument("--tracking-uri", metavar="URI", help="an MLflow tracking server or store")
    parser.add_argument("--experiment", default="keras-compress", metavar="NAME", help="the MLflow experiment")


def _metric_arguments(parser):
    parser.add_argument("--metric", metavar="NAME",
                        help="what to measure (default: the model's compiled metric, else its loss): a Keras "
                             "metric name (accuracy, auc, mae, ...), NAME@OUTPUT, or package.module:function")
    parser.add_argument("--lower-is-better", action="store_true",
                        help="with a --metric function: lower values are better")


def build_parser():
    """Builds the `keras-compress` argument parser (compress, evaluate, export, analyze, demo).

    Returns:
        An `argparse.ArgumentParser`.

    Example:
    >>> args = build_parser().parse_args(["demo", "--epochs", "1"])
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compress Keras models and measure what it costs: accuracy, size, latency.",
    )
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback on errors (also: KERAS_COMPRESS_DEBUG=1)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and LiteRT's own start-up and log lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compress", help="run a recipe on a model; write artifacts and a report")
    p.add_argument("model", metavar="MODEL.keras", help="the trained input model")
    p.add_argument("--recipe", required=True, metavar="RECIPE.yaml", help="the recipe (see recipes/demo.yaml)")
    p.add_argument("--data", metavar="SPEC", help=f"the data (default: the recipe's 'data'): {_DATA_HELP}")
    _metric_arguments(p)
    _tracking_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced at the end if it exists)")
    p.add_argument("--subset", type=_positive_int, metavar="N", help="use only the first N train and test samples")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("evaluate", help="print a model's accuracy and size")
    p.add_argument("model", metavar="MODEL", help="a .keras or .tflite file")
    p.add_argument("--data", required=True, metavar="SPEC", help=f"the data whose test split is used: {_DATA_HELP}")
    _metric_arguments(p)
    p.add_argument("--subset", type=_positive_int, metavar="N", help="use only the first N test samples")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="export a .keras model to LiteRT or to a keras-compress archive")
    p.add_argument("model", metavar="MODEL.keras", help="the model to export")
    p.add_argument("--format", required=True, choices=LITERT_FORMATS + ("archive",),
                   help="LiteRT format, or 'archive' for the compact .kcar format")
    p.add_argument("--data", metavar="SPEC", help=f"data for int8 calibration (and the metric): {_DATA_HELP}")
    _metric_arguments(p)
    p.add_argument("--out", required=True, metavar="PATH", help="output file (.tflite, or .kcar for archive)")
    p.add_argument("--int8-io", action="store_true",
                   help="with --format int8: int8 input and output tensors too (integer-only accelerators)")
    p.add_argument("--per-tensor", action="store_true",
                   help="with --format int8: one weight scale per tensor, not per channel (a model clustered per "
                        "tensor keeps its shared values, and compresses better)")
    p.add_argument("--select-tf-ops", action="store_true",
                   help="let the converter use TensorFlow ops where LiteRT has none: the file then needs the "
                        "Select TensorFlow ops (Flex) delegate (without it, such a model is refused)")
    p.add_argument("--calibration-samples", type=_positive_int, default=256, metavar="N",
                   help="training samples used to calibrate int8 (default: 256)")
    p.add_argument("--subset", type=_positive_int, metavar="N", help="use only the first N train and test samples")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("analyze", help="importance scores, sensitivity curves and suggested targets, as figures")
    p.add_argument("model", metavar="MODEL.keras", help="the trained model")
    p.add_argument("--data", required=True, metavar="SPEC", help=f"the data whose training split is scored: {_DATA_HELP}")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced at the end if it exists)")
    p.add_argument("--method", default="taylor", choices=("magnitude", "taylor", "fisher", "obd"),
                   help="importance score (default: taylor)")
    p.add_argument("--target-sparsity", type=float, default=0.9, metavar="S",
                   help="overall sparsity the suggested per-layer targets meet (default: 0.9)")
    p.add_argument("--samples", type=_positive_int, default=2000, metavar="N",
                   help="training samples scored and evaluated (default: 2000)")
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("search", help="search recipe parameters with Optuna; Pareto front and best recipes")
    p.add_argument("model", metavar="MODEL.keras", help="the trained model")
    p.add_argument("--data", required=True, metavar="SPEC", help=f"the data: {_DATA_HELP}")
    p.add_argument("--space", required=True, metavar="SPACE.yaml", help="recipe template and parameter ranges")
    p.add_argument("--trials", type=_positive_int, default=20, metavar="N",
                   help="finished trials the study should hold (default: 20; re-running resumes)")
    p.add_argument("--out", required=True, metavar="DIR", help="trials, study.db and results")
    p.add_argument("--objective", action="append", metavar="NAME",
                   help="repeat for several (default: metric and gzip_bytes); also latency_b1_ms, macs, ...")
    p.add_argument("--constraint", action="append", metavar="EXPR", help="e.g. 'lost <= 0.005' (repeatable)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage (default: sqlite in DIR); shared by workers")
    p.add_argument("--study", default="keras-compress", metavar="NAME", help="the study's name in the storage")
    p.add_argument("--sampler", default="tpe", choices=("tpe", "nsga2", "random"), help="default: tpe")
    p.add_argument("--seed", type=int, default=0, help="the sampler's and each trial's seed")
    p.add_argument("--subset", type=_positive_int, metavar="N", help="use only the first N samples of each split")
    p.add_argument("--warm-trials", type=_count, default=3, metavar="N",
                   help="first trials placed by the sensitivity curves (default: 3; 0: none)")
    p.add_argument("--no-early-stopping", action="store_true",
                   help="run every trial to the end (default: stop one that misses a metric constraint)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _metric_arguments(p)
    _tracking_arguments(p)
    p.set_defaults(func=_cmd_search)

    from keras_compress.cli import ensemble as ensemble_command

    ensemble_command.add_command(sub, _DATA_HELP, _metric_arguments)

    p = sub.add_parser("demo", help="train LeNet-5 on MNIST (cached), prune it to 90%% and export it")
    p.add_argument("--out", default=os.path.join("runs", "demo"), metavar="DIR",
                   help="output folder (default: runs/demo)")
    p.add_argument("--epochs", type=_positive_int, default=DEMO_BASELINE_EPOCHS, metavar="N",
                   help=f"training epochs of the baseline (default: {DEMO_BASELINE_EPOCHS})")
    p.add_argument("--subset", type=_positive_int, metavar="N", help="use only the first N train and test samples")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None):
    """Runs the `keras-compress` command line.

    Args:
        argv: the arguments (without the program name); `None` reads `sys.argv`.

    Returns:
        The exit code: 0 on success, 2 on an error (printed as one line,
        `keras-compress: error: ...`, on stderr) or a usage error, 130 when
        interrupted.

    Raises:
        Nothing for expected errors (bad input, missing files, invalid
        recipes); with `--traceback` or `KERAS_COMPRESS_DEBUG=1` they are
        re-raised instead.

    Example:
    >>> main(["evaluate", "lenet5.keras", "--data", "mnist"])
    0
    """
    from keras_compress.core import quiet

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage and its message
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    # Nothing has imported Keras yet (the package loads its names lazily), so
    # TensorFlow's start-up lines can still be held back.
    quiet.enable(not args.verbose)
    quiet.load_backend()
    debug = args.traceback or os.environ.get("KERAS_COMPRESS_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RecipeError, ValueError, TypeError, OSError, ImportError, RuntimeError) as error:
        # RuntimeError: the LiteRT converter failing (its stderr is in the message).
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
