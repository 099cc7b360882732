"""Samples for a model's inputs, checked once for every consumer (int8 export, QAT calibration).

One array per input, matched by the model's input names when a dict is
given: each is non-empty, numeric, finite, fits its input's shape, and is
cast to the input's dtype (integers for token ids, else float32).
"""

import numpy as np

from keras_compress.evaluate import _check_fits


def _tensor_name(tensor):
    return tensor.name.split(":")[0].split("/")[0]


def _input_names(model):
    try:
        return [_tensor_name(t) for t in model.inputs]
    except (AttributeError, TypeError, ValueError):
        return []


def in_model_structure(model, arrays_by_name):
    """Arrays by input name, arranged as `model` takes them: a dict keyed as its
    own input dict (a Functional built on `{key: keras.Input(...)}`), else a list
    in `model.inputs` order."""
    structure = getattr(model, "input", None)
    if isinstance(structure, dict):
        return {key: arrays_by_name[_tensor_name(tensor)] for key, tensor in structure.items()}
    return [arrays_by_name[name] for name in _input_names(model)]


def _named_calibration(model, representative_data, num_calibration_samples, what="representative_data"):
    """Calibration for a model with several inputs: a dict by input name, each array checked.

    `num_calibration_samples=None` keeps every sample; `what` names the argument in messages.
    """
    names = _input_names(model)
    if isinstance(representative_data, dict):
        missing = [n for n in names if n not in representative_data]
        if missing:
            raise ValueError(f"{what} has no {missing}: the model's inputs are {names}. "
                             f"Received keys: {sorted(representative_data)}")
        arrays = [representative_data[n] for n in names]
    else:
        arrays = list(representative_data) if isinstance(representative_data, (list, tuple)) else [representative_data]
        if len(arrays) != len(names):
            raise ValueError(f"{what} must hold one array per model input {names} (a list in that "
                             f"order or a dict by name). Received: {len(arrays)} arrays")
    out = {}
    for name, tensor, array in zip(names, model.inputs, arrays):
        out[name] = _checked_samples(np.asarray(array), tuple(tensor.shape[1:]), num_calibration_samples,
                                     _dtype_of(tensor), f"{what}[{name!r}]")
    if len({len(a) for a in out.values()}) != 1:
        raise ValueError(f"{what}: every input must hold the same number of samples. Received: "
                         f"{ {n: len(a) for n, a in out.items()} }")
    return out


def _dtype_of(tensor):
    try:
        dtype = np.dtype(str(tensor.dtype))
    except (TypeError, ValueError):
        return np.float32
    return dtype if np.issubdtype(dtype, np.integer) else np.float32


def _checked_samples(data, expected_shape, num_calibration_samples, dtype, what):
    if data.ndim == 0 or data.size == 0:
        raise ValueError(f"The calibration sample is empty: {what} must hold at least 1 sample. "
                         f"Received: shape {data.shape}")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ValueError(f"{what} must be numeric (integer or floating point). Received: dtype={data.dtype}")
    _check_fits(data.shape[1:], expected_shape, what=f"{what} sample")
    data = data[:num_calibration_samples]
    finite = np.isfinite(data).reshape(len(data), -1).all(axis=1)
    if not finite.all():
        raise ValueError(f"{what} must be finite: {int((~finite).sum())} of the {len(data)} calibration samples "
                         f"hold NaN or inf (first: sample {int(np.argmin(finite))}).")
    return np.ascontiguousarray(data, dtype=dtype)
