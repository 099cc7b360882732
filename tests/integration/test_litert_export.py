"""LiteRT export: each format converts, and the artifact agrees with Keras.

Written for any backend: under TensorFlow the export runs in-process, under
JAX through the TensorFlow subprocess. CI runs it under TensorFlow only.
"""

import importlib.util
import os

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("LiteRT export needs TensorFlow", allow_module_level=True)
pytest.importorskip("ai_edge_litert")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from keras_compress import export  # noqa: E402
from keras_compress.evaluate import sizes  # noqa: E402
from keras_compress.export import litert  # noqa: E402

INPUT_SHAPE = (12, 12, 1)
NUM_CLASSES = 4


def _cnn():
    # Dense(64) on 800 features holds most of the 52k weights, so quantized
    # weights dominate the file size rather than the flatbuffer's overhead.
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )


@keras.saving.register_keras_serializable(package="keras_compress_tests")
class SubclassedCNN(keras.Model):
    # No leading underscore: Keras derives the model name, and so TF's root
    # scope name, from the class name, and TF refuses names starting with "_".
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(NUM_CLASSES)

    def call(self, inputs):
        return self.dense(self.flatten(self.conv(inputs)))


def _nested():
    inner = keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
        ],
        name="inner",
    )
    inputs = keras.Input(INPUT_SHAPE)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(inner(inputs)))


def _subclassed():
    model = SubclassedCNN()
    model(np.zeros((1, *INPUT_SHAPE), np.float32))
    return model


def _constrained():
    # Our pruning code sets `constraint` on the variables it masks.
    model = _cnn()
    model.layers[-1].kernel.constraint = keras.constraints.NonNeg()
    return model


def _keras_outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 1.0, (50, *INPUT_SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return _cnn()


@pytest.fixture(scope="module")
def artifacts(model, data, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("artifacts")
    return export.export_all(model, out_dir, export.FORMATS, representative_data=data)


def _tensor_dtypes(path):
    return {detail["dtype"] for detail in Interpreter(model_path=str(path)).get_tensor_details()}


def test_export_all_writes_one_file_per_format(artifacts):
    assert list(artifacts) == list(export.FORMATS)
    folder = os.path.dirname(artifacts["int8"])
    assert sorted(os.listdir(folder)) == sorted(f"model_{fmt}.tflite" for fmt in export.FORMATS)


def test_float32_artifact_matches_keras(model, data, artifacts):
    outputs = export.litert_predict(artifacts["float32"], data, batch_size=16)
    np.testing.assert_allclose(outputs, _keras_outputs(model, data), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt, atol", [("float16", 1e-2), ("dynamic_int8", 0.1), ("int8", 0.1)])
def test_quantized_artifacts_stay_close_to_keras(model, data, artifacts, fmt, atol):
    outputs = export.litert_predict(artifacts[fmt], data)
    expected = _keras_outputs(model, data)
    np.testing.assert_allclose(outputs, expected, atol=atol, rtol=0)
    agreement = np.mean(outputs.argmax(-1) == expected.argmax(-1))
    assert agreement >= 0.9


def test_int8_artifact_holds_int8_tensors_and_float_io(artifacts):
    assert np.int8 in _tensor_dtypes(artifacts["int8"])
    assert np.int8 not in _tensor_dtypes(artifacts["float32"])
    runtime = export.LiteRTModel(artifacts["int8"])
    assert runtime.input_dtype == np.float32


def test_quantized_artifacts_are_smaller(artifacts):
    raw = {fmt: sizes(path)["raw_bytes"] for fmt, path in artifacts.items()}
    assert raw["int8"] < raw["float32"] / 3
    assert raw["dynamic_int8"] < raw["float32"] / 3
    assert raw["float16"] < raw["float32"] * 0.6


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_batched_accuracy_equals_per_sample_accuracy(model, data, artifacts, fmt):
    labels = _keras_outputs(model, data).argmax(-1)
    labels[::3] = (labels[::3] + 1) % NUM_CLASSES  # wrong on a third
    # 50 samples in batches of 16: the last batch holds 2.
    batched = export.litert_accuracy(artifacts[fmt], data, labels, batch_size=16)
    runtime = export.LiteRTModel(artifacts[fmt])
    per_sample = np.mean([runtime.predict(sample[None]).argmax(-1)[0] == label
                          for sample, label in zip(data, labels)])
    assert batched == pytest.approx(per_sample)
    assert 0.5 < batched < 0.9


def test_int8_io_artifact_takes_int8_and_predicts_floats(model, data, tmp_path):
    path = export.export_litert(model, tmp_path / "io.tflite", "int8",
                                representative_data=data, int8_io=True)
    runtime = export.LiteRTModel(path)
    assert runtime.input_dtype == np.int8
    outputs = runtime.predict(data, batch_size=32)
    assert outputs.dtype == np.float32
    assert np.mean(outputs.argmax(-1) == _keras_outputs(model, data).argmax(-1)) >= 0.9


def _weight_scales(path):
    """Scale counts of the int8 tensors of rank >= 2 (the weights), and their distinct values."""
    interpreter = Interpreter(model_path=str(path))
    out = []
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] == np.int8 and len(detail["shape"]) >= 2:
            try:
                values = interpreter.get_tensor(detail["index"])
            except ValueError:  # an activation: no buffer
                continue
            out.append((len(detail["quantization_parameters"]["scales"]), np.unique(values).size))
    return out


def test_per_tensor_int8_keeps_a_clustered_kernel_at_its_shared_values(data, tmp_path):
    keras.utils.set_random_seed(0)
    model = _cnn()
    rng = np.random.default_rng(0)
    for layer in (l for l in model.layers if hasattr(l, "kernel")):  # every kernel clustered per tensor: 8 values
        centroids = rng.normal(scale=0.1, size=8).astype("float32")
        layer.kernel.assign(rng.choice(centroids, size=layer.kernel.shape))
    per_channel = export.export_litert(model, tmp_path / "pc.tflite", "int8", representative_data=data)
    per_tensor = export.export_litert(model, tmp_path / "pt.tflite", "int8", representative_data=data,
                                      per_channel=False)
    assert any(scales > 1 for scales, _ in _weight_scales(per_channel))
    assert any(distinct > 8 for _, distinct in _weight_scales(per_channel))  # 8 values x channel scales
    assert all(scales == 1 and distinct <= 8 for scales, distinct in _weight_scales(per_tensor))
    assert np.mean(export.litert_predict(per_tensor, data).argmax(-1) == _keras_outputs(model, data).argmax(-1)) >= 0.9
    with pytest.raises(ValueError, match="per_channel=False sets the weight scales of a calibrated int8"):
        export.export_litert(model, tmp_path / "f.tflite", "float32", per_channel=False)


def test_latency_is_a_positive_number_of_seconds(artifacts):
    seconds = export.litert_latency(
        artifacts["int8"], batch_size=2, runs=3, warmup=1, num_threads=1
    )
    assert 0.0 < seconds < 1.0


@pytest.mark.parametrize("build", [_nested, _subclassed, _constrained],
                         ids=["sequential_in_functional", "subclassed", "with_constraint"])
def test_model_kinds_export_and_match_keras(build, data, tmp_path):
    model = build()
    path = export.export_litert(model, tmp_path / "model.tflite")
    outputs = export.litert_predict(path, data)
    np.testing.assert_allclose(outputs, _keras_outputs(model, data), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "path_name, kwargs, message",
    [
        ("m.tflite", {"fmt": "int4"}, "Allowed"),
        ("m.tfl", {}, "must end with '.tflite'"),
        ("m.tflite", {"fmt": "int8"}, "needs representative_data"),
        ("m.tflite", {"fmt": "int8", "representative_data": np.zeros((0, *INPUT_SHAPE))},
         "calibration sample is empty"),
        ("m.tflite", {"fmt": "int8", "representative_data": np.zeros((4, 12, 12))},
         r"\(12, 12\) does not fit .* \(12, 12, 1\)"),
        ("m.tflite", {"fmt": "int8", "representative_data": np.full((4, *INPUT_SHAPE), np.nan)},
         "finite"),
        ("m.tflite", {"fmt": "int8", "representative_data": np.full((4, *INPUT_SHAPE), np.inf)},
         "finite"),
        ("m.tflite", {"fmt": "int8", "representative_data": np.full((4, *INPUT_SHAPE), "a")},
         "numeric"),
        ("m.tflite", {"fmt": "float32", "int8_io": True}, "int8_io"),
        ("m.tflite", {"fmt": "int8", "representative_data": np.zeros((4, *INPUT_SHAPE)),
                      "num_calibration_samples": 0}, "num_calibration_samples"),
    ],
    ids=["unknown_format", "bad_suffix", "no_calibration", "empty_calibration",
         "misshapen_calibration", "nan_calibration", "inf_calibration", "text_calibration",
         "int8_io_without_int8", "zero_calibration_samples"],
)
def test_bad_arguments_raise_and_write_nothing(model, tmp_path, path_name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export.export_litert(model, tmp_path / path_name, **kwargs)
    assert os.listdir(tmp_path) == []


def test_export_all_validates_every_format_before_writing(model, tmp_path):
    with pytest.raises(ValueError, match="Allowed"):
        export.export_all(model, tmp_path, ["float32", "int3"])
    with pytest.raises(ValueError, match="needs representative_data"):
        export.export_all(model, tmp_path, ["float32", "int8"])
    assert os.listdir(tmp_path) == []


def test_failed_conversion_leaves_no_partial_file(model, tmp_path, monkeypatch):
    def write_half_then_fail(model, job_or_jobs, out_path_or_paths):
        paths = out_path_or_paths if isinstance(out_path_or_paths, list) else [out_path_or_paths]
        for path in paths:
            with open(path, "wb") as f:
                f.write(b"half an artifact")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(litert, "_convert_in_process", write_half_then_fail)
    monkeypatch.setattr(litert, "_convert_in_subprocess", write_half_then_fail)
    target = tmp_path / "model.tflite"
    target.write_bytes(b"previous artifact")
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.export_litert(model, target)
    assert os.listdir(tmp_path) == ["model.tflite"]
    assert target.read_bytes() == b"previous artifact"


def test_a_converter_failure_reads_as_a_few_lines_not_a_dump(model, tmp_path, monkeypatch):
    """What a user saw from DenseNet121 before its rule existed: MLIR locations, notes and a stack dump."""
    mlir = ("<unknown>:0: error: loc(callsite(\"densenet121/pool2_pool/AvgPool@__inference_serving_default_1\" at "
            "fused[\"StatefulPartitionedCall:\"])): 'tfl.average_pool_2d' op quantization parameters violate the "
            "same scale constraint: !quant.uniform<i8:f32, 0.1> vs. !quant.uniform<i8:f32, 0.2>\n"
            "<unknown>:0: note: loc(\"StatefulPartitionedCall\"): called from\n" + "  frame\n" * 200)

    def refuse(self, *args, **kwargs):
        os.write(2, b"converter chatter " * 50)
        raise Exception(mlir)  # tf's ConverterError is an Exception subclass with such text

    monkeypatch.setattr(keras.Model, "export", refuse)
    with pytest.raises(litert.ConversionError) as caught:
        export.export_litert(model, tmp_path / "m.tflite")
    message = str(caught.value)
    assert message == ("The LiteRT converter could not convert the model to fmt='float32': 'tfl.average_pool_2d' op "
                       "quantization parameters violate the same scale constraint: !quant.uniform<i8:f32, 0.1> vs. "
                       "!quant.uniform<i8:f32, 0.2>")
    assert "converter chatter" in caught.value.converter_log and "frame" in str(caught.value.__cause__)
    assert os.listdir(tmp_path) == []
    from keras_compress.export.converter import _summary

    assert _summary(ValueError("\n\nno error lines here\nsecond")) == "no error lines here"


def test_litert_predict_rejects_misshapen_input(artifacts):
    with pytest.raises(ValueError, match=r"\(12, 12\) does not fit .* \(12, 12, 1\)"):
        export.litert_predict(artifacts["float32"], np.zeros((2, 12, 12), np.float32))


RECURRENT = {
    "lstm": lambda: keras.layers.LSTM(8),
    "gru": lambda: keras.layers.GRU(8),
    "simple_rnn": lambda: keras.layers.SimpleRNN(8),
    "bidirectional_lstm": lambda: keras.layers.Bidirectional(keras.layers.LSTM(6)),
}


@pytest.mark.parametrize("case", sorted(RECURRENT))
def test_recurrent_layers_export_unrolled_to_files_the_stock_interpreter_runs(case, tmp_path):
    from keras_compress.export.litert import LiteRTModel
    from keras_compress.export.recurrent import recurrent_layers

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 5)), RECURRENT[case](), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(64, 12, 5)).astype("float32")
    expected = model.predict(x, verbose=0)
    float_path = litert.export_litert(model, tmp_path / "f.tflite", "float32")
    np.testing.assert_allclose(LiteRTModel(float_path).predict(x), expected, atol=1e-5)
    int8_path = litert.export_litert(model, tmp_path / "q.tflite", "int8", representative_data=x)
    interpreter = LiteRTModel(int8_path).interpreter
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    matmuls = [details[op["inputs"][1]]["dtype"] for op in interpreter._get_ops_details()
               if op["op_name"] == "FULLY_CONNECTED"]
    assert len(matmuls) > 12 and all(d == np.int8 for d in matmuls)  # every time step's kernels are int8
    spread = float(expected.max() - expected.min())
    assert np.abs(LiteRTModel(int8_path).predict(x) - expected).max() < 0.05 * spread
    assert not any(layer.unroll for layer in recurrent_layers(model))  # the user's model is as it was


def test_a_variable_length_recurrent_model_is_refused_and_nothing_is_written(tmp_path):
    model = keras.Sequential([keras.Input((None, 5)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"would not run on the LiteRT interpreter.*fixed sequence length.*"
                                         r"pass select_tf_ops=True"):
        litert.export_litert(model, tmp_path / "v.tflite", "float32")
    assert os.listdir(tmp_path) == []


def test_select_tf_ops_writes_a_flex_file_only_when_asked_and_names_its_ops(tmp_path, capsys):
    from keras_compress.cli.main import main

    model = keras.Sequential([keras.Input((None, 5)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    path = litert.export_litert(model, tmp_path / "v.tflite", "float32", select_tf_ops=True)
    flex = export.flex_ops(path)
    assert flex and all(name.startswith("Flex") for name in flex), flex
    with pytest.raises((RuntimeError, ValueError)):
        export.LiteRTModel(path)  # the stock interpreter has no Flex delegate
    fixed = keras.Sequential([keras.Input((3, 5)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    builtin = litert.export_litert(fixed, tmp_path / "f.tflite", "float32", select_tf_ops=True)
    assert export.flex_ops(builtin) == []  # unrolled first: Flex only where nothing else converts
    with pytest.raises(ValueError, match="select_tf_ops must be true or false"):
        litert.export_litert(model, tmp_path / "x.tflite", "float32", select_tf_ops="yes")
    model.save(tmp_path / "v.keras")
    assert main(["export", str(tmp_path / "v.keras"), "--format", "float32", "--select-tf-ops",
                 "--out", str(tmp_path / "cli.tflite")]) == 0
    assert "needs the Select TensorFlow ops (Flex) delegate for Flex" in capsys.readouterr().out


class _RefusingOnce:
    """An interpreter whose first invoke fails as XNNPACK does when it cannot prepare a graph."""

    def __init__(self, interpreter):
        self.interpreter, self.failed = interpreter, False

    def invoke(self):
        if not self.failed:
            self.failed = True
            raise RuntimeError("failed to create XNNPACK runtimeNode number 402 (TfLiteXNNPackDelegate) failed to "
                               "prepare.")
        return self.interpreter.invoke()

    def __getattr__(self, name):
        return getattr(self.interpreter, name)


def test_a_graph_xnnpack_refuses_runs_on_the_builtin_kernels(tmp_path):
    from keras_compress.export.litert import LiteRTModel

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(40, 6)).astype("float32")
    path = litert.export_litert(model, tmp_path / "m.tflite", "float32")
    runtime = LiteRTModel(path)
    runtime._interpreter = _RefusingOnce(runtime._interpreter)
    np.testing.assert_allclose(runtime.predict(x, batch_size=16), model.predict(x, verbose=0), atol=1e-5)
    assert runtime.xnnpack is False and "XNNPACK" in runtime.fallback_reason
    assert not isinstance(runtime._interpreter, _RefusingOnce)  # rebuilt without the default delegates
    other = LiteRTModel(path)
    other._interpreter = _RefusingOnce(other._interpreter)
    assert other.latency(batch_size=1, runs=3) > 0 and other.xnnpack is False
    # Any other failure is not hidden.
    broken = LiteRTModel(path)
    broken.xnnpack = False
    broken._interpreter = _RefusingOnce(broken._interpreter)
    with pytest.raises(RuntimeError, match="XNNPACK"):
        broken.predict(x)


def test_a_recurrent_model_under_jax_exports_unrolled(tmp_path):
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("jax")
    script = textwrap.dedent(f"""
        import json, numpy as np, keras
        from keras_compress.export.litert import export_litert, litert_predict
        from keras_compress.export.recurrent import recurrent_layers
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((10, 3)), keras.layers.GRU(6), keras.layers.Dense(2)])
        x = np.random.default_rng(0).normal(size=(32, 10, 3)).astype("float32")
        path = export_litert(model, {str(tmp_path / 'gru.tflite')!r}, "float32")
        print(json.dumps({{"diff": float(np.abs(litert_predict(path, x) - model.predict(x, verbose=0)).max()),
                          "unrolled_after": [l.unroll for l in recurrent_layers(model)],
                          "backend": keras.backend.backend()}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, KERAS_BACKEND="jax"),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax" and report["unrolled_after"] == [False] and report["diff"] < 1e-5, report
