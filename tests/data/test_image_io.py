"""`read_image` / `write_image`: geometry from NIfTI (nibabel), DICOM series, NRRD/MHA (SimpleITK)."""

import nibabel
import numpy as np
import pytest

from keras_medseg.data.scans.io import ImageRecord, read_image, write_image
from tests.data.scan_factory import oblique_affine, write_dicom_series, write_nifti


def test_nifti_geometry_and_write_back(tmp_path):
    aff = oblique_affine()
    vol = np.random.default_rng(0).normal(size=(9, 7, 5)).astype(np.float32)
    path = write_nifti(tmp_path / "ct.nii.gz", vol, aff)
    rec = read_image(path)
    assert isinstance(rec, ImageRecord) and rec.format == "nifti"
    np.testing.assert_array_equal(rec.array, vol)
    np.testing.assert_allclose(rec.affine, aff, atol=1e-5)
    np.testing.assert_allclose(rec.spacing, (0.7, 0.9, 2.5), atol=1e-5)
    np.testing.assert_allclose(rec.direction @ np.diag(rec.spacing), aff[:3, :3], atol=1e-5)
    np.testing.assert_allclose(rec.origin, aff[:3, 3], atol=1e-5)
    labels = (vol > 0).astype(np.int64) * 3
    out = write_image(tmp_path / "seg.nii.gz", labels, rec)
    img = nibabel.load(out)
    np.testing.assert_allclose(img.affine, aff, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), aff, atol=1e-5)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)


def test_lps_conversion_agrees_with_nibabel(tmp_path):
    """SimpleITK reading the same NIfTI (LPS inside) must give nibabel's RAS affine after conversion."""
    aff = oblique_affine(spacing=(1.1, 0.6, 3.0))
    vol = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = write_nifti(tmp_path / "a.nii", vol, aff)
    import SimpleITK as sitk

    from keras_medseg.data.scans.io import _record_from_sitk

    via_itk = _record_from_sitk(sitk.ReadImage(path), path, "itk")
    np.testing.assert_allclose(via_itk.affine, aff, atol=1e-4)
    np.testing.assert_array_equal(via_itk.array, vol)
    # NRRD written from the NIfTI record reads back with the same geometry and voxels.
    rec = read_image(path)
    out = write_image(tmp_path / "a.nrrd", vol, rec)
    back = read_image(out)
    np.testing.assert_allclose(back.affine, aff, atol=1e-4)
    np.testing.assert_array_equal(back.array, vol)


def test_dicom_series_hu_spacing_shuffled(tmp_path):
    rng = np.random.default_rng(1)
    hu = rng.integers(-1000, 1500, size=(12, 10, 6)).astype(np.float64)
    c, s = np.cos(0.2), np.sin(0.2)
    expected = write_dicom_series(str(tmp_path / "series"), hu, spacing=(0.8, 0.6, 2.5),
                                  row_dir=(c, s, 0.0), col_dir=(-s, c, 0.0), slope=1.0, intercept=-1024.0)
    rec = read_image(str(tmp_path / "series"))
    assert rec.format == "dicom" and rec.meta["num_slices"] == 6
    np.testing.assert_allclose(rec.array, hu)
    np.testing.assert_allclose(rec.spacing, (0.8, 0.6, 2.5), atol=1e-5)
    np.testing.assert_allclose(rec.affine, expected, atol=1e-4)
    # Written back as NIfTI, the label map sits on the series (checked with nibabel).
    out = write_image(tmp_path / "seg.nii.gz", (hu > 0).astype(np.uint8), rec)
    img = nibabel.load(out)
    np.testing.assert_allclose(img.affine, expected, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), hu > 0)


def test_dicom_rescale_slope(tmp_path):
    hu = np.full((4, 3, 3), 2.0) * np.arange(3)[None, None, :] * 10 - 500
    write_dicom_series(str(tmp_path / "s"), hu, slope=2.0, intercept=-1000.0)
    np.testing.assert_allclose(read_image(str(tmp_path / "s")).array, hu)


def test_dicom_two_series_refused(tmp_path):
    hu = np.zeros((4, 4, 3))
    folder = str(tmp_path / "mixed")
    write_dicom_series(folder, hu, prefix="a")
    write_dicom_series(folder, hu, prefix="b", origin_lps=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match=r"mixed.*holds 2 series"):
        read_image(folder)


def test_4d_nifti_refused_where_3d_expected(tmp_path):
    path = write_nifti(tmp_path / "fmri.nii.gz", np.zeros((4, 4, 4, 2), np.float32), np.eye(4))
    assert read_image(path).array.shape == (4, 4, 4, 2)
    with pytest.raises(ValueError, match=r"fmri\.nii\.gz.*4D"):
        read_image(path, spatial_dims=3)


def test_plain_formats_unit_spacing(tmp_path):
    import skimage.io

    img = (np.arange(20).reshape(4, 5) * 10).astype(np.uint8)
    skimage.io.imsave(str(tmp_path / "a.png"), img, check_contrast=False)
    rec = read_image(str(tmp_path / "a.png"))
    assert rec.spatial_dims == 2 and rec.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(rec.array, img)
    np.save(tmp_path / "v.npy", np.zeros((3, 4, 5)))
    assert read_image(str(tmp_path / "v.npy")).spacing == (1.0, 1.0, 1.0)
    assert read_image(str(tmp_path / "v.npy"), spatial_dims=2).array.shape == (3, 4, 5)


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii"):
        read_image(str(tmp_path / "nope.nii"))
    (tmp_path / "x.jpg").write_bytes(b"123")
    with pytest.raises(ValueError, match="x.jpg"):
        read_image(str(tmp_path / "x.jpg"))
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="bad.nii.gz"):
        read_image(str(tmp_path / "bad.nii.gz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No DICOM series"):
        read_image(str(tmp_path / "empty"))
    rec = read_image(write_nifti(tmp_path / "r.nii", np.zeros((3, 3, 3)), np.eye(4)))
    with pytest.raises(ValueError, match="labels.shape"):
        write_image(tmp_path / "o.nii", np.zeros((3, 3, 4)), rec)
