"""Issue 27, items 5 to 7: Grad-CAM before a normalisation, explainer errors in one line, NaN inputs refused,
annotations that would turn a tumour slide normal, a lasso drawn twice, the documented empty file.
"""

import json
import re
import warnings

import keras
import numpy as np
import pytest

from keras_medseg import zoo
from keras_medseg.cli import main
from keras_medseg.data.slides.annotations import fill_nonzero, read_annotations, write_asap_xml, write_geojson
from keras_medseg.explain import activation_maximization, gradcam, lime, occlusion, saliency, smoothgrad

_UNET = []


def _unet():
    if not _UNET:
        _UNET.append(zoo.build("unet", filters=2, depth=2))
    return _UNET[0]


def _normalised_classifier():
    inp = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    h = keras.layers.GroupNormalization(groups=-1, name="norm")(h)  # instance normalisation
    h = keras.layers.Activation("relu", name="act")(h)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h)))


# --------------------------------------------------------------------------- item 5


def test_gradcam_before_an_instance_norm_warns_and_the_default_takes_the_block_output():
    model = _normalised_classifier()
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 1)).astype("float32")
    with pytest.warns(UserWarning, match=r"Grad-CAM of layer 'conv': it feeds GroupNormalization 'norm'.*alpha.*"
                                         r"pass layer='act'"):
        empty = gradcam(model, x, 1, layer="conv")
    assert np.abs(empty).max() < 1e-6  # what the warning is about: alpha is 0 for every channel
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = gradcam(model, x, 1)
    np.testing.assert_allclose(default, gradcam(model, x, 1, layer="act"))
    assert default.max() > 1e-4


# --------------------------------------------------------------------------- item 7: explainers, one line each

X64 = np.zeros((1, 64, 64, 1), "float32")
BAD_INPUTS = [
    ("channels-first", np.zeros((1, 1, 64, 64), "float32"), 0, r"`x` has shape \(1, 1, 64, 64\), which looks "
                                                                r"channels-first"),
    ("size-the-unet-cannot-take", np.zeros((1, 66, 66, 1), "float32"), 0,
     r"`x` has spatial size \(66, 66\), which the model cannot take.*nearest size it takes is \(68, 68\)"),
    ("volume-to-2d-model", np.zeros((1, 8, 64, 64, 1), "float32"), 0, r"`x` has shape \(1, 8, 64, 64, 1\) \(5 axes\); "
                                                                      r"this 2D model takes 4 axes"),
    ("class-index-5", X64, 5, r"`class_index` must be < the number of model outputs \(1\). Received: class_index=5"),
    ("all-nan", np.full((1, 64, 64, 1), np.nan, "float32"), 0, r"`x` has 4096 NaN and 0 Inf values"),
]
EXPLAINERS = {
    "saliency": lambda m, x, c: saliency(m, x, c),
    "smoothgrad": lambda m, x, c: smoothgrad(m, x, c, samples=2),
    "gradcam": lambda m, x, c: gradcam(m, x, c),
    "occlusion": lambda m, x, c: occlusion(m, x, c, patch=32, progress=False),
    "lime": lambda m, x, c: lime(m, x, c, samples=2, n_segments=4, progress=False),
}


@pytest.mark.parametrize("explainer", list(EXPLAINERS))
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_explainer_errors_are_one_line(explainer, case):
    _, x, class_index, pattern = case
    with pytest.raises(ValueError) as info:
        EXPLAINERS[explainer](_unet(), x, class_index)
    message = str(info.value)
    assert "\n" not in message and "in user code" not in message, message
    assert re.search(pattern, message), message


def test_activation_maximization_errors_are_one_line():
    with pytest.raises(ValueError, match=r"`class_index` must be < the number of model outputs \(1\)"):
        activation_maximization(_unet(), 5, steps=1, input_shape=(64, 64, 1))
    with pytest.raises(ValueError, match=r"`x0` has 4096 NaN"):
        activation_maximization(_unet(), 0, steps=1, x0=np.full((1, 64, 64, 1), np.nan, "float32"))


# --------------------------------------------------------------------------- item 6: annotations


def _winding_reference(ring, shape):
    """Winding number of the closed ring around every pixel centre, by summing the signed angles of its edges
    (an independent formula: no crossings, no sorting)."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    total = np.zeros(shape)
    pts = np.asarray(ring, np.float64)
    for (xa, ya), (xb, yb) in zip(pts, np.roll(pts, -1, axis=0)):
        a = np.arctan2(ya - rows, xa - cols)
        b = np.arctan2(yb - rows, xb - cols)
        total += (b - a + np.pi) % (2 * np.pi) - np.pi
    return np.rint(total / (2 * np.pi)).astype(int)


def test_a_lasso_drawn_twice_fills_its_centre(tmp_path):
    t = np.linspace(0, 4 * np.pi, 90, endpoint=False)  # twice around the tumour, a little wider the 2nd time
    r = 20 + 4 * np.sin(t / 2)
    ring = np.stack([40.3 + r * np.cos(t), 35.7 + r * np.sin(t)], axis=1)  # (x, y)
    for fmt, writer in (("geojson", write_geojson), ("xml", write_asap_xml)):
        path = tmp_path / f"lasso.{fmt}"
        writer(path, [ring])
        mask = read_annotations(path).mask((80, 90))
        winding = _winding_reference(ring, (80, 90))
        assert abs(winding).max() == 2  # the centre is wound around twice
        np.testing.assert_array_equal(mask > 0, winding != 0)
        assert mask[36, 40] == 1  # the even-odd rule left the centre out: its patches were negative
    star = np.array([[10, 10], [60, 12], [15, 50], [35, 3], [55, 48]], np.float64) + [0.37, 0.21]  # a pentagram
    np.testing.assert_array_equal(fill_nonzero(star[:, 1], star[:, 0], (64, 64)),
                                  _winding_reference(star, (64, 64)) != 0)


def _geojson(tmp, features, name="a.geojson"):
    path = tmp / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return str(path)


def _feature(geometry, name="Tumor"):
    return {"type": "Feature", "geometry": geometry, "properties": {"classification": {"name": name},
                                                                  "name": "lesion 7"}}


SQUARE = [[[10, 10], [30, 10], [30, 30], [10, 30], [10, 10]]]
ANNOTATION_FAULTS = [
    ("empty-polygon", lambda t: _geojson(t, [_feature({"type": "Polygon", "coordinates": []})]),
     r"a\.geojson'?: feature 0 \('lesion 7'\) is an empty Polygon \(no coordinates\)"),
    ("empty-multipolygon", lambda t: _geojson(t, [_feature({"type": "Polygon", "coordinates": SQUARE}),
                                                  _feature({"type": "MultiPolygon", "coordinates": [[]]})]),
     r"feature 1 \('lesion 7'\) is an empty MultiPolygon"),
    ("null-geometry", lambda t: _geojson(t, [_feature(None)]), r"feature 0 \('lesion 7'\) has no geometry"),
    ("point-only", lambda t: _geojson(t, [_feature({"type": "Point", "coordinates": [20, 20]})]),
     r"a\.geojson'? has no area: its 1 annotation\(s\) are points or lines \(feature 0 \('lesion 7'\) is a Point\)"),
    ("asap-dots-only", lambda t: _asap(t, '<Annotation Name="d" Type="Dot" PartOfGroup="_0"><Coordinates>'
                                          '<Coordinate Order="0" X="5" Y="5"/></Coordinates></Annotation>'),
     r"c\.xml'? has no area: .*annotation 'd' \(Dot\)"),
    ("asap-no-coordinates", lambda t: _asap(t, '<Annotation Name="e" Type="Polygon" PartOfGroup="_0">'
                                               '<Coordinates/></Annotation>'),
     r"annotation 'e' has no coordinates \(an empty geometry\)"),
]


def _asap(tmp, body):
    path = tmp / "c.xml"
    path.write_text(f'<?xml version="1.0"?><ASAP_Annotations><Annotations>{body}</Annotations></ASAP_Annotations>')
    return str(path)


@pytest.mark.parametrize("case", ANNOTATION_FAULTS, ids=[c[0] for c in ANNOTATION_FAULTS])
def test_annotations_that_would_make_a_tumour_slide_normal_are_refused(case, tmp_path):
    _, make, pattern = case
    with pytest.raises(ValueError) as info:
        read_annotations(make(tmp_path))
    assert re.search(pattern, str(info.value)) and "\n" not in str(info.value), str(info.value)


def test_points_next_to_polygons_are_skipped_and_an_empty_file_is_a_normal_slide(tmp_path, capsys):
    ann = read_annotations(_geojson(tmp_path, [_feature({"type": "Point", "coordinates": [5, 5]}),
                                               _feature({"type": "Polygon", "coordinates": SQUARE})]))
    assert ann.num_tumors == 1 and ann.mask((40, 40)).sum() > 0
    for text in ("", "  \n"):
        (tmp_path / "normal.xml").write_text(text)
        assert read_annotations(tmp_path / "normal.xml").num_tumors == 0
    assert read_annotations(_geojson(tmp_path, [], "none.geojson")).num_tumors == 0
    # what `slide predict --help` promises
    with pytest.raises(SystemExit):
        main(["slide", "predict", "--help"])
    assert "an empty file marks a normal slide" in " ".join(capsys.readouterr().out.split())
