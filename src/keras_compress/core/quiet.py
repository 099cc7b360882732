"""Quiet start-up: TensorFlow's and LiteRT's native log lines kept off the terminal.

TensorFlow prints its oneDNN notice and absl's pre-initialisation warning
when it loads, and the LiteRT interpreter prints "Created TensorFlow Lite
XNNPACK delegate for CPU" when it starts. They come from C++ straight to
file descriptor 2, so Python's `warnings` and `logging` cannot hold them
back. The command line turns `enable()` on (unless `--verbose`); the places
that load those libraries run inside `native_stderr_filtered()`, which sends
descriptor 2 to a temporary file for the duration and then writes back
every line that is not known start-up noise: real errors still show.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

# Start-up lines, not problems: each seen on TensorFlow 2.21 / ai-edge-litert.
NOISE = (
    re.compile(r"oneDNN custom operations are on"),
    re.compile(r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(r"Created TensorFlow Lite XNNPACK delegate for CPU"),
    re.compile(r"This TensorFlow binary is optimized to use available CPU instructions"),
    re.compile(r"To enable the following instructions: .* rebuild TensorFlow"),
    re.compile(r"Unable to register cu(DNN|FFT|BLAS) factory"),
    re.compile(r"failed call to cuInit"),
    re.compile(r"computation placer already registered"),
    re.compile(r"TF-TRT Warning: Could not find TensorRT"),
    re.compile(r"Could not find cuda drivers on your machine"),
    re.compile(r"An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not installed"),
)
_ENABLED = False


def enable(on=True):
    """Turns the filtering on (the CLI's default) or off (`--verbose`).

    When on, it also raises TensorFlow's C++ log threshold for libraries
    not loaded yet and quiets JAX's no-GPU notice, which goes through
    Python's `logging`.

    Example:
    >>> keras_compress.core.quiet.enable()
    """
    global _ENABLED
    _ENABLED = bool(on)
    if on:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)


def is_enabled():
    """Whether `native_stderr_filtered` filters (set by `enable`)."""
    return _ENABLED


def is_noise(line):
    """Whether `line` is a known start-up message.

    Example:
    >>> is_noise("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    True
    """
    return any(pattern.search(line) for pattern in NOISE)


@contextlib.contextmanager
def native_stderr_filtered():
    """Runs the block with file descriptor 2 captured, then writes back all but start-up noise.

    A no-op unless `enable()` was called, or when descriptor 2 cannot be
    duplicated (some test runners and notebooks).

    Example:
    >>> with native_stderr_filtered():
    ...     import tensorflow
    """
    if not _ENABLED:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if line.strip() and not is_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def load_backend():
    """Imports Keras (and with it TensorFlow under that backend) with the start-up lines filtered."""
    with native_stderr_filtered():
        import keras  # noqa: F401
