"""Whole-slide images read tile by tile: `open_slide` picks the reader for a file; `level_for_mpp`.

`open_slide(path)` returns a `Slide` (`keras_medseg.data.slides.slide_base`)
with `level_count`, `level_dimensions` (`(height, width)` per level),
`level_downsamples`, `mpp` (microns per pixel at level 0),
`read_region(level, origin, size)` and `thumbnail(max_size)`. Everything is
in NumPy order: `origin = (row, col)` and `size = (height, width)` in pixels
*of the level read*, arrays come back `(h, w, C)`.

Readers, chosen by format (`backend="auto"`):

* `tifffile` (`TiffSlide`) for the TIFF family: generic pyramidal TIFF,
  Aperio SVS, Hamamatsu NDPI, OME-TIFF, Leica SCN, Ventana BIF... It is
  pure Python on NumPy, a core dependency, and reads any sample type (grey,
  16-bit, multichannel). JPEG / JPEG 2000 tiles (most SVS files) need
  `imagecodecs`, in the `slides` extra.
* OpenSlide (`OpenSlideSlide`, openslide-python with the `openslide-bin`
  wheel) for the vendor formats tifffile does not read: MIRAX `.mrxs`,
  Hamamatsu `.vms`/`.vmu`, Philips `.svslide`, Zeiss `.czi`, and as the
  fallback when tifffile refuses a TIFF that OpenSlide recognises.
* Pillow (`ArraySlide`) for small PNG / JPEG / BMP images, read whole.

A file none of them reads gets one line naming it and the readers tried.

`level_for_mpp(slide, 0.5)` picks the pyramid level whose resolution is
nearest to a target in microns per pixel (nearest in scale: the smallest
`|log(level_mpp / mpp)|`), so that `--mpp 0.5` means "20x" on any scanner.

Reference: the lecture "Convolutional networks - theory" (cancer detection in
whole-slide images: "WSI too large, 105,185 px x 221,772 px"); tifffile
(C. Gohlke); A. Goode et al., "OpenSlide: A vendor-neutral software
foundation for digital pathology", J. Pathol. Inform. 2013.
"""

import math
import os

import numpy as np

from keras_medseg.data.slides.openslide_slide import OpenSlideSlide, _import_openslide
from keras_medseg.data.slides.slide_base import ArraySlide, Slide, slide_error
from keras_medseg.data.slides.tiff_slide import TiffSlide

#: TIFF-family whole-slide files (read with tifffile).
TIFF_EXTENSIONS = (".tif", ".tiff", ".svs", ".ndpi", ".btf", ".tf2", ".tf8", ".scn", ".bif", ".qptiff")
#: Vendor formats only OpenSlide reads.
OPENSLIDE_EXTENSIONS = (".mrxs", ".vms", ".vmu", ".svslide", ".czi")
#: Whole-slide file types; a folder of them is a cohort.
SLIDE_EXTENSIONS = TIFF_EXTENSIONS + OPENSLIDE_EXTENSIONS
#: Values of `open_slide(..., backend=)`.
BACKENDS = ("auto", "tifffile", "openslide")


def _openslide_format(path):
    """The vendor OpenSlide detects for `path`, or None (also when OpenSlide is not installed)."""
    try:
        openslide = _import_openslide(path)
        return openslide.OpenSlide.detect_format(path)
    except Exception:  # noqa: BLE001 - not installed, unreadable file: OpenSlide cannot help
        return None


def _pillow_slide(path):
    from PIL import Image

    with Image.open(path) as img:
        image = np.asarray(img.convert("RGB") if img.mode in ("P", "CMYK", "YCbCr", "LA", "PA") else img)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim not in (2, 3) or image.size == 0:
        raise slide_error(path, f"not a 2D image (shape {image.shape})")
    return ArraySlide(image, path)


def open_slide(path, cache_bytes=128 << 20, backend="auto"):
    """Open a whole-slide image (pyramidal TIFF, SVS, NDPI, MRXS, ...) or a small image as a `Slide`.

    Args:
        path: the file.
        cache_bytes: int, decoded-tile cache budget of a TIFF slide, default 128 MB.
        backend: `"auto"` (default: chosen by format, see the module docstring),
            `"tifffile"` or `"openslide"`.

    Returns:
        A `Slide` (`TiffSlide`, `OpenSlideSlide` or `ArraySlide`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a format no reader reads, a corrupt or truncated file, a
            TIFF compression without its codec, a bad `backend` (one line
            naming the file).

    Example:

    >>> slide = keras_medseg.data.slides.slide.open_slide("slide.tif")
    >>> slide.level_dimensions, slide.level_downsamples
    >>> patch = slide.read_region(level=1, origin=(1024, 2048), size=(512, 512))
    >>> thumb, downsample = slide.thumbnail(1024)

    Reference: tifffile (C. Gohlke); OpenSlide (Goode et al. 2013); region reads
    checked against `tifffile.imread(path, level=k)` and against each other in the tests.
    """
    path = os.fspath(path)
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}. Received: backend={backend!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Slide file not found: {path!r}")
    if backend == "tifffile":
        return TiffSlide(path, cache_bytes)
    if backend == "openslide":
        return OpenSlideSlide(path)
    lower = path.lower()
    if lower.endswith(OPENSLIDE_EXTENSIONS):
        return OpenSlideSlide(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] in (b"II", b"MM") or lower.endswith(TIFF_EXTENSIONS):
        try:
            return TiffSlide(path, cache_bytes)
        except ValueError as exc:
            if _openslide_format(path) is None:
                raise
            try:
                return OpenSlideSlide(path)
            except ValueError:
                raise exc from None
    try:
        return _pillow_slide(path)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types; all become one message
        if _openslide_format(path) is not None:
            return OpenSlideSlide(path)
        raise slide_error(path, f"unsupported or corrupt image: neither tifffile, OpenSlide nor Pillow reads "
                                f"it ({type(exc).__name__}: {exc})") from None


def level_for_mpp(slide, mpp):
    """The pyramid level whose resolution is nearest to `mpp` microns per pixel.

    Nearest in scale: the level with the smallest `|log(level_mpp / mpp)|`
    (the mean of its row and column mpp), so 0.5 picks a 0.49 um level over
    a 1.0 um one and a 1.0 um level over a 0.25 um one for `mpp=0.6`.

    Args:
        slide: a `Slide` (or a path, opened and closed here).
        mpp: float > 0, target microns per pixel (0.25 ~ 40x, 0.5 ~ 20x, 1.0 ~ 10x).

    Returns:
        `(level, level_mpp)`: int level and its `(row, col)` microns per pixel.

    Raises:
        ValueError: a non-positive `mpp`, or a slide that does not record its
            resolution (the message names the file).

    Example:

    >>> keras_medseg.data.slides.slide.level_for_mpp("slide.svs", 0.5)
    (1, (0.4986, 0.4986))
    """
    try:
        target = float(mpp)
    except (TypeError, ValueError):
        target = float("nan")
    if not math.isfinite(target) or target <= 0:
        raise ValueError(f"`mpp` must be a positive number of microns per pixel. Received: mpp={mpp!r}")
    own = not isinstance(slide, Slide)
    slide = open_slide(slide) if own else slide
    try:
        if slide.mpp is None:
            raise ValueError(f"Slide {slide.path!r} does not record its microns per pixel: choose a level instead "
                             f"(--level). Received: mpp={mpp!r}")
        costs = [abs(math.log(sum(slide.level_mpp(k)) / 2 / target)) for k in range(slide.level_count)]
        level = int(np.argmin(costs))
        return level, slide.level_mpp(level)
    finally:
        if own:
            slide.close()
