"""Data spec strings: `LOCATION[?key=value&key=value]`, one syntax for the CLI, recipes and Python.

    mnist | fashion_mnist                      built-in datasets (read offline)
    data.npz                                   keys x_train, y_train, x_test, y_test (x_validation, y_validation)
    data.npz?x_train=a&y_train=b               other key names; a,b for a list of inputs
    table.csv?target=price                     numeric features, one target column (target=a,b: several)
    photos/                                    an image folder, one subfolder per class (or train/ and test/ in it)
    package.module:function?n=1000             a function returning arrays, a PyDataset, a tf.data.Dataset, ...

Options every kind takes: `test_fraction` (default 0.2, used when no test
split is given), `validation_fraction` (default 0: no validation split),
`seed` (default 0, the split's shuffle).
"""

import dataclasses
import os
import re

BUILTIN = ("mnist", "fashion_mnist")
KINDS = ("builtin", "npz", "csv", "folder", "entry")
COMMON_OPTIONS = ("test_fraction", "validation_fraction", "seed")
OPTIONS = {
    "builtin": (),
    "npz": ("x", "y", "x_train", "y_train", "x_test", "y_test", "x_validation", "y_validation"),
    "csv": ("target", "features", "test"),
    "folder": ("image_size", "color_mode", "batch_size", "scale"),
    "entry": None,  # any keyword: passed to the function
}
HELP = ("a built-in name (mnist, fashion_mnist), FILE.npz, FILE.csv?target=COLUMN, an image FOLDER with one "
        "subfolder per class, or package.module:function")
_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w]*$")


class DataError(ValueError):
    """A data spec that cannot be read: names the spec and what was found."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed data spec.

    Attributes:
        text: the spec as given.
        kind: one of `KINDS`.
        location: the name, path or `module:function`.
        options: the `?key=value` options, values as strings.
    """

    text: str
    kind: str
    location: str
    options: dict

    def option(self, key, default=None, cast=str):
        """The option `key` cast with `cast`, or `default`; a value `cast` refuses is a `DataError`."""
        if key not in self.options:
            return default
        value = self.options[key]
        try:
            return cast(value)
        except (TypeError, ValueError):
            raise DataError(f"data spec {self.text!r}: option {key}={value!r} is not a valid "
                            f"{getattr(cast, '__name__', 'value')}") from None


def fraction(text):
    """A number in [0, 1) written as `0.2` or `1/5`."""
    if "/" in str(text):
        top, bottom = str(text).split("/", 1)
        value = float(top) / float(bottom)
    else:
        value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(text)
    return value


def number(text):
    """An int or float from text (`1/255` allowed); other text stays a string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if re.fullmatch(r"[\d.]+/[\d.]+", text):
        top, bottom = text.split("/")
        return float(top) / float(bottom)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse(text):
    """Parses a data spec string.

    Args:
        text: the spec (see the module docstring).

    Returns:
        A `Spec`.

    Raises:
        DataError: for an empty spec, a malformed option, an option the kind does not take, a missing
            file or folder, or a location that is none of the kinds.

    Example:
    >>> parse("table.csv?target=price").options
    {'target': 'price'}
    """
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"a data spec must be a non-empty string: {HELP}. Received: {text!r}")
    location, _, query = text.strip().partition("?")
    options = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise DataError(f"data spec {text!r}: option {part!r} is not key=value")
        options[key.strip()] = value.strip()
    name = location.replace("-", "_").lower()
    if name in BUILTIN:
        kind, location = "builtin", name
    elif _ENTRY.match(location) and not os.path.exists(location):
        kind = "entry"
    elif os.path.isdir(location):
        kind = "folder"
    elif location.lower().endswith(".npz"):
        kind = "npz"
    elif location.lower().endswith(".csv"):
        kind = "csv"
    else:
        raise DataError(f"data spec {text!r} is not a known kind: {HELP}")
    if kind in ("npz", "csv") and not os.path.isfile(location):
        raise DataError(f"data spec {text!r}: file not found: {location!r}")
    allowed = OPTIONS[kind]
    if allowed is not None:
        unknown = sorted(set(options) - set(allowed) - set(COMMON_OPTIONS))
        if unknown:
            raise DataError(f"data spec {text!r}: unknown option(s) {unknown} for a {kind} source. "
                            f"Allowed: {sorted(set(allowed) | set(COMMON_OPTIONS))}")
    return Spec(text, kind, location, options)
