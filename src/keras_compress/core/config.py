"""Base class for technique configs: frozen dataclasses that serialise."""

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """A frozen, versioned, serialisable config.

    Subclasses are frozen dataclasses that validate in `__post_init__`.
    `to_dict` / `from_dict` round-trip them; `from_dict` fills keys that an
    older file lacks with their defaults and rejects keys it does not know.

    Example:
    >>> cfg = PruneConfig(target_sparsity=0.8)
    >>> PruneConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    # Keyword-only, so subclasses' own fields come first positionally.
    version: int = dataclasses.field(default=1, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as a dict of plain values (JSON/YAML-able)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if callable(value):
                raise TypeError(
                    f"{type(self).__name__}.{field.name} holds a callable, "
                    "which cannot be serialised. Received: "
                    f"{field.name}={value!r}"
                )
            if isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Builds a config from `to_dict` output; missing keys take defaults.

        Raises:
            ValueError: if `data` holds a key the config does not know.
        """
        if not isinstance(data, dict):
            raise TypeError(
                f"{cls.__name__}.from_dict expects a dict. "
                f"Received: {type(data).__name__}"
            )
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(
                f"Unknown key(s) for {cls.__name__}: {unknown}. "
                f"Allowed keys: {allowed}"
            )
        return cls(**data)
