"""Automatic compression search with Optuna: recipes that trade the metric against size and latency.

    >>> result = keras_compress.search.search(model, data, "space.yaml", trials=30, out_dir="runs/search",
    ...                                       objectives=("metric", "gzip_bytes"), constraints=["lost <= 0.005"])
    >>> print(result.table())                       # every trial; * marks the Pareto front
    >>> result.files["best_recipe.yaml"]            # runs with `keras-compress compress` as it is

Optuna is an optional extra (`pip install "keras-compress[search]"`).
"""

from keras_compress.search.api import SAMPLERS, search, storage_for
from keras_compress.search.objectives import MEASURES, Constraint, ObjectiveError
from keras_compress.search.space import Parameter, SearchSpace, SpaceError

__all__ = ["MEASURES", "SAMPLERS", "Constraint", "ObjectiveError", "Parameter", "SearchSpace", "SpaceError",
           "search", "storage_for"]


class _CallableModule(__import__("types").ModuleType):
    """`keras_compress.search(model, data, space, ...)` calls `search.search`; the module's names stay."""

    def __call__(self, *args, **kwargs):
        return search(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
