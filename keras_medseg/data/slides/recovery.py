"""Crash recovery of a patch store: rebuild the file from its committed rows after a writer died."""

import contextlib
import os
import tempfile

import h5py
import numpy as np

try:  # POSIX only; elsewhere the writer lock is skipped.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def _corrupt(path, exc):
    return ValueError(
        f"Cannot read patch store {os.fspath(path)!r}: not a valid HDF5 patch store "
        f"(corrupt or truncated file?). HDF5 said: {exc}"
    )


def _unclean(exc):
    return "consistency flags" in str(exc) or "already open for write" in str(exc)


def recover_patch_store(path, _locked=False):
    """Rebuild a patch store whose writer died, keeping every committed patch.

    Reads the committed rows (SWMR read works on an interrupted file), writes
    them to a temporary file next to it and atomically replaces the original.
    `PatchStore(path, "a")` calls this by itself after an unclean shutdown.

    Returns:
        The number of patches kept.
    """
    path = os.fspath(path)
    lock = None
    if not _locked and fcntl is not None:
        lock = open(path + ".lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise RuntimeError(f"Patch store {path!r} is being written by another process.") from None
    try:
        from keras_medseg.data.slides.hdf5_check import check_hdf5_file

        check_hdf5_file(path, "Patch store")
        try:
            src = h5py.File(path, "r", swmr=True)
        except OSError as exc:
            raise _corrupt(path, exc) from None
        with src:
            n, m = (int(v) for v in src["num_committed"][:2])
            fd, tmp = tempfile.mkstemp(suffix=".h5", dir=os.path.dirname(os.path.abspath(path)))
            os.close(fd)
            try:
                with h5py.File(tmp, "w", libver="latest") as dst:
                    dst.attrs.update(dict(src.attrs))
                    for name, ds in src.items():
                        rows = m if name == "slide_names" else n
                        data = ds[:] if name == "num_committed" else None
                        out = dst.create_dataset(
                            name, shape=ds.shape if data is not None else (rows,) + ds.shape[1:], dtype=ds.dtype,
                            maxshape=ds.maxshape, chunks=ds.chunks, compression=ds.compression,
                            compression_opts=ds.compression_opts,
                        )
                        if data is not None:
                            out[:] = data
                        else:
                            step = max(1, 65536 // max(1, int(np.prod(ds.shape[1:]))))
                            for start in range(0, rows, step):
                                out[start:min(rows, start + step)] = ds[start:min(rows, start + step)]
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise
        return n
    finally:
        if lock is not None:
            lock.close()
