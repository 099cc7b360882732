"""Recipe steps: one registry, keyed by step name, of what each technique runs.

A recipe step *is* its technique's config. Each technique's folder has a
`steps.py` that defines a `Step` subclass naming its config dataclass and
registers it with `register_step`; the recipe's allowed keys, their types
and defaults come from that dataclass's fields, and its validation is the
dataclass's own `__post_init__`. Settings that exist only in a recipe (a
verb argument such as `layers`, `end_step: auto`) are declared on the step
class, next to the code that resolves them. The runner (`cli/runner.py`)
walks the steps and calls `Step.run`; it knows no technique by name, and a
new technique adds its step without touching `cli/`.

Built-in steps are found by looking for a `steps` module in each
subpackage of `keras_compress` (`keras_compress.pruning.steps`, ...);
importing this module imports none of them until a recipe is parsed.

Example:
>>> from keras_compress.core import steps
>>> sorted(steps.registered())
['cluster', 'export', 'finetune', 'prune', 'prune_channels', 'quantize', 'strip']
>>> steps.step_class("prune").keys()[:2]
['target_sparsity', 'schedule']
"""

import dataclasses
import importlib
import importlib.util
import math
import pkgutil
import re
import types
import typing
from typing import Any, ClassVar

AUTO = "auto"
_REGISTRY: dict[str, type] = {}
_DISCOVERED = False
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


class RecipeError(ValueError):
    """A recipe that cannot run: bad YAML, unknown key or step, wrong type or range.

    Example:
    >>> try:
    ...     load_recipe("steps: [{shrink: {}}]")
    ... except RecipeError as error:
    ...     print(error)
    recipe step 1: unknown step 'shrink'. Allowed steps: ['cluster', 'export', ...]
    """


def where(index, name=None):
    """How messages name a step: `recipe step 2 (prune)` (steps count from 1).

    Example:
    >>> where(2, "prune")
    'recipe step 2 (prune)'
    """
    if index is None:
        return f"recipe ({name})" if name else "recipe"
    return f"recipe step {index}" + (f" ({name})" if name else "")


def fail(location, message):
    """Raises `RecipeError(f"{location}: {message}")`."""
    raise RecipeError(f"{location}: {message}")


# -- what a key accepts ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Key:
    """What one recipe key accepts: its kind, range, and whether null or `'auto'` may stand in.

    Read from a config field's annotation and metadata (`Key.of_field`) or
    declared on a step class for a recipe-only setting.

    Args:
        kind: `"int"`, `"number"`, `"bool"`, `"str"`, `"regex"`,
            `"list"`, `"mapping"` or `"any"`.
        default: the value when the key is left out.
        minimum: smallest allowed integer (`"int"` only).
        nullable: whether YAML `null` is allowed.
        auto: whether the string `'auto'` is allowed (resolved by the step).
        length: for `"list"`, the exact number of items, or `None`.
        item: for `"list"` and `"mapping"`, the kind of each item or value.
        describe: the allowed values in words, for messages that need more
            than the generated phrase.

    Example:
    >>> Key("int", minimum=1).describe_allowed()
    'an integer >= 1'
    """

    kind: str
    default: Any = None
    minimum: int | None = None
    nullable: bool = False
    auto: bool = False
    length: int | None = None
    item: str = "any"
    describe: str | None = None

    @classmethod
    def of_field(cls, config_class, field):
        """The `Key` of a config dataclass field: kind from its annotation, range from its metadata.

        Field metadata may set `minimum` (an integer bound the recipe checks
        with the message users see) and `recipe_kind` (when the annotation
        says less than a recipe needs, e.g. `"regex"` or `"str"` for a field
        that also takes a callable in Python).
        """
        hint = typing.get_type_hints(config_class).get(field.name, Any)
        kind, nullable, length, item = _kind_of(hint)
        meta = field.metadata or {}
        kind = meta.get("recipe_kind", kind)
        if field.default is None:
            nullable = True
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        return cls(kind, default, meta.get("minimum"), nullable, False, length, item)

    def describe_allowed(self):
        """The allowed values in words: `'an integer >= 0, null or 'auto''`."""
        if self.describe:
            return self.describe
        words = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
                 "regex": "a regular expression", "mapping": "a mapping", "any": "a value"}
        if self.kind == "list":
            if self.length is not None:
                count = _NUMBER_WORDS.get(self.length, str(self.length))
                phrase = f"a list of {count} {_plural(self.item)}"
            else:
                phrase = "a list"
        else:
            phrase = words[self.kind]
        if self.kind == "int" and self.minimum is not None:
            phrase += f" >= {self.minimum}"
        parts = [phrase] + (["null"] if self.nullable else []) + ([f"'{AUTO}'"] if self.auto else [])
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]

    def read(self, location, name, value):
        """Checks and converts one YAML value; raises `RecipeError` naming the key.

        Example:
        >>> Key("number").read("recipe step 1 (finetune)", "learning_rate", "1e-4")
        0.0001
        """
        if value is None and self.nullable:
            return None
        if self.auto and value == AUTO:
            return value
        try:
            return _convert(self.kind, value, self.minimum, self.length, self.item)
        except _Mismatch as mismatch:
            received = f"{name}={value!r}"
            detail = f" ({type(value).__name__})" if not mismatch.range_only else ""
            if mismatch.message:
                fail(location, f"'{name}' {mismatch.message}. Received: {received}")
            fail(location, f"'{name}' must be {self.describe_allowed()}. Received: {received}{detail}")


class _Mismatch(Exception):
    def __init__(self, message=None, range_only=False):
        super().__init__(message)
        self.message = message
        self.range_only = range_only


def _plural(item):
    return {"int": "integers", "number": "numbers", "str": "strings", "bool": "booleans"}.get(item, "values")


def _scalar_kind(hint):
    if hint is bool:
        return "bool"
    if hint is int:
        return "int"
    if hint is float:
        return "number"
    if hint is str:
        return "str"
    return None


def _kind_of(hint):
    """(kind, nullable, length, item) from a type annotation."""
    nullable = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else Any
        origin = typing.get_origin(hint)
    scalar = _scalar_kind(hint)
    if scalar:
        return scalar, nullable, None, "any"
    if hint in (tuple, list) or origin in (tuple, list):
        args = typing.get_args(hint)
        length = None
        item = "any"
        if args and args[-1] is not Ellipsis:
            length = len(args)
        if args:
            item = _scalar_kind(args[0]) or "any"
        return "list", nullable, length, item
    if hint is dict or origin is dict:
        args = typing.get_args(hint)
        item = _scalar_kind(args[1]) if len(args) == 2 else None
        return "mapping", nullable, None, item or "any"
    return "any", nullable, None, "any"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _convert(kind, value, minimum=None, length=None, item="any"):
    if kind == "any":
        return value
    if kind == "int":
        if not _is_int(value):
            raise _Mismatch()
        if minimum is not None and value < minimum:
            raise _Mismatch(f"must be an integer >= {minimum}", range_only=True)
        return value
    if kind == "number":
        # PyYAML (YAML 1.1) reads `1e-4` as a string; accept numeric strings.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Mismatch()
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Mismatch()
        return value
    if kind in ("str", "regex"):
        if not isinstance(value, str):
            raise _Mismatch("must be a string")
        if kind == "regex":
            try:
                re.compile(value)
            except re.error as error:
                raise _Mismatch(f"is not a valid regular expression ({error})", range_only=True) from None
        return value
    if kind == "list":
        if isinstance(value, (str, int, float)) and length is None:
            value = [value]  # `formats: int8` stands for `formats: [int8]`
        if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
            raise _Mismatch()
        if item != "any":
            try:
                value = [_convert(item, v) for v in value]
            except _Mismatch:
                raise _Mismatch() from None
        return tuple(value)
    if kind == "mapping":
        if not isinstance(value, dict):
            raise _Mismatch()
        if item != "any":
            out = {}
            for k, v in value.items():
                try:
                    out[k] = _convert(item, v)
                except _Mismatch:
                    raise _Mismatch(f"must map to {_plural(item)}; {k!r} maps to {v!r}", range_only=True) from None
            return out
        return dict(value)
    raise ValueError(f"unknown recipe key kind {kind!r}")


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- the step base class and the registry ----------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    """A parsed recipe step: the settings its config was given, plus recipe-only options.

    Subclasses set `name`, `config_class` (the technique's dataclass, whose
    fields are the step's keys) and `options` (recipe-only keys, stored as
    dataclass fields of the step), and implement `run`. They may override
    `validate` (checks on the step alone), `check_order` (checks against
    the other steps) and `prepare` (resolution against the model and data
    before anything runs).

    Class attributes:
        name: the step's key in a recipe.
        config_class: the config dataclass, or `None` for a step without settings.
        options: `{key: Key}` for recipe-only keys (each also a field of the step).
        auto_keys: `{config field: description or None}`: fields that may be
            `'auto'` in a recipe, resolved by the step before it builds its config.
        strips: the step removes earlier pruning/clustering state before it runs.
        changes_weights: the step changes which values the weights take
            (pruning, clustering); such a step cannot follow `quantize`.
        trains: the step trains the model (ramps such as `end_step: auto` span it).
        implicit_last: run with its defaults at the end when a recipe leaves it out.

    Example:
    >>> step = step_class("finetune").parse(1, {"epochs": 2})
    >>> step.to_config().epochs
    2
    """

    settings: dict = dataclasses.field(default_factory=dict)

    name: ClassVar[str] = ""
    config_class: ClassVar[type | None] = None
    options: ClassVar[dict] = {}
    auto_keys: ClassVar[dict] = {}
    strips: ClassVar[bool] = False
    changes_weights: ClassVar[bool] = False
    trains: ClassVar[bool] = False
    implicit_last: ClassVar[bool] = False

    @classmethod
    def config_keys(cls):
        """`{key: Key}` of the config's fields (all but `version`), in field order."""
        if cls.config_class is None:
            return {}
        keys = {}
        for field in dataclasses.fields(cls.config_class):
            if field.name == "version" or not field.init:
                continue
            key = Key.of_field(cls.config_class, field)
            if field.name in cls.auto_keys:
                key = dataclasses.replace(key, auto=True, describe=cls.auto_keys[field.name])
            keys[field.name] = key
        return keys

    @classmethod
    def keys(cls):
        """Every key the step accepts: the config's fields, then the recipe-only options."""
        return list(cls.config_keys()) + [k for k in cls.options if k not in cls.config_keys()]

    @classmethod
    def parse(cls, index, body):
        """Builds the step from its YAML mapping; raises `RecipeError` naming step, key and allowed values."""
        location = where(index, cls.name)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            fail(location, f"settings must be a mapping of {cls.keys()}. "
                           f"Received: {body!r} ({type(body).__name__})")
        allowed = cls.keys()
        for key in body:
            if key not in allowed:
                fail(location, f"unknown key {key!r}. Allowed keys: {allowed}")
        config_keys = cls.config_keys()
        settings, options = {}, {}
        for key, value in body.items():
            if key in cls.options:
                options[key] = cls.options[key].read(location, key, value)
            else:
                settings[key] = config_keys[key].read(location, key, value)
        step = cls(settings, **options)
        try:
            step.validate()
        except RecipeError:
            raise
        except (ValueError, TypeError) as error:
            fail(location, str(error))
        return step

    def __getattr__(self, name):
        # `step.epochs` reads the config's field (with its default when the recipe left it out).
        config_class = type(self).config_class
        if name.startswith("_") or config_class is None or name not in {
                f.name for f in dataclasses.fields(config_class)}:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        try:
            return getattr(self.to_config(), name)
        except (ValueError, TypeError):
            # A setting the step resolves later (`end_step: auto`) keeps the config from building yet:
            # the value as written, else the field's default.
            if name in self.settings:
                return self.settings[name]
            field = next(f for f in dataclasses.fields(config_class) if f.name == name)
            return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default

    def validate(self):
        """Checks the step on its own (by default: its config builds). Raises ValueError/TypeError."""
        self.to_config()

    def to_config(self):
        """The technique's config built from the step's settings (`None` without a config class)."""
        return None if self.config_class is None else self.config_class(**self.settings)

    def option_values(self):
        """`{option: value}` of the recipe-only options that differ from their defaults."""
        return {k: getattr(self, k) for k, key in self.options.items() if getattr(self, k) != key.default}

    def to_dict(self):
        """The step as it would be written in a recipe (a single-key dict)."""
        return {self.name: {**_plain(self.settings), **_plain(self.option_values())}}

    def check_order(self, index, steps):
        """Checks this step against the recipe's other steps; raises `RecipeError`."""

    def prepare(self, run, index, steps):
        """Resolves the step against the model and data before anything runs; returns what `run` needs."""


def register_step(cls):
    """Registers a `Step` subclass under its `name` (a class decorator).

    Raises:
        TypeError: if `cls` is not a `Step` subclass with a name.
        ValueError: if another class already holds the name.

    Example:
    >>> @register_step
    ... @dataclasses.dataclass(frozen=True)
    ... class ShrinkStep(Step):
    ...     name = "shrink"
    ...     def run(self, run, index): ...
    """
    if not (isinstance(cls, type) and issubclass(cls, Step) and cls.name):
        raise TypeError(f"register_step expects a Step subclass with a name. Received: {cls!r}")
    held = _REGISTRY.get(cls.name)
    if held is not None and held.__qualname__ != cls.__qualname__:
        raise ValueError(f"step {cls.name!r} is already registered by {held.__module__}.{held.__qualname__}")
    if not callable(getattr(cls, "run", None)):
        raise TypeError(f"step {cls.name!r} ({cls.__qualname__}) must define run(self, run, index)")
    _REGISTRY[cls.name] = cls
    return cls


def _discover():
    """Imports `keras_compress.<package>.steps` for every subpackage that has one."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import keras_compress

    for info in pkgutil.iter_modules(keras_compress.__path__):
        if not info.ispkg:
            continue
        module = f"keras_compress.{info.name}.steps"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    _DISCOVERED = True


def registered():
    """`{name: Step subclass}` of every registered step, built-in ones included."""
    _discover()
    return dict(_REGISTRY)


def step_class(name):
    """The `Step` subclass registered as `name`, or `None`."""
    return registered().get(name)


@register_step
@dataclasses.dataclass(frozen=True)
class StripStep(Step):
    """Remove every technique's training state (the export step also strips first).

    Example:
    >>> StripStep().to_dict()
    {'strip': {}}
    """

    name = "strip"
    strips = True

    def run(self, run, index):
        run.log(f"step {index}: strip")
        run.strip()
