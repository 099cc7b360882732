"""`keras-compress`: compress, evaluate and export Keras models from the shell.

    keras-compress compress MODEL.keras --data mnist --recipe RECIPE.yaml --out DIR
    keras-compress evaluate MODEL.keras|MODEL.tflite --data mnist
    keras-compress export MODEL.keras --format int8 --data mnist --out model.tflite
    keras-compress demo [--out runs/demo] [--epochs 2]

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
import zipfile

from keras_compress.cli.recipe import DATASETS, DEMO_RECIPE, LITERT_FORMATS, RecipeError, load_recipe

PROG = "keras-compress"
EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
DEMO_MODEL = "lenet5"
DEMO_DATA = "mnist"
DEMO_BASELINE_EPOCHS = 2
_MAX_MESSAGE = 1000


# -- shared helpers ---------------------------------------------------------


def _one_line(error):
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 40] + " ... (--traceback for the full message)"
    return text


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {text!r}")
    return value


def load_model(path):
    """Loads a `.keras` model for the CLI, turning every failure into a clear `ValueError`.

    Args:
        path: path to a `.keras` file or a keras-compress archive (`.kcar`).

    Returns:
        The loaded `keras.Model` (not compiled).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: `cannot load model 'PATH': ...` if the file is a folder,
            not a Keras archive, truncated or otherwise unreadable, or does
            not hold a model.

    Example:
    >>> model = load_model("lenet5.keras")
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"cannot load model {path!r}: it is a folder, expected a .keras file")
    if path.endswith(".kcar"):
        from keras_compress.export import archive

        return archive.load(path)  # ArchiveError is a ValueError naming the problem
    # Keras reports a damaged archive as "File not found"; say what is wrong.
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(
            f"cannot load model {path!r}: not a .keras archive (not a zip file; is it truncated or "
            "another format?)"
        )
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many types on a bad archive
        raise ValueError(f"cannot load model {path!r}: {type(error).__name__}: {_one_line(error)}") from None
    if not isinstance(model, keras.Model):
        raise ValueError(f"cannot load model {path!r}: it holds a {type(model).__name__}, not a Keras model")
    return model


def load_data(name, subset=None):
    """Loads a dataset for the CLI, optionally keeping only the first `subset` samples of each split.

    Args:
        name: `"mnist"` or `"fashion_mnist"`.
        subset: keep the first `subset` train and test samples (quick runs), or `None`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`.

    Raises:
        ValueError: on an unknown dataset name.
        FileNotFoundError: if the data cannot be found or downloaded.

    Example:
    >>> (x, y), (x_test, y_test) = load_data("mnist", subset=512)
    """
    from keras_compress import datasets

    (x_train, y_train), (x_test, y_test) = datasets.load(name)
    if subset:
        x_train, y_train, x_test, y_test = x_train[:subset], y_train[:subset], x_test[:subset], y_test[:subset]
    return (x_train, y_train), (x_test, y_test)


def _dataset_meta(name, data, subset):
    (x_train, _), (x_test, _) = data
    return {"dataset": name, "subset": subset, "train_samples": len(x_train), "test_samples": len(x_test)}


# -- subcommands ----------------------------------------------------------------


def _cmd_compress(args):
    from keras_compress.cli.runner import check_data_fits, run_recipe

    recipe = load_recipe(args.recipe)
    dataset = args.data or recipe.data
    if dataset is None:
        raise ValueError("no dataset: pass --data or set 'data' in the recipe")
    model = load_model(args.model)
    data = load_data(dataset, args.subset)
    check_data_fits(model, data)
    meta = {"model_file": os.path.abspath(args.model), "recipe_file": os.path.abspath(args.recipe),
            **_dataset_meta(dataset, data, args.subset)}
    report = run_recipe(model, recipe, data, args.out, progress=not args.quiet,
                        title=f"keras-compress: {model.name} on {dataset}", meta=meta)
    print(report)
    print(f"\nWrote {os.path.abspath(args.out)} (report.html, report.md, report.json)")
    return EXIT_OK


def _cmd_evaluate(args):
    from keras_compress import evaluate

    path = args.model
    kind = os.path.splitext(path)[1].lower()
    if kind not in (".keras", ".kcar", ".tflite"):
        raise ValueError(f"MODEL must be a .keras, .kcar or .tflite file. Received: {path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path!r}")
    if kind in (".keras", ".kcar"):
        from keras_compress.cli.runner import check_data_fits

        model = load_model(path)
        data = load_data(args.data, args.subset)
        check_data_fits(model, data)
        _, (x_test, y_test) = data
        accuracy = evaluate.keras_accuracy(model, x_test, y_test)
        counts = evaluate.count_parameters(model)
    else:
        from keras_compress.export import litert

        try:
            litert.LiteRTModel(path)
        except ImportError:
            raise
        except Exception as error:  # noqa: BLE001 - the interpreter raises many types on a bad file
            raise ValueError(f"cannot load LiteRT model {path!r}: {_one_line(error)}") from None
        _, (x_test, y_test) = load_data(args.data, args.subset)
        accuracy = litert.litert_accuracy(path, x_test, y_test)
        counts = None
    size = evaluate.sizes(path)
    print(f"model:    {path}")
    print(f"accuracy: {100 * accuracy:.2f}% on {len(x_test):,} {args.data} test images")
    print(f"size:     {size['raw_bytes']:,} bytes (gzip: {size['gzip_bytes']:,} bytes)")
    if counts is not None:
        share = counts["nonzero"] / counts["total"] if counts["total"] else 0.0
        print(f"params:   {counts['total']:,} ({counts['nonzero']:,} nonzero, {share:.1%})")
    return EXIT_OK


def _cmd_export(args):
    from keras_compress import evaluate

    if args.format == "int8" and not args.data:
        raise ValueError("--format int8 needs --data: full-integer quantization is calibrated on real samples")
    suffix = ".kcar" if args.format == "archive" else ".tflite"
    if not args.out.endswith(suffix) or os.path.isdir(args.out):
        raise ValueError(f"--out must be a file path ending with {suffix} for --format {args.format}. "
                         f"Received: {args.out!r}")
    model = load_model(args.model)
    if args.format == "archive":
        from keras_compress.export import archive

        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        info = archive.save(model, args.out)
        print(f"wrote {args.out} (archive): {info['bytes']:,} bytes ({info['raw_bytes']:,} bytes of weights as float)")
        return EXIT_OK
    data = None
    if args.data:
        from keras_compress.cli.runner import check_data_fits

        data = load_data(args.data, args.subset)
        check_data_fits(model, data)
    from keras_compress.export import litert

    parent = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(parent, exist_ok=True)
    kwargs = {}
    if args.format == "int8":
        kwargs = {"representative_data": data[0][0][: args.calibration_samples],
                  "num_calibration_samples": min(args.calibration_samples, len(data[0][0])),
                  "int8_io": args.int8_io}
    elif args.int8_io:
        raise ValueError(f"--int8-io needs --format int8 (full integer). Received: --format {args.format}")
    path = litert.export_litert(model, args.out, fmt=args.format, **kwargs)
    size = evaluate.sizes(path)
    print(f"wrote {path} ({args.format}): {size['raw_bytes']:,} bytes (gzip: {size['gzip_bytes']:,} bytes)")
    if data is not None:
        _, (x_test, y_test) = data
        accuracy = litert.litert_accuracy(path, x_test, y_test)
        print(f"LiteRT accuracy: {100 * accuracy:.2f}% on {len(x_test):,} {args.data} test images")
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
    if data is None:
        data = load_data(DEMO_DATA, subset)
    (x_train, y_train), _ = data
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
    data = load_data(args.data)
    check_data_fits(model, data)
    (x, y), _ = data
    summary = analyze(model, (x[: args.samples], y[: args.samples]), args.out, method=args.method,
                      target_sparsity=args.target_sparsity, max_samples=args.samples)
    for row in summary["weights"]:
        print(f"{row['name']:<32} {row['params']:>10,} params  suggested target "
              f"{100 * row['suggested_target']:5.1f}%")
    print(f"\nWrote {os.path.abspath(args.out)} (analysis.md, analysis.json, 3 PNG figures)")
    return EXIT_OK


def _cmd_demo(args):
    from keras_compress.cli.runner import run_recipe

    recipe = load_recipe(DEMO_RECIPE)
    data = load_data(DEMO_DATA, args.subset)
    model, path = demo_baseline(args.epochs, data, args.subset, progress=not args.quiet)
    meta = {"model_file": path, "baseline_epochs": args.epochs, "recipe_file": "(built-in demo recipe)",
            **_dataset_meta(DEMO_DATA, data, args.subset)}
    report = run_recipe(model, recipe, data, args.out, progress=not args.quiet,
                        title="keras-compress demo: LeNet-5 on MNIST", meta=meta)
    print(report)
    print(f"\nWrote {os.path.abspath(args.out)} (report.html, report.md, report.json)")
    return EXIT_OK


# -- parser and entry point -------------------------------------------------


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
    p.add_argument("--data", choices=DATASETS, help="dataset (default: the recipe's 'data')")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced at the end if it exists)")
    p.add_argument("--subset", type=_positive_int, metavar="N", help="use only the first N train and test samples")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("evaluate", help="print a model's accuracy and size")
    p.add_argument("model", metavar="MODEL", help="a .keras or .tflite file")
    p.add_argument("--data", required=True, choices=DATASETS, help="dataset whose test split is used")
    p.add_argument("--subset", type=_positive_int, metavar="N", help="use only the first N test samples")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="export a .keras model to LiteRT or to a keras-compress archive")
    p.add_argument("model", metavar="MODEL.keras", help="the model to export")
    p.add_argument("--format", required=True, choices=LITERT_FORMATS + ("archive",),
                   help="LiteRT format, or 'archive' for the compact .kcar format")
    p.add_argument("--data", choices=DATASETS, help="dataset for int8 calibration (and accuracy)")
    p.add_argument("--out", required=True, metavar="PATH", help="output file (.tflite, or .kcar for archive)")
    p.add_argument("--int8-io", action="store_true",
                   help="with --format int8: int8 input and output tensors too (integer-only accelerators)")
    p.add_argument("--calibration-samples", type=_positive_int, default=256, metavar="N",
                   help="training samples used to calibrate int8 (default: 256)")
    p.add_argument("--subset", type=_positive_int, metavar="N", help="use only the first N train and test samples")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("analyze", help="importance scores, sensitivity curves and suggested targets, as figures")
    p.add_argument("model", metavar="MODEL.keras", help="the trained model")
    p.add_argument("--data", required=True, choices=DATASETS, help="dataset whose training split is scored")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced at the end if it exists)")
    p.add_argument("--method", default="taylor", choices=("magnitude", "taylor", "fisher", "obd"),
                   help="importance score (default: taylor)")
    p.add_argument("--target-sparsity", type=float, default=0.9, metavar="S",
                   help="overall sparsity the suggested per-layer targets meet (default: 0.9)")
    p.add_argument("--samples", type=_positive_int, default=2000, metavar="N",
                   help="training samples scored and evaluated (default: 2000)")
    p.set_defaults(func=_cmd_analyze)

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
