"""Patch grids on whole slides and streaming, resumable, multi-process extraction into a `PatchStore`.

1. `tissue_mask_from_thumbnail`: Otsu's threshold (or a fixed one) on the
   HSV saturation of a low-resolution thumbnail (grey slides: on darkness).
2. `patch_grid`: the patch grid at any pyramid level, keeping the patches
   whose tissue fraction (measured on the thumbnail) reaches `min_tissue`
   plus every patch whose inner square touches an annotated tumour, labelled
   by the inner-square rule. Background is never read at full resolution.
3. `extract_slide`: reads the kept patches tile by tile in `workers`
   processes and appends them to an HDF5 `PatchStore` in chunks, one atomic
   commit each; for gzip stores the readers also deflate the patches, so the
   single writer only writes bytes. Memory is bounded by `workers x chunk` patches plus each
   worker's tile cache, whatever the slide size. A rerun after an
   interruption (even `SIGKILL`) skips the grid positions already committed
   for that slide, so nothing is duplicated; the grid parameters are kept in
   a sidecar `<store>.slides.json` so that a rerun with other parameters is
   refused instead of mixing grids. A tqdm bar shows patches/s and the ETA.
4. `merge_stores`: concatenates stores (one per slide, or per dataset) into one.

Reference: the lecture "Convolutional networks - theory" (cancer detection in
whole-slide images: patches of 512 x 512 px, positive iff the inner square
intersects the annotation, 7,878,675 training patches from 698 slides);
N. Otsu, "A threshold selection method from gray-level histograms", IEEE
Trans. SMC 1979 (via `skimage.filters.threshold_otsu`).
"""

import collections
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import time

import numpy as np

from keras_medseg.data.slides.annotations import Annotations, read_annotations
from keras_medseg.data.slides.slide import level_for_mpp, open_slide
from keras_medseg.data.slides.slide_base import Slide
from keras_medseg.data.slides.store import PatchStore, compress_patch

PatchGrid = collections.namedtuple(
    "PatchGrid",
    ["coords", "grid_index", "grid_shape", "tumor_ids", "tissue", "level", "downsample", "size", "inner_size",
     "stride"],
)
PatchGrid.__doc__ = """Patches selected on one level of a slide.

`coords (N, 2)` int64 `(row, col)` top-left corners in pixels of `level`; `grid_index (N, 2)` their
`(i, j)` on the full grid of `grid_shape`; `tumor_ids (N,)` (-1 = negative); `tissue (N,)` tissue
fraction from the thumbnail; `downsample` `(row, col)` level-0 pixels per level pixel."""


def tissue_mask_from_thumbnail(thumbnail, threshold="otsu"):
    """Tissue pixels of a slide thumbnail.

    RGB: HSV saturation above the threshold (glass is nearly white, stain is
    coloured). One channel: darker than the threshold (intensity in [0, 1]).

    Args:
        thumbnail: `(h, w, 3)` RGB or `(h, w)` / `(h, w, 1)` grey array (uint8 or float in [0, 1]).
        threshold: `"otsu"` (default: Otsu's threshold of the saturation /
            intensity histogram) or a float in [0, 1] (0.07 = the
            saturation rule of `keras_medseg.data.slides.tissue_mask`).

    Returns:
        `(h, w)` bool array.

    Raises:
        ValueError: a thumbnail of another shape or a bad threshold.

    Reference: Otsu 1979; checked against `skimage.filters.threshold_otsu`.
    """
    from skimage.filters import threshold_otsu

    t = np.asarray(thumbnail)
    if t.ndim == 3 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.ndim == 3 and t.shape[-1] == 4:
        t = t[..., :3]
    if t.ndim not in (2, 3) or (t.ndim == 3 and t.shape[-1] != 3) or t.size == 0:
        raise ValueError(f"`thumbnail` must be (h, w) grey or (h, w, 3) RGB. Received: thumbnail.shape={t.shape}")
    scale = 255.0 if np.issubdtype(t.dtype, np.integer) else 1.0
    if t.ndim == 3:
        # HSV saturation (max - min) / max as `skimage.color.rgb2hsv` computes it (to the bit), without the hue
        v = t.max(-1).astype(np.float64) / scale
        delta = v - t.min(-1).astype(np.float64) / scale
        with np.errstate(invalid="ignore", divide="ignore"):
            value = delta / v
        value[delta == 0.0] = 0.0
    else:
        value = 1.0 - t.astype(np.float64) / scale  # darkness
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ValueError(f"`threshold` must be 'otsu' or a float in [0, 1]. Received: threshold={threshold!r}")
        if np.ptp(value) == 0:
            return np.zeros(value.shape, bool)
        threshold = threshold_otsu(value)
    else:
        threshold = float(threshold)
        if not 0 <= threshold <= 1:
            raise ValueError(f"`threshold` must be 'otsu' or a float in [0, 1]. Received: threshold={threshold}")
    return value > threshold


def _check_sizes(slide, level, size, inner_size, stride):
    level = slide.check_level(level)
    for name, v in (("size", size), ("inner_size", inner_size), ("stride", stride)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={v!r}")
    size = int(size)
    inner_size = size // 2 if inner_size is None else int(inner_size)
    if inner_size > size:
        raise ValueError(f"`inner_size` must be <= size={size}. Received: inner_size={inner_size}")
    stride = inner_size if stride is None else int(stride)
    H, W = slide.level_dimensions[level]
    if size > H or size > W:
        raise ValueError(
            f"Patch size {size} is larger than level {level} ({H}x{W}) of slide {slide.path!r}. "
            f"Received: size={size}, level={level}"
        )
    return level, size, inner_size, stride


def patch_grid(slide, level=0, size=512, inner_size=None, stride=None, annotations=None, min_tissue=0.1,
               tissue_threshold="otsu", thumbnail_size=1024):
    """Select and label the patch grid of one slide level from a thumbnail (no full-resolution reads).

    The grid has origins `range(0, H - size + 1, stride)` x `range(0, W -
    size + 1, stride)` on the level (whole patches only). A patch is kept
    when the tissue fraction of its footprint on the thumbnail is `>=
    min_tissue` or when it is positive.

    Args:
        slide: a `Slide` or a path.
        level: int pyramid level, default 0.
        size: patch side in pixels of the level, default 512.
        inner_size: inner square side, default `size // 2`.
        stride: grid step, default `inner_size` (inner squares tile the level).
        annotations: `Annotations`, a path (XML / GeoJSON) or `None` (a normal slide).
        min_tissue: float in [0, 1], default 0.1; `None` keeps every patch
            (no tissue detection).
        tissue_threshold: `"otsu"` (default) or a float, see `tissue_mask_from_thumbnail`.
        thumbnail_size: long side of the thumbnail used for tissue detection, default 1024.

    Returns:
        `PatchGrid`.

    Raises:
        ValueError: a level that does not exist, a patch larger than the
            level, annotations outside the slide (naming the files).

    Example:

    >>> grid = keras_medseg.data.slides.streaming.patch_grid("slide.tif", level=1, size=256, annotations="a.xml")
    >>> grid.coords.shape, (grid.tumor_ids >= 0).sum()
    """
    own = not isinstance(slide, Slide)
    slide = open_slide(slide) if own else slide
    try:
        level, size, inner_size, stride = _check_sizes(slide, level, size, inner_size, stride)
        if annotations is not None and not isinstance(annotations, Annotations):
            annotations = read_annotations(annotations)
        if annotations is not None:
            annotations.check_inside(slide.level_dimensions[0], slide.path)
        H, W = slide.level_dimensions[level]
        h0, w0 = slide.level_dimensions[0]
        down = (h0 / H, w0 / W)
        rows = np.arange(0, H - size + 1, stride)
        cols = np.arange(0, W - size + 1, stride)
        ii, jj = np.meshgrid(np.arange(rows.size), np.arange(cols.size), indexing="ij")
        ii, jj = ii.reshape(-1), jj.reshape(-1)
        coords = np.stack([rows[ii], cols[jj]], 1).astype(np.int64)
        if min_tissue is None:
            tissue = np.ones(coords.shape[0])
        else:
            min_tissue = float(min_tissue)
            if not 0 <= min_tissue <= 1:
                raise ValueError(f"`min_tissue` is a fraction in [0, 1] or None. Received: min_tissue={min_tissue}")
            thumb, tdown = slide.thumbnail(thumbnail_size)
            mask = tissue_mask_from_thumbnail(thumb, tissue_threshold)
            tissue = _box_fractions(mask, coords, size, down, tdown)
        tumor = np.full(coords.shape[0], -1, np.int64)
        if annotations is not None and len(annotations):
            off = (size - inner_size) // 2
            # inner squares (level-0 px) that can touch a tumour polygon at all: per polygon (the box of them all
            # holds thousands of tissue patches between two tumours far apart)
            r0 = (coords[:, 0] + off) * down[0]
            c0 = (coords[:, 1] + off) * down[1]
            near = np.zeros(coords.shape[0], bool)
            for b in annotations.tumor_boxes():
                near |= ((r0 <= b[2] + down[0]) & (r0 + inner_size * down[0] >= b[0] - down[0])
                         & (c0 <= b[3] + down[1]) & (c0 + inner_size * down[1] >= b[1] - down[1]))
            for k in np.flatnonzero(near).tolist():
                tumor[k] = annotations.inner_square_tumor(down, coords[k], size, inner_size)
        if min_tissue is None:
            keep = np.ones(tumor.shape, bool)
        elif min_tissue == 0:  # any tissue at all
            keep = (tumor >= 0) | (tissue > 0)
        else:
            keep = (tumor >= 0) | (tissue >= min_tissue)
        return PatchGrid(coords[keep], np.stack([ii, jj], 1)[keep], (rows.size, cols.size), tumor[keep],
                         tissue[keep], level, down, size, inner_size, stride)
    finally:
        if own:
            slide.close()


def _box_fractions(mask, coords, size, down, tdown):
    """Fraction of True thumbnail pixels under every patch footprint (integral image)."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask, 0), 1)
    # footprint in level-0 px, then thumbnail px whose centres lie inside (at least one pixel)
    def span(start, n, d, td, limit):
        a = start * d / td
        b = (start + size) * d / td
        lo = np.clip(np.floor(a + 0.5).astype(np.int64), 0, limit - 1)
        hi = np.clip(np.floor(b + 0.5).astype(np.int64), lo + 1, limit)
        return lo, hi

    r0, r1 = span(coords[:, 0], size, down[0], tdown[0], mask.shape[0])
    c0, c1 = span(coords[:, 1], size, down[1], tdown[1], mask.shape[1])
    total = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return total / ((r1 - r0) * (c1 - c0))


# --------------------------------------------------------------------------- extraction

_WORKER = {}


def _worker_init(path, cache_bytes):
    _WORKER["slide"] = open_slide(path, cache_bytes=cache_bytes)


def _read_chunk(level, size, coords, deflate_level=None):
    """Patches at `coords`; with `deflate_level`, their deflate streams instead (compression off the writer)."""
    slide = _WORKER["slide"]
    out = np.empty((len(coords), size, size, slide.channels), slide.dtype)
    for k, (r, c) in enumerate(coords):
        out[k] = slide.read_region(level, (int(r), int(c)), (size, size))
    if deflate_level is None:
        return out
    return [compress_patch(p, slide.dtype, deflate_level) for p in out]


def _manifest_path(store_path):
    return os.fspath(store_path) + ".slides.json"


def _load_manifest(store_path):
    path = _manifest_path(store_path)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"Cannot read the extraction manifest {path!r}: {exc}") from None


def _save_manifest(store_path, manifest):
    path = _manifest_path(store_path)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def extract_slide(slide, store, annotations=None, level=0, size=512, inner_size=None, stride=None, slide_id=None,
                  min_tissue=0.1, tissue_threshold="otsu", workers=1, chunk_size=32, compression="gzip",
                  progress=True, cache_bytes=128 << 20, thumbnail_size=1024, callback=None, mpp=None):
    """Stream the patches of one slide into an HDF5 `PatchStore`, resumably.

    Selects the grid with `patch_grid`, then reads the kept patches in
    chunks of `chunk_size` (in `workers` processes when > 1; each opens the
    slide itself) and appends every chunk as one atomic commit. The store's
    `coords` are `(row, col)` in pixels of `level`.

    Resuming: the grid positions of `slide_id` already committed in the
    store are skipped, so rerunning after an interruption completes the
    slide without duplicates (a store left by a killed writer is repaired by
    `PatchStore` first). The grid parameters are recorded per slide in
    `<store>.slides.json`; rerunning with different ones raises.

    Args:
        slide: path of the slide (pyramidal TIFF, SVS, ... or a small PNG).
        store: path of the `.h5` store (created when missing, else appended to).
        annotations: XML / GeoJSON path, `Annotations`, or `None` (normal slide).
        level, size, inner_size, stride, min_tissue, tissue_threshold, thumbnail_size: see `patch_grid`.
        slide_id: name stored with every patch, default the file name without extension.
        workers: int, reader processes, default 1 (read in this process).
        chunk_size: patches per commit, default 32.
        compression: `"gzip"` (default), `"lzf"` or `None`, for a new store.
        progress: show a tqdm bar (patches/s, ETA), default True.
        cache_bytes: tile cache per reader, default 128 MB.
        callback: optional `callback(done, total)` after every commit.
        mpp: optional target microns per pixel: cut at the level nearest to it
            (`keras_medseg.data.slides.slide.level_for_mpp`) instead of `level`.

    Returns:
        dict: `slide_id`, `total` (patches on the kept grid), `added` (this
        run), `skipped` (already in the store), `positive`, `level`,
        `downsample`, `mpp` (microns per pixel of the level, None when unknown), `cpu_s` (this thread's CPU s
        per stage: `grid`, `read` (with `workers` > 1: the wait), `append`).

    Raises:
        ValueError: bad slide / annotation files, level or sizes (naming the
            file), an `mpp` on a slide without a resolution, a store with another patch size, or different grid
            parameters for a slide already in the store.
        RuntimeError: another process writes the store.

    Example:

    >>> keras_medseg.data.slides.streaming.extract_slide(
    ...     "tumor_001.tif", "patches.h5", annotations="tumor_001.xml", level=0, size=512, inner_size=128,
    ...     workers=2)

    Reference: the lecture "Convolutional networks - theory" (patches of 512 px, inner-square rule).
    """
    slide_path = os.fspath(slide)
    if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"`workers` must be a positive integer. Received: workers={workers!r}")
    if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer. Received: chunk_size={chunk_size!r}")
    ann_path = None if annotations is None or isinstance(annotations, Annotations) else os.fspath(annotations)
    cpu = {"grid": time.thread_time(), "read": 0.0, "append": 0.0}  # CPU seconds per stage, this thread
    with open_slide(slide_path, cache_bytes=cache_bytes) as sl:
        if mpp is not None:
            level, _ = level_for_mpp(sl, mpp)
        grid = patch_grid(sl, level, size, inner_size, stride, annotations, min_tissue, tissue_threshold,
                          thumbnail_size)
        channels, dtype = sl.channels, sl.dtype
        level_mpp = None if sl.mpp is None else tuple(float(v) for v in sl.level_mpp(grid.level))
    cpu["grid"] = time.thread_time() - cpu["grid"]
    slide_id = slide_id or os.path.splitext(os.path.basename(slide_path))[0]
    params = {"slide": os.path.abspath(slide_path), "annotations": ann_path and os.path.abspath(ann_path),
              "level": grid.level, "size": grid.size, "inner_size": grid.inner_size, "stride": grid.stride,
              "min_tissue": min_tissue, "tissue_threshold": tissue_threshold, "thumbnail_size": thumbnail_size,
              "total": int(grid.coords.shape[0])}
    compare = ("level", "size", "inner_size", "stride", "min_tissue", "tissue_threshold", "thumbnail_size")
    with PatchStore(store, "a", patch_size=grid.size, channels=channels, dtype=str(dtype),
                    compression=compression) as ps:
        if ps.channels != channels:
            raise ValueError(f"Patch store {ps.path!r} holds {ps.channels}-channel patches; slide {slide_path!r} "
                             f"has {channels} channels.")
        manifest = _load_manifest(ps.path)
        names = list(ps.slide_names)
        done = np.zeros((0, 2), np.int64)
        if slide_id in names:
            old = manifest.get(slide_id)
            if old is None:
                raise ValueError(f"Slide {slide_id!r} is already in patch store {ps.path!r} without a record of its "
                                 f"grid in {_manifest_path(ps.path)!r}; use another slide_id.")
            diff = {k: (old.get(k), params[k]) for k in compare if old.get(k) != params[k]}
            if diff:
                raise ValueError(f"Slide {slide_id!r} is in patch store {ps.path!r} with other grid parameters "
                                 f"(stored, requested): {diff}")
            sel = ps.slide_index == names.index(slide_id)
            done = ps.coords[sel].astype(np.int64)
        manifest[slide_id] = params
        _save_manifest(ps.path, manifest)
        key = grid.coords[:, 0] * (1 << 32) + grid.coords[:, 1]
        todo = np.flatnonzero(~np.isin(key, done[:, 0] * (1 << 32) + done[:, 1]))
        result = {"slide_id": slide_id, "total": int(grid.coords.shape[0]), "skipped": int(grid.coords.shape[0]
                                                                                           - todo.size),
                  "added": 0, "positive": int((grid.tumor_ids >= 0).sum()), "level": grid.level,
                  "downsample": tuple(grid.downsample), "mpp": level_mpp, "cpu_s": cpu}
        chunks = [todo[i:i + chunk_size] for i in range(0, todo.size, chunk_size)]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=result["total"], initial=result["skipped"], unit="patch", desc=f"extract {slide_id}",
                       smoothing=0.1)
        labels = (grid.tumor_ids >= 0).astype(np.uint8)
        tumors = grid.tumor_ids.astype(np.int32)

        # gzip stores: the readers also deflate the patches, the writer only writes bytes
        deflate = (ps._file["patches"].compression_opts or 4) if ps.accepts_compressed() else None

        def commit(idx, patches):
            t0 = time.thread_time()
            if deflate is None:
                ps.append(patches, labels[idx], slide_id, tumors[idx], grid.coords[idx])
            else:
                ps.append(None, labels[idx], slide_id, tumors[idx], grid.coords[idx], compressed=patches)
            cpu["append"] += time.thread_time() - t0
            result["added"] += idx.size
            if bar is not None:
                bar.update(idx.size)
            if callback is not None:
                callback(result["skipped"] + result["added"], result["total"])

        try:
            if workers == 1:
                _worker_init(slide_path, cache_bytes)
                try:
                    for idx in chunks:
                        t0 = time.thread_time()
                        patches = _read_chunk(grid.level, grid.size, grid.coords[idx].tolist(), deflate)
                        cpu["read"] += time.thread_time() - t0
                        commit(idx, patches)
                finally:
                    _WORKER.pop("slide").close()
            else:
                ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                                  else "spawn")
                with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                                            initargs=(slide_path, cache_bytes)) as pool:
                    pending = collections.deque()
                    it = iter(chunks)
                    for idx in it:  # keep at most 2 chunks per worker in flight: bounded memory
                        pending.append((idx, pool.submit(_read_chunk, grid.level, grid.size,
                                                         grid.coords[idx].tolist(), deflate)))
                        if len(pending) >= 2 * workers:
                            i, fut = pending.popleft()
                            commit(i, fut.result())
                    while pending:
                        i, fut = pending.popleft()
                        commit(i, fut.result())
        finally:
            if bar is not None:
                bar.close()
    return result


def merge_stores(sources, out, compression="gzip", chunk_size=256, progress=True):
    """Concatenate patch stores into one (e.g. one store per slide -> one per dataset).

    Slides keep their names; the same slide name in two sources is an error
    (it would merge two slides' patches). Patches are copied in chunks, so
    memory stays bounded. The sources' extraction records
    (`<store>.slides.json`) are merged too.

    Args:
        sources: list of `.h5` store paths.
        out: the merged store (created; must not be one of the sources).
        compression: of the new store, default `"gzip"`.
        chunk_size: patches copied per commit, default 256.
        progress: tqdm bar, default True.

    Returns:
        The number of patches in the merged store.

    Raises:
        ValueError: no sources, different patch sizes / channels / dtypes,
            a slide name in two sources, `out` among the sources or already
            existing (it is never overwritten).
    """
    sources = [os.fspath(s) for s in sources]
    if not sources:
        raise ValueError("`sources` is empty: nothing to merge. Received: sources=[]")
    out = os.fspath(out)
    if os.path.abspath(out) in {os.path.abspath(s) for s in sources}:
        raise ValueError(f"`out` must not be one of the sources. Received: out={out!r}")
    if os.path.exists(out):  # "w" would truncate it: never overwrite a store (or any file) silently
        raise ValueError(f"`out` already exists; merge into a new file (or delete it first). Received: out={out!r}")
    with contextlib.ExitStack() as stack:
        stores = [stack.enter_context(PatchStore(s)) for s in sources]
        first = stores[0]
        seen = {}
        for s in stores:
            if (s.patch_size, s.channels, s.dtype) != (first.patch_size, first.channels, first.dtype):
                raise ValueError(
                    f"Patch store {s.path!r} holds {s.patch_size}x{s.patch_size}x{s.channels} {s.dtype} patches, "
                    f"{first.path!r} holds {first.patch_size}x{first.patch_size}x{first.channels} {first.dtype}."
                )
            for name in s.slide_names:
                if name in seen:
                    raise ValueError(f"Slide {name!r} is in both {seen[name]!r} and {s.path!r}; rename one.")
                seen[name] = s.path
        total = sum(len(s) for s in stores)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="patch", desc="merge")
        manifest = {}
        with PatchStore(out, "w", patch_size=first.patch_size, channels=first.channels, dtype=str(first.dtype),
                        compression=compression) as dst:
            for s in stores:
                names, index = s.slide_names, s.slide_index
                labels, tumors, coords = s.labels, s.tumor_ids, s.coords
                for k, name in enumerate(names):
                    rows = np.flatnonzero(index == k)
                    for i in range(0, rows.size, chunk_size):
                        sel = rows[i:i + chunk_size]
                        dst.append(s.read(sel), labels[sel], name, tumors[sel], coords[sel])
                        if bar is not None:
                            bar.update(sel.size)
                manifest.update(_load_manifest(s.path))
            n = len(dst)
        if manifest:
            _save_manifest(out, manifest)
        if bar is not None:
            bar.close()
    return n
