"""Every real architecture through the whole pipeline to an int8 LiteRT file (issue #19's coverage table).

One row per model: every keras.applications architecture (weights=None, the
smallest input it accepts, 10 classes, logits out) and keras-hub backbones
built from small configs (BERT, DistilBERT, Gemma, ViT, ResNet; only when
`keras_hub` is installed: `pip install keras-hub`), each run in a child
process of its own (a crash or a memory blow-up costs one row, not the
table). The pipeline, as a user runs it:

    prune 50% -> fit -> strip -> save/load (.keras) -> cluster 16
    -> QAT (calibrated) -> fit -> int8 LiteRT export -> stock interpreter

on random inputs and labels (nothing downloads), or, with `--train-steps N`,
on a network first trained N steps on Fashion-MNIST (from ../shared/datasets,
resized to the model's input, three channels, pixels in [0, 255]; image
models only), judged on 256 test images with the accuracy of the float,
QAT and int8 models beside the agreement. A random deep network is chaotic
(half a pixel flips many of its argmaxes), a trained one much less: the 99%
agreement bar is read on trained rows. Each row says the stage
reached, the reason where it stopped (the error's first line, never a
traceback), the time of every stage, and how the int8 artifact agrees with
the Keras QAT model on 64 inputs: argmax agreement, how many distinct
classes those argmaxes cover (a random network often prefers one class:
then agreement says little), and the largest difference relative to the
logits' range. The package's own share is everything but the fit steps and
the converter (`model.export`; saving and loading count as the package's),
over the pipeline's wall time (the build and the bench's own interpreter run
are not part of it).

    KERAS_BACKEND=tensorflow python bench/architectures.py --out bench/results/coverage
    KERAS_BACKEND=tensorflow python bench/architectures.py --models NASNetMobile,hub:bert --out /tmp/cov
    KERAS_BACKEND=tensorflow python bench/architectures.py --train-steps 300 --out bench/results/coverage_trained
    python bench/architectures.py --table bench/results/coverage/coverage.jsonl

Rows are appended to `coverage.jsonl` as each model ends; a second run with
the same `--out` skips the models already there (`--again` runs them anew).
`--budget SECONDS` stops starting new models after that long (the rest are
listed as not run).
"""

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = 64
CALIBRATION = 16
FIT_STEPS = 2
BATCH = 8
# Inputs smaller than 32 x 32 are refused by these (keras.applications' own minimum).
MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
# Rough size in millions of parameters at 10 classes: the table runs small models first.
SIZE_HINT = {
    "MobileNetV3Small": 1.5, "MobileNet": 3.2, "MobileNetV2": 2.3, "MobileNetV3Large": 4.2, "NASNetMobile": 4.3,
    "EfficientNetB0": 4.1, "EfficientNetV2B0": 5.9, "EfficientNetB1": 6.6, "EfficientNetV2B1": 6.9,
    "DenseNet121": 7.0, "EfficientNetB2": 7.8, "EfficientNetV2B2": 8.8, "EfficientNetB3": 10.8,
    "DenseNet169": 12.7, "EfficientNetV2B3": 13.0, "EfficientNetB4": 17.7, "DenseNet201": 18.3,
    "EfficientNetV2S": 20.3, "Xception": 20.9, "InceptionV3": 21.8, "ResNet50": 23.6, "ResNet50V2": 23.6,
    "ConvNeXtTiny": 27.8, "EfficientNetB5": 28.5, "VGG16": 33.6, "VGG19": 38.9, "EfficientNetB6": 40.9,
    "ResNet101": 42.7, "ResNet101V2": 42.6, "ConvNeXtSmall": 49.5, "EfficientNetV2M": 53.2,
    "InceptionResNetV2": 54.3, "ResNet152": 58.4, "ResNet152V2": 58.3, "EfficientNetB7": 64.1,
    "NASNetLarge": 84.9, "ConvNeXtBase": 87.6, "EfficientNetV2L": 117.8, "ConvNeXtLarge": 196.2,
    "ConvNeXtXLarge": 348.2,
}
HUB = ("hub:bert", "hub:distil_bert", "hub:gemma", "hub:vit", "hub:resnet")
TRAINING = ("fit after pruning", "fit after QAT")
CONVERTER = "converter"
COLUMNS = ("prune", "fit after pruning", "strip", "save/load", "cluster", "qat",
           "fit after QAT", "export int8", CONVERTER)


def log(message):
    print(f"[bench coverage] {message}", file=sys.stderr, flush=True)


def application_names():
    import keras

    return sorted((n for n in dir(keras.applications) if n[0].isupper()), key=lambda n: (SIZE_HINT.get(n, 1e9), n))


def build_application(name, size=None, **overrides):
    import inspect

    import keras

    size = size or MIN_SIZE.get(name, 32)
    builder = getattr(keras.applications, name)
    kwargs = {"input_shape": (size, size, 3), "weights": None, "classes": 10, **overrides}
    if "classifier_activation" in inspect.signature(builder).parameters:
        kwargs["classifier_activation"] = None  # logits: argmax agreement is read on them
    return builder(**kwargs)


def build_hub(name):
    """A keras-hub backbone from a small config, nested in a model with a 10-class head (a new user's way)."""
    import keras
    import keras_hub

    text = dict(vocabulary_size=128, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
                max_sequence_length=16)
    if name == "hub:bert":
        backbone, pooled = keras_hub.models.BertBackbone(**text), "pooled_output"
    elif name == "hub:distil_bert":
        backbone, pooled = keras_hub.models.DistilBertBackbone(**text), None
    elif name == "hub:gemma":
        backbone, pooled = keras_hub.models.GemmaBackbone(
            vocabulary_size=128, num_layers=2, num_query_heads=2, num_key_value_heads=1, hidden_dim=32,
            intermediate_dim=64, head_dim=16), None
    elif name == "hub:vit":
        backbone, pooled = keras_hub.models.ViTBackbone(
            image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64), None
    elif name == "hub:resnet":
        # keras-hub 0.32 requires the first stack (and so the stem) 64 wide.
        backbone, pooled = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 64],
            stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
            image_shape=(32, 32, 3)), None
    else:
        raise ValueError(f"unknown keras-hub model {name!r}; allowed: {list(HUB)}")
    if isinstance(backbone.input, dict):
        # A fixed sequence length of 16: LiteRT's int8 converter wants static shapes.
        inputs = {key: keras.Input((16,), dtype=tensor.dtype, name=key) for key, tensor in backbone.input.items()}
    else:
        inputs = keras.Input(backbone.input.shape[1:], name="images")
    features = backbone(inputs)
    if pooled:
        features = features[pooled]
    elif len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D()(features)
    else:
        features = keras.layers.GlobalAveragePooling1D()(features)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(features), name=name.split(":")[1])


def build(name):
    return build_hub(name) if name.startswith("hub:") else build_application(name)


def random_inputs(model, count, seed=0):
    """Random samples for each model input: images in [0, 255], token ids below 128, masks all ones."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for tensor in model.inputs:
        shape = (count, *tensor.shape[1:])
        name = tensor.name.split(":")[0]
        if "int" in str(tensor.dtype):
            if "mask" in name:
                arrays[name] = np.ones(shape, "int32")
            elif "segment" in name:
                arrays[name] = np.zeros(shape, "int32")
            else:
                arrays[name] = rng.integers(1, 128, shape).astype("int32")
        else:
            arrays[name] = (255 * rng.random(shape)).astype("float32")
    return arrays if len(arrays) > 1 else next(iter(arrays.values()))


def stability(model, x, step=0.5, seed=2, reference=None):
    """The Keras model's argmax agreement with itself when each pixel moves by +-`step` (None for non-image input).

    How sensitive the model is to a perturbation of the size of its input's quantization step. A randomly
    initialised deep network (its BatchNormalization statistics measured on the data) is chaotic: half a
    pixel flips 3-45% of its argmaxes. It is not a bound on int8 agreement: where QAT simulates every int8
    op exactly, the file agrees on every input however chaotic the model (MobileNetV2: 1.000 at a stability
    of 0.594); where it does not (swish, hard-swish, rescaled integer pixels), a low stability turns each
    one-step difference into flipped argmaxes. `reference`: the model's predictions on `x`, when already made.
    """
    import keras
    import numpy as np

    if isinstance(x, dict) or "int" in str(x.dtype):
        return None
    noise = np.random.default_rng(seed).choice([-step, step], size=x.shape).astype(x.dtype)
    a = reference if reference is not None else keras.ops.convert_to_numpy(model.predict(x, batch_size=BATCH, verbose=0))
    b = keras.ops.convert_to_numpy(model.predict(np.clip(x + noise, 0, 255), batch_size=BATCH, verbose=0))
    return float(np.mean(a.argmax(-1) == b.argmax(-1)))


def _take(x, count):
    return {k: v[:count] for k, v in x.items()} if isinstance(x, dict) else x[:count]


def _first_line(error):
    text = f"{type(error).__name__}: {error}".strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ")):
            return line[:300]
    return type(error).__name__


@contextlib.contextmanager
def _timed_converter(times):
    """Adds the seconds spent inside the LiteRT converter (Keras's `model.export`) to `times`."""
    from keras_compress.export import converter, litert

    original = converter._convert_in_process

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times[CONVERTER] = times.get(CONVERTER, 0.0) + time.perf_counter() - start

    converter._convert_in_process = litert._convert_in_process = timed
    try:
        yield
    finally:
        converter._convert_in_process = litert._convert_in_process = original


def image_data(model, train_count, test_count=256):
    """Fashion-MNIST resized to `model`'s image input, three channels, pixels in [0, 255]: (x, y, x_test, y_test).

    None where the model does not take one image input (text models stay on random inputs)."""
    import keras
    import numpy as np

    from keras_compress import datasets

    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4 or "int" in str(model.inputs[0].dtype):
        return None
    height, width, channels = model.inputs[0].shape[1:]
    (x, y), (x_test, y_test) = datasets.load("fashion_mnist")

    def to_input(images):
        images = keras.ops.image.resize(images, (height, width)) if (height, width) != images.shape[1:3] else images
        images = np.repeat(keras.ops.convert_to_numpy(images), channels, axis=-1)
        return (255 * np.clip(images, 0, 1)).astype("float32")

    return to_input(x[:train_count]), y[:train_count], to_input(x_test[:test_count]), y_test[:test_count]


def train(model, x, y, steps):
    """`steps` of Adam (1e-3, batch 32) on (x, y): a trained network to put through the pipeline."""
    import keras

    from_logits = getattr(model.layers[-1], "activation", None) is not keras.activations.softmax
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    model.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=steps, verbose=0)


def pipeline(model, work_dir, samples=SAMPLES, data=None):
    """Runs `model` through every stage; returns the row (stops at the first failing stage, with its reason).

    `data`: (x, y, x_test, y_test) of a trained model (see `image_data`): the fit stages run on (x, y), the
    agreement and accuracies are read on x_test; None: random inputs and labels for everything."""
    import keras
    import numpy as np

    import keras_compress as kc
    from keras_compress.export.litert import export_litert, litert_predict
    from keras_compress.training.batchnorm import recalibrate_batchnorm
    from keras_compress.training.config import FinetuneConfig

    if data is None:
        x = x_test = random_inputs(model, samples)
        y = y_test = np.random.default_rng(1).integers(0, 10, samples)
        fit_steps, fit_config = FIT_STEPS, FinetuneConfig(epochs=1, batch_size=BATCH, learning_rate=1e-5)
    else:
        x, y, x_test, y_test = data
        # A third of the training's steps after pruning and again after QAT: enough for the compressed model to
        # keep some of its accuracy (8 steps left EfficientNetB0 at chance, where agreement says little).
        fit_steps = max(FIT_STEPS, len(y) // (3 * 32))
        fit_config = FinetuneConfig(epochs=1, batch_size=32, learning_rate=5e-4)
    times, row = {}, {"params": int(model.count_params()), "stage": "built", "reason": None}
    state = {"model": model}
    if not isinstance(x, dict):
        # A trained network's BatchNormalization statistics are its data's; a random one's are (0, 1), under which
        # a deep network's signal vanishes (EfficientNetB0's logits spanned 1e-5) and every argmax is a tie.
        recalibrate_batchnorm(model, x[:SAMPLES], batch_size=BATCH, batches=SAMPLES // BATCH)
    if data is not None:
        row["float_accuracy"] = _accuracy(model, x_test, y_test)

    def fit():
        count = fit_config.batch_size * fit_steps
        kc.finetune(state["model"], _take(x, count), y[:count], fit_config)

    def save_load():
        path = os.path.join(work_dir, "stripped.keras")
        state["model"].save(path)
        state["model"] = keras.saving.load_model(path)

    def qat():
        kc.quantize(state["model"], kc.QATConfig(), calibration_data=_take(x, CALIBRATION))

    def export():
        state["path"] = export_litert(state["model"], os.path.join(work_dir, "model_int8.tflite"), "int8")

    stages = [
        ("prune", lambda: kc.prune(state["model"], kc.PruneConfig(0.5))),
        ("fit after pruning", fit),
        ("strip", lambda: state.update(model=kc.strip(state["model"]))),
        ("save/load", save_load),
        ("cluster", lambda: kc.cluster(state["model"], kc.ClusterConfig(num_clusters=16))),
        ("qat", qat),
        ("fit after QAT", fit),
        ("export int8", export),
    ]
    with _timed_converter(times):
        for stage, run in stages:
            start = time.perf_counter()
            try:
                run()
            except Exception as error:  # noqa: BLE001 - the row records any failure and the table goes on
                times[stage] = time.perf_counter() - start
                row.update(reason=f"{stage}: {_first_line(error)}")
                break
            times[stage] = time.perf_counter() - start
            row["stage"] = stage
    if row["reason"] is None:
        try:
            want = keras.ops.convert_to_numpy(state["model"].predict(x_test, batch_size=BATCH, verbose=0))
            got = litert_predict(state["path"], x_test)
            if data is not None:
                row.update(qat_accuracy=float(np.mean(want.argmax(-1) == y_test)),
                           int8_accuracy=float(np.mean(got.argmax(-1) == y_test)))
            row.update(
                stage="interpreter",
                agreement=float(np.mean(got.argmax(-1) == want.argmax(-1))),
                classes=int(len(np.unique(want.argmax(-1)))),
                relative_difference=float(np.abs(got - want).max() / max(float(np.ptp(want)), 1e-12)),
                stability=stability(state["model"], x_test, reference=want),
                int8_bytes=os.path.getsize(state["path"]))
        except Exception as error:  # noqa: BLE001
            row.update(reason=f"interpreter: {_first_line(error)}")
    total = sum(v for k, v in times.items() if k != CONVERTER)  # the converter's time is inside "export int8"
    own = total - sum(times.get(k, 0.0) for k in TRAINING) - times.get(CONVERTER, 0.0)
    row.update(seconds={k: round(v, 2) for k, v in times.items()}, total_seconds=round(total, 1),
               own_seconds=round(own, 1), own_share=own / total if total else None)
    return row


def _accuracy(model, x, y):
    import keras
    import numpy as np

    predictions = keras.ops.convert_to_numpy(model.predict(x, batch_size=BATCH, verbose=0))
    return float(np.mean(predictions.argmax(-1) == y))


def run_one(name, out_path, train_steps=0):
    """The child process: one model, one JSON line appended to `out_path`."""
    import keras

    keras.utils.set_random_seed(0)
    row = {"model": name}
    start = time.perf_counter()
    try:
        model = build(name)
    except Exception as error:  # noqa: BLE001
        row.update(stage="not built", reason=f"build: {_first_line(error)}")
    else:
        row["build_seconds"] = round(time.perf_counter() - start, 1)
        row["input"] = str([tuple(t.shape[1:]) for t in model.inputs])
        data = image_data(model, 32 * train_steps) if train_steps else None
        if data is not None:
            start = time.perf_counter()
            train(model, data[0], data[1], train_steps)
            row.update(train_steps=train_steps, train_seconds=round(time.perf_counter() - start, 1))
        with tempfile.TemporaryDirectory(prefix="kc-coverage-") as work_dir:
            row.update(pipeline(model, work_dir, data=data))
    _append(out_path, row)


def _append(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def markdown(rows):
    trained = any("float_accuracy" in r for r in rows)
    lines = ["| Model | Input | Params | Stage reached | Agreement (classes) | Own stability (+-0.5 px) | "
             + ("Accuracy float / QAT / int8 | " if trained else "")
             + "Max diff / range | int8 bytes | Pipeline (s) | Own share | Reason |",
             "|---|---|---:|---|---:|---:|" + ("---:|" if trained else "") + "---:|---:|---:|---:|---|"]
    for r in rows:
        agreement = f"{r['agreement']:.3f} ({r['classes']})" if "agreement" in r else ""
        diff = f"{r['relative_difference']:.4f}" if "relative_difference" in r else ""
        steady = f"{r['stability']:.3f}" if r.get("stability") is not None else ""
        share = f"{100 * r['own_share']:.0f}%" if r.get("own_share") is not None else ""
        accuracy = "" if not trained else " / ".join(
            f"{100 * r[k]:.1f}" if k in r else "-" for k in ("float_accuracy", "qat_accuracy", "int8_accuracy")) + " | "
        lines.append(f"| {r['model']} | {r.get('input', '')} | {r.get('params', 0):,} | {r.get('stage', '')} | "
                     f"{agreement} | {steady} | {accuracy}{diff} | {r.get('int8_bytes', 0):,} | {r.get('total_seconds', '')} | {share} | "
                     f"{r.get('reason') or ''} |")
    done = [r for r in rows if r.get("stage") == "interpreter"]
    lines.append("")
    lines.append(f"{len(done)} of {len(rows)} through to the stock interpreter; "
                 f"{sum(r['agreement'] >= 0.99 for r in done)} with argmax agreement >= 0.99; "
                 f"{sum(r.get('stability') is not None and r['agreement'] >= r['stability'] for r in done)} "
                 "agreeing at least as often as the model agrees with itself under half a pixel of noise.")
    return "\n".join(lines)


def stage_table(rows):
    lines = ["| Model | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for r in rows:
        seconds = r.get("seconds", {})
        lines.append(f"| {r['model']} | " + " | ".join(f"{seconds[c]:.1f}" if c in seconds else "" for c in COLUMNS)
                     + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="all",
                        help="'all', 'applications', 'hub', or a comma list (keras.applications names, hub:bert, ...)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "coverage"))
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per model")
    parser.add_argument("--budget", type=int, default=None, help="start no new model after this many seconds")
    parser.add_argument("--again", action="store_true", help="run models already in the results anew")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="train each image model this many steps on Fashion-MNIST first (0: random network)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--table", help="print the tables of a coverage.jsonl and exit")
    args = parser.parse_args(argv)
    if args.table:
        rows = read_rows(args.table)
        print(markdown(rows) + "\n\n" + stage_table(rows))
        return 0
    os.makedirs(args.out, exist_ok=True)
    out_path = os.path.join(args.out, "coverage.jsonl")
    if args.one:
        run_one(args.one, out_path, args.train_steps)
        return 0
    if args.models in ("all", "applications", "hub"):
        names = [] if args.models == "hub" else application_names()
        if args.models != "applications":
            try:
                import keras_hub  # noqa: F401
                names += list(HUB)
            except ImportError:
                log("keras_hub is not installed: its rows are left out (pip install keras-hub)")
    else:
        names = args.models.split(",")
    rows = read_rows(out_path)
    if args.again:
        rows = [r for r in rows if r["model"] not in names]
        with open(out_path + ".tmp", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        os.replace(out_path + ".tmp", out_path)
    done = {r["model"] for r in rows}
    started = time.perf_counter()
    for name in names:
        if name in done:
            continue
        if args.budget and time.perf_counter() - started > args.budget:
            log(f"budget spent: {name} not run")
            continue
        log(f"{name} ...")
        begin = time.perf_counter()
        try:
            result = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", name, "--out", args.out,
                                     "--train-steps", str(args.train_steps)],
                                    timeout=args.timeout, capture_output=True, text=True)
            failure = None if result.returncode == 0 else (
                f"child process exited {result.returncode}: "
                + (result.stderr.strip().splitlines() or ["(no output)"])[-1][:300])
        except subprocess.TimeoutExpired:
            failure = f"timed out after {args.timeout} s"
        if failure and name not in {r["model"] for r in read_rows(out_path)}:
            _append(out_path, {"model": name, "stage": "crashed", "reason": failure})
        row = next(r for r in read_rows(out_path) if r["model"] == name)
        log(f"{name}: {row.get('stage')} in {time.perf_counter() - begin:.0f} s {row.get('reason') or ''}")
    rows = [r for r in read_rows(out_path) if r["model"] in names]
    rows.sort(key=lambda r: names.index(r["model"]))
    text = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.\n\n"
            + markdown(rows) + "\n\n" + stage_table(rows) + "\n")
    with open(os.path.join(args.out, "coverage.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
