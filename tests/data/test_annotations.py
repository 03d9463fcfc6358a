"""Polygon annotations (ASAP XML, GeoJSON) and the inner-square rule against a NumPy reference."""

import json

import numpy as np
import pytest

from keras_medseg.data.slides.annotations import (
    read_annotations,
    write_asap_xml,
    write_geojson,
)


def _star(rng, centre, radius, n=9):
    """A simple (star-shaped) polygon with random float vertices, (x, y)."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.5, 1.0, n)
    return np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1)


def _inside(px, py, verts):
    """NumPy even-odd ray casting: are the points (px, py) inside the polygon?"""
    x, y = verts[:, 0], verts[:, 1]
    x2, y2 = np.roll(x, -1), np.roll(y, -1)
    inside = np.zeros(px.shape, bool)
    for xa, ya, xb, yb in zip(x, y, x2, y2):
        crosses = (ya > py) != (yb > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = xa + (py - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (px < xint)
    return inside


def _reference_mask(polys, shape, downsample):
    """Tumour ids per pixel centre of a level (later polygons win), independent of scikit-image."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    py, px = (rows + 0.5) * downsample - 0.5, (cols + 0.5) * downsample - 0.5
    out = np.zeros(shape, np.int32)
    for k, v in enumerate(polys):
        out[_inside(px, py, v)] = k + 1
    return out


@pytest.mark.parametrize("fmt", ["xml", "geojson"])
@pytest.mark.parametrize("downsample", [1, 2, 4])
def test_inner_square_rule_matches_numpy_reference(tmp_path, fmt, downsample):
    rng = np.random.default_rng(downsample)
    polys = [_star(rng, (rng.uniform(60, 440), rng.uniform(60, 340)), rng.uniform(8, 60)) for _ in range(5)]
    path = tmp_path / f"a.{fmt}"
    (write_asap_xml if fmt == "xml" else write_geojson)(path, polys)
    ann = read_annotations(path)
    assert len(ann) == 5 and ann.num_tumors == 5
    level_shape = (400 // downsample, 500 // downsample)
    ref = _reference_mask(polys, level_shape, downsample)
    np.testing.assert_array_equal(ann.mask(level_shape, downsample), ref)
    size, inner, stride = 32, 12, 10
    for r in range(0, level_shape[0] - size + 1, stride):
        for c in range(0, level_shape[1] - size + 1, stride):
            off = (size - inner) // 2
            window = ref[r + off:r + off + inner, c + off:c + off + inner]
            hits = window[window > 0]
            expected = int(np.bincount(hits).argmax()) if hits.size else -1
            assert ann.inner_square_tumor(downsample, (r, c), size, inner) == expected, (r, c)
            np.testing.assert_array_equal(ann.label_window(downsample, (r, c), size), ref[r:r + size, c:c + size])


def test_holes_and_multipolygons(tmp_path):
    outer = [[10.2, 10.1], [90.3, 10.4], [90.1, 80.2], [10.4, 80.3]]
    hole = [[30.1, 30.2], [60.3, 30.4], [60.2, 50.1], [30.3, 50.2]]
    other = [[120.1, 20.2], [150.3, 20.1], [140.2, 60.4]]
    data = [{"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [[outer + [outer[0]],
                                                                                       hole + [hole[0]]],
                                                                                      [other + [other[0]]]]},
             "properties": {"classification": {"name": "Tumor"}}},
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}}]
    (tmp_path / "q.geojson").write_text(json.dumps(data))  # QuPath writes a plain list of features
    ann = read_annotations(tmp_path / "q.geojson")
    assert ann.num_tumors == 2
    got = ann.mask((100, 200))
    ref = _reference_mask([np.asarray(outer), np.asarray(other)], (100, 200), 1)
    ref[_reference_mask([np.asarray(hole)], (100, 200), 1) > 0] = 0
    np.testing.assert_array_equal(got, ref)
    # ASAP: group _2 is an exclusion (CAMELYON16)
    xml = tmp_path / "c.xml"
    xml.write_text(
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        '<Annotation Name="a" Type="Polygon" PartOfGroup="_0"><Coordinates>'
        + "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate(outer))
        + '</Coordinates></Annotation><Annotation Name="b" Type="Polygon" PartOfGroup="_2"><Coordinates>'
        + "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate(hole))
        + "</Coordinates></Annotation></Annotations></ASAP_Annotations>")
    ann = read_annotations(xml)
    assert ann.num_tumors == 1
    ref = _reference_mask([np.asarray(outer)], (100, 200), 1)
    ref[_reference_mask([np.asarray(hole)], (100, 200), 1) > 0] = 0
    np.testing.assert_array_equal(ann.mask((100, 200)), ref)


def test_bad_annotations_name_the_file(tmp_path):
    (tmp_path / "x.xml").write_text("<ASAP_Annotations><Annotations>")
    with pytest.raises(ValueError, match="x.xml.*not valid XML"):
        read_annotations(tmp_path / "x.xml")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="x.txt.*neither"):
        read_annotations(tmp_path / "x.txt")
    (tmp_path / "two.geojson").write_text(json.dumps(
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}))
    with pytest.raises(ValueError, match="two.geojson.*at least 3"):
        read_annotations(tmp_path / "two.geojson")
    write_geojson(tmp_path / "far.geojson", [np.array([[10.0, 10.0], [900.0, 10.0], [500.0, 60.0]])])
    ann = read_annotations(tmp_path / "far.geojson")
    with pytest.raises(ValueError, match="far.geojson.*outside slide 'slide.tif'"):
        ann.check_inside((100, 800), "slide.tif")
    with pytest.raises(FileNotFoundError, match="nope.xml"):
        read_annotations(tmp_path / "nope.xml")
