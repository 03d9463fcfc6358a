"""Whole scans in, label maps out: `predict_scan` / `predict_files` / `evaluate_scans` keep the scan's geometry.

The model is a fixed 1x1x1 convolution that labels voxels above 0.5 as class 1, so the expected label
map is known on any grid: a ball written into an oblique, anisotropic NIfTI (or a DICOM series) must
come back as that ball, on the input's own voxel grid and header geometry.
"""

import csv

import keras
import nibabel
import numpy as np
import pytest

from keras_medseg.data import read_image
from keras_medseg.data.cases import find_scans
from keras_medseg.data.scans.preprocess import save_preprocessing
from keras_medseg.predict.scan_evaluation import evaluate_scans
from keras_medseg.predict.scans import predict_files, predict_scan
from tests.data.scan_factory import (
    ball,
    oblique_affine,
    write_dicom_series,
    write_nifti,
)


def _threshold_model(path, spec):
    model = keras.Sequential([keras.Input((None, None, None, 1)), keras.layers.Conv3D(2, 1, activation="softmax")])
    model.layers[-1].set_weights([np.array([-10.0, 10.0]).reshape(1, 1, 1, 1, 2), np.array([5.0, -5.0])])
    model.save(path)
    save_preprocessing(path, {"spatial_dims": 3, "patch_size": [16, 16, 8], "class_names": ["bg", "ball"], **spec})
    return model


def _dice(a, b):
    return 2 * np.sum(a & b) / (a.sum() + b.sum())


def test_predict_nifti_oblique_keeps_header_geometry(tmp_path):
    spacing = (0.7, 0.9, 2.5)
    aff = oblique_affine(spacing=spacing, angle=0.3)
    shape = (30, 26, 10)
    truth = ball(shape, (15, 12, 5), 7.0, spacing)
    (tmp_path / "in").mkdir()
    write_nifti(tmp_path / "in" / "case1.nii.gz", truth.astype(np.float32), aff)
    model_path = str(tmp_path / "m.keras")
    _threshold_model(model_path, {"spacing": [1.0, 1.0, 2.0], "orientation": "RAS", "intensity": {"preset": "none"}})
    out = predict_files(model_path, str(tmp_path / "in"), str(tmp_path / "out"), progress=False)
    assert [o[0] for o in out] == ["case1"]
    img = nibabel.load(out[0][2])
    src = nibabel.load(str(tmp_path / "in" / "case1.nii.gz"))
    np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
    np.testing.assert_allclose(img.header.get_zooms(), src.header.get_zooms(), atol=1e-6)
    assert img.shape == shape and img.get_data_dtype() == np.uint8
    pred = np.asarray(img.dataobj).astype(bool)
    assert _dice(pred, truth) > 0.9  # resampled to 1x1x2 mm in RAS and back
    # Without resampling/reorientation the threshold is reproduced voxel for voxel.
    model = keras.saving.load_model(model_path)
    exact = predict_scan(model, read_image(str(tmp_path / "in" / "case1.nii.gz")),
                         {"spatial_dims": 3, "patch_size": [16, 16, 8], "intensity": {"preset": "none"}})
    np.testing.assert_array_equal(exact.astype(bool), truth)


def test_predict_dicom_series_aligned_with_series(tmp_path):
    spacing = (0.8, 0.6, 2.5)
    shape = (24, 28, 8)
    inside = ball(shape, (12, 14, 4), 6.0, spacing)
    hu = np.where(inside, 100.0, -900.0)
    expected_affine = write_dicom_series(str(tmp_path / "series"), hu, spacing=spacing)
    model_path = str(tmp_path / "ct.keras")
    _threshold_model(model_path, {"intensity": {"preset": "ct_window", "low": -500, "high": 500},
                                  "orientation": "RAS", "spacing": [0.8, 0.6, 2.5]})
    assert find_scans(str(tmp_path / "series"))[0][0] == "series"
    (_, _, out), = predict_files(model_path, str(tmp_path / "series"), str(tmp_path / "out"), progress=False)
    img = nibabel.load(out)
    np.testing.assert_allclose(img.affine, expected_affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj).astype(bool), inside)


def test_predict_bad_inputs(tmp_path):
    model_path = str(tmp_path / "m.keras")
    model = _threshold_model(model_path, {"intensity": {"preset": "none"}})
    write_nifti(tmp_path / "fmri.nii.gz", np.zeros((20, 20, 10, 3), np.float32), np.eye(4))
    with pytest.raises(ValueError, match=r"fmri\.nii\.gz.*4D"):
        predict_files(model_path, str(tmp_path / "fmri.nii.gz"), str(tmp_path / "o"), progress=False)
    vol = np.zeros((20, 20, 10), np.float32)
    vol[3, 4, 5] = np.nan
    write_nifti(tmp_path / "nan.nii.gz", vol, np.eye(4))
    with pytest.raises(ValueError, match=r"nan\.nii\.gz.*1 NaN"):
        predict_files(model_path, str(tmp_path / "nan.nii.gz"), str(tmp_path / "o"), progress=False)
    write_nifti(tmp_path / "small.nii.gz", np.zeros((20, 20, 5), np.float32), np.eye(4))
    spec = {"spatial_dims": 3, "patch_size": [16, 16, 8], "intensity": {"preset": "none"}}
    rec = read_image(str(tmp_path / "small.nii.gz"))
    with pytest.raises(ValueError, match=r"window \(16, 16, 8\) is larger than the scan .*small\.nii\.gz.*along "
                                         r"axes \[2\], and allow_padding=False \(--no-pad\) refuses"):
        predict_scan(model, rec, spec, allow_padding=False)
    with pytest.raises(ValueError, match=r"`flips` must be spatial axes in \[0, 3\).*\"all\". Received: flips='every'"):
        predict_scan(model, rec, spec, flips="every")


def test_a_scan_smaller_than_the_window_is_padded_by_default(tmp_path, capsys):
    """5 slices against an 8-slice window: by default (as MONAI and nnU-Net) the scan is padded at the end with 0
    and the label map cut back to the scan; it equals predicting the scan padded by hand. `--no-pad` refuses it
    with one line naming the file; `--flips` alone mirrors along every axis (`flips="all"`)."""
    from keras_medseg.cli import main

    model_path = str(tmp_path / "m.keras")
    model = _threshold_model(model_path, {"intensity": {"preset": "none"}})
    truth = ball((20, 18, 5), (10, 9, 2), 4.0, (1.0, 1.0, 1.0))
    write_nifti(tmp_path / "short.nii.gz", truth.astype(np.float32), np.eye(4))
    rec = read_image(str(tmp_path / "short.nii.gz"))
    spec = {"spatial_dims": 3, "patch_size": [16, 16, 8], "intensity": {"preset": "none"}}
    labels = predict_scan(model, rec, spec)
    assert labels.shape == (20, 18, 5)
    np.testing.assert_array_equal(labels.astype(bool), truth)
    write_nifti(tmp_path / "padded.nii.gz", np.pad(truth.astype(np.float32), [(0, 0), (0, 0), (0, 3)]), np.eye(4))
    by_hand = predict_scan(model, read_image(str(tmp_path / "padded.nii.gz")), spec, allow_padding=False)
    np.testing.assert_array_equal(labels, by_hand[..., :5])
    every = predict_scan(model, rec, spec, flips="all", return_probabilities=True)
    axes = predict_scan(model, rec, spec, flips=(0, 1, 2), return_probabilities=True)
    np.testing.assert_array_equal(every[1], axes[1])
    out = tmp_path / "out"
    assert main(["predict", model_path, "--input", str(tmp_path / "short.nii.gz"), "--output", str(out), "--quiet",
                 "--flips"]) == 0
    np.testing.assert_array_equal(np.asarray(nibabel.load(str(out / "short.nii.gz")).dataobj), labels)
    assert main(["predict", model_path, "--input", str(tmp_path / "short.nii.gz"), "--output", str(tmp_path / "o2"),
                 "--quiet", "--no-pad"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "short.nii.gz" in err[0] and "--no-pad" in err[0]


def test_evaluate_scans_held_out_and_geometry_check(tmp_path):
    spacing = (0.7, 0.9, 2.5)
    aff = oblique_affine(spacing=spacing)
    shape = (20, 18, 8)
    for i, name in enumerate(("a", "b", "c")):
        truth = ball(shape, (9 + i, 9, 4), 5.0, spacing)
        (tmp_path / "data" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "masks").mkdir(exist_ok=True)
        write_nifti(tmp_path / "data" / "images" / f"{name}.nii.gz", truth.astype(np.float32), aff)
        write_nifti(tmp_path / "data" / "masks" / f"{name}.nii.gz", (truth * 255).astype(np.uint8), aff)
    model_path = str(tmp_path / "m.keras")
    _threshold_model(model_path, {"intensity": {"preset": "none"}, "split": {"train": ["a"], "validation": ["b"]}})
    res = evaluate_scans(model_path, str(tmp_path / "data"))
    assert res.skipped == ["a"] and res.roles == {"b": "validation", "c": "unseen"}
    assert "skipped 1 training" in res.note
    with open(res.csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["role"], r["class"]) for r in rows] == [("b", "validation", "ball"), ("c", "unseen", "ball")]
    assert all(float(r["dice"]) == 1.0 and float(r["hd95"]) == 0.0 for r in rows)
    assert res.summary["ball"]["dice"]["n"] == 2
    res_all = evaluate_scans(model_path, str(tmp_path / "data"), include_training=True)
    assert res_all.roles["a"] == "train" and "1 TRAINING" in res_all.note
    # A label map on another grid is refused, naming both files.
    write_nifti(tmp_path / "data" / "masks" / "b.nii.gz", np.zeros(shape, np.uint8), oblique_affine(spacing=(1, 1, 1)))
    with pytest.raises(ValueError, match=r"masks/b\.nii\.gz.*does not lie on its image's grid"):
        evaluate_scans(model_path, str(tmp_path / "data"))
