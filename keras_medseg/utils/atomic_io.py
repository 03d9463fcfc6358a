"""Crash-safe file writes: a temporary file in the same folder, `fsync`, then `os.replace`.

A reader (or a resumed run) sees either the previous file or the new one,
never a half-written one, whatever kills the writer (SIGKILL, power loss, a
full disk). Before writing, the free space of the folder is compared with an
estimate of the file's size: a write that cannot fit raises `DiskFullError`
("No space left on device while writing X; nothing was lost; ...") before it
starts, instead of letting a C library (HDF5, zlib) hit ENOSPC half-way; an
ENOSPC that still happens is turned into the same error, and the temporary
file is removed. HDF5 (h5py) still holds the half-written file open in
objects kept alive by the failed call's traceback, and reports the failed
flush again when they are garbage collected ("Exception ignored in
h5py._objects.ObjectID.__dealloc__", tracebacks on stderr after the one-line
error); those reports, and only those (they name the temporary file), are
dropped, so a full disk prints one line.
"""

import contextlib
import errno
import logging
import os
import re
import shutil
import sys

from keras_medseg.utils.errors import DiskFullError, raise_if_disk_full

__all__ = ["atomic_path", "atomic_savefig", "atomic_write_text", "check_free_space", "pid_alive",
           "remove_dead_temporaries", "remove_stale_temporaries", "temporary_name"]

logger = logging.getLogger(__name__)

# Slack kept free on top of the estimate (HDF5 metadata, zip directory, file-system blocks).
_SLACK_BYTES = 256 * 1024


# Two-part extensions that readers and writers recognise whole (Keras wants `.weights.h5`, nibabel `.nii.gz`).
_DOUBLE_EXTENSIONS = (".weights.h5", ".nii.gz")


def temporary_name(path):
    """`dir/.name.<pid>.tmp<ext>` next to `path` (same file system, same extension for format sniffing).

    Example:

    >>> os.path.basename(temporary_name("out/ct.nii.gz")).endswith(".tmp.nii.gz")
    True
    """
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    stem, ext = os.path.splitext(base)
    for double in _DOUBLE_EXTENSIONS:
        if base.lower().endswith(double) and len(base) > len(double):
            stem, ext = base[: -len(double)], base[-len(double):]
    return os.path.join(folder, f".{stem}.{os.getpid()}.tmp{ext}")


_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp(\.[^/]*)?$")


def remove_stale_temporaries(folder, depth=1):
    """Delete the temporaries (`temporary_name`) that a killed writer left in `folder` and its subfolders.

    Call it only while holding the folder exclusively (the training run's
    lock): a file named like `.best.<pid>.tmp.keras` whose pid is not this
    process then belongs to a writer that died before its `os.replace`, and
    the file it was replacing is intact. Other files are never touched.

    Args:
        folder: str, the run folder.
        depth: int, how many levels of subfolders to clean (default 1: `folder` and e.g. `folder/backup`).

    Returns:
        list of the removed paths.
    """
    removed = []
    if not os.path.isdir(folder):
        return removed
    for entry in os.scandir(folder):
        match = _TEMPORARY.match(entry.name)
        if entry.is_file(follow_symlinks=False) and match and int(match.group(1)) != os.getpid():
            try:
                os.remove(entry.path)
                removed.append(entry.path)
            except OSError:
                pass
        elif depth > 0 and entry.is_dir(follow_symlinks=False):
            removed += remove_stale_temporaries(entry.path, depth - 1)
    return removed


def pid_alive(pid):
    """Whether process `pid` runs on this host (a writer that left a temporary file may still be writing it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_dead_temporaries(path):
    """Delete the temporaries of `path` (`temporary_name`) whose writer process no longer runs.

    Unlike `remove_stale_temporaries`, this needs no lock: a temporary whose
    pid is alive (another writer of the same file, now) is left alone. Used
    by writers without a run folder (label maps of `keras-medseg predict`).

    Returns:
        list of the removed paths.
    """
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    pattern = temporary_name(path)
    head, tail = os.path.basename(pattern).split(f".{os.getpid()}.tmp", 1)
    removed = []
    if not os.path.isdir(folder):
        return removed
    for entry in os.scandir(folder):
        name = entry.name
        if not (name.startswith(head + ".") and name.endswith(".tmp" + tail)):
            continue
        pid = name[len(head) + 1: len(name) - len(".tmp" + tail)]
        dead = pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid))
        if dead and entry.is_file(follow_symlinks=False):
            try:
                os.remove(entry.path)
                removed.append(entry.path)
            except OSError:
                pass
    return removed


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
        if _is_disk_full(exc):
            _release(tmp)
        raise_if_disk_full(exc, path)
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _is_disk_full(exc):
    text = str(exc)
    return getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in text or "errno = 28" in text


_FAILED = set()  # temporary files whose write hit ENOSPC; HDF5 reports them again when it lets go of them


def _quiet_hook(previous, name_of):
    def hook(*args):
        exc = name_of(*args)
        if _is_disk_full(exc) and any(tmp in str(exc) for tmp in _FAILED):
            logger.debug("ignored: HDF5 closing a half-written temporary file: %s", exc)
            return
        previous(*args)

    return hook


def _release(tmp):
    """Give back the space of the half-written `tmp` now, and silence HDF5's later reports about it.

    A writer may still hold `tmp` open (h5py keeps the file in objects that the
    failed call's traceback keeps alive), so removing it would not free its
    blocks; it is truncated to 0 bytes first, which frees them at once and
    leaves HDF5 room to close the file later (a close that cannot flush made
    the interpreter crash at exit). h5py closes it when those objects are
    garbage collected and writes the failed flush to stderr twice: through
    `sys.excepthook` (Cython's full traceback) and `sys.unraisablehook`. Both
    hooks get a filter that drops reports naming a temporary file already
    reported as a full disk, at debug log level; other reports pass through.
    """
    try:
        os.truncate(tmp, 0)
    except OSError:
        pass
    first = not _FAILED
    _FAILED.add(os.fspath(tmp))
    if first:
        sys.unraisablehook = _quiet_hook(sys.unraisablehook, lambda u: u.exc_value)
        sys.excepthook = _quiet_hook(sys.excepthook, lambda t, v, tb: v)


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
