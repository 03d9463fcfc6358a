"""The `Slide` interface (tiled pyramid reads in NumPy order) and `ArraySlide`, a one-level slide in memory.

Every reader (`tiff_slide.TiffSlide`, `openslide_slide.OpenSlideSlide`, `ArraySlide`) serves the same
interface; `keras_medseg.data.slides.slide.open_slide` picks the reader for a file.
"""

import math
import os

import numpy as np


def slide_error(path, what):
    """The one-line `ValueError` every reader raises for a file it cannot read (names the file)."""
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
        # integer pixels whose block sums stay below 2**24: sum them exactly in int32 (float32 sums them exactly
        # too, so the mean is the same to the bit) with factor**2 strided adds instead of a float32 copy and mean
        exact = np.issubdtype(self.dtype, np.integer) and factor * factor * int(np.iinfo(self.dtype).max) < 1 << 24
        for r0 in range(0, oh * factor, band):
            rows = min(band, oh * factor - r0)
            block = self._read(level, r0, 0, rows, ow * factor)
            dst = out[r0 // factor:(r0 + rows) // factor]
            if exact and factor > 1:
                blocks = block.reshape(rows // factor, factor, ow, factor, self.channels)
                acc = np.zeros(dst.shape, np.int32)
                for i in range(factor):
                    for j in range(factor):
                        acc += blocks[:, i, :, j]
                dst[...] = acc
                # as `ndarray.mean` divides: by the count as an `intp` (in float64), cast back to float32
                np.true_divide(dst, np.intp(factor * factor), out=dst, casting="unsafe")
            else:
                dst[...] = block.astype(np.float32).reshape(rows // factor, factor, ow, factor,
                                                            self.channels).mean(axis=(1, 3))
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

