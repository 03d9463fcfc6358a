"""Issue 27, items 2 and 7 (files): geometry is checked, not assumed.

DICOM series written by pydicom with a missing slice, uneven gaps, mixed pixel spacing, a tilted stack, two
orientations or a duplicate position are refused in one line naming the series and what differs; with
`resample_irregular` they are resampled from the true slice positions, checked against SimpleITK's reading of
the complete series and against the exact values of a linear phantom. A NIfTI file whose qform and sform
disagree follows the NIfTI-1 rule (sform) with a warning, and its label map gets both forms equal. Single
DICOM files (a radiograph, one CT slice) read with their pixel spacing.
"""

import os
import re
import warnings

import nibabel
import numpy as np
import pytest

from keras_medseg.cli import main
from keras_medseg.data import read_image
from keras_medseg.predict.scans import predict_files
from tests.data.scan_factory import write_dicom_radiograph, write_dicom_slices
from tests.test_scans import _threshold_model

_LPS = np.diag([-1.0, -1.0, 1.0])
BASE = np.array([-5.0, -3.0, 20.0])


def ramp(points):
    """HU linear in LPS mm: linear interpolation reproduces it exactly (up to the integer storage)."""
    return 3.0 * points[:, 0] - 2.0 * points[:, 1] + 10.0 * points[:, 2]


def _physical_ramp(record):
    idx = np.indices(record.shape).reshape(3, -1)
    ras = record.affine[:3, :3] @ idx + record.affine[:3, 3:4]
    return ramp((_LPS @ ras).T).reshape(record.shape)


def _tilted(k):
    t = np.radians(15)
    return {"position": BASE + [0, 0, 2.5 * k], "col_dir": (0, np.cos(t), np.sin(t))}


SERIES = {
    "missing-slice": ([{"position": BASE + [0, 0, 2.5 * k]} for k in (0, 1, 2, 4, 5, 6)],
                      r"1 missing slice: a gap of 5 mm .* where the median gap is 2\.5 mm"),
    "uneven-gaps": ([{"position": BASE + [0, 0, h]} for h in (0, 2.5, 5.3, 7.5, 10.0, 12.1)],
                    r"uneven slice gaps from 2\.1 mm to 2\.8 mm \(median 2\.5 mm"),
    "mixed-pixel-spacing": ([{"position": BASE + [0, 0, 2.5 * k], "pixel_spacing": (0.7 if k == 3 else 0.8, 0.6)}
                             for k in range(6)], r"pixel spacing differs between slices: 0\.8 x 0\.6 mm in 5, "
                                                 r"0\.7 x 0\.6 mm in 1 \(e\.g\. 's\d+\.dcm'\)"),
    "tilted-stack": ([_tilted(k) for k in range(6)], r"not stacked along their normal.*a tilt of 15 degrees"),
}
ALWAYS_REFUSED = {
    "two-orientations": ([{"position": BASE + [0, 0, 2.5 * k]} for k in range(5)]
                         + [{"position": BASE + [0, 0, 12.5], "row_dir": (0, 1, 0), "col_dir": (0, 0, -1)}],
                         r"slice orientation differs: .* split the series by orientation"),
    "duplicate-position": ([{"position": BASE + [0, 0, 2.5 * k]} for k in (0, 1, 2, 2, 3)],
                           r"lie at the same position .* duplicates or several acquisitions"),
}


@pytest.mark.parametrize("name", list(SERIES) + list(ALWAYS_REFUSED))
def test_irregular_series_refused_in_one_line(name, tmp_path):
    slices, what = {**SERIES, **ALWAYS_REFUSED}[name]
    folder = str(tmp_path / name)
    write_dicom_slices(folder, slices, ramp)
    with pytest.raises(ValueError) as info:
        read_image(folder)
    message = str(info.value)
    assert "\n" not in message and f"DICOM series {folder!r}" in message
    assert re.search(what, message), message
    if name in ALWAYS_REFUSED:
        with pytest.raises(ValueError, match="cannot be read as one volume"):
            read_image(folder, resample_irregular=True)
    else:
        assert "--resample-irregular" in message


@pytest.mark.parametrize("name", list(SERIES))
def test_resampling_uses_the_true_slice_positions(name, tmp_path):
    slices, _ = SERIES[name]
    folder = str(tmp_path / name)
    write_dicom_slices(folder, slices, ramp)
    record = read_image(folder, resample_irregular=True)
    first = slices[0]["position"]
    np.testing.assert_allclose(record.origin, _LPS @ first, atol=1e-6)  # the grid starts on the first slice
    covered = record.array > record.array.min()  # a tilted stack leaves its edges uncovered (filled)
    assert covered.mean() > 0.7
    err = np.abs(record.array - _physical_ramp(record))[covered]
    assert err.max() <= 0.5 + 1e-3, err.max()  # exact up to the integer HU of the files
    assert record.meta["resampled"]


def test_missing_slice_matches_simpleitk_on_the_complete_series(tmp_path):
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    values = rng.normal(0, 200, (7, 12, 10)).round()  # (slice, row, column): any values, not a ramp

    def hu_of(points):
        return values[int(round((points[0, 2] - BASE[2]) / 2.5))].ravel()

    files = write_dicom_slices(str(tmp_path / "s"), [{"position": BASE + [0, 0, 2.5 * k]} for k in range(7)], hu_of)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    reference = sitk.GetArrayFromImage(reader.Execute()).astype(np.float32).transpose(2, 1, 0)  # (i, j, k)
    os.remove(files[3])
    record = read_image(str(tmp_path / "s"), resample_irregular=True)
    assert record.shape == reference.shape and np.allclose(record.spacing, (0.8, 0.6, 2.5))
    keep = [0, 1, 2, 4, 5, 6]
    np.testing.assert_allclose(record.array[..., keep], reference[..., keep], atol=1e-3)
    np.testing.assert_allclose(record.array[..., 3], (reference[..., 2] + reference[..., 4]) / 2, atol=1e-3)
    # SimpleITK alone puts the six slices on a uniform grid: the slices after the gap land 2.5 mm off.
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    assert reader.Execute().GetSize()[2] == 6


def test_predict_refuses_then_resamples_an_irregular_series(tmp_path, capsys):
    folder = tmp_path / "scans" / "series"
    write_dicom_slices(str(folder), SERIES["missing-slice"][0], lambda p: np.where(p[:, 2] > 27, 1000.0, -1000.0))
    model = str(tmp_path / "m.keras")
    _threshold_model(model, {"intensity": {"preset": "none"}})
    argv = ["predict", model, "--input", str(folder), "--output", str(tmp_path / "out"), "--quiet", "--pad"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing slice" in err and "--resample-irregular" in err, err
    assert main(argv + ["--resample-irregular"]) == 0
    out = nibabel.load(str(tmp_path / "out" / "series.nii.gz"))
    assert out.shape == (10, 12, 7)
    np.testing.assert_allclose(np.diag(out.affine)[:3], (-0.8, -0.6, 2.5), atol=1e-5)


def test_nifti_qform_sform_disagreement_follows_the_sform_and_is_written_consistently(tmp_path):
    import SimpleITK as sitk

    qform = np.diag([1.0, 1.0, 2.0, 1.0])
    sform = qform.copy()
    sform[:3, 3] = [40.0, 0.0, 0.0]  # 40 mm apart
    img = nibabel.Nifti1Image(np.zeros((16, 16, 8), np.float32), sform)
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=2)  # "aligned": ITK then uses the qform
    (tmp_path / "in").mkdir()
    nibabel.save(img, str(tmp_path / "in" / "ct.nii.gz"))
    with pytest.warns(UserWarning, match=r"ct\.nii\.gz'?: its qform and sform disagree by up to 40 mm "
                                         r"\(qform_code=1, sform_code=2\); using the sform"):
        record = read_image(str(tmp_path / "in" / "ct.nii.gz"))
    np.testing.assert_allclose(record.affine, sform)  # nibabel's get_best_affine: the sform
    model = str(tmp_path / "m.keras")
    _threshold_model(model, {"intensity": {"preset": "none"}})
    with pytest.warns(UserWarning, match="qform and sform disagree"):
        predict_files(model, str(tmp_path / "in"), str(tmp_path / "out"), progress=False)
    out = nibabel.load(str(tmp_path / "out" / "ct.nii.gz"))
    np.testing.assert_allclose(out.get_qform(), sform, atol=1e-5)
    np.testing.assert_allclose(out.get_sform(), sform, atol=1e-5)
    # an ITK reader (which prefers the qform here) places the label map where nibabel placed the scan
    np.testing.assert_allclose(sitk.ReadImage(str(tmp_path / "out" / "ct.nii.gz")).GetOrigin(),
                               _LPS @ sform[:3, 3], atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the label map itself reads without a warning
        read_image(str(tmp_path / "out" / "ct.nii.gz"))


def test_single_dicom_files(tmp_path, capsys):
    import pydicom
    from pydicom.data import get_testdata_file

    pixels = (np.arange(20 * 30).reshape(20, 30) % 500).astype(np.uint16)
    xray = write_dicom_radiograph(tmp_path / "chest.dcm", pixels, imager_pixel_spacing=(0.15, 0.143))
    rec = read_image(xray)
    assert rec.spatial_dims == 2 and rec.array.shape == (30, 20)  # voxel index order (column i, row j)
    np.testing.assert_allclose(rec.spacing, (0.143, 0.15))  # ImagerPixelSpacing (rows, columns) reversed
    np.testing.assert_array_equal(rec.array.T, pixels)
    ct = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(ct)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    rec = read_image(ct)
    assert rec.spatial_dims == 2 and np.allclose(rec.spacing, [float(v) for v in ds.PixelSpacing][::-1])
    np.testing.assert_allclose(rec.array.T, hu)
    vol = read_image(ct, spatial_dims=3)
    assert vol.array.shape == (128, 128, 1) and np.isclose(vol.spacing[2], float(ds.SliceThickness))
    no_extension = tmp_path / "IM0001"  # DICOM files often have no extension: the DICM marker decides
    no_extension.write_bytes(open(ct, "rb").read())
    np.testing.assert_allclose(read_image(str(no_extension)).array.T, hu)
    # through predict with a 2D model: a PNG label map
    import keras

    model = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(2, 1, activation="softmax")])
    model.layers[-1].set_weights([np.array([-1.0, 1.0]).reshape(1, 1, 1, 2), np.array([250.0, -250.0])])
    model.save(str(tmp_path / "m2d.keras"))
    from keras_medseg.data.scans.preprocess import save_preprocessing

    save_preprocessing(str(tmp_path / "m2d.keras"), {"spatial_dims": 2, "intensity": {"preset": "none"}})
    assert main(["predict", str(tmp_path / "m2d.keras"), "--input", xray, "--output", str(tmp_path / "o"),
                 "--quiet"]) == 0
    import skimage.io

    np.testing.assert_array_equal(skimage.io.imread(str(tmp_path / "o" / "chest.png")).T, pixels > 250)
    capsys.readouterr()
