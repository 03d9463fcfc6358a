"""Whole-slide images read tile by tile: one small interface over pyramidal TIFFs and small images.

`open_slide(path)` returns a `Slide` with `level_count`, `level_dimensions`
(`(height, width)` per level), `level_downsamples`, `mpp` (microns per pixel
at level 0), `read_region(level, origin, size)` and `thumbnail(max_size)`.
Everything is in NumPy order: `origin = (row, col)` and `size = (height,
width)` in pixels *of the level read*, arrays come back `(h, w, C)`.

Reader: `tifffile`. It is already a dependency of the package, pure Python on
top of NumPy, maintained alongside the scientific Python stack, and it parses
every TIFF flavour slides come in (SVS, NDPI, OME-TIFF, generic tiled
pyramids written by tifffile, libvips or QuPath), including their pyramid
levels (SubIFDs or reduced-resolution pages) and the Aperio `MPP` metadata.
Only the tiles (or strips) that overlap a region are read from disk, with
`os.pread` on a private file descriptor, decoded by the page's own decoder and
kept in a small byte-bounded LRU cache, so memory does not grow with the slide
(zarr, which tifffile's `aszarr` needs, is not required). zlib/deflate,
packbits and uncompressed tiles decode out of the box; JPEG / JPEG 2000
compressed slides (most SVS files) need the `imagecodecs` package, and the
error says so. OpenSlide (`openslide-bin`) would add vendor formats such as
MRXS, but returns premultiplied RGBA in level-0 coordinates and needs a
native library; formats it alone reads can be converted to a pyramidal TIFF
(`vips tiffsave --tile --pyramid`) once.

PNG, JPEG and other small images are read whole (Pillow) and served
through the same interface as a one-level slide.

Reference: the lecture "Convolutional networks - theory" (cancer detection in
whole-slide images: "WSI too large, 105,185 px x 221,772 px"); Aperio and
OME-TIFF pyramid layouts as documented by tifffile (C. Gohlke).
"""

import collections
import contextlib
import math
import os
import threading

import numpy as np

# Images without tiles/strips bigger than this are refused instead of read whole.
_MAX_IN_MEMORY_PIXELS = 1 << 28
#: Whole-slide file types (pyramidal TIFF and the TIFF-based vendor formats); a folder of them is a cohort.
SLIDE_EXTENSIONS = (".tif", ".tiff", ".svs", ".ndpi", ".btf", ".tf2", ".tf8", ".scn", ".bif", ".qptiff")


def _slide_error(path, what):
    return ValueError(f"Cannot read slide {os.fspath(path)!r}: {what}")


class Slide:
    """A slide opened for region reads (use `open_slide`).

    Attributes:
        path: the file.
        level_count: number of pyramid levels (level 0 = full resolution).
        level_dimensions: tuple of `(height, width)` per level, in pixels.
        level_downsamples: tuple of floats, level-0 pixels per level pixel
            (mean of the row and column ratios, like OpenSlide).
        mpp: microns per pixel at level 0, `(row, col)`, or `None` when the
            file does not say.
        channels: samples per pixel (3 for RGB).
        dtype: pixel dtype.
    """

    path = None
    level_dimensions = ()
    channels = 1
    dtype = np.dtype("uint8")
    mpp = None

    @property
    def level_count(self):
        return len(self.level_dimensions)

    @property
    def level_downsamples(self):
        h0, w0 = self.level_dimensions[0]
        return tuple((h0 / h + w0 / w) / 2.0 for h, w in self.level_dimensions)

    def level_mpp(self, level):
        """Microns per pixel `(row, col)` at `level`, or `None` when unknown."""
        level = self.check_level(level)
        if self.mpp is None:
            return None
        h0, w0 = self.level_dimensions[0]
        h, w = self.level_dimensions[level]
        return (self.mpp[0] * h0 / h, self.mpp[1] * w0 / w)

    def check_level(self, level):
        """The level as an int; raises `ValueError` naming the file when it does not exist."""
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not (
            0 <= int(level) < self.level_count
        ):
            raise ValueError(
                f"Slide {self.path!r} has levels 0..{self.level_count - 1} "
                f"(dimensions {list(self.level_dimensions)}). Received: level={level!r}"
            )
        return int(level)

    def _check_region(self, level, origin, size):
        level = self.check_level(level)
        try:
            r, c = (int(v) for v in origin)
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(
                f"`origin` and `size` must be pairs of integers (row, col) / (height, width). "
                f"Received: origin={origin!r}, size={size!r}"
            ) from None
        H, W = self.level_dimensions[level]
        if h <= 0 or w <= 0:
            raise ValueError(f"`size` must be positive. Received: size={size!r}")
        if r < 0 or c < 0 or r + h > H or c + w > W:
            raise ValueError(
                f"Region origin={tuple(origin)}, size={tuple(size)} lies outside level {level} "
                f"({H}x{W}) of slide {self.path!r}."
            )
        return level, r, c, h, w

    def read_region(self, level, origin, size):
        """Pixels of a rectangle of one level.

        Args:
            level: int, pyramid level (0 = full resolution).
            origin: `(row, col)` of the top-left pixel, in pixels of `level`.
            size: `(height, width)` in pixels of `level`.

        Returns:
            `(height, width, channels)` array of the slide's dtype.

        Raises:
            ValueError: the level does not exist or the region leaves the
                level (the message names the slide file).
        """
        level, r, c, h, w = self._check_region(level, origin, size)
        return self._read(level, r, c, h, w)

    def read_level(self, level, factor=1, band=None):
        """A whole level, block-averaged by an integer `factor`, read in bands of rows.

        Memory stays at one band (`band` rows of the level, default enough for
        about 64 MB) plus the `(H // factor, W // factor, C)` result.

        Returns:
            float32 array `(H // factor, W // factor, channels)`.
        """
        level = self.check_level(level)
        factor = int(factor)
        if factor < 1:
            raise ValueError(f"`factor` must be a positive integer. Received: factor={factor}")
        H, W = self.level_dimensions[level]
        oh, ow = H // factor, W // factor
        if oh == 0 or ow == 0:
            raise ValueError(
                f"`factor`={factor} is larger than level {level} ({H}x{W}) of slide {self.path!r}."
            )
        if band is None:
            band = max(1, (64 << 20) // max(1, W * self.channels * self.dtype.itemsize * factor)) * factor
        band = max(factor, (int(band) // factor) * factor)
        out = np.empty((oh, ow, self.channels), np.float32)
        for r0 in range(0, oh * factor, band):
            rows = min(band, oh * factor - r0)
            block = self._read(level, r0, 0, rows, ow * factor).astype(np.float32)
            out[r0 // factor:(r0 + rows) // factor] = block.reshape(
                rows // factor, factor, ow, factor, self.channels).mean(axis=(1, 3))
        return out

    def thumbnail(self, max_size=1024):
        """A small picture of the whole slide and its downsample from level 0.

        Reads the smallest level that is still at least `max_size` pixels on
        its long side (the lowest level when none is) and block-averages it by
        an integer factor so that the long side is at most `max_size`.

        Args:
            max_size: int, longest side of the thumbnail in pixels, default 1024.

        Returns:
            `(thumb, downsample)`: `(h, w, channels)` array of the slide dtype
            and `(row, col)` level-0 pixels per thumbnail pixel.
        """
        max_size = int(max_size)
        if max_size < 1:
            raise ValueError(f"`max_size` must be a positive integer. Received: max_size={max_size}")
        level = 0
        for k, (h, w) in enumerate(self.level_dimensions):
            if max(h, w) >= max_size:
                level = k
        h, w = self.level_dimensions[level]
        factor = max(1, math.ceil(max(h, w) / max_size))
        thumb = self.read_level(level, factor)
        if np.issubdtype(self.dtype, np.integer):
            thumb = np.round(thumb)
        thumb = thumb.astype(self.dtype)
        h0, w0 = self.level_dimensions[0]
        return thumb, (h0 / thumb.shape[0], w0 / thumb.shape[1])

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"<{type(self).__name__} {self.path!r} levels={self.level_count} "
                f"dimensions={list(self.level_dimensions)}>")


class ArraySlide(Slide):
    """A one-level slide held in memory (small PNG/JPEG/TIFF images, or an array).

    Args:
        image: `(H, W)` or `(H, W, C)` array.
        path: name used in messages, default `"<array>"`.
        mpp: optional microns per pixel `(row, col)` or a float.
    """

    def __init__(self, image, path="<array>", mpp=None):
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"Slide {path!r} must be an (H, W) or (H, W, C) image. Received: shape={image.shape}")
        self.path = os.fspath(path)
        self.image = image
        self.level_dimensions = ((image.shape[0], image.shape[1]),)
        self.channels = image.shape[2]
        self.dtype = image.dtype
        self.mpp = None if mpp is None else (tuple(float(v) for v in mpp) if np.ndim(mpp) else (float(mpp),) * 2)

    def _read(self, level, r, c, h, w):
        return self.image[r:r + h, c:c + w].copy()


class _Level:
    """One pyramid level of a TIFF: a page whose tiles or strips are read on demand."""

    def __init__(self, page, path):
        self.page = page
        shape = page.shape
        if page.imagedepth > 1:
            raise _slide_error(path, f"3D TIFF pages (imagedepth={page.imagedepth}) are not slides")
        self.height, self.width = int(page.imagelength), int(page.imagewidth)
        self.channels = int(page.samplesperpixel)
        self.contig = self.channels == 1 or page.planarconfig == 1
        if page.is_tiled:
            self.seg_h, self.seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self.seg_h, self.seg_w = int(min(page.rowsperstrip, self.height)), self.width
        self.n_cols = -(-self.width // self.seg_w)
        self.n_rows = -(-self.height // self.seg_h)
        self.offsets = page.dataoffsets
        self.counts = page.databytecounts
        self.shape = shape


class TiffSlide(Slide):
    """A (pyramidal) TIFF read tile by tile with tifffile (use `open_slide`).

    Args:
        path: the TIFF / SVS / NDPI / OME-TIFF file.
        cache_bytes: int, budget of the decoded-tile LRU cache, default 128 MB.
    """

    def __init__(self, path, cache_bytes=128 << 20):
        import tifffile

        self.path = os.fspath(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series
        except Exception as exc:  # noqa: BLE001 - not a TIFF, truncated header, ...
            raise _slide_error(self.path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from None
        if not series:
            raise _slide_error(self.path, "the TIFF holds no image")
        base = series[0]
        pages = [lvl.keyframe for lvl in base.levels]
        if len(pages) == 1:
            pages = self._reduced_pages(pages[0])
        levels = []
        for page in pages:
            if page.samplesperpixel != pages[0].samplesperpixel or page.dtype != pages[0].dtype:
                break
            levels.append(_Level(page, self.path))
        levels.sort(key=lambda lv: -lv.height * lv.width)
        self._levels = levels
        self.level_dimensions = tuple((lv.height, lv.width) for lv in levels)
        self.channels = levels[0].channels
        self.dtype = np.dtype(pages[0].dtype)
        self.mpp = self._read_mpp(pages[0])
        self._fd = os.open(self.path, os.O_RDONLY)
        self._fsize = os.fstat(self._fd).st_size
        self._cache = collections.OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(cache_bytes)
        self._lock = threading.Lock()
        self._whole = {}
        for k, lv in enumerate(levels):
            if not lv.contig and lv.height * lv.width > _MAX_IN_MEMORY_PIXELS:
                raise _slide_error(self.path, f"level {k} stores colour planes separately and is too large to read")
        # decode one tile of the smallest level now, so that a missing codec or a
        # corrupt file is reported at open time, naming the file
        self._read(len(levels) - 1, 0, 0, 1, 1)

    def _reduced_pages(self, first):
        """Generic pyramids stored as successive pages (reduced-resolution subfiles)."""
        pages = [first]
        for page in self._tif.pages[1:]:
            page = page.keyframe if hasattr(page, "keyframe") else page
            if getattr(page, "is_reduced", False) and page.shape[-1:] == first.shape[-1:] and page.ndim == first.ndim:
                pages.append(page)
        return pages

    @staticmethod
    def _read_mpp(page):
        desc = page.description or ""
        if "Aperio" in desc and "MPP" in desc:
            for part in desc.split("|"):
                key, _, value = part.partition("=")
                if key.strip() == "MPP":
                    try:
                        v = float(value)
                        return (v, v)
                    except ValueError:
                        break
        tags = page.tags
        unit = tags.get("ResolutionUnit")
        x, y = tags.get("XResolution"), tags.get("YResolution")
        if unit is None or x is None or y is None:
            return None
        per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
        if per_unit is None:
            return None
        try:
            xr = x.value[0] / x.value[1]
            yr = y.value[0] / y.value[1]
        except (TypeError, ZeroDivisionError, IndexError):
            return None
        if xr <= 0 or yr <= 0:
            return None
        return (per_unit / yr, per_unit / xr)

    def _segment(self, level, index):
        key = (level, index)
        with self._lock:
            seg = self._cache.get(key)
            if seg is not None:
                self._cache.move_to_end(key)
                return seg
        lv = self._levels[level]
        offset, count = int(lv.offsets[index]), int(lv.counts[index])
        if offset + count > self._fsize:
            raise _slide_error(self.path, f"tile {index} of level {level} lies beyond the end of the file (truncated?)")
        data = os.pread(self._fd, count, offset) if count else None
        try:
            seg, _, _ = lv.page.decode(data, index, jpegtables=lv.page.jpegtables,
                                        jpegheader=getattr(lv.page, "jpegheader", None))
        except Exception as exc:  # noqa: BLE001 - codecs raise many types; all become one message
            hint = ""
            if "imagecodecs" in str(exc) or "requires" in str(exc):
                hint = " (install the `imagecodecs` package for JPEG / JPEG 2000 compressed slides)"
            raise _slide_error(self.path, f"cannot decode tile {index} of level {level}: {exc}{hint}") from None
        if seg is None:
            raise _slide_error(self.path, f"tile {index} of level {level} is missing")
        seg = np.asarray(seg).reshape(seg.shape[-3:])
        with self._lock:
            self._cache[key] = seg
            self._cache_bytes += seg.nbytes
            while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes
        return seg

    def _read(self, level, r, c, h, w):
        lv = self._levels[level]
        if not lv.contig:
            if level not in self._whole:
                self._whole[level] = np.asarray(lv.page.asarray()).reshape(lv.height, lv.width, -1)
            return self._whole[level][r:r + h, c:c + w].copy()
        out = np.empty((h, w, lv.channels), self.dtype)
        for ty in range(r // lv.seg_h, (r + h - 1) // lv.seg_h + 1):
            for tx in range(c // lv.seg_w, (c + w - 1) // lv.seg_w + 1):
                seg = self._segment(level, ty * lv.n_cols + tx)
                y0, x0 = ty * lv.seg_h, tx * lv.seg_w
                ys, ye = max(r, y0), min(r + h, y0 + seg.shape[0])
                xs, xe = max(c, x0), min(c + w, x0 + seg.shape[1])
                out[ys - r:ye - r, xs - c:xe - c] = seg[ys - y0:ye - y0, xs - x0:xe - x0]
        return out

    def close(self):
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
            self._tif = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def __getstate__(self):  # reopened by path in another process
        return {"path": self.path, "cache_bytes": self._cache_limit}

    def __setstate__(self, state):
        self.__init__(state["path"], state["cache_bytes"])


def open_slide(path, cache_bytes=128 << 20):
    """Open a whole-slide image (pyramidal TIFF/SVS/NDPI/OME-TIFF) or a small image as a `Slide`.

    Args:
        path: the file. TIFF-family files are read tile by tile; other
            formats (PNG, JPEG, BMP) are read whole with Pillow.
        cache_bytes: int, decoded-tile cache budget of a TIFF slide, default 128 MB.

    Returns:
        A `Slide` (`TiffSlide` or `ArraySlide`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unsupported, corrupt or truncated file, or a TIFF
            compression without its codec (the message names the file).

    Example:

    >>> slide = keras_medseg.data.slides.slide.open_slide("slide.tif")
    >>> slide.level_dimensions, slide.level_downsamples
    >>> patch = slide.read_region(level=1, origin=(1024, 2048), size=(512, 512))
    >>> thumb, downsample = slide.thumbnail(1024)

    Reference: tifffile (C. Gohlke); region reads checked against
    `tifffile.imread(path, level=k)` of whole levels in the tests.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Slide file not found: {path!r}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] in (b"II", b"MM") or path.lower().endswith(SLIDE_EXTENSIONS):
        return TiffSlide(path, cache_bytes)
    try:
        from PIL import Image

        with Image.open(path) as img:
            image = np.asarray(img.convert("RGB") if img.mode in ("P", "CMYK", "YCbCr", "LA", "PA") else img)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types; all become one message
        raise _slide_error(path, f"unsupported or corrupt image ({type(exc).__name__}: {exc})") from None
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim not in (2, 3) or image.size == 0:
        raise _slide_error(path, f"not a 2D image (shape {image.shape})")
    return ArraySlide(image, path)
