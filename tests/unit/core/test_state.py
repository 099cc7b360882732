"""core.state: the stripper registry."""


def test_strip_runs_the_techniques_in_their_orders():
    """QAT gives back the constraints it wrapped, clustering shares its values, QAT puts them on the int8 grid,
    then pruning and the rest: one order, held by the registry, not by a technique calling another."""
    import keras_compress.clustering.api  # noqa: F401 - registers its stripper
    import keras_compress.pruning.api  # noqa: F401
    import keras_compress.quantization.api  # noqa: F401
    from keras_compress.core import state

    names = [f"{fn.__module__}.{fn.__name__}" for _, _, fn in state._STRIPPERS]
    order = [names.index(n) for n in ("keras_compress.quantization.api._unwrap", "keras_compress.clustering.api.strip",
                                      "keras_compress.quantization.api.strip", "keras_compress.pruning.api.strip")]
    assert order == sorted(order), names
