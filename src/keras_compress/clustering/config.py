"""`ClusterConfig`: how many shared values, how they start, how they train."""

import dataclasses

from keras_compress.core.config import BaseConfig
from keras_compress.ops.kmeans import INITS

ASSIGNMENTS = ("fixed", "nearest")
# Lloyd iterations when `kmeans_iterations` is None: none after the deterministic initialisations (measured:
# k-means moves linear centroids toward the dense middle, which costs bytes and no accuracy), ten after the
# random ones, which need them.
DEFAULT_ITERATIONS = {"linear": 0, "density": 0, "kmeans++": 10, "random": 10}


@dataclasses.dataclass(frozen=True)
class ClusterConfig(BaseConfig):
    """Weight-sharing (clustering) settings.

    Args:
        num_clusters: shared values per tensor (or per output channel), 2..65536.
        init: centroid initialisation: `"linear"` (evenly spaced between
            the smallest and largest weight), `"density"`, `"kmeans++"` or
            `"random"`. Default `"linear"`: Deep Compression found it the
            most accurate (large weights keep centroids of their own), and
            with `assignment="nearest"` it measured as accurate as
            k-means++ on LeNet-5 with 30% fewer gzip bytes (BENCHMARKS,
            "Defaults").
        per_channel: one codebook per output channel (last axis) instead of
            one per tensor. Per-channel codebooks survive per-channel int8
            quantization with at most `num_clusters` values per channel.
        preserve_sparsity: exact zeros (pruned weights) stay zero and take no
            centroid.
        zero_cluster: with `preserve_sparsity`, nearest assignments and a
            weight that has pruned zeros, the centroid nearest zero is held
            at zero (tfmot's sparsity-preserving scheme): the kept weights
            nearest it become zeros too (and may leave again as they
            train), so clustering prunes further, and the weight holds
            `num_clusters` shared values with the zero among them.
            Default `True` (measured: BENCHMARKS, "Defaults").
        kmeans_iterations: Lloyd iterations after initialisation; `None`
            (default) takes the init's own: 0 after `"linear"` and
            `"density"`, 10 after `"kmeans++"` and `"random"`.
        reassign_every: `None` (assignments fixed; centroids fine-tuned in
            every step) or N: weights train freely and are re-clustered from
            their current values every N steps by `ClusteringCallback`.
        assignment: `"nearest"` (the default, or `"fixed"` when
            `reassign_every` is given; tfmot's scheme: the weights stay
            float and train by a straight-through gradient, centroids are
            trainable variables, and every call takes each weight's nearest
            centroid, so weights can change cluster) or `"fixed"` (each
            weight keeps the cluster k-means gave it; the cluster's shared
            value trains). Nearest is the default because it measured more
            accurate at fewer bytes (LeNet-5, 3 seeds: BENCHMARKS,
            "Defaults"): small updates accumulate in the float weights. It
            adds a trainable variable to each clustered layer: an optimizer
            already built is replaced by a fresh one of the same
            configuration.
        train_centroids: with fixed assignments, train each shared value as
            one parameter: the layer computes with its weights' cluster
            means, so every member's gradient is its cluster's mean gradient
            and any optimizer moves the cluster as a whole (the centroid
            gradient of Deep Compression and tfmot). `False`: each weight
            takes its own optimizer step and the cluster then averages them;
            with Adam those per-weight steps largely cancel.
        biases: also cluster each layer's `bias` vector (one codebook per
            vector, `num_clusters` values): Deep Compression's archive
            otherwise stores biases as exact float32, 14% of LeNet-5's
            archive. Default `False`: a bias is few parameters, and a user
            asking for shared kernels does not expect shared biases.
        seed: seed for the random initialisations.
        include_frozen: also cluster the weights of frozen layers (a
            transfer-learning backbone set `trainable = False`): they are
            set to their shared values once, and their centroids do not
            train. Default `False`: frozen means "leave it alone".

    Raises:
        ValueError: on a value outside its allowed range.

    Example:
    >>> cfg = ClusterConfig(num_clusters=16, init="linear", per_channel=True)
    """

    num_clusters: int = 16
    init: str = "linear"
    per_channel: bool = False
    preserve_sparsity: bool = True
    kmeans_iterations: int | None = None
    reassign_every: int | None = None
    assignment: str | None = None
    train_centroids: bool = True
    zero_cluster: bool = True
    biases: bool = False
    seed: int = 0
    include_frozen: bool = False

    def __post_init__(self):
        if isinstance(self.num_clusters, bool) or not isinstance(self.num_clusters, int) or not 2 <= self.num_clusters <= 65536:
            raise ValueError(f"num_clusters must be an integer in [2, 65536]. Received: num_clusters={self.num_clusters!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}. Received: init={self.init!r}")
        if self.kmeans_iterations is not None and (
                isinstance(self.kmeans_iterations, bool) or not isinstance(self.kmeans_iterations, int)
                or self.kmeans_iterations < 0):
            raise ValueError("kmeans_iterations must be None (the init's own) or an integer >= 0. "
                             f"Received: kmeans_iterations={self.kmeans_iterations!r}")
        if self.reassign_every is not None and (not isinstance(self.reassign_every, int) or self.reassign_every < 1):
            raise ValueError(f"reassign_every must be None or an integer >= 1. Received: reassign_every={self.reassign_every!r}")
        if self.assignment is None:  # re-clustering every N steps is a fixed-assignment scheme
            object.__setattr__(self, "assignment", "nearest" if self.reassign_every is None else "fixed")
        if self.assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {list(ASSIGNMENTS)}. Received: assignment={self.assignment!r}")
        if self.assignment == "nearest" and self.reassign_every is not None:
            raise ValueError(
                "assignment='nearest' re-assigns every weight in every step; reassign_every must be None. "
                f"Received: reassign_every={self.reassign_every!r}"
            )
        for name in ("per_channel", "preserve_sparsity", "train_centroids", "zero_cluster", "biases"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false. Received: {name}={getattr(self, name)!r}")

    @property
    def iterations(self):
        """The Lloyd iterations used: `kmeans_iterations`, or the init's own when it is None."""
        return DEFAULT_ITERATIONS[self.init] if self.kmeans_iterations is None else self.kmeans_iterations
