"""A disk cache of preprocessed volumes, memory-mapped: data sets larger than RAM read each scan once.

`VolumeDataset(..., cache_dir=DIR)` keeps every case it has read and
preprocessed (reoriented, resampled, intensity-normalised) in `DIR` as plain
NumPy `.npy` arrays and reads them back with `np.load(mmap_mode="r")`: a
patch then touches only the pages it crops, and the operating system's page
cache, not the process, holds the rest. The in-memory LRU cache of
`VolumeDataset` stays as a tier above it.

* **Keyed by the files and the spec.** An entry's name is a hash of the
  case's source files (absolute paths) and of the preprocessing spec
  (spacing, orientation, intensity, label values, ...); a changed spec is
  another entry. The entry records each source file's size and modification
  time: a file rewritten since is a miss, and its stale entry is deleted.
* **Atomic.** An entry is written into a temporary folder
  (`.<key>.<pid>.tmp`), flushed, and renamed into place: a reader sees a
  whole entry or none. A writer killed half-way leaves only its temporary
  folder, which the next process to open the cache deletes (its pid is
  dead). Two processes filling the same entry at once both succeed: the
  first rename wins, the second discards its copy.
* **Full disk.** The free space is checked before writing; a full disk (or
  ENOSPC half-way) raises `keras_medseg.utils.errors.DiskFullError` naming
  the entry, and nothing half-written stays.
* **A size budget.** With `budget_bytes`, the least recently used entries
  (by the time they were last read or written) are deleted after each write
  until the cache fits.

Checked against: the arrays read back equal the arrays written
(`tests/data/test_disk_cache.py`), nibabel-read volumes through
`VolumeDataset` equal with and without the cache.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import time

import numpy as np

from keras_medseg.utils.atomic_io import check_free_space, pid_alive
from keras_medseg.utils.errors import DiskFullError, raise_if_disk_full

__all__ = ["VolumeDiskCache"]

_FORMAT = "keras-medseg-volume-cache"
_META = "meta.json"


def _signature(path):
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


class VolumeDiskCache:
    """A folder of preprocessed cases, one memory-mapped entry per (source files, spec).

    Args:
        folder: str, the cache folder (created). Several processes (data
            workers, the ranks of a distributed run, several runs with the
            same spec) may share it.
        budget_bytes: int or None (default None: no limit), the most bytes of
            entries kept; least recently used entries go first.

    Raises:
        ValueError: a `folder` that is a file, a negative `budget_bytes`.

    Example:

    >>> cache = VolumeDiskCache("/scratch/cache", budget_bytes=200 * 2**30)
    >>> arrays = cache.get(["ct.nii.gz", "ct_seg.nii.gz"], spec)  # None on a miss
    >>> arrays = arrays or cache.put(["ct.nii.gz", "ct_seg.nii.gz"], spec, {"image": img, "labels": lab})
    """

    def __init__(self, folder, budget_bytes=None):
        folder = os.fspath(folder)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"`cache_dir` must be a folder. Received: cache_dir={folder!r} (a file)")
        if budget_bytes is not None and (isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, float))
                                         or budget_bytes < 0):
            raise ValueError(f"`budget_bytes` must be None or >= 0 bytes. Received: budget_bytes={budget_bytes!r}")
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.budget_bytes = None if budget_bytes is None else int(budget_bytes)
        self.hits = 0
        self.misses = 0
        self._remove_dead_temporaries()

    # -- keys ------------------------------------------------------------------
    @staticmethod
    def key(files, spec):
        """The entry name of source `files` (paths) under preprocessing `spec` (a JSON-able dict)."""
        text = json.dumps({"files": [os.path.abspath(os.fspath(f)) for f in files], "spec": spec},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def _entry(self, key):
        return os.path.join(self.folder, key)

    # -- reading ---------------------------------------------------------------
    def get(self, files, spec):
        """The cached arrays of `files` under `spec` as read-only memory maps, or None (a miss).

        Returns:
            dict `{name: np.memmap}` plus `"meta"` (the dict stored with
            `put`), or None when there is no entry, or the entry is stale (a
            source file changed size or modification time: the entry is
            deleted).
        """
        arrays = self._open(self._entry(self.key(files, spec)), files)
        if arrays is None:
            self.misses += 1
        else:
            self.hits += 1
        return arrays

    def _open(self, entry, files):
        try:
            with open(os.path.join(entry, _META)) as fh:
                meta = json.load(fh)
            if meta.get("signatures") != [_signature(f) for f in files]:
                self._remove(entry)  # a source file was rewritten since: stale
                return None
            arrays = {name: np.load(os.path.join(entry, name + ".npy"), mmap_mode="r", allow_pickle=False)
                      for name in meta["arrays"]}
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, KeyError, ValueError):
            return None  # no entry, or deleted by another process's budget while we opened it
        with contextlib.suppress(OSError):
            os.utime(entry)  # recently used (the budget deletes the least recently used first)
        arrays["meta"] = meta.get("extra", {})
        return arrays

    # -- writing ---------------------------------------------------------------
    def put(self, files, spec, arrays, extra=None):
        """Store `arrays` (`{name: np.ndarray}`) for `files` under `spec`; return them as memory maps.

        Args:
            files: the source files (their size and modification time are recorded).
            spec: the preprocessing spec (part of the key).
            arrays: dict of NumPy arrays (any shapes and numeric dtypes).
            extra: small JSON-able dict stored with the entry (returned as `"meta"`).

        Returns:
            what `get` returns for the new entry.

        Raises:
            DiskFullError: not enough free space in the cache folder (nothing is left behind).
        """
        key = self.key(files, spec)
        entry = self._entry(key)
        signatures = [_signature(f) for f in files]
        nbytes = sum(np.asarray(a).nbytes for a in arrays.values())
        tmp = os.path.join(self.folder, f".{key}.{os.getpid()}.tmp")
        try:
            check_free_space(entry, nbytes + 4096 * (len(arrays) + 1))  # the free space of the cache folder
            os.makedirs(tmp, exist_ok=True)
            for name, a in arrays.items():
                with open(os.path.join(tmp, name + ".npy"), "wb") as fh:
                    np.save(fh, np.ascontiguousarray(a), allow_pickle=False)
                    fh.flush()
                    os.fsync(fh.fileno())
            meta = {"format": _FORMAT, "files": [os.path.abspath(os.fspath(f)) for f in files],
                    "signatures": signatures, "arrays": sorted(arrays), "nbytes": int(nbytes),
                    "extra": extra or {}, "written": time.time()}
            with open(os.path.join(tmp, _META), "w") as fh:
                json.dump(meta, fh)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.rename(tmp, entry)
            except OSError:  # another process wrote the same entry first (a non-empty folder is not replaced)
                if not os.path.isdir(entry):
                    raise
        except OSError as exc:
            self._remove(tmp)
            detail = "nothing half-written stays in the cache; free space or give the cache a smaller budget"
            if exc.errno is None and re.fullmatch(r"\d+ requested and \d+ written", str(exc)):
                raise DiskFullError(entry, detail) from exc  # NumPy's `tofile` reports ENOSPC as a short write
            raise_if_disk_full(exc, entry, detail)
            raise
        finally:
            if os.path.isdir(tmp):
                self._remove(tmp)
        if self.budget_bytes is not None:
            self.trim(keep=key)
        out = self._open(entry, files)
        if out is None:  # deleted by another process's budget already: hand back the arrays we have
            out = dict(arrays, meta=extra or {})
        return out

    # -- budget ----------------------------------------------------------------
    def entries(self):
        """`[(last used time, bytes, path)]` of the complete entries, least recently used first."""
        out = []
        for item in os.scandir(self.folder):
            if item.name.startswith(".") or not item.is_dir(follow_symlinks=False):
                continue
            try:
                with open(os.path.join(item.path, _META)) as fh:
                    nbytes = int(json.load(fh)["nbytes"])
                out.append((item.stat().st_mtime, nbytes, item.path))
            except (OSError, ValueError, KeyError):
                continue
        return sorted(out)

    @property
    def nbytes(self):
        """Bytes of array data held by the complete entries now."""
        return sum(n for _, n, _ in self.entries())

    def trim(self, keep=None):
        """Delete least recently used entries until the cache fits `budget_bytes` (never entry `keep`)."""
        if self.budget_bytes is None:
            return []
        entries = self.entries()
        total = sum(n for _, n, _ in entries)
        removed = []
        for _, n, path in entries:
            if total <= self.budget_bytes:
                break
            if os.path.basename(path) == keep:
                continue
            self._remove(path)
            total -= n
            removed.append(path)
        return removed

    def _remove_dead_temporaries(self):
        """Delete what killed processes left: `.<key>.<pid>.tmp` (a half-written entry) and `.gone.<pid>.*`
        (an entry half-deleted)."""
        for item in os.scandir(self.folder):
            parts = item.name.split(".")
            if len(parts) == 4 and parts[0] == "" and parts[3] == "tmp" and parts[2].isdigit():
                pid = int(parts[2])
            elif len(parts) >= 4 and parts[:2] == ["", "gone"] and parts[2].isdigit():
                pid = int(parts[2])
            else:
                continue
            if pid != os.getpid() and not pid_alive(pid):
                shutil.rmtree(item.path, ignore_errors=True)

    @staticmethod
    def _remove(path):
        """Delete an entry or temporary folder: renamed aside first, so no reader sees it half-deleted."""
        aside = os.path.join(os.path.dirname(path),
                             f".gone.{os.getpid()}.{time.monotonic_ns()}.{os.path.basename(path).strip('.')}")
        try:
            os.rename(path, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)
