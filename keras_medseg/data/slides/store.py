"""`PatchStore`: the crash-safe HDF5 patch store (SWMR, two-step commits, one writer by file lock)."""

import contextlib
import os
import warnings

import h5py
import numpy as np

from keras_medseg.data.slides.extract import iter_patches
from keras_medseg.data.slides.hdf5_check import check_hdf5_file
from keras_medseg.data.slides.recovery import _corrupt, _unclean, fcntl, recover_patch_store
from keras_medseg.utils.validation import check_choice, check_positive_int

FORMAT = "keras-medseg-patch-store"
FORMAT_VERSION = 1
SLIDE_NAME_BYTES = 64
_META = ("label", "slide", "tumor_id", "coords")


def compress_patch(patch, dtype="uint8", level=4):
    """One patch as the zlib (HDF5 deflate filter) stream of its bytes, for `PatchStore.append(compressed=...)`.

    Args:
        patch: `(S, S, C)` array.
        dtype: the store's dtype, default uint8.
        level: deflate level, default 4 (the store's gzip level).

    Returns:
        bytes.
    """
    import zlib

    return zlib.compress(np.ascontiguousarray(patch, dtype=dtype).tobytes(), int(level))


class PatchStore:
    """An HDF5 file of patches with per-patch slide, label, tumour id and coordinates.

    Args:
        path: the `.h5` file.
        mode: `"r"` (default) read only; `"a"` append (created if missing;
            rebuilt from its committed rows if the last writer died);
            `"w"` create (truncate).
        patch_size: patch side, needed when a file is created.
        channels: channels per patch, default 3.
        dtype: patch dtype when created, default `"uint8"`.
        compression: `"gzip"` (default), `"lzf"` or `None`.

    Reading: `len(store)`, `store.labels`, `store.slide_ids` (names per
    patch), `store.slide_index`, `store.tumor_ids`, `store.coords`,
    `store.read(indices)` (patches in the order asked), `store[i]`,
    `store.refresh()` (see rows appended by a live writer), `store.info()`.
    Writing: `store.append(...)`, `store.add_slide(image, mask, slide_id)`.

    Raises:
        FileNotFoundError: mode "r" and no such file.
        ValueError: not an HDF5 patch store (corrupt/truncated: the message
            names the file), missing `patch_size` on creation, bad arguments.
        RuntimeError: another process is writing the file.

    Example:

    >>> with keras_medseg.data.PatchStore("patches.h5", "w", patch_size=64) as s:
    ...     s.add_slide(image, mask, slide_id="slide_01", size=64)
    >>> keras_medseg.data.PatchStore("patches.h5").info()["num_patches"]

    Reference: the lecture "Convolutional networks - theory" (7.9 million training patches
    from 698 slides).
    """

    def __init__(self, path, mode="r", patch_size=None, channels=3, dtype="uint8", compression="gzip"):
        self._lock = None
        self._file = None
        self.path = os.fspath(path)
        self.mode = check_choice(mode, "mode", ("r", "a", "w"))
        if compression not in ("gzip", "lzf", None):
            raise ValueError(f"`compression` must be 'gzip', 'lzf' or None. Received: compression={compression!r}")
        if mode == "r":
            if not os.path.exists(self.path):
                raise FileNotFoundError(f"Patch store {self.path!r} does not exist.")
            self._open_read()
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"Directory {directory!r} of the patch store does not exist.")
        self._acquire_lock()
        try:
            if mode == "w" or not os.path.exists(self.path):
                if patch_size is None:
                    raise ValueError(
                        f"`patch_size` is needed to create the patch store {self.path!r}. Received: patch_size=None"
                    )
                self._create(check_positive_int(patch_size, "patch_size"),
                             check_positive_int(channels, "channels"), np.dtype(dtype), compression)
            else:
                self._open_append()
                if patch_size is not None and int(patch_size) != self.patch_size:
                    raise ValueError(
                        f"Patch store {self.path!r} holds {self.patch_size}x{self.patch_size} patches. "
                        f"Received: patch_size={patch_size}"
                    )
            self._file.swmr_mode = True
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------------

    def _acquire_lock(self):
        if fcntl is None:
            return
        self._lock = open(self.path + ".lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise RuntimeError(f"Patch store {self.path!r} is being written by another process.") from None

    def _open_read(self):
        check_hdf5_file(self.path, "Patch store")  # truncated files would hang in SWMR retries
        try:
            self._file = h5py.File(self.path, "r", swmr=True)
        except OSError as exc:
            try:  # files written without SWMR support (older libver)
                self._file = h5py.File(self.path, "r")
            except OSError:
                raise _corrupt(self.path, exc) from None
        self._check_layout()

    def _open_append(self):
        check_hdf5_file(self.path, "Patch store")
        shards = None
        with contextlib.suppress(OSError), h5py.File(self.path, "r", swmr=True) as f:
            shards = f.attrs.get("cohort_shards")
        if shards is not None:
            raise ValueError(f"Patch store {self.path!r} is a read-only cohort store over the shards in {shards!r}; "
                             "extract into the cohort (keras_medseg.data.slides.cohort.extract_cohort) instead.")
        try:
            self._file = h5py.File(self.path, "r+", libver="latest")
        except OSError as exc:
            if not _unclean(exc):
                raise _corrupt(self.path, exc) from None
            if fcntl is None:  # pragma: no cover - cannot tell a dead writer from a live one
                raise RuntimeError(
                    f"Patch store {self.path!r} was not closed cleanly; run "
                    "keras_medseg.data.slides.recover_patch_store(path) once no writer is running."
                ) from None
            warnings.warn(
                f"Patch store {self.path!r} was not closed cleanly (writer interrupted); "
                "rebuilding it from its committed patches.",
                stacklevel=3,
            )
            recover_patch_store(self.path, _locked=True)
            self._file = h5py.File(self.path, "r+", libver="latest")
        self._check_layout()
        n, m = (int(v) for v in self._file["num_committed"][:2])
        for name in ("patches",) + _META:  # drop rows of an append that never committed
            if self._file[name].shape[0] != n:
                self._file[name].resize(n, axis=0)
        if self._file["slide_names"].shape[0] != m:
            self._file["slide_names"].resize(m, axis=0)

    def _create(self, patch_size, channels, dtype, compression):
        f = h5py.File(self.path, "w", libver="latest")
        self._file = f
        opts = {"compression": compression}
        if compression == "gzip":
            opts["compression_opts"] = 4
        s, c = patch_size, channels
        f.create_dataset("patches", (0, s, s, c), dtype, maxshape=(None, s, s, c), chunks=(1, s, s, c), **opts)
        meta_chunk = 4096
        f.create_dataset("label", (0,), "u1", maxshape=(None,), chunks=(meta_chunk,), **opts)
        f.create_dataset("slide", (0,), "i4", maxshape=(None,), chunks=(meta_chunk,), **opts)
        f.create_dataset("tumor_id", (0,), "i4", maxshape=(None,), chunks=(meta_chunk,), **opts)
        f.create_dataset("coords", (0, 2), "i4", maxshape=(None, 2), chunks=(meta_chunk, 2), **opts)
        f.create_dataset("slide_names", (0,), f"S{SLIDE_NAME_BYTES}", maxshape=(None,), chunks=(256,))
        f.create_dataset("num_committed", data=np.zeros(2, np.int64))  # [patches, slides]
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "patch_size": s,
                        "channels": c, "compression": str(compression)})
        f.flush()
        self._check_layout()

    def _check_layout(self):
        f = self._file
        missing = [k for k in ("patches", "slide_names", "num_committed") + _META if k not in f]
        if f.attrs.get("format") != FORMAT or missing:
            raise ValueError(
                f"{self.path!r} is an HDF5 file but not a keras-medseg patch store "
                f"(missing: {', '.join(missing) or 'format attribute'})."
            )
        self.patch_size = int(f.attrs["patch_size"])
        self.channels = int(f.attrs["channels"])
        self.dtype = f["patches"].dtype

    # -- reading ------------------------------------------------------------

    def refresh(self):
        """See rows committed by a writer since this reader opened the file."""
        if self.mode == "r":
            for name in ("num_committed", "patches", "slide_names") + _META:
                self._file[name].refresh()

    def _committed(self):
        try:
            n, m = (int(v) for v in self._file["num_committed"][:2])
        except OSError as exc:
            raise _corrupt(self.path, exc) from None
        return n, m

    def __len__(self):
        return self._committed()[0]

    def _meta(self, name):
        n = len(self)
        try:
            return self._file[name][:n]
        except OSError as exc:
            raise _corrupt(self.path, exc) from None

    @property
    def labels(self):
        """`(N,)` uint8 patch labels."""
        return self._meta("label")

    @property
    def tumor_ids(self):
        """`(N,)` int32 tumour ids (-1 = outside every tumour)."""
        return self._meta("tumor_id")

    @property
    def coords(self):
        """`(N, 2)` int32 (row, col) of each patch's top-left corner in its slide."""
        return self._meta("coords")

    @property
    def slide_index(self):
        """`(N,)` int32 index of each patch's slide in `slide_names`."""
        return self._meta("slide")

    @property
    def slide_names(self):
        """Names of the slides in the store, in insertion order."""
        m = self._committed()[1]
        return np.asarray([b.decode("utf-8") for b in self._file["slide_names"][:m]], dtype=object)

    @property
    def slide_ids(self):
        """`(N,)` slide name of each patch."""
        names = self.slide_names
        return names[self.slide_index] if len(names) else np.zeros(0, object)

    def read(self, indices):
        """Patches at `indices` (any order, repeats allowed) as a `(len(indices), S, S, C)` array."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"Patch index out of range for a store of {n} patches. Received: {idx.min()}..{idx.max()}")
        idx = np.where(idx < 0, idx + n, idx)
        uniq, inv = np.unique(idx, return_inverse=True)
        try:
            ds = self._file["patches"]
            # One read per patch (one chunk each): much faster than h5py fancy indexing.
            data = np.empty((uniq.size,) + ds.shape[1:], self.dtype)
            for k, i in enumerate(uniq.tolist()):
                data[k] = ds[i]
        except OSError as exc:
            raise _corrupt(self.path, exc) from None
        return data[inv.reshape(-1)]

    def __getitem__(self, i):
        return self.read([i])[0]

    def info(self):
        """Summary dict: counts, patch size, compression, per-slide patch/positive/tumour counts."""
        labels, slides, tumors = self.labels, self.slide_index, self.tumor_ids
        names = self.slide_names
        per_slide = {}
        for k, name in enumerate(names):
            sel = slides == k
            per_slide[name] = {
                "patches": int(sel.sum()),
                "positive": int(labels[sel].sum()),
                "tumors": int(np.unique(tumors[sel & (tumors >= 0)]).size),
            }
        return {
            "path": self.path,
            "num_patches": int(labels.size),
            "num_positive": int(labels.sum()),
            "num_slides": int(len(names)),
            "patch_size": self.patch_size,
            "channels": self.channels,
            "dtype": str(self.dtype),
            "compression": self._file["patches"].compression,
            "file_bytes": os.path.getsize(self.path),
            "slides": per_slide,
        }

    # -- writing ------------------------------------------------------------

    def _check_writable(self):
        if self.mode == "r" or self._file is None:
            raise ValueError(f"Patch store {self.path!r} is not open for writing (mode={self.mode!r}).")

    def _slide_index_for(self, slide_id):
        name = str(slide_id)
        raw = name.encode("utf-8")
        if not raw or len(raw) > SLIDE_NAME_BYTES:
            raise ValueError(f"`slide_id` must be 1 to {SLIDE_NAME_BYTES} bytes of UTF-8. Received: slide_id={name!r}")
        m = self._committed()[1]
        existing = [b.decode("utf-8") for b in self._file["slide_names"][:m]]
        if name in existing:
            return existing.index(name), None
        return m, raw

    def accepts_compressed(self):
        """Whether `append(..., compressed=...)` works: a gzip store with one patch per chunk and no other filter."""
        ds = self._file["patches"]
        return (ds.compression == "gzip" and not ds.shuffle and not ds.fletcher32 and ds.scaleoffset is None
                and ds.chunks == (1,) + ds.shape[1:])

    def compress_patch(self, patch):
        """The deflate stream `append(..., compressed=...)` expects for one `(S, S, C)` patch (zlib, any process)."""
        return compress_patch(patch, self.dtype, self._file["patches"].compression_opts or 4)

    def append(self, patches, labels, slide_id, tumor_ids=None, coords=None, compressed=None):
        """Append patches of ONE slide as one atomic commit.

        Args:
            patches: `(n, S, S, C)` array (`(n, S, S)` for one channel); `None`
                with `compressed`.
            compressed: optional list of `n` deflate streams, one per patch
                (`compress_patch`), written as HDF5 chunks as they are, so
                that worker processes can do the compression; gzip stores only.
            labels: `(n,)` 0/1 labels.
            slide_id: the slide's name (str or int; new names are added).
            tumor_ids: `(n,)` ints, -1 = no tumour; default all -1.
            coords: `(n, 2)` (row, col); default zeros.

        Returns:
            The number of committed patches after the append.

        Raises:
            ValueError: shapes that do not match the store, labels not 0/1,
                a slide name longer than 64 bytes, a read-only store.
        """
        self._check_writable()
        if patches is None and compressed is not None:
            patches = np.empty((len(compressed), self.patch_size, self.patch_size, self.channels), self.dtype)
        patches = np.asarray(patches)
        if patches.ndim == 3 and self.channels == 1:
            patches = patches[..., None]
        expected = (self.patch_size, self.patch_size, self.channels)
        if patches.ndim != 4 or patches.shape[1:] != expected:
            raise ValueError(
                f"`patches` must have shape (n, {', '.join(map(str, expected))}). "
                f"Received: patches.shape={patches.shape}"
            )
        n_new = patches.shape[0]
        if compressed is not None:
            if not self.accepts_compressed():
                raise ValueError(f"Patch store {self.path!r} is not a gzip store with one patch per chunk: "
                                 "`compressed` cannot be used. Received: compressed patches")
            if len(compressed) != n_new:
                raise ValueError(f"`compressed` must hold {n_new} patches. Received: {len(compressed)}")
            compressed = [bytes(c) for c in compressed]
        elif np.issubdtype(self.dtype, np.integer) and patches.dtype != self.dtype:  # the store's dtype: in range
            info = np.iinfo(self.dtype)
            if n_new and (not np.issubdtype(patches.dtype, np.integer) and not np.all(patches == np.round(patches))
                          or patches.min() < info.min or patches.max() > info.max):
                raise ValueError(
                    f"`patches` must be integers in [{info.min}, {info.max}] for a {self.dtype} store. "
                    f"Received: dtype={patches.dtype}, range {patches.min()}..{patches.max()}"
                )
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != n_new or not np.isin(labels, (0, 1)).all():
            raise ValueError(f"`labels` must be {n_new} values in {{0, 1}}. Received: labels with shape {labels.shape}")
        tumor_ids = np.full(n_new, -1, np.int32) if tumor_ids is None else np.asarray(tumor_ids, np.int64).reshape(-1)
        if tumor_ids.shape[0] != n_new:
            raise ValueError(f"`tumor_ids` must have {n_new} entries. Received: {tumor_ids.shape[0]}")
        coords = np.zeros((n_new, 2), np.int32) if coords is None else np.asarray(coords, np.int64)
        if coords.shape != (n_new, 2):
            raise ValueError(f"`coords` must have shape ({n_new}, 2). Received: coords.shape={coords.shape}")
        slide, new_name = self._slide_index_for(slide_id)
        n, m = self._committed()
        if n_new == 0:
            return n
        f = self._file
        # 1. write the new rows beyond the committed length and flush them ...
        if new_name is not None:
            f["slide_names"].resize(m + 1, axis=0)
            f["slide_names"][m] = new_name
            f["slide_names"].flush()
            m += 1
        values = {"patches": np.asarray(patches, self.dtype) if compressed is None else None,  # no copy if it is
                  "label": labels.astype(np.uint8), "slide": np.full(n_new, slide, np.int32),
                  "tumor_id": tumor_ids.astype(np.int32), "coords": coords.astype(np.int32)}
        for name, value in values.items():
            ds = f[name]
            ds.resize(n + n_new, axis=0)
            if value is None:  # deflate streams made elsewhere (one chunk = one patch)
                for k, chunk in enumerate(compressed):
                    ds.id.write_direct_chunk((n + k, 0, 0, 0), chunk)
            else:
                ds[n:n + n_new] = value
            ds.flush()
        f.flush()
        # 2. ... then commit them: readers and recovery only trust num_committed.
        f["num_committed"][:] = np.asarray([n + n_new, m], np.int64)
        f["num_committed"].flush()
        f.flush()
        return n + n_new

    def add_slide(self, image, mask, slide_id, size=None, stride=None, inner_size=None, min_tissue=0.0,
                  tissue_threshold=0.07, batch_size=256, progress=False):
        """Extract the patches of one slide (see `extract_patches`) and append them batch by batch.

        `progress=True` shows a tqdm bar (patches written, patches/s) on stderr.

        Returns:
            The number of patches added.
        """
        self._check_writable()
        size = self.patch_size if size is None else size
        if size != self.patch_size:
            raise ValueError(f"`size` must equal the store's patch size {self.patch_size}. Received: size={size}")
        added = 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(unit="patch", desc=f"extract {slide_id}")
        try:
            for part in iter_patches(image, mask, size, stride, inner_size, min_tissue, tissue_threshold,
                                     batch_size):
                self.append(part.patches, part.labels, slide_id, part.tumor_ids, part.coords)
                added += part.labels.size
                if bar is not None:
                    bar.update(part.labels.size)
        finally:
            if bar is not None:
                bar.close()
        return added

    # -- lifetime -----------------------------------------------------------

    def close(self):
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        if self._lock is not None:
            with contextlib.suppress(Exception):
                self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def __repr__(self):
        n = len(self) if self._file is not None else "?"
        return f"<PatchStore {self.path!r} mode={self.mode!r} patches={n}>"
