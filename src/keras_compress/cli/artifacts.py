"""The `evaluate` and `export` commands: a model or an artifact in, figures or an artifact out.

Kept apart from `cli.main` (the parser, `compress`, `search`, `demo`); `main` dispatches to them.
"""

import os

from keras_compress.cli.inputs import EXIT_OK, _metric, _one_line, _shown, load_data, load_model


def _cmd_evaluate(args):
    from keras_compress import evaluate

    path = args.model
    kind = os.path.splitext(path)[1].lower()
    if kind not in (".keras", ".kcar", ".h5", ".tflite"):
        raise ValueError(f"MODEL must be a .keras, .kcar, .h5 or .tflite file. Received: {path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path!r}")
    counts = None
    if kind != ".tflite":
        from keras_compress import metrics
        from keras_compress.cli.runner import check_data_fits

        model = load_model(path)
        data = load_data(args.data, args.subset, model)
        check_data_fits(model, data)
        metric = _metric(args, model)
        predict, names = metrics.keras_predictor(model), metrics.output_names(model)
        counts = evaluate.count_parameters(model)
    else:
        from keras_compress.export import litert

        try:
            runtime = litert.LiteRTModel(path)
        except ImportError:
            raise
        except Exception as error:  # noqa: BLE001 - the interpreter raises many types on a bad file
            raise ValueError(f"cannot load LiteRT model {path!r}: {_one_line(error)}") from None
        if not args.metric:
            raise ValueError("a .tflite file keeps no compile config: name the metric, e.g. --metric accuracy "
                             "or --metric mae")
        data = load_data(args.data, args.subset)
        metric, predict, names = _metric(args), runtime.predict, runtime.output_names
    value = metric.score(predict, data.test, output_names=names)
    size = evaluate.sizes(path)
    print(f"model:    {path}")
    print(f"{metric.name}: {_shown(metric, value)} on {data.test.num_samples:,} test samples of {args.data} "
          f"({'higher' if metric.higher_is_better else 'lower'} is better)")
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

        data = load_data(args.data, args.subset, model)
        check_data_fits(model, data)
    from keras_compress.export import litert

    parent = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(parent, exist_ok=True)
    kwargs = {}
    if args.format == "int8":
        from keras_compress.data.split import structure_length

        calibration, _ = data.train.take(args.calibration_samples)
        kwargs = {"representative_data": calibration, "num_calibration_samples": structure_length(calibration),
                  "int8_io": args.int8_io, "per_channel": not args.per_tensor}
    elif args.int8_io or args.per_tensor:
        flag = "--int8-io" if args.int8_io else "--per-tensor"
        raise ValueError(f"{flag} needs --format int8 (full integer). Received: --format {args.format}")
    if args.select_tf_ops:
        kwargs["select_tf_ops"] = True
    path = litert.export_litert(model, args.out, fmt=args.format, **kwargs)
    size = evaluate.sizes(path)
    print(f"wrote {path} ({args.format}): {size['raw_bytes']:,} bytes (gzip: {size['gzip_bytes']:,} bytes)")
    flex = litert.flex_ops(path)
    if flex:
        print(f"needs the Select TensorFlow ops (Flex) delegate for {', '.join(flex)}: the stock LiteRT "
              "interpreter cannot run it, so it is not measured here")
        return EXIT_OK
    if data is not None:
        from keras_compress import metrics

        try:
            metric = _metric(args, model)
        except metrics.MetricError:  # nothing to measure with: the file is written, say so
            print("LiteRT metric: not measured (the model has no compile config; pass --metric NAME)")
            return EXIT_OK
        runtime = litert.LiteRTModel(path)
        value = metric.score(runtime.predict, data.test, output_names=runtime.output_names)
        print(f"LiteRT {metric.name}: {_shown(metric, value)} on {data.test.num_samples:,} test samples of "
              f"{args.data}")
    return EXIT_OK
