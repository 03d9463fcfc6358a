"""`OpenSlideSlide`: vendor whole-slide formats read through OpenSlide (openslide-python + openslide-bin).

OpenSlide reads the formats tifffile does not (MIRAX `.mrxs`, Hamamatsu `.vms`/`.vmu`, Philips, Ventana,
Zeiss `.czi`, DICOM WSI) and the TIFF-based ones as well. Its `read_region` takes the top-left corner in
*level-0* coordinates `(x, y)` and a size `(w, h)` in pixels of the level, and returns RGBA; this class
serves the package's `Slide` interface instead: `origin (row, col)` and `size (height, width)` in pixels
of the level read, `(h, w, 3)` uint8 RGB. Transparent pixels (outside the scanned area, alpha < 255) are
composited over the slide's background colour (`openslide.background-color`, white by default), as
OpenSlide's own thumbnails are.

The native library comes from the `openslide-bin` wheel (no system package needed); both are in the
`slides` extra.

Reference: A. Goode, B. Gilbert, J. Harkes, D. Jukic, M. Satyanarayanan, "OpenSlide: A vendor-neutral
software foundation for digital pathology", J. Pathol. Inform. 2013; pixels checked against
`keras_medseg.data.slides.tiff_slide.TiffSlide` on pyramidal TIFFs both read (tests).
"""

import os

import numpy as np

from keras_medseg.data.slides.slide_base import Slide, slide_error


def _import_openslide(path):
    try:
        import openslide
    except ImportError as exc:  # the package or its native library is missing
        raise slide_error(path, f"this format needs OpenSlide: pip install 'keras-medseg[slides]' ({exc})") from None
    return openslide


class OpenSlideSlide(Slide):
    """A slide read through OpenSlide (use `keras_medseg.data.slides.slide.open_slide`).

    Args:
        path: the slide file (`.mrxs`, `.svs`, `.ndpi`, `.vms`, `.scn`, generic tiled TIFF, ...).

    Raises:
        ValueError: OpenSlide is not installed or cannot read the file (the message names the file).
    """

    channels = 3
    dtype = np.dtype("uint8")

    def __init__(self, path):
        self.path = os.fspath(path)
        openslide = _import_openslide(self.path)
        try:
            self._osr = openslide.OpenSlide(self.path)
        except Exception as exc:  # noqa: BLE001 - OpenSlideUnsupportedFormatError, OpenSlideError, OSError
            raise slide_error(self.path, f"OpenSlide cannot read it ({type(exc).__name__}: {exc})") from None
        osr = self._osr
        self.level_dimensions = tuple((int(h), int(w)) for w, h in osr.level_dimensions)
        props = osr.properties
        try:
            self.mpp = (float(props[openslide.PROPERTY_NAME_MPP_Y]), float(props[openslide.PROPERTY_NAME_MPP_X]))
        except (KeyError, ValueError):
            self.mpp = None
        bg = props.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff")
        try:
            self._background = np.asarray([int(bg[i:i + 2], 16) for i in (0, 2, 4)], np.float32)
        except ValueError:
            self._background = np.full(3, 255, np.float32)
        self._downsamples = tuple(float(d) for d in osr.level_downsamples)

    @property
    def vendor(self):
        """The format OpenSlide detected (e.g. `"aperio"`, `"mirax"`, `"generic-tiff"`)."""
        return self._osr.properties.get("openslide.vendor")

    def _read(self, level, r, c, h, w):
        d = self._downsamples[level]
        x0, y0 = int(round(c * d)), int(round(r * d))
        try:
            rgba = np.asarray(self._osr.read_region((x0, y0), level, (w, h)))
        except Exception as exc:  # noqa: BLE001 - OpenSlideError on a corrupt tile
            raise slide_error(self.path, f"OpenSlide cannot read level {level} at ({r}, {c}): {exc}") from None
        rgb, alpha = rgba[..., :3], rgba[..., 3:]
        if (alpha == 255).all():
            return np.ascontiguousarray(rgb)
        a = alpha.astype(np.float32) / 255.0  # openslide-python returns un-premultiplied RGBA
        return np.round(rgb * a + self._background * (1.0 - a)).astype(np.uint8)

    def close(self):
        osr, self._osr = getattr(self, "_osr", None), None
        if osr is not None:
            osr.close()

    def __getstate__(self):  # reopened by path in another process
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])
