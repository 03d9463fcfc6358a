"""Crash-safe file writes: a temporary file in the same folder, `fsync`, then `os.replace`.

A reader (or a resumed run) sees either the previous file or the new one,
never a half-written one, whatever kills the writer (SIGKILL, power loss, a
full disk). Before writing, the free space of the folder is compared with an
estimate of the file's size: a write that cannot fit raises `DiskFullError`
("No space left on device while writing X; nothing was lost; ...") before it
starts, instead of letting a C library (HDF5, zlib) hit ENOSPC half-way; an
ENOSPC that still happens is turned into the same error, and the temporary
file is removed.
"""

import contextlib
import os
import shutil

from keras_medseg.utils.errors import DiskFullError, raise_if_disk_full

__all__ = ["atomic_path", "atomic_savefig", "atomic_write_text", "check_free_space", "temporary_name"]

# Slack kept free on top of the estimate (HDF5 metadata, zip directory, file-system blocks).
_SLACK_BYTES = 256 * 1024


def temporary_name(path):
    """`dir/.name.<pid>.tmp<ext>` next to `path` (same file system, same extension for format sniffing)."""
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    stem, ext = os.path.splitext(base)
    if stem.endswith(".weights"):  # Keras wants `.weights.h5`
        stem, ext = stem[: -len(".weights")], ".weights" + ext
    return os.path.join(folder, f".{stem}.{os.getpid()}.tmp{ext}")


def check_free_space(path, estimate_bytes):
    """Raise `DiskFullError(path)` when the folder of `path` has less than `estimate_bytes` + 256 KiB free."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < int(estimate_bytes) + _SLACK_BYTES:
        raise DiskFullError(path)


@contextlib.contextmanager
def atomic_path(path, estimate_bytes=None):
    """Context manager yielding a temporary path to write; on success it replaces `path` atomically.

    Args:
        path: the destination file.
        estimate_bytes: expected size of the new file; default the size of
            the current `path` (0 when it does not exist).

    Raises:
        DiskFullError: not enough free space, or ENOSPC while writing (the
            destination is untouched and the temporary file removed).

    Example:

    >>> with atomic_path("log.csv") as tmp:  # doctest: +SKIP
    ...     open(tmp, "w").write("epoch,loss\\n")
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if estimate_bytes is None:
        estimate_bytes = os.path.getsize(path) if os.path.exists(path) else 0
    check_free_space(path, estimate_bytes)
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        raise_if_disk_full(exc, path)
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text):
    """Write `text` to `path` through a temporary file and `os.replace`."""
    data = text.encode("utf-8")
    with atomic_path(path, estimate_bytes=len(data)) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()


def atomic_savefig(fig, path, **kwargs):
    """`fig.savefig(path, **kwargs)` through a temporary file (same extension) and `os.replace`."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
