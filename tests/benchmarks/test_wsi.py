"""benchmarks/wsi.py: the synthetic slide written tile by tile is a consistent pyramid with tissue where it says."""

import numpy as np
import wsi

from keras_medseg.data.slides.annotations import read_annotations
from keras_medseg.data.slides.slide import open_slide


def test_synthetic_slide_is_a_consistent_pyramid(tmp_path):
    regions = [(300, 260, 120, 90)]
    shapes = wsi.write_slide(tmp_path / "s.tif", 1024, 3, 128, regions)
    wsi.write_annotations(tmp_path / "a.geojson", regions)
    with open_slide(tmp_path / "s.tif") as slide:
        assert slide.level_dimensions == tuple(shapes) == ((1024, 1024), (512, 512), (256, 256))
        full = slide.read_region(0, (0, 0), (1024, 1024))
        # the generator samples level k every 2**k level-0 pixels: level k == level 0 subsampled
        for k in (1, 2):
            np.testing.assert_array_equal(slide.read_region(k, (0, 0), shapes[k]), full[::2 ** k, ::2 ** k])
    yy, xx = np.mgrid[0:1024, 0:1024]
    inside = ((yy - 300) / 120) ** 2 + ((xx - 260) / 90) ** 2 <= 1
    np.testing.assert_array_equal(full[..., 1] != 245, inside)  # tissue exactly inside the ellipse
    ann = read_annotations(tmp_path / "a.geojson")
    ann.check_inside((1024, 1024))
    mask = ann.mask((1024, 1024)) > 0
    assert mask.any() and inside[mask].all()  # the tumour lies inside the tissue
