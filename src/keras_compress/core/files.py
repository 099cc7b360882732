"""Files written whole or not at all."""

import os
import secrets


def atomic_write(path, data):
    """Writes `data` to `path` atomically: a temp file beside it, then `os.replace`.

    Readers see either the old file or the complete new one, never a partial
    write; if writing fails the temp file is removed and `path` is untouched.

    Args:
        path: destination file path. Its folder must exist.
        data: `bytes`, or `str` (written as UTF-8).

    Returns:
        `path`.

    Raises:
        OSError: if the folder does not exist or is not writable.
        TypeError: if `data` is neither `bytes` nor `str`.

    Example:
    >>> atomic_write("/tmp/hello.txt", "hello")
    '/tmp/hello.txt'
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(
            f"data must be bytes or str. Received: data of type {type(data).__name__}"
        )

    def write(tmp):
        # Opened with "xb" (not mkstemp) so the file gets the usual umask-based mode.
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_save(path, write, extension="")


def atomic_save(path, save, extension=None):
    """Calls `save(temp_path)` on a temp file beside `path` (same extension), then renames it to `path`.

    For writers that take a path (`model.save`): `path` is either the old file or the complete new one.

    Example:
    >>> atomic_save("model.keras", model.save)
    'model.keras'
    """
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    extension = os.path.splitext(base)[1] if extension is None else extension
    tmp = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.tmp{extension}")
    try:
        save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
