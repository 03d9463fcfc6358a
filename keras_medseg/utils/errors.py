"""Which exceptions are user mistakes or environment faults, and their one-line message.

`keras_medseg.cli.main` prints these as one line (exit code 2) instead of a
traceback: `ValueError` and `TypeError` (bad arguments, Keras input-spec
errors), every `OSError` (missing file, permission denied, read-only folder,
full disk, a corrupt or locked HDF5 file), `RuntimeError` raised by the HDF5
stores (h5py), and `DiskFullError`. Programming errors (`AttributeError`,
`KeyError`, `IndexError`, ...) keep their traceback.
"""

import errno
import os
import re

__all__ = ["DiskFullError", "is_user_error", "one_line_message", "raise_if_disk_full"]

_MAX_CHARS = 600


class DiskFullError(OSError):
    """No space left on the device while writing `filename`; the previous state is intact."""

    def __init__(self, filename, detail="nothing was lost; free space and rerun to resume"):
        super().__init__(errno.ENOSPC, "No space left on device", os.fspath(filename))
        self.detail = detail

    def __str__(self):
        return f"No space left on device while writing {self.filename}; {self.detail}"


def raise_if_disk_full(exc, filename, detail="nothing was lost; free space and rerun to resume"):
    """Re-raise `exc` as `DiskFullError(filename)` when it is (or wraps) ENOSPC; else do nothing."""
    text = str(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in text or "errno = 28" in text:
        raise DiskFullError(filename, detail) from exc


class BackendNotInstalledError(ImportError):
    """Keras' backend (KERAS_BACKEND, keras.json or the TensorFlow default) is not installed."""


def is_user_error(exc):
    """Whether `keras-medseg` should report `exc` as one line rather than a traceback."""
    if isinstance(exc, (ValueError, TypeError, OSError, BackendNotInstalledError)):
        return True
    if isinstance(exc, RuntimeError) and not isinstance(exc, (NotImplementedError, RecursionError)):
        module = type(exc).__module__ or ""
        return module.startswith(("h5py", "builtins", "keras_medseg"))
    return False


def one_line_message(exc):
    """One line for `exc`: its first meaningful line, without Keras' call dump, at most 600 characters.

    A longer line loses its middle (long paths), not its end, where messages say what to do.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) and exc.strerror and exc.filename:
        text = f"{exc.strerror}: {exc.filename}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    skip = ("Exception encountered when calling", "Arguments received by", "•", "Traceback")
    useful = [ln for ln in lines if not ln.startswith(skip)]
    line = (useful or lines or [type(exc).__name__])[0]
    if len(line) > _MAX_CHARS:
        line = line[: _MAX_CHARS - 203] + " ... " + line[-198:]
    if len(lines) > 1:
        line += " (run with --debug for details)"
    return line
