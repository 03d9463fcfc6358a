"""Slide heatmaps, slide scores and lesion-level FROC (`keras_medseg.predict.slides`)."""

import json

import keras
import numpy as np
import pytest
import tifffile

from keras_medseg.data.slides.annotations import write_geojson
from keras_medseg.evaluation import froc_score
from keras_medseg.predict.slides import (
    froc_from_predictions,
    predict_slide,
    write_slide_prediction,
)


def _ramp_slide(path, h=192, w=256, levels=2):
    """R rises with the row, G with the column, B constant: patch means encode the patch position."""
    rr, cc = np.mgrid[0:h, 0:w]
    image = np.stack([rr * 255 // (h - 1), cc * 255 // (w - 1), np.full((h, w), 128)], -1).astype(np.uint8)
    with tifffile.TiffWriter(path) as tw:
        tw.write(image, tile=(32, 32), compression="zlib", photometric="rgb", subifds=levels - 1)
        for k in range(1, levels):
            tw.write(image[::2 ** k, ::2 ** k], tile=(32, 32), compression="zlib", photometric="rgb", subfiletype=1)
    return image


def _linear_model(size, a=0.002, b=-0.001, bias=0.3):
    """p = a * mean(R) + b * mean(G) + bias: a known function of where the patch lies."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(1)
    out = dense(x)
    dense.set_weights([np.array([[a], [b], [0.0]], np.float32), np.array([bias], np.float32)])
    return keras.Model(inputs, out)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("level", [0, 1])
def test_heatmap_equals_known_function_of_patch_position(tmp_path, level):
    image = _ramp_slide(tmp_path / "ramp.tif")
    size, stride = 32 // 2 ** level, 16 // 2 ** level
    model = _linear_model(size)
    res = predict_slide(model, tmp_path / "ramp.tif", level=level, size=size, stride=stride, min_tissue=None,
                        batch_size=7, progress=False)
    lev = image[::2 ** level, ::2 ** level].astype(np.float64)
    rows = range(0, lev.shape[0] - size + 1, stride)
    cols = range(0, lev.shape[1] - size + 1, stride)
    expected = np.array([[0.002 * lev[r:r + size, c:c + size, 0].mean() - 0.001 * lev[r:r + size, c:c + size, 1].mean()
                          + 0.3 for c in cols] for r in rows])
    assert res.heatmap.shape == expected.shape
    np.testing.assert_allclose(res.heatmap, expected, atol=1e-5)
    assert res.slide_score == pytest.approx(expected.max(), abs=1e-5)
    paths = write_slide_prediction(res, tmp_path / "ramp.tif", tmp_path / "out", thumbnail_size=64)
    np.testing.assert_array_equal(np.load(paths["heatmap"]), res.heatmap)
    from PIL import Image

    with Image.open(paths["png"]) as im:
        assert im.size[0] > 100


def test_tissue_grid_heatmap_and_lesion_froc(tmp_path):
    from tests.data.test_wsi_streaming import make_slide

    # one tumour slide (two lesions) and one normal slide (an empty annotation file)
    tumour_path, ann_path, _, _ = make_slide(tmp_path, "t")
    normal_path, _, _, _ = make_slide(tmp_path, "n", seed=3)
    write_geojson(tmp_path / "empty.geojson", [])
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(x))
    rng = np.random.default_rng(0)
    dense.set_weights([rng.normal(size=(3, 1)).astype(np.float32) * 0.05, np.zeros(1, np.float32)])
    outs = []
    for path, ann in ((tumour_path, ann_path), (normal_path, tmp_path / "empty.geojson")):
        res = predict_slide(model, path, level=1, annotations=ann, min_tissue=0.25, thumbnail_size=192,
                            progress=False)
        assert np.isnan(res.heatmap).any() and np.isfinite(res.heatmap).any()  # glass is not scored
        assert res.slide_score == pytest.approx(np.nanmax(res.heatmap))
        out = tmp_path / res.slide_id
        write_slide_prediction(res, path, out, thumbnail_size=96)
        outs.append((out, res))
    report = froc_from_predictions([o for o, _ in outs])
    (_, t), (_, n) = outs
    scores = np.concatenate([t.scores, n.scores])
    tumors = np.concatenate([t.tumor_ids, n.tumor_ids])
    slides = np.array(["t"] * t.scores.size + ["n"] * n.scores.size)
    assert report["num_tumors"] == 2 and report["num_normal_slides"] == 1
    assert report["froc"] == pytest.approx(froc_score(scores, tumors, slides, ["n"]))
    assert report["slides"] == {"t": t.slide_score, "n": n.slide_score}
    json.dumps(report)
    with pytest.raises(ValueError, match="without annotations"):
        res = predict_slide(model, normal_path, level=1, min_tissue=0.25, thumbnail_size=192, progress=False)
        write_slide_prediction(res, normal_path, tmp_path / "x", thumbnail_size=96)
        froc_from_predictions([tmp_path / "x"])
    with pytest.raises(FileNotFoundError, match="missing"):
        froc_from_predictions([tmp_path])


@pytest.mark.slow  # three slides through the command line (about 15 s, more on a loaded machine)
def test_cli_extract_merge_predict_and_froc(tmp_path, capsys):
    from keras_medseg.cli import main
    from keras_medseg.data.slides import PatchStore
    from tests.data.test_wsi_streaming import make_slide

    tumour, ann, _, _ = make_slide(tmp_path, "t")
    normal, _, _, _ = make_slide(tmp_path, "n", seed=4)
    write_geojson(tmp_path / "empty.geojson", [])
    common = ["--level", "1", "--size", "32", "--inner-size", "16", "--thumbnail-size", "192", "--quiet"]
    assert main(["patches", "extract", str(tumour), "--annotations", str(ann), "--out", str(tmp_path / "t.h5"),
                 "--workers", "2"] + common) == 0
    assert "positive on the grid" in capsys.readouterr().out
    assert main(["patches", "extract", str(normal), "--out", str(tmp_path / "n.h5")] + common) == 0
    assert main(["patches", "merge", str(tmp_path / "all.h5"), str(tmp_path / "t.h5"), str(tmp_path / "n.h5"),
                 "--quiet"]) == 0
    with PatchStore(tmp_path / "all.h5") as s:
        assert list(s.slide_names) == ["t", "n"] and s.labels.sum() > 0
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.GlobalAveragePooling2D()(inputs)))
    model.save(tmp_path / "m.keras")
    for path, a in ((tumour, ann), (normal, tmp_path / "empty.geojson")):
        assert main(["slide", "predict", str(tmp_path / "m.keras"), str(path), "--out", str(tmp_path / path.stem),
                     "--annotations", str(a), "--level", "1", "--min-tissue", "0.25", "--thumbnail-size", "192",
                     "--rescale", str(1 / 255), "--quiet"]) == 0
        assert "slide score" in capsys.readouterr().out
    assert main(["evaluate", "--froc", "--predictions", str(tmp_path / "t"), str(tmp_path / "n"),
                 "--plot", str(tmp_path / "froc.png")]) == 0
    out = capsys.readouterr().out
    assert "2 tumours" in out and "FROC score" in out and (tmp_path / "froc.png").exists()
    # bad input: one line naming the file, exit code 2
    assert main(["slide", "predict", str(tmp_path / "m.keras"), str(tumour), "--out", str(tmp_path / "x"),
                 "--level", "7", "--quiet"]) == 2
    assert "t.tif' has levels 0..2" in capsys.readouterr().err
    assert main(["patches", "extract", str(tmp_path / "m.keras"), "--out", str(tmp_path / "x.h5")] + common) == 2
    assert "m.keras" in capsys.readouterr().err
