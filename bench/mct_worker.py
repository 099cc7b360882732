"""Sony MCT's structured pruning, in its own virtual environment (TensorFlow 2.15, tf.keras 2).

Run by bench/structured_mct.py with this venv's python, never imported by
keras-compress: MCT needs TensorFlow <= 2.15, where `keras` is Keras 2.
It rebuilds the zoo architecture from keras_compress/zoo.py's own source
(the file uses only layers both Keras versions share), loads the baseline's
weights in `get_weights()` order, checks that the rebuilt model predicts as
the original did, prunes with `mct.pruning.keras_pruning_experimental` to
the same weights-memory budget, fine-tunes with the same optimizer, epochs
and batch size, and writes float32 and int8 (calibrated) .tflite files for
the parent to measure.

    python bench/mct_worker.py SPEC.json
"""

import importlib.util
import json
import sys
import time


def main(spec_path):
    import numpy as np
    import tensorflow as tf

    import model_compression_toolkit as mct

    with open(spec_path) as f:
        spec = json.load(f)
    data = np.load(spec["data"])
    x, y = data["x"].astype("float32") / 255.0, data["y"]
    xt, yt = data["xt"].astype("float32") / 255.0, data["yt"]
    loader = importlib.util.spec_from_file_location("kc_zoo", spec["zoo"])
    zoo = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(zoo)
    model = getattr(zoo, spec["model"])()
    weights = np.load(spec["weights"])
    model.set_weights([weights[f"w{i}"] for i in range(len(weights.files))])
    reference = np.load(spec["reference"])["logits"]
    carried = float(np.abs(model.predict(xt[: len(reference)], verbose=0) - reference).max())
    result = {"mct_version": mct.__version__, "tensorflow": tf.__version__, "carried_max_difference": carried,
              "baseline_params": int(model.count_params())}

    def representative():
        for i in range(0, spec["representative_samples"], 32):
            yield [x[i: i + 32]]

    # The asked budget first; where MCT cannot reach it (it leaves channels that feed a residual add or a
    # concatenation whole), the next share of the baseline's parameters it can: the parent compares there too.
    result["refused"] = []
    for share in spec["params_shares"]:
        start = time.perf_counter()
        target = mct.core.ResourceUtilization(weights_memory=4.0 * share * result["baseline_params"])
        try:
            pruned, info = mct.pruning.keras_pruning_experimental(
                model=model, target_resource_utilization=target, representative_data_gen=representative,
                pruning_config=mct.pruning.PruningConfig(num_score_approximations=spec["score_approximations"]))
        except Exception as error:  # noqa: BLE001 - MCT raises a bare Exception for an unreachable budget
            result["refused"].append({"share": share, "reason": str(error).splitlines()[0][:300]})
            continue
        result["params_share"] = share
        break
    else:
        raise RuntimeError(f"MCT reached none of the budgets {spec['params_shares']}: {result['refused'][-1]}")
    result["pruning_seconds"] = time.perf_counter() - start
    result["params"] = int(pruned.count_params())
    result["pruned_layers"] = {layer.name: int(np.sum(~np.asarray(mask, bool)))
                               for layer, mask in getattr(info, "pruning_masks", {}).items()
                               if hasattr(layer, "name")} if hasattr(info, "pruning_masks") else {}
    tf.keras.utils.set_random_seed(spec["seed"])
    pruned.compile(optimizer=tf.keras.optimizers.Adam(spec["learning_rate"]),
                   loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    result["accuracy_right_after_pruning"] = float(pruned.evaluate(xt, yt, verbose=0)[1])
    start = time.perf_counter()
    pruned.fit(x, y, epochs=spec["epochs"], batch_size=spec["batch_size"], verbose=0)
    result["finetune_seconds"] = time.perf_counter() - start
    result["keras_accuracy"] = float(pruned.evaluate(xt, yt, verbose=0)[1])
    for fmt in ("float32", "int8"):
        converter = tf.lite.TFLiteConverter.from_keras_model(pruned)
        if fmt == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x[i: i + 1]] for i in range(spec["calibration_samples"]))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with open(spec[f"{fmt}_path"], "wb") as f:
            f.write(converter.convert())
    with open(spec["result"], "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
