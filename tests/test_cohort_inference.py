"""Cohort inference (`slide predict` on a folder): heatmaps per slide, scores table, tumour masks on the heatmap
grid, lesion FROC under both protocols, a corrupt slide named, a rerun skipping finished slides."""

import csv
import json

import keras
import numpy as np
from matplotlib.path import Path

from keras_medseg.cli import main
from keras_medseg.data.slides.annotations import read_annotations
from keras_medseg.evaluation import lesion_froc
from keras_medseg.predict.slides import froc_from_predictions
from tests.data.slide_factory import write_cohort


def _model(path):
    """A tiny patch classifier: redder patches score higher (fixed weights: deterministic heatmaps)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.array([[0.05], [-0.05], [0.0]], np.float32), np.array([-2.0], np.float32)])
    model.save(path)
    return path


def test_slide_predict_on_a_folder(tmp_path, capsys):
    folder = tmp_path / "cohort"
    folder.mkdir()
    # 8 um per level-0 pixel: at level 1 a 16-px heatmap cell is 256 um, so the tumours are lesions, not ITCs
    write_cohort(folder, n=3, side=1024, corrupt=True, mpp=8.0)
    model = _model(tmp_path / "m.keras")
    out = tmp_path / "pred"
    args = ["slide", "predict", str(model), str(folder), "--out", str(out), "--level", "1", "--batch-size", "16",
            "--thumbnail-size", "256", "--quiet"]
    assert main(args) == 1  # the corrupt slide failed, the others finished
    text = capsys.readouterr().out
    assert "broken" in text and "FAILED" in text and "CAMELYON16" in text and "lecture" in text

    names = ["slide_0", "slide_1", "slide_2"]
    with open(out / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["slide"] for r in rows] == names and [r["truth"] for r in rows] == ["tumour", "tumour", "normal"]
    maps, masks = [], []
    for row in rows:
        d = out / row["slide"]
        summary = json.loads((d / "summary.json").read_text())
        heat = np.load(d / "heatmap.npy")
        assert float(row["slide_score"]) == np.float32(summary["slide_score"]) == np.nanmax(heat)
        assert (d / "heatmap.png").stat().st_size > 0
        maps.append(heat)
        if row["truth"] == "tumour":
            # the mask on the heatmap grid: cell centres inside the polygon (matplotlib's point-in-polygon)
            mask = np.load(d / "tumor_mask.npy")
            off, stride, down = (summary["size"] - summary["stride"]) / 2, summary["stride"], 2.0
            rr, cc = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
            centres = np.stack([(off + (cc + 0.5) * stride) * down, (off + (rr + 0.5) * stride) * down], -1)
            poly = read_annotations(folder / f"{row['slide']}.geojson")._tumors[0].vertices
            inside = Path(poly).contains_points(centres.reshape(-1, 2) - 0.5).reshape(mask.shape)
            assert (mask > 0).sum() >= 4 and np.mean((mask > 0) == inside) > 0.97
            masks.append(mask)
        else:
            masks.append(None)
    # the FROCs the command printed are the library's on the written files
    camelyon = lesion_froc(maps, masks, mpp=[256.0] * 3, box_size=8)
    lecture = froc_from_predictions([out / n for n in names])
    assert f"{camelyon['froc']:.4f}" in text and f"{lecture['froc']:.4f}" in text and camelyon["num_lesions"] == 2

    dirs = [str(out / n) for n in names]
    assert main(["evaluate", "--froc", "--protocol", "camelyon16", "--predictions", *dirs]) == 0
    assert f"FROC (CAMELYON16 protocol, lesion level) {camelyon['froc']:.4f}" in capsys.readouterr().out

    # a rerun predicts only what is missing (here: retries the corrupt slide)
    (out / "slide_1" / "cohort_record.json").unlink()
    assert main(args) == 1
    assert "3 slides predicted (2 already done)" in capsys.readouterr().out
