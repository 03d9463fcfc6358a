"""Tiled slide reading (`keras_medseg.data.slides.slide`) against the pixels tifffile wrote."""

import numpy as np
import pytest
import tifffile

from keras_medseg.data.slides.slide import open_slide
from keras_medseg.data.slides.slide_base import ArraySlide
from keras_medseg.data.slides.tiff_slide import TiffSlide


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_pyramid(path, image, levels=3, tile=32, compression="zlib", subifds=True, mpp=0.25):
    """A tiled, compressed pyramid: level k = image[::2**k, ::2**k]."""
    res = (1e4 / mpp, 1e4 / mpp)
    with tifffile.TiffWriter(path) as w:
        if subifds:
            w.write(image, tile=(tile, tile), compression=compression, photometric="rgb", subifds=levels - 1,
                    resolution=res, resolutionunit="CENTIMETER")
        else:
            w.write(image, tile=(tile, tile), compression=compression, photometric="rgb",
                    resolution=res, resolutionunit="CENTIMETER")
        for k in range(1, levels):
            w.write(image[::2 ** k, ::2 ** k], tile=(tile, tile), compression=compression, photometric="rgb",
                    subfiletype=1)
    return [image[::2 ** k, ::2 ** k] for k in range(levels)]


@pytest.mark.parametrize("subifds", [True, False], ids=["subifds", "reduced_pages"])
def test_regions_at_every_level_equal_written_pixels(tmp_path, subifds):
    image = _image(200, 330)
    truth = write_pyramid(tmp_path / "s.tif", image, levels=3, subifds=subifds)
    rng = np.random.default_rng(1)
    with open_slide(tmp_path / "s.tif") as slide:
        assert isinstance(slide, TiffSlide)
        assert slide.level_dimensions == tuple(t.shape[:2] for t in truth)
        assert slide.level_count == 3 and slide.channels == 3 and slide.dtype == np.uint8
        np.testing.assert_allclose(slide.level_downsamples, [1.0, 2.0, 4.0], rtol=0.02)
        np.testing.assert_allclose(slide.mpp, (0.25, 0.25))
        np.testing.assert_allclose(slide.level_mpp(2), (0.25 * 200 / 50, 0.25 * 330 / 83))
        for k, t in enumerate(truth):
            np.testing.assert_array_equal(slide.read_region(k, (0, 0), t.shape[:2]), t)
            np.testing.assert_array_equal(tifffile.imread(tmp_path / "s.tif", level=k), t)  # peer reader agrees
            for _ in range(10):
                h, w = rng.integers(1, t.shape[0] + 1), rng.integers(1, t.shape[1] + 1)
                r, c = rng.integers(0, t.shape[0] - h + 1), rng.integers(0, t.shape[1] - w + 1)
                np.testing.assert_array_equal(slide.read_region(k, (r, c), (h, w)), t[r:r + h, c:c + w])


def test_stripped_tiff_png_and_thumbnail(tmp_path):
    from skimage import io

    image = _image(90, 140, seed=2)
    tifffile.imwrite(tmp_path / "strips.tif", image, rowsperstrip=7, compression="zlib", photometric="rgb")
    io.imsave(tmp_path / "small.png", image, check_contrast=False)
    for name, kind in (("strips.tif", TiffSlide), ("small.png", ArraySlide)):
        with open_slide(tmp_path / name) as slide:
            assert isinstance(slide, kind) and slide.level_count == 1
            np.testing.assert_array_equal(slide.read_region(0, (5, 9), (60, 101)), image[5:65, 9:110])
            thumb, down = slide.thumbnail(max_size=50)
            # block means over 3 x 3 blocks (factor ceil(140 / 50) = 3)
            ref = image[:90, :138].astype(np.float64).reshape(30, 3, 46, 3, 3).mean(axis=(1, 3))
            np.testing.assert_array_equal(thumb, np.round(ref).astype(np.uint8))
            np.testing.assert_allclose(down, (3.0, 140 / 46))


def test_thumbnail_uses_a_low_level(tmp_path):
    truth = write_pyramid(tmp_path / "s.tif", _image(256, 256), levels=3)
    with open_slide(tmp_path / "s.tif") as slide:
        thumb, down = slide.thumbnail(max_size=64)
        np.testing.assert_array_equal(thumb, truth[2])  # level 2 is exactly 64 px wide: factor 1
        assert down == (4.0, 4.0)


def test_bad_slides_name_the_file(tmp_path):
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(ValueError, match="junk.tif"):
        open_slide(tmp_path / "junk.tif")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.png.*unsupported or corrupt"):
        open_slide(tmp_path / "junk.png")
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        open_slide(tmp_path / "missing.tif")
    write_pyramid(tmp_path / "s.tif", _image(128, 128), levels=2)
    data = (tmp_path / "s.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="cut.tif"), open_slide(tmp_path / "cut.tif") as slide:
        slide.read_region(0, (0, 0), (128, 128))
    with open_slide(tmp_path / "s.tif") as slide:
        with pytest.raises(ValueError, match=r"s.tif' has levels 0..1.*level=2"):
            slide.read_region(2, (0, 0), (8, 8))
        with pytest.raises(ValueError, match="outside level 1"):
            slide.read_region(1, (60, 0), (8, 8))


def test_tile_cache_is_bounded(tmp_path):
    write_pyramid(tmp_path / "s.tif", _image(256, 256), levels=1, tile=16)
    with TiffSlide(tmp_path / "s.tif", cache_bytes=16 * 16 * 3 * 4) as slide:
        slide.read_region(0, (0, 0), (256, 256))
        assert slide._cache_bytes <= 16 * 16 * 3 * 4 and len(slide._cache) == 4
