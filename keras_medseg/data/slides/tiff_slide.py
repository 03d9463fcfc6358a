"""`TiffSlide`: (pyramidal) TIFF, SVS, NDPI, OME-TIFF read tile by tile with tifffile.

Only the tiles (or strips) that overlap a region are read from disk, through
an ordinary file object (seek + read under a lock; no POSIX-only calls, so
Windows works), decoded by the page's own decoder and kept in a small
byte-bounded LRU cache, so memory does not grow with the slide (zarr, which
tifffile's `aszarr` needs, is not required). zlib/deflate, packbits and
uncompressed tiles decode out of the box; JPEG / JPEG 2000 compressed slides
(most SVS files) need the `imagecodecs` package (the `slides` extra), and the
error says so.

Reference: tifffile (C. Gohlke); Aperio and OME-TIFF pyramid layouts as documented by tifffile.
"""

import collections
import contextlib
import os
import threading

import numpy as np

from keras_medseg.data.slides.slide_base import Slide, slide_error

# Images without tiles/strips bigger than this are refused instead of read whole.
_MAX_IN_MEMORY_PIXELS = 1 << 28


class _Level:
    """One pyramid level of a TIFF: a page whose tiles or strips are read on demand."""

    def __init__(self, page, path):
        self.page = page
        shape = page.shape
        if page.imagedepth > 1:
            raise slide_error(path, f"3D TIFF pages (imagedepth={page.imagedepth}) are not slides")
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
            raise slide_error(self.path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from None
        if not series:
            raise slide_error(self.path, "the TIFF holds no image")
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
        self._fh = open(self.path, "rb", buffering=0)  # seek + read under a lock: portable (no os.pread)
        self._fsize = os.fstat(self._fh.fileno()).st_size
        self._io_lock = threading.Lock()
        self._cache = collections.OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(cache_bytes)
        self._lock = threading.Lock()
        self._whole = {}
        for k, lv in enumerate(levels):
            if not lv.contig and lv.height * lv.width > _MAX_IN_MEMORY_PIXELS:
                raise slide_error(self.path, f"level {k} stores colour planes separately and is too large to read")
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
            raise slide_error(self.path, f"tile {index} of level {level} lies beyond the end of the file (truncated?)")
        data = None
        if count:
            with self._io_lock:
                self._fh.seek(offset)
                data = self._fh.read(count)
        try:
            seg, _, _ = lv.page.decode(data, index, jpegtables=lv.page.jpegtables,
                                        jpegheader=getattr(lv.page, "jpegheader", None))
        except Exception as exc:  # noqa: BLE001 - codecs raise many types; all become one message
            hint = ""
            if "imagecodecs" in str(exc) or "requires" in str(exc):
                hint = " (install the `imagecodecs` package for JPEG / JPEG 2000 compressed slides)"
            raise slide_error(self.path, f"cannot decode tile {index} of level {level}: {exc}{hint}") from None
        if seg is None:
            raise slide_error(self.path, f"tile {index} of level {level} is missing")
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
        fh, self._fh = getattr(self, "_fh", None), None
        if fh is not None:
            fh.close()
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

