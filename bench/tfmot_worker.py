"""tfmot side of bench/compare.py: runs in its own virtual environment.

tfmot 0.8 works with Keras 2 (`tf_keras`) only, so it cannot share a process
with keras-compress (Keras 3). bench/compare.py creates `bench/.venv-tfmot`
(tensorflow-cpu, tf-keras, tensorflow-model-optimization, ai-edge-litert) and
runs this script there, with TF_USE_LEGACY_KERAS=1, as

    bench/.venv-tfmot/bin/python bench/tfmot_worker.py SPEC.json

SPEC.json names the zoo architecture, the baseline's weights (an `.npz` of
`model.get_weights()` arrays written by the parent from its Keras 3 model,
with the variables' paths beside them), the data (`.npy` files written by the
parent), the fine-tuning budget and where to write. For each technique the
worker fine-tunes from the same baseline weights with the same budget,
strips, converts to LiteRT and writes a `.tflite` file; it measures what only
it can measure (Keras accuracy of the tf_keras model, fine-tune wall time,
training-step overhead against a plain fit of the same model in this
process). The parent measures every `.tflite` file (LiteRT accuracy, sizes,
latency) with the same code it uses for keras-compress's files.

Results are written to SPEC["results"] after every technique, so a crash
half-way still leaves the rows that finished. A technique that raises is
recorded as `failed` with its reason; the worker goes on with the next one.

Only this file's standard library, NumPy, TensorFlow, tf_keras and tfmot are
used: nothing from keras_compress (which needs Keras 3).
"""

import json
import os
import statistics
import sys
import time
import traceback

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
from tf_keras import layers  # noqa: E402

TECHNIQUES = ("baseline", "prune", "cluster", "qat", "prune_cluster_pcqat")


# -- the zoo, in tf_keras (same layers, names and order as keras_compress.zoo) --


def lenet_300_100(input_shape=(28, 28, 1), num_classes=10):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Flatten(),
            layers.Dense(300, activation="relu", name="fc1"),
            layers.Dense(100, activation="relu", name="fc2"),
            layers.Dense(num_classes, name="fc3"),
        ],
        name="lenet_300_100",
    )


def lenet5(input_shape=(28, 28, 1), num_classes=10):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(20, 5, name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(500, activation="relu", name="fc1"),
            layers.Dense(num_classes, name="fc2"),
        ],
        name="lenet5",
    )


def bn_cnn(input_shape=(28, 28, 1), num_classes=10):
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((32, 64)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    outputs = layers.Dense(num_classes, name="fc2")(x)
    return keras.Model(inputs, outputs, name="bn_cnn")


def _inverted_residual(x, expansion, filters, stride, name):
    in_channels = x.shape[-1]
    y = layers.Conv2D(in_channels * expansion, 1, use_bias=False, name=f"{name}_expand")(x)
    y = layers.BatchNormalization(name=f"{name}_expand_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if stride == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v2_tiny(input_shape=(28, 28, 1), num_classes=10, width=16):
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    plan = [(1, width, 1), (4, 2 * width, 2), (4, 2 * width, 1), (4, 4 * width, 2), (4, 4 * width, 1)]
    for i, (expansion, filters, stride) in enumerate(plan):
        x = _inverted_residual(x, expansion, filters, stride, name=f"block{i}")
    x = layers.Conv2D(8 * width, 1, use_bias=False, name="head")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_tiny")


ZOO = {f.__name__: f for f in (lenet_300_100, lenet5, bn_cnn, mobilenet_v2_tiny)}


# -- helpers --------------------------------------------------------------------


def build_baseline(spec):
    """The zoo model in tf_keras with the parent's baseline weights, matched by variable path."""
    model = ZOO[spec["model"]]()
    with np.load(spec["weights"]) as f:
        arrays = [f[f"arr_{i}"] for i in range(len(f.files))]
    paths = spec["weight_paths"]
    by_path = dict(zip(paths, arrays))
    ordered = []
    for weight in model.weights:
        name = weight.name.split(":")[0]
        # Keras 3 calls DepthwiseConv2D's kernel "kernel"; tf_keras "depthwise_kernel".
        if name not in by_path and name.endswith("/depthwise_kernel"):
            name = name[: -len("depthwise_kernel")] + "kernel"
        if name not in by_path:
            raise ValueError(
                f"tf_keras variable {name!r} has no counterpart among the baseline's "
                f"variables {paths}: the two zoo definitions differ"
            )
        if tuple(by_path[name].shape) != tuple(weight.shape):
            raise ValueError(f"shape mismatch for {name!r}: {by_path[name].shape} vs {tuple(weight.shape)}")
        ordered.append(by_path[name])
    if len(ordered) != len(arrays):
        raise ValueError(f"tf_keras model has {len(ordered)} variables, the baseline {len(arrays)}")
    model.set_weights(ordered)
    return model


def compile_model(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def accuracy(model, x, y):
    outputs = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(outputs, axis=-1) == y))


def fit_timed(model, x, y, budget, callbacks=()):
    """Fine-tunes with the shared budget; returns wall seconds (tracing included)."""
    compile_model(model, budget["learning_rate"])
    start = time.perf_counter()
    model.fit(x, y, epochs=budget["epochs"], batch_size=budget["batch_size"],
              callbacks=list(callbacks), verbose=0, shuffle=True)
    return time.perf_counter() - start


def pruning_schedule(prune, end_step):
    """tfmot's polynomial decay; the parent chose `end_step` (a multiple of the frequency)."""
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=prune["initial_sparsity"], final_sparsity=prune["target_sparsity"],
        begin_step=0, end_step=end_step, power=prune["power"], frequency=prune["frequency"],
    ), end_step


def convert(model, path, fmt, calibration=None):
    """tf_keras model -> .tflite with the same converter settings keras-compress uses."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative_dataset():
            for i in range(len(calibration)):
                yield [calibration[i : i + 1]]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif fmt == "int8_qat":
        # A QAT model carries its own ranges: no calibration (tfmot's guide).
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt != "float32":
        raise ValueError(f"unknown format {fmt!r}")
    data = converter.convert()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def epoch_seconds(model, x, y, batch_size, callbacks):
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=list(callbacks))
    return time.perf_counter() - start


class Overhead:
    """Paired-epoch training overhead against one plain model, as bench/overhead.py does.

    The plain model (the baseline architecture, compiled the same way) is
    warmed up once; each technique's model gets one untimed warm-up epoch
    (tracing), then `pairs` rounds each time one plain and one technique
    epoch back to back, in alternating order. Result: the median ratio.
    """

    def __init__(self, spec, x, y):
        self.x, self.y = x, y
        self.batch_size = spec["budget"]["batch_size"]
        self.pairs = spec["overhead"]["pairs"]
        self.learning_rate = spec["budget"]["learning_rate"]
        self.plain = None
        if self.pairs:
            self.plain = compile_model(build_baseline(spec), self.learning_rate)
            epoch_seconds(self.plain, x, y, self.batch_size, ())  # warm-up: tracing

    @property
    def steps_per_epoch(self):
        return -(-len(self.x) // self.batch_size)

    def measure(self, model, callbacks=()):
        if not self.pairs:  # a later seed's pass: overhead was measured in the first
            return {"overhead": None}
        compile_model(model, self.learning_rate)
        epoch_seconds(model, self.x, self.y, self.batch_size, callbacks)  # warm-up: tracing
        plain, technique, ratios = [], [], []
        for i in range(self.pairs):
            order = ("plain", "technique") if i % 2 == 0 else ("technique", "plain")
            times = {}
            for kind in order:
                if kind == "plain":
                    times[kind] = epoch_seconds(self.plain, self.x, self.y, self.batch_size, ())
                else:
                    times[kind] = epoch_seconds(model, self.x, self.y, self.batch_size, callbacks)
            plain.append(times["plain"])
            technique.append(times["technique"])
            ratios.append(times["technique"] / times["plain"])
        return {
            "overhead": statistics.median(ratios),
            "overhead_min_max": [min(ratios), max(ratios)],
            "plain_epoch_s": statistics.median(plain),
            "technique_epoch_s": statistics.median(technique),
            "pairs": self.pairs,
            "samples": len(self.x),
        }


# -- the techniques --------------------------------------------------------------


class Worker:
    def __init__(self, spec):
        self.spec = spec
        self.budget = spec["budget"]
        self.out_dir = spec["out_dir"]
        os.makedirs(self.out_dir, exist_ok=True)
        self.x_train = np.load(spec["data"]["x_train"])
        self.y_train = np.load(spec["data"]["y_train"])
        self.x_test = np.load(spec["data"]["x_test"])
        self.y_test = np.load(spec["data"]["y_test"])
        self.calibration = np.ascontiguousarray(self.x_train[: spec["calibration_samples"]], np.float32)
        n = spec["overhead"]["samples"]
        self.x_overhead, self.y_overhead = self.x_train[:n], self.y_train[:n]
        self.steps_total = self.budget["epochs"] * (-(-len(self.x_train) // self.budget["batch_size"]))
        self.rows = []
        self._overhead = None
        self._pruned = None  # the stripped pruned model, start of the collaborative chain
        self._prune_seconds = None
        self.versions = {"tensorflow": tf.__version__, "tf_keras": keras.__version__,
                         "tfmot": tfmot.__version__, "numpy": np.__version__}

    @property
    def overhead(self):
        if self._overhead is None:
            self._overhead = Overhead(self.spec, self.x_overhead, self.y_overhead)
        return self._overhead

    def log(self, message):
        print(f"[tfmot-worker {self.spec['model']}] {message}", file=sys.stderr, flush=True)

    def path(self, stem, fmt):
        return os.path.join(self.out_dir, f"tfmot_{stem}_{fmt}.tflite")

    def row(self, technique, fmt, **fields):
        row = {"toolkit": "tfmot", "technique": technique, "format": fmt, "status": "ok"}
        row.update(fields)
        return row

    def write(self):
        payload = {"versions": self.versions, "rows": self.rows}
        tmp = self.spec["results"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, self.spec["results"])

    def sparsity(self, model):
        kernels = [w.numpy() for w in model.weights if "kernel" in w.name]
        total = sum(k.size for k in kernels)
        return float(sum(int((k == 0).sum()) for k in kernels) / max(1, total))

    def unique_values(self, model):
        kernels = [w.numpy() for w in model.weights if "kernel" in w.name]
        return max(len(np.unique(k)) for k in kernels) if kernels else 0

    # Each technique returns its rows; `run` turns an exception into failed rows.

    def baseline(self):
        model = build_baseline(self.spec)
        acc = accuracy(model, self.x_test, self.y_test)
        path = convert(model, self.path("baseline", "float32"), "float32")
        return [self.row("baseline (tf_keras, weights loaded)", "float32", keras_accuracy=acc, artifact=path,
                         notes="the Keras 3 baseline's weights in the same tf_keras architecture")]

    def prune(self):
        p = self.spec["prune"]
        schedule, end_step = pruning_schedule(p, p["end_step"])
        model = tfmot.sparsity.keras.prune_low_magnitude(build_baseline(self.spec), pruning_schedule=schedule)
        seconds = fit_timed(model, self.x_train, self.y_train, self.budget,
                            [tfmot.sparsity.keras.UpdatePruningStep()])
        stripped = tfmot.sparsity.keras.strip_pruning(model)
        acc = accuracy(stripped, self.x_test, self.y_test)
        sparsity = self.sparsity(stripped)
        self._pruned, self._prune_seconds = stripped, seconds
        self.log(f"prune: {seconds:.1f} s, accuracy {acc:.4f}, kernel sparsity {sparsity:.3f}")
        over_schedule, _ = pruning_schedule(p, p["overhead_end_step"])
        timing = self.overhead.measure(
            tfmot.sparsity.keras.prune_low_magnitude(build_baseline(self.spec), pruning_schedule=over_schedule),
            [tfmot.sparsity.keras.UpdatePruningStep()])
        technique = f"prune {round(100 * p['target_sparsity']):d}%"
        common = dict(keras_accuracy=acc, finetune_s=seconds, kernel_sparsity=sparsity, end_step=end_step,
                      **timing)
        rows = [self.row(technique, "float32", artifact=convert(stripped, self.path("prune", "float32"), "float32"),
                         notes="strip_pruning", **common)]
        rows.append(self.row(f"{technique} + PTQ int8", "int8",
                             artifact=convert(stripped, self.path("prune", "int8"), "int8", self.calibration),
                             notes="strip_pruning, full-integer PTQ", **common))
        return rows

    def cluster(self):
        clusters = self.spec["clusters"]
        cluster = tfmot.clustering.keras
        init = cluster.CentroidInitialization.LINEAR

        def clustered():
            return cluster.cluster_weights(build_baseline(self.spec), number_of_clusters=clusters,
                                           cluster_centroids_init=init)

        model = clustered()
        seconds = fit_timed(model, self.x_train, self.y_train, self.budget)
        stripped = cluster.strip_clustering(model)
        acc = accuracy(stripped, self.x_test, self.y_test)
        unique = self.unique_values(stripped)
        self.log(f"cluster: {seconds:.1f} s, accuracy {acc:.4f}, max unique values per kernel {unique}")
        timing = self.overhead.measure(clustered())
        technique = f"cluster {clusters} (linear init)"
        common = dict(keras_accuracy=acc, finetune_s=seconds, max_unique_per_kernel=unique, **timing)
        return [
            self.row(technique, "float32", artifact=convert(stripped, self.path("cluster", "float32"), "float32"),
                     notes="strip_clustering", **common),
            self.row(f"{technique} + PTQ int8", "int8",
                     artifact=convert(stripped, self.path("cluster", "int8"), "int8", self.calibration),
                     notes="strip_clustering, full-integer PTQ", **common),
        ]

    def qat(self):
        model = tfmot.quantization.keras.quantize_model(build_baseline(self.spec))
        seconds = fit_timed(model, self.x_train, self.y_train, self.budget)
        acc = accuracy(model, self.x_test, self.y_test)
        self.log(f"QAT: {seconds:.1f} s, accuracy {acc:.4f}")
        timing = self.overhead.measure(tfmot.quantization.keras.quantize_model(build_baseline(self.spec)))
        return [self.row("QAT int8", "int8", keras_accuracy=acc, finetune_s=seconds,
                         artifact=convert(model, self.path("qat", "int8"), "int8_qat"),
                         notes="quantize_model; converted with Optimize.DEFAULT (ranges from QAT)", **timing)]

    def prune_cluster_pcqat(self):
        """tfmot's collaborative optimization: prune -> sparsity-preserving cluster -> PCQAT."""
        if self._pruned is None or self._prune_seconds is None:
            self.prune_for_chain()
        cluster = tfmot.clustering.keras
        clusters = self.spec["clusters"]
        prune_seconds = self._prune_seconds
        sparsity_before = self.sparsity(self._pruned)
        model = cluster.cluster_weights(self.pruned_copy(), number_of_clusters=clusters,
                                        cluster_centroids_init=cluster.CentroidInitialization.LINEAR,
                                        preserve_sparsity=True)
        cluster_seconds = fit_timed(model, self.x_train, self.y_train, self.budget)
        stripped = cluster.strip_clustering(model)
        sparsity_after_cluster = self.sparsity(stripped)

        def pcqat(base):
            annotated = tfmot.quantization.keras.quantize_annotate_model(base)
            return tfmot.quantization.keras.quantize_apply(
                annotated, tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True))

        model = pcqat(stripped)
        pcqat_seconds = fit_timed(model, self.x_train, self.y_train, self.budget)
        acc = accuracy(model, self.x_test, self.y_test)
        self.log(f"prune->cluster->PCQAT: {prune_seconds:.1f}+{cluster_seconds:.1f}+{pcqat_seconds:.1f} s, "
                 f"accuracy {acc:.4f}")
        timing = self.overhead.measure(pcqat(cluster.strip_clustering(
            cluster.cluster_weights(self.pruned_copy(), number_of_clusters=clusters,
                                    cluster_centroids_init=cluster.CentroidInitialization.LINEAR,
                                    preserve_sparsity=True))))
        return [self.row(
            f"prune {round(100 * self.spec['prune']['target_sparsity']):d}% -> cluster {clusters} -> PCQAT", "int8",
            keras_accuracy=acc, finetune_s=prune_seconds + cluster_seconds + pcqat_seconds,
            stage_seconds=[prune_seconds, cluster_seconds, pcqat_seconds], kernel_sparsity_after_prune=sparsity_before,
            kernel_sparsity=sparsity_after_cluster,
            artifact=convert(model, self.path("pcqat", "int8"), "int8_qat"),
            notes=("3 fine-tunings with the budget each (prune, sparsity-preserving cluster, PCQAT); "
                   "overhead of the PCQAT stage; sparsity after the cluster stage"), **timing)]

    def pruned_copy(self):
        """A fresh copy of the stripped pruned model: tfmot's wrappers take over the layers they wrap,
        so wrapping the same model twice fails (StopIteration in ClusterWeights.build)."""
        copy = keras.models.clone_model(self._pruned)
        copy.set_weights(self._pruned.get_weights())
        return copy

    def prune_for_chain(self):
        p = self.spec["prune"]
        schedule, _ = pruning_schedule(p, p["end_step"])
        model = tfmot.sparsity.keras.prune_low_magnitude(build_baseline(self.spec), pruning_schedule=schedule)
        self._prune_seconds = fit_timed(model, self.x_train, self.y_train, self.budget,
                                        [tfmot.sparsity.keras.UpdatePruningStep()])
        self._pruned = tfmot.sparsity.keras.strip_pruning(model)

    def run(self):
        for technique in self.spec["techniques"]:
            start = time.perf_counter()
            self.log(f"{technique} ...")
            try:
                rows = getattr(self, technique)()
            except Exception as error:  # noqa: BLE001 - one technique failing must not stop the others
                reason = f"{type(error).__name__}: {' '.join(str(error).split())[:600]}"
                self.log(f"{technique} failed: {reason}\n{traceback.format_exc()}")
                rows = [self.row(technique, "-", status="failed", reason=reason)]
            for row in rows:
                row["key"] = technique
                row.setdefault("worker_wall_s", time.perf_counter() - start)
            self.rows.extend(rows)
            self.write()


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        spec = json.load(f)
    unknown = [t for t in spec["techniques"] if t not in TECHNIQUES]
    if unknown:
        print(f"unknown techniques {unknown}; allowed: {list(TECHNIQUES)}", file=sys.stderr)
        return 2
    keras.utils.set_random_seed(spec.get("seed", 0))
    worker = Worker(spec)
    worker.write()
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
