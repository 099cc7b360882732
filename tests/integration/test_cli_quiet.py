"""The command line keeps TensorFlow's and LiteRT's start-up lines off the terminal unless --verbose."""

import os
import subprocess
import sys

import pytest

import keras_compress as kc
from keras_compress.core import quiet

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    from keras_compress.export import litert

    model = kc.zoo.lenet5()
    path = tmp_path_factory.mktemp("quiet") / "m.tflite"
    litert.export_litert(model, str(path), fmt="float32")
    return str(path)


def run_cli(backend, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "JAX_"))}
    env["KERAS_BACKEND"] = backend
    return subprocess.run([sys.executable, "-m", "keras_compress", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_evaluate_prints_no_start_up_lines_unless_verbose(tflite_file, backend):
    quiet_run = run_cli(backend, "evaluate", tflite_file, "--data", "mnist", "--subset", "64", "--metric", "accuracy")
    assert quiet_run.returncode == 0, quiet_run.stderr
    assert "accuracy:" in quiet_run.stdout
    noisy = [line for line in quiet_run.stderr.splitlines() if quiet.is_noise(line)]
    assert noisy == [], quiet_run.stderr
    assert quiet_run.stderr.strip() == "", quiet_run.stderr
    # The same command with --verbose shows what was held back, so the check above can fail.
    loud = run_cli(backend, "--verbose", "evaluate", tflite_file, "--data", "mnist", "--subset", "64", "--metric", "accuracy")
    assert loud.returncode == 0, loud.stderr
    assert any(quiet.is_noise(line) for line in loud.stderr.splitlines()), loud.stderr


def test_the_filter_writes_back_real_errors(capfd):
    quiet.enable()
    try:
        with quiet.native_stderr_filtered():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
            os.write(2, b"E0000 something really broke\n")
    finally:
        quiet.enable(False)
    err = capfd.readouterr().err
    assert "something really broke" in err
    assert "XNNPACK" not in err
