"""`keras-medseg predict` and `keras-medseg evaluate` on whole scans (in-process, tiny fixed model)."""

import csv

import nibabel
import numpy as np

from keras_medseg.cli import main
from tests.data.scan_factory import (
    ball,
    oblique_affine,
    write_dicom_series,
    write_nifti,
)
from tests.test_scans import _threshold_model


def test_predict_nifti_and_dicom(tmp_path, capsys):
    spacing = (0.7, 0.9, 2.5)
    aff = oblique_affine(spacing=spacing, angle=0.4)
    shape = (26, 22, 9)
    truth = ball(shape, (13, 11, 4), 6.0, spacing)
    (tmp_path / "scans").mkdir()
    src = write_nifti(tmp_path / "scans" / "ct1.nii.gz", truth.astype(np.float32), aff)
    hu = np.where(ball((24, 30, 8), (12, 15, 4), 5.0, (0.8, 0.6, 2.5)), 100.0, -900.0)
    series_affine = write_dicom_series(str(tmp_path / "scans" / "series7"), hu, spacing=(0.8, 0.6, 2.5))
    model = str(tmp_path / "m.keras")
    _threshold_model(model, {"spacing": [1.0, 1.0, 2.0], "orientation": "RAS",
                             "intensity": {"preset": "percentile", "low": 0.0, "high": 100.0}})
    assert main(["predict", model, "--input", str(tmp_path / "scans"), "--output", str(tmp_path / "out"),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "ct1:" in printed and "series7:" in printed
    out = nibabel.load(str(tmp_path / "out" / "ct1.nii.gz"))
    ref = nibabel.load(src)
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    np.testing.assert_allclose(out.get_qform(), ref.get_qform(), atol=1e-5)
    np.testing.assert_allclose(out.header.get_zooms(), ref.header.get_zooms(), atol=1e-6)
    assert out.shape == shape
    dcm_out = nibabel.load(str(tmp_path / "out" / "series7.nii.gz"))
    np.testing.assert_allclose(dcm_out.affine, series_affine, atol=1e-4)
    pred = np.asarray(dcm_out.dataobj).astype(bool)
    inside = hu > 0
    assert 2 * (pred & inside).sum() / (pred.sum() + inside.sum()) > 0.9


def test_predict_bad_inputs_exit_2(tmp_path, capsys):
    model = str(tmp_path / "m.keras")
    _threshold_model(model, {"intensity": {"preset": "none"}})
    write_nifti(tmp_path / "t.nii.gz", np.zeros((20, 20, 10, 2), np.float32), np.eye(4))
    assert main(["predict", model, "--input", str(tmp_path / "t.nii.gz"), "--output", str(tmp_path / "o")]) == 2
    assert "t.nii.gz" in capsys.readouterr().err
    folder = str(tmp_path / "two")
    write_dicom_series(folder, np.zeros((20, 20, 8)), prefix="a")
    write_dicom_series(folder, np.zeros((20, 20, 8)), prefix="b", origin_lps=(5.0, 0.0, 0.0))
    assert main(["predict", model, "--input", folder, "--output", str(tmp_path / "o")]) == 2
    assert "holds 2 series" in capsys.readouterr().err


def test_evaluate_scan_folder(tmp_path, capsys):
    spacing = (0.7, 0.9, 2.5)
    aff = oblique_affine(spacing=spacing)
    for name in ("p1", "p2"):
        truth = ball((20, 18, 8), (9, 9, 4), 5.0, spacing)
        (tmp_path / "d" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / "masks").mkdir(exist_ok=True)
        write_nifti(tmp_path / "d" / "images" / f"{name}.nii.gz", truth.astype(np.float32), aff)
        write_nifti(tmp_path / "d" / "masks" / f"{name}.nii.gz", truth.astype(np.uint8), aff)
    model = str(tmp_path / "m.keras")
    _threshold_model(model, {"intensity": {"preset": "none"}, "split": {"train": ["p1"], "validation": ["p2"]}})
    csv_path = str(tmp_path / "scores.csv")
    assert main(["evaluate", model, "--data", str(tmp_path / "d"), "--csv", csv_path]) == 0
    out = capsys.readouterr().out
    assert "scored 1 cases (1 validation, 0 unseen); skipped 1 training cases" in out
    assert "skipped (training cases): p1" in out and "hd95" in out
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["class"]) for r in rows] == [("p2", "ball")] and float(rows[0]["dice"]) == 1.0


def test_predict_probabilities_and_flips(tmp_path, capsys):
    shape = (24, 26, 9)
    aff = oblique_affine(spacing=(0.9, 0.8, 2.5), angle=0.3)
    (tmp_path / "scans").mkdir()
    write_nifti(tmp_path / "scans" / "ct1.nii.gz", ball(shape, (12, 13, 4), 5.0, (0.9, 0.8, 2.5)).astype(np.float32),
                aff)
    model = str(tmp_path / "m.keras")
    _threshold_model(model, {"spacing": [1.0, 1.0, 2.0], "orientation": "RAS", "intensity": {"preset": "none"}})
    assert main(["predict", model, "--input", str(tmp_path / "scans"), "--output", str(tmp_path / "out"),
                 "--quiet", "--probabilities", "--flips", "0", "2"]) == 0
    assert "ct1_probabilities.nii.gz" in capsys.readouterr().out
    labels = np.asarray(nibabel.load(str(tmp_path / "out" / "ct1.nii.gz")).dataobj)
    probs = nibabel.load(str(tmp_path / "out" / "ct1_probabilities.nii.gz"))
    assert probs.shape == shape + (2,)
    np.testing.assert_allclose(probs.affine, nibabel.load(str(tmp_path / "scans" / "ct1.nii.gz")).affine, atol=1e-5)
    np.testing.assert_array_equal(labels, np.argmax(probs.get_fdata(), -1))
    assert main(["predict", model, "--input", str(tmp_path / "scans"), "--output", str(tmp_path / "o2"),
                 "--quiet", "--flips", "3"]) == 2
