import os
import subprocess
import sys

import keras_compress


def test_public_names_are_pinned():
    assert sorted(keras_compress.__all__) == sorted([
        "ClusterConfig", "ClusteringCallback", "cluster", "clustering_summary", "is_clustered",
        "PruneConfig", "PruningCallback", "QATConfig", "__version__", "datasets", "evaluate", "importance",
        "is_pruned", "prune", "pruning_summary", "schedules", "strip", "zoo",
        "quantize", "quantization_summary", "is_quantized",
        "ChannelPruneConfig", "channel_groups", "prune_channels", "data", "metrics", "search",
        "distill", "finetune", "ensemble",
    ])
    for name in keras_compress.__all__:
        assert hasattr(keras_compress, name), name


def test_import_does_not_load_tensorflow_under_another_backend():
    code = (
        "import sys, keras_compress, keras_compress.cli.main, keras_compress.core.report;"
        "import keras_compress.pruning, keras_compress.zoo, keras_compress.quantization;"
        "heavy = [m for m in ('tensorflow', 'ai_edge_litert') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_command_line_imports_no_keras_before_it_quiets_the_backend():
    # cli.main must load before Keras (and TensorFlow), so its start-up lines can be held back: a module
    # that imports keras at its top, reached from here, breaks `keras-compress evaluate`'s quiet output.
    code = "import sys, keras_compress.cli.main; print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
