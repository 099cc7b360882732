"""`keras-compress ensemble`: several trained models as one `.keras` file (a teacher, or a model to measure).

    keras-compress ensemble a.keras b.keras c.keras --out teacher.keras --data fashion_mnist
    keras-compress ensemble a.keras b.keras --method stacking --data "data.npz?validation_fraction=0.1" --out s.keras

Stacking fits its meta-learner on the data's validation split (samples the
members must not have trained on); the command prints each member's and the
ensemble's metric on the test split when `--data` is given.
"""

import os
import sys

EXIT_OK = 0


def add_command(sub, data_help, metric_arguments):
    p = sub.add_parser("ensemble", help="average or stack trained models into one .keras model (a teacher)")
    p.add_argument("members", nargs="+", metavar="MEMBER.keras", help="2 or more trained models")
    p.add_argument("--out", required=True, metavar="FILE.keras", help="where the ensemble is written")
    p.add_argument("--method", default="average", choices=("average", "stacking"), help="default: average")
    p.add_argument("--kind", choices=("logits", "probabilities", "values"),
                   help="what the members output (default: guessed from their last layer)")
    p.add_argument("--data", metavar="SPEC", help=f"measure the members and the ensemble (and, for stacking, fit "
                                                  f"on its validation split): {data_help}")
    metric_arguments(p)
    p.set_defaults(func=run)


def run(args):
    from keras_compress import ensemble
    from keras_compress.cli.inputs import _metric, _shown, load_data, load_model
    from keras_compress.core.files import atomic_save

    if not args.out.endswith(".keras"):
        raise ValueError(f"--out must name a .keras file. Received: {args.out!r}")
    members = [load_model(path) for path in args.members]
    data = load_data(args.data, None, members[0]) if args.data else None
    if args.method == "stacking":
        if data is None or data.validation is None:
            raise ValueError("--method stacking fits its meta-learner on held-out samples: pass --data with a "
                             "validation split (e.g. 'FILE.npz?validation_fraction=0.1'; the members must not "
                             "have trained on it)")
        model = ensemble.stacking(members, data.validation.take(), kind=args.kind)
    else:
        model = ensemble.average(members, kind=args.kind)
    atomic_save(args.out, model.save)
    if data is not None:
        from keras_compress import metrics

        args.model = args.members[0]  # the compile config saved in the first member's file names the metric
        metric = _metric(args, members[0])
        names = metrics.output_names(members[0])
        for label, each in [(os.path.basename(p), m) for p, m in zip(args.members, members)] + [
                (f"{args.method} of {len(members)}", model)]:
            value = metric.score(metrics.keras_predictor(each), data.test, output_names=names)
            print(f"{label}: {metric.name} {_shown(metric, value)}")
    print(f"Wrote {os.path.abspath(args.out)} ({model.count_params():,} parameters)", file=sys.stderr)
    return EXIT_OK
