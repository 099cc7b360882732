"""The recipe's `cluster` step: `ClusterConfig`'s fields, plus `layers`.

    - cluster: {num_clusters: 16, init: linear, per_channel: true, layers: fc}

The step strips earlier pruning first (its zeros are kept when
`preserve_sparsity` is true, the default).
"""

import dataclasses

from keras_compress.clustering.config import ClusterConfig
from keras_compress.core.steps import Key, Step, register_step


@register_step
@dataclasses.dataclass(frozen=True)
class ClusterStep(Step):
    """Cluster with `ClusterConfig(**settings)` on the layers matching `layers`.

    Example:
    >>> ClusterStep({"num_clusters": 16}).to_config().num_clusters
    16
    """

    layers: str | None = None

    name = "cluster"
    config_class = ClusterConfig
    options = {"layers": Key("regex", nullable=True)}
    strips = True
    changes_weights = True

    def run(self, run, index):
        from keras_compress.clustering import cluster

        run.strip()
        config = self.to_config()
        label = f"cluster {config.num_clusters}" + (" per channel" if config.per_channel else "")
        run.log(f"step {index}: {label} (init {config.init})")
        run.model = cluster(run.model, config, layers=self.layers)
        run.techniques.append(label)
        return {"step": index, "config": config.to_dict(), "layers": self.layers}
