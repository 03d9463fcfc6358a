"""Slide readers: OpenSlide and tifffile agree pixel for pixel; level by microns per pixel; one-line errors."""

import os

import numpy as np
import pytest

from keras_medseg.data.slides.openslide_slide import OpenSlideSlide
from keras_medseg.data.slides.slide import level_for_mpp, open_slide
from keras_medseg.data.slides.tiff_slide import TiffSlide
from tests.data.slide_factory import slide_image, write_slide


@pytest.mark.parametrize("compression", ["zlib", "jpeg"])
def test_openslide_and_tifffile_read_the_same_pixels(tmp_path, compression):
    image = slide_image(512, seed=3)
    path = write_slide(tmp_path / f"s_{compression}.tif", image, levels=3, tile=128, compression=compression,
                       mpp=0.25)
    with open_slide(path) as tf, open_slide(path, backend="openslide") as osl:
        assert isinstance(tf, TiffSlide) and isinstance(osl, OpenSlideSlide) and osl.vendor == "generic-tiff"
        assert tf.level_dimensions == osl.level_dimensions == ((512, 512), (256, 256), (128, 128))
        assert tf.mpp == osl.mpp == (0.25, 0.25)
        for level, origin, size in ((0, (37, 101), (200, 150)), (1, (3, 130), (90, 126)), (2, (0, 0), (128, 128))):
            a, b = tf.read_region(level, origin, size), osl.read_region(level, origin, size)
            assert a.shape == b.shape == size + (3,) and a.dtype == b.dtype == np.uint8
            np.testing.assert_array_equal(a, b)
        if compression == "zlib":  # lossless: both equal the written pixels
            np.testing.assert_array_equal(osl.read_region(1, (10, 20), (30, 40)), image[::2, ::2][10:40, 20:60])


def test_reader_uses_no_posix_only_calls(tmp_path, monkeypatch):
    path = write_slide(tmp_path / "s.tif", slide_image(256), levels=2, tile=64)
    monkeypatch.delattr(os, "pread", raising=False)  # as on Windows
    with open_slide(path) as s:
        np.testing.assert_array_equal(s.read_region(0, (60, 70), (100, 90)), slide_image(256)[60:160, 70:160])


def test_level_for_mpp_picks_the_nearest_resolution(tmp_path):
    path = write_slide(tmp_path / "s.tif", slide_image(256), levels=3, tile=64, mpp=0.25)  # 0.25, 0.5, 1.0 um
    with open_slide(path) as s:
        for target, level in ((0.25, 0), (0.3, 0), (0.5, 1), (0.6, 1), (0.8, 2), (1.0, 2), (8.0, 2), (0.01, 0)):
            got, mpp = level_for_mpp(s, target)
            assert got == level, target
            assert mpp == pytest.approx((0.25 * 2 ** level,) * 2)
        # nearest in scale: 0.7 is 1.4x from 0.5 and 1.43x from 1.0
        assert level_for_mpp(s, 0.7)[0] == 1 and level_for_mpp(s, 0.71)[0] == 2
        for bad in (0, -1, float("nan"), "x"):
            with pytest.raises(ValueError, match="mpp"):
                level_for_mpp(s, bad)
    png = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(slide_image(64)).save(png)
    with pytest.raises(ValueError, match="microns per pixel.*p.png|p.png.*microns per pixel"):
        level_for_mpp(png, 0.5)


def test_unreadable_formats_get_one_line_naming_the_file(tmp_path):
    cases = {"junk.mrxs": b"not a mirax slide", "junk.svs": b"II*\0garbage" * 10, "notes.xyz": b"hello"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match="Cannot read slide") as info:
            open_slide(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="neither tifffile, OpenSlide nor Pillow"):
        open_slide(tmp_path / "notes.xyz")
    with pytest.raises(ValueError, match="backend"):
        open_slide(tmp_path / "junk.svs", backend="vips")
    with pytest.raises(FileNotFoundError, match="missing.svs"):
        open_slide(tmp_path / "missing.svs")


def test_extract_by_mpp_says_which_level(tmp_path, capsys):
    from keras_medseg.cli import main

    path = write_slide(tmp_path / "s.tif", slide_image(512, seed=1), levels=3, tile=128, mpp=0.25)
    assert main(["patches", "extract", str(path), "--out", str(tmp_path / "p.h5"), "--size", "64", "--mpp", "0.5",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "at level 1 (0.5 um/px)" in out
