"""Whole-slide-image patches: HDF5 patch store, patch extraction, three-step sampler, augmentation.

The workflow of seed 001 (cancer detection in whole-slide images):

1. `extract_patches(image, mask, size=512)` cuts a slide into square patches
   on a grid. A patch is positive iff its *inner square* (the centred square
   of side `inner_size`, default `size // 2`) intersects the annotation; the
   grid stride defaults to `inner_size`, so the inner squares tile the slide
   and every annotated pixel lies in the inner square of exactly one patch.
   Mostly-background patches can be dropped with `min_tissue`.
2. `PatchStore` keeps the patches of many slides in ONE HDF5 file (h5py):
   `patches (N, S, S, C)`, per-patch `label`, `slide` (index into
   `slide_names`), `tumor_id` (-1 = none) and `coords` (row, col of the top
   left corner). Datasets are chunked (one patch per chunk), compressed
   (gzip or lzf) and resizable, so the file can grow to millions of patches
   and be read patch by patch.
3. `ThreeStepSampler` is a `keras.utils.PyDataset` that draws every training
   patch in three steps: a random label, a random slide holding at least one
   patch of that label, a random patch of that label from that slide; then it
   applies random flips and colour perturbations (`augment_patches`).

Crash safety: the writer uses HDF5's single-writer / multiple-reader (SWMR)
mode, in which the file on disk is consistent at every instant, and commits
each `append` in two steps: the new rows are written and flushed first, then
the committed length (`num_committed`) is updated and flushed. Readers only
see committed rows. If a writer dies mid-append (even `SIGKILL`), every
previously committed patch stays readable; reopening the store for writing
detects the unclean shutdown and rebuilds the file from its committed rows
(atomic replace), dropping the half-written batch. A sidecar `<file>.lock`
(`fcntl.flock`) keeps two writers apart and tells a dead writer from a live one.

Reference: seed 001 ("Cut into patches of size 512 px x 512 px", "Patch
positive iff the inner square intersects the annotation", "Training data three
step sampling", "random vertical and horizontal flips, random color
perturbations").
"""

import collections
import contextlib
import os
import tempfile
import warnings

import h5py
import keras
import numpy as np

from keras_medseg.utils.validation import check_choice, check_positive, check_positive_int

try:  # POSIX only; elsewhere the writer lock is skipped.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

FORMAT = "keras-medseg-patch-store"
FORMAT_VERSION = 1
SLIDE_NAME_BYTES = 64
_META = ("label", "slide", "tumor_id", "coords")

PatchSet = collections.namedtuple("PatchSet", ["patches", "labels", "tumor_ids", "coords"])


# --------------------------------------------------------------------------- extraction


def tissue_mask(image, threshold=0.07):
    """Tissue pixels of an RGB slide: HSV saturation above `threshold`.

    Glass / background in brightfield slides is nearly white (saturation ~0);
    stained tissue is coloured.

    Args:
        image: `(H, W, 3)` RGB array (uint8 or float in [0, 1]).
        threshold: saturation threshold in [0, 1], default 0.07.

    Returns:
        `(H, W)` bool array.
    """
    from skimage.color import rgb2hsv

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"`image` must be an (H, W, 3) RGB array for tissue detection. Received: image.shape={image.shape}"
        )
    return rgb2hsv(image)[..., 1] > threshold


def _tumor_labels(mask):
    """Integer tumour label map: a 0/1 mask is split into 8-connected components."""
    from skimage.measure import label as connected_components

    mask = np.asarray(mask)
    if mask.dtype == bool or np.isin(mask, (0, 1)).all():
        return connected_components(mask.astype(bool), connectivity=2).astype(np.int64)
    if not np.issubdtype(mask.dtype, np.integer) or mask.min() < 0:
        raise ValueError(
            "`mask` must be a 0/1 (bool) annotation or a non-negative integer tumour label map. "
            f"Received: mask.dtype={mask.dtype}, min={mask.min()}"
        )
    return mask.astype(np.int64)


def _grid(length, size, stride):
    return range(0, length - size + 1, stride)


def _check_extract_args(image, mask, size, stride, inner_size, min_tissue):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"`image` must be (H, W) or (H, W, C). Received: image.shape={image.shape}")
    size = check_positive_int(size, "size")
    inner_size = size // 2 if inner_size is None else check_positive_int(inner_size, "inner_size")
    if inner_size > size:
        raise ValueError(f"`inner_size` must be <= size={size}. Received: inner_size={inner_size}")
    stride = inner_size if stride is None else check_positive_int(stride, "stride")
    if image.shape[0] < size or image.shape[1] < size:
        raise ValueError(
            f"`image` ({image.shape[0]}x{image.shape[1]}) is smaller than one patch. Received: size={size}"
        )
    if mask is not None and np.asarray(mask).shape != image.shape[:2]:
        raise ValueError(
            f"`mask` must have the image's spatial shape {image.shape[:2]}. "
            f"Received: mask.shape={np.asarray(mask).shape}"
        )
    check_positive(min_tissue, "min_tissue", allow_zero=True)
    if min_tissue > 1:
        raise ValueError(f"`min_tissue` is a fraction in [0, 1]. Received: min_tissue={min_tissue}")
    if min_tissue > 0 and image.shape[-1] != 3:
        raise ValueError(f"`min_tissue` > 0 needs an RGB image. Received: image.shape={image.shape}")
    return image, size, stride, inner_size


def iter_patches(image, mask=None, size=512, stride=None, inner_size=None, min_tissue=0.0,
                 tissue_threshold=0.07, batch_size=256):
    """Generator version of `extract_patches`: yields `PatchSet` batches of at most `batch_size` patches."""
    image, size, stride, inner_size = _check_extract_args(image, mask, size, stride, inner_size, min_tissue)
    batch_size = check_positive_int(batch_size, "batch_size")
    tumors = _tumor_labels(mask) if mask is not None else None
    tissue = tissue_mask(image, tissue_threshold) if min_tissue > 0 else None
    off = (size - inner_size) // 2
    buf = ([], [], [], [])
    for r in _grid(image.shape[0], size, stride):
        for c in _grid(image.shape[1], size, stride):
            tumor_id = -1
            if tumors is not None:
                inner = tumors[r + off:r + off + inner_size, c + off:c + off + inner_size]
                hits = inner[inner > 0]
                if hits.size:
                    tumor_id = int(np.bincount(hits).argmax())  # the tumour covering most of it
            if tumor_id < 0 and tissue is not None and tissue[r:r + size, c:c + size].mean() < min_tissue:
                continue  # background patch (annotated patches are always kept)
            buf[0].append(image[r:r + size, c:c + size])
            buf[1].append(int(tumor_id >= 0))
            buf[2].append(tumor_id)
            buf[3].append((r, c))
            if len(buf[0]) == batch_size:
                yield _patch_set(buf, image)
                buf = ([], [], [], [])
    if buf[0]:
        yield _patch_set(buf, image)


def _patch_set(buf, image):
    return PatchSet(
        patches=np.stack(buf[0]).astype(image.dtype, copy=False),
        labels=np.asarray(buf[1], np.uint8),
        tumor_ids=np.asarray(buf[2], np.int32),
        coords=np.asarray(buf[3], np.int32).reshape(-1, 2),
    )


def extract_patches(image, mask=None, size=512, stride=None, inner_size=None, min_tissue=0.0,
                    tissue_threshold=0.07):
    """Cut a slide into square patches and label them with the inner-square rule.

    A patch is positive iff its inner square (centred, side `inner_size`)
    intersects the annotation. Its tumour id is the annotated region covering
    most of the inner square (-1 for a negative patch); tumours are the
    8-connected components of a 0/1 mask, or the labels of an integer label
    map. Only whole patches are cut (no padding).

    Args:
        image: `(H, W)` or `(H, W, C)` slide (e.g. uint8 RGB).
        mask: `(H, W)` annotation, 0/1 or a tumour label map; `None` = a
            normal slide (all patches negative).
        size: patch side, default 512 (the seed's patch size).
        stride: grid step, default `inner_size` (inner squares tile the slide).
        inner_size: side of the inner square, default `size // 2`.
        min_tissue: drop negative patches whose tissue fraction (see
            `tissue_mask`) is below this, default 0 (keep all). RGB only.
        tissue_threshold: HSV saturation threshold of `tissue_mask`.

    Returns:
        `PatchSet(patches (N, size, size, C), labels (N,) uint8,
        tumor_ids (N,) int32, coords (N, 2) int32 (row, col))`.

    Raises:
        ValueError: image smaller than a patch, mask of another shape,
            `inner_size > size`, bad `min_tissue`, a negative or float mask.

    Example:

    >>> image = np.zeros((64, 64, 3), np.uint8); mask = np.zeros((64, 64), bool)
    >>> mask[30:34, 30:34] = True
    >>> p = keras_medseg.data.extract_patches(image, mask, size=32)
    >>> p.patches.shape, int(p.labels.sum())
    ((9, 32, 32, 3), 1)

    Reference: seed 001 ("Patch positive iff the inner square intersects the annotation").
    """
    sets = list(iter_patches(image, mask, size, stride, inner_size, min_tissue, tissue_threshold))
    if not sets:
        image = np.asarray(image)
        channels = 1 if image.ndim == 2 else image.shape[-1]
        return PatchSet(np.zeros((0, size, size, channels), image.dtype), np.zeros(0, np.uint8),
                        np.zeros(0, np.int32), np.zeros((0, 2), np.int32))
    return PatchSet(*(np.concatenate(parts) for parts in zip(*sets)))


# --------------------------------------------------------------------------- store


def _corrupt(path, exc):
    return ValueError(
        f"Cannot read patch store {os.fspath(path)!r}: not a valid HDF5 patch store "
        f"(corrupt or truncated file?). HDF5 said: {exc}"
    )


def _unclean(exc):
    return "consistency flags" in str(exc) or "already open for write" in str(exc)


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

    Reference: seed 001 (7.9 million training patches from 698 slides).
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
        try:
            self._file = h5py.File(self.path, "r", swmr=True)
        except OSError as exc:
            try:  # files written without SWMR support (older libver)
                self._file = h5py.File(self.path, "r")
            except OSError:
                raise _corrupt(self.path, exc) from None
        self._check_layout()

    def _open_append(self):
        try:
            self._file = h5py.File(self.path, "r+", libver="latest")
        except OSError as exc:
            if not _unclean(exc):
                raise _corrupt(self.path, exc) from None
            if fcntl is None:  # pragma: no cover - cannot tell a dead writer from a live one
                raise RuntimeError(
                    f"Patch store {self.path!r} was not closed cleanly; run "
                    "keras_medseg.data.wsi.recover_patch_store(path) once no writer is running."
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

    def append(self, patches, labels, slide_id, tumor_ids=None, coords=None):
        """Append patches of ONE slide as one atomic commit.

        Args:
            patches: `(n, S, S, C)` array (`(n, S, S)` for one channel).
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
        patches = np.asarray(patches)
        if patches.ndim == 3 and self.channels == 1:
            patches = patches[..., None]
        expected = (self.patch_size, self.patch_size, self.channels)
        if patches.ndim != 4 or patches.shape[1:] != expected:
            raise ValueError(
                f"`patches` must have shape (n, {', '.join(map(str, expected))}). Received: patches.shape={patches.shape}"
            )
        n_new = patches.shape[0]
        if np.issubdtype(self.dtype, np.integer):
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
        values = {"patches": patches.astype(self.dtype), "label": labels.astype(np.uint8),
                  "slide": np.full(n_new, slide, np.int32), "tumor_id": tumor_ids.astype(np.int32),
                  "coords": coords.astype(np.int32)}
        for name, value in values.items():
            ds = f[name]
            ds.resize(n + n_new, axis=0)
            ds[n:n + n_new] = value
            ds.flush()
        f.flush()
        # 2. ... then commit them: readers and recovery only trust num_committed.
        f["num_committed"][:] = np.asarray([n + n_new, m], np.int64)
        f["num_committed"].flush()
        f.flush()
        return n + n_new

    def add_slide(self, image, mask, slide_id, size=None, stride=None, inner_size=None, min_tissue=0.0,
                  tissue_threshold=0.07, batch_size=256):
        """Extract the patches of one slide (see `extract_patches`) and append them batch by batch.

        Returns:
            The number of patches added.
        """
        self._check_writable()
        size = self.patch_size if size is None else size
        if size != self.patch_size:
            raise ValueError(f"`size` must equal the store's patch size {self.patch_size}. Received: size={size}")
        added = 0
        for part in iter_patches(image, mask, size, stride, inner_size, min_tissue, tissue_threshold, batch_size):
            self.append(part.patches, part.labels, slide_id, part.tumor_ids, part.coords)
            added += part.labels.size
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


# --------------------------------------------------------------------------- augmentation


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _colour_matrices(rng, n, hue, saturation):
    """`(n, 3, 3)` RGB -> RGB matrices: rotate the chroma plane (I, Q) by a random hue angle, scale it."""
    theta = 2 * np.pi * rng.uniform(-hue, hue, n)
    scale = 1 + rng.uniform(-saturation, saturation, n)
    m = np.zeros((n, 3, 3))
    m[:, 0, 0] = 1.0
    m[:, 1, 1] = m[:, 2, 2] = scale * np.cos(theta)
    m[:, 1, 2] = -scale * np.sin(theta)
    m[:, 2, 1] = scale * np.sin(theta)
    return _YIQ_TO_RGB[None] @ m @ _RGB_TO_YIQ[None]


def augment_patches(patches, rng=None, flip=True, hue=0.04, saturation=0.25, brightness=0.1, contrast=0.1,
                    max_value=255.0):
    """Random flips and colour perturbation of a batch of RGB patches (NumPy).

    Per patch: horizontal and vertical flips with probability 1/2 each; hue
    rotated by `U(-hue, hue)` of a full turn and saturation (chroma) scaled by
    `1 + U(-saturation, saturation)`, both as one 3x3 colour matrix in YIQ
    space (a linear stand-in for an HSV jitter, fast enough for 512 x 512
    patches); brightness shifted by
    `U(-brightness, brightness) * max_value`; contrast scaled around the patch
    mean by `1 + U(-contrast, contrast)`. Results are clipped to
    `[0, max_value]`. Channels other than 3 get flips, brightness and
    contrast only.

    Args:
        patches: `(N, H, W, C)` array.
        rng: `numpy.random.Generator` (or a seed); default a fresh one.
        flip, hue, saturation, brightness, contrast: strengths (0 / False off).
        max_value: intensity of white, default 255.

    Returns:
        float32 array of the same shape.

    Reference: seed 001 ("random vertical and horizontal flips, random color perturbations").
    """
    rng = np.random.default_rng(rng)
    x = np.array(patches, np.float32, copy=True)
    if x.ndim != 4:
        raise ValueError(f"`patches` must be (N, H, W, C). Received: patches.shape={x.shape}")
    n = x.shape[0]
    if flip:
        for axis in (1, 2):
            sel = rng.random(n) < 0.5
            x[sel] = np.flip(x[sel], axis=axis)
    if x.shape[-1] == 3 and (hue or saturation):
        m = _colour_matrices(rng, n, hue, saturation).astype(np.float32)
        x = np.matmul(x.reshape(n, -1, 3), np.swapaxes(m, 1, 2)).reshape(x.shape)
    if brightness:
        x += (rng.uniform(-brightness, brightness, n) * max_value)[:, None, None, None].astype(np.float32)
    if contrast:
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * (1 + rng.uniform(-contrast, contrast, n))[:, None, None, None].astype(np.float32) + mean
    return np.clip(x, 0, max_value).astype(np.float32)


# --------------------------------------------------------------------------- datasets


class _StoreDataset(keras.utils.PyDataset):
    """Opens the store lazily once per process (h5py handles do not survive fork/pickle)."""

    def __init__(self, store, **kwargs):
        super().__init__(**kwargs)
        self.path = store.path if isinstance(store, PatchStore) else os.fspath(store)
        self._store = None
        self._pid = None

    @property
    def store(self):
        if self._store is None or self._pid != os.getpid():
            self._store = PatchStore(self.path, "r")
            self._pid = os.getpid()
        return self._store

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None
        return state


class ThreeStepSampler(_StoreDataset):
    """Training batches drawn by seed 001's three-step sampling, with augmentation.

    Every patch of a batch is drawn as: (1) a label uniformly among the labels
    present, (2) a slide uniformly among the slides holding at least one patch
    of that label, (3) a patch uniformly among that slide's patches of that
    label. Classes are thus balanced and no slide dominates, however unequal
    the patch counts are.

    Args:
        store: a `PatchStore` or the path of its file.
        batch_size: patches per batch, default 32.
        steps_per_epoch: batches per epoch (the sampler is infinite), default 100.
        augment: apply `augment_patches` (flips + colour), default True.
        augment_kwargs: dict passed to `augment_patches`.
        rescale: multiply pixel values by this, default 1 (0..255 for uint8;
            the `vgg16_classifier` preprocesses 0..255 RGB itself).
        seed: seed; batch `i` of epoch `e` is a function of `(seed, e, i)`.
        indices: optional subset of patch indices to sample from (e.g. the
            training slides, or all but a validation split); default all.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`,
            `use_multiprocessing`, `max_queue_size`).

    Yields:
        `(x, y)`: `x (batch, S, S, C)` float32, `y (batch, 1)` float32 labels.

    Raises:
        ValueError: an empty store.

    Example:

    >>> ds = keras_medseg.data.ThreeStepSampler("patches.h5", batch_size=16, steps_per_epoch=50)
    >>> model.fit(ds, epochs=10)

    Reference: seed 001 ("Training data three step sampling").
    """

    def __init__(self, store, batch_size=32, steps_per_epoch=100, augment=True, augment_kwargs=None, rescale=1.0,
                 seed=None, indices=None, **kwargs):
        super().__init__(store, **kwargs)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.augment = bool(augment)
        self.augment_kwargs = dict(augment_kwargs or {})
        self.rescale = float(rescale)
        self.seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
        self.epoch = 0
        labels, slides = self.store.labels, self.store.slide_index
        subset = np.arange(labels.size) if indices is None else np.unique(np.asarray(indices, np.int64).reshape(-1))
        if subset.size and (subset.min() < 0 or subset.max() >= labels.size):
            raise ValueError(f"`indices` must lie in [0, {labels.size}). Received: {subset.min()}..{subset.max()}")
        if subset.size == 0:
            raise ValueError(f"Patch store {self.path!r} is empty (or `indices` selects nothing): nothing to sample.")
        # index[label] = list of patch-index arrays, one per slide holding that label
        self.labels_present = np.unique(labels[subset])
        self.index = {}
        for lab in self.labels_present.tolist():
            rows = subset[labels[subset] == lab]
            order = np.argsort(slides[rows], kind="stable")
            rows = rows[order]
            cuts = np.flatnonzero(np.diff(slides[rows])) + 1
            self.index[lab] = np.split(rows, cuts)

    def __len__(self):
        return self.steps_per_epoch

    def sample_indices(self, rng, n):
        """`n` patch indices drawn by the three steps (returns indices and labels)."""
        labs = rng.choice(self.labels_present, size=n)
        out = np.empty(n, np.int64)
        for k, lab in enumerate(labs.tolist()):
            groups = self.index[lab]
            group = groups[rng.integers(len(groups))]  # step 2: a slide with that label
            out[k] = group[rng.integers(group.size)]  # step 3: a patch of that label on it
        return out, labs

    def __getitem__(self, i):
        if not 0 <= i < self.steps_per_epoch:
            raise IndexError(f"Batch index {i} out of range for {self.steps_per_epoch} steps.")
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        idx, labs = self.sample_indices(rng, self.batch_size)
        x = self.store.read(idx).astype(np.float32)
        if self.augment:
            x = augment_patches(x, rng, **self.augment_kwargs)
        if self.rescale != 1.0:
            x = x * np.float32(self.rescale)
        return x, labs.astype(np.float32).reshape(-1, 1)

    def on_epoch_end(self):
        self.epoch += 1


class PatchSequence(_StoreDataset):
    """Every patch of a store once, in order (evaluation / prediction).

    Args:
        store: a `PatchStore` or path.
        batch_size: default 64.
        rescale: multiply pixel values by this, default 1.
        indices: optional subset of patch indices.
        **kwargs: `keras.utils.PyDataset` arguments.

    Yields:
        `(x, y)` with `y (batch, 1)` float32 labels.
    """

    def __init__(self, store, batch_size=64, rescale=1.0, indices=None, **kwargs):
        super().__init__(store, **kwargs)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.rescale = float(rescale)
        self.indices = np.arange(len(self.store)) if indices is None else np.asarray(indices, np.int64).reshape(-1)
        self._labels = self.store.labels

    def __len__(self):
        return int(np.ceil(self.indices.size / self.batch_size))

    def __getitem__(self, i):
        idx = self.indices[i * self.batch_size:(i + 1) * self.batch_size]
        if idx.size == 0:
            raise IndexError(f"Batch index {i} out of range for {len(self)} batches.")
        x = self.store.read(idx).astype(np.float32)
        if self.rescale != 1.0:
            x = x * np.float32(self.rescale)
        return x, self._labels[idx].astype(np.float32).reshape(-1, 1)


def load_patch_dataset(path, batch_size=32, sampler="three_step", **kwargs):
    """A `keras.utils.PyDataset` over an HDF5 patch store (used by `keras-medseg train --data x.h5`).

    Args:
        path: the `.h5` patch store.
        batch_size: default 32.
        sampler: `"three_step"` (training: `ThreeStepSampler`) or
            `"sequential"` (every patch once: `PatchSequence`).
        **kwargs: passed to the dataset class.

    Raises:
        FileNotFoundError / ValueError: see `PatchStore`.
    """
    check_choice(sampler, "sampler", ("three_step", "sequential"))
    if sampler == "three_step":
        return ThreeStepSampler(path, batch_size=batch_size, **kwargs)
    return PatchSequence(path, batch_size=batch_size, **kwargs)
