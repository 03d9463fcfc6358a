"""Reorientation, resampling (vs SimpleITK), intensity presets (vs NumPy formulas), cropping."""

import nibabel
import numpy as np
import pytest

from keras_medseg.data import read_image, write_image
from keras_medseg.data.scans.geometry import (
    from_model_space,
    reorient,
    resample,
    resample_to_grid,
    to_model_space,
    undo_reorient,
)
from keras_medseg.data.scans.preprocess import crop_to_foreground, intensity, uncrop
from tests.data.scan_factory import ball, oblique_affine, write_nifti


def test_reorient_is_exact_and_invertible():
    aff = oblique_affine(angle=0.2)  # x flipped: LAS-like
    vol = np.random.default_rng(0).normal(size=(6, 7, 8, 2))
    ras, ras_aff, ornt = reorient(vol, aff, "RAS")
    assert nibabel.aff2axcodes(ras_aff) == ("R", "A", "S")
    # Every voxel keeps its world position: voxel (i,j,k) of the original is where the new affine says.
    idx = np.array([1, 2, 3])
    world = aff @ np.append(idx, 1)
    new_idx = np.linalg.solve(ras_aff, world)[:3].round().astype(int)
    np.testing.assert_array_equal(ras[tuple(new_idx)], vol[tuple(idx)])
    np.testing.assert_array_equal(undo_reorient(ras, ornt), vol)
    with pytest.raises(ValueError, match="orientation"):
        reorient(vol, aff, "RAQ")


def test_resample_matches_simpleitk():
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    vol = rng.normal(size=(20, 18, 9)).astype(np.float32)
    aff = oblique_affine(spacing=(0.7, 0.9, 2.5), flip_x=False)
    out, new_aff = resample(vol, aff, (1.0, 1.0, 1.5), order=1)
    assert out.shape == (14, 16, 15)
    # The same grid through SimpleITK (LPS world; numpy arrays in (k, j, i)).
    lps = np.diag([-1.0, -1.0, 1.0])

    def to_sitk(array, a):
        img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
        sp = np.sqrt((a[:3, :3] ** 2).sum(0))
        img.SetSpacing(sp.tolist())
        img.SetOrigin((lps @ a[:3, 3]).tolist())
        img.SetDirection((lps @ a[:3, :3] / sp).ravel().tolist())
        return img

    ref = sitk.Resample(
        to_sitk(vol, aff),
        to_sitk(np.zeros(out.shape, np.float32), new_aff),
        sitk.Transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    ref = sitk.GetArrayFromImage(ref).transpose(2, 1, 0)
    # Compare where the output point lies inside the input grid (SimpleITK fills outside with 0).
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij"), -1).reshape(-1, 3)
    src = (np.linalg.inv(aff) @ new_aff @ np.c_[idx, np.ones(len(idx))].T)[:3].T
    inside = np.all((src >= 0) & (src <= np.array(vol.shape) - 1), axis=1).reshape(out.shape)
    assert inside.mean() > 0.3
    np.testing.assert_allclose(out[inside], ref[inside], atol=1e-4)


def test_geometry_round_trip_read_canonical_resample_inverse_write(tmp_path):
    """read -> canonical -> resample -> inverse -> write: same affine (1e-5) and voxel-exact labels."""
    aff = oblique_affine(spacing=(0.7, 0.9, 2.5), angle=0.35)
    shape = (22, 19, 8)
    labels = ball(shape, (10, 9, 4), 6.0, (0.7, 0.9, 2.5)).astype(np.uint8) + 2 * ball(
        shape, (5, 5, 2), 2.5, (0.7, 0.9, 2.5)
    )
    path = write_nifti(tmp_path / "lab.nii.gz", labels.astype(np.uint8), aff)
    rec = read_image(path)
    half = [s / 2 for s in rec.spacing]
    model, change = to_model_space(rec.array, rec.affine, spacing=half, orientation="RAS", order=0)
    assert nibabel.aff2axcodes(change.model_affine) == ("R", "A", "S")
    # The model grid has half the voxel size along each (permuted) axis.
    np.testing.assert_allclose(sorted(np.sqrt((change.model_affine[:3, :3] ** 2).sum(0))), sorted(half), atol=1e-6)
    assert model.shape == tuple(2 * n for n in change.reoriented_shape)
    back = from_model_space(model, change, order=0)
    out = write_image(tmp_path / "back.nii.gz", back, rec)
    img = nibabel.load(out)
    np.testing.assert_allclose(img.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    # A non-integer spacing change still comes back onto the exact original grid.
    model2, change2 = to_model_space(
        rec.array.astype(np.float32), rec.affine, spacing=(1.3, 1.1, 1.7), orientation="RAS"
    )
    back2 = from_model_space(model2, change2, order=1)
    assert back2.shape == shape and np.allclose(change2.original_affine, aff)
    assert np.mean(np.abs(back2 - labels) < 0.5) > 0.9


def test_resample_labels_nearest_keeps_ids():
    lab = np.random.default_rng(1).integers(0, 4, size=(9, 9, 5)).astype(np.int16)
    out, _ = resample(lab, np.diag([1.0, 1.0, 3.0, 1.0]), (0.5, 0.5, 1.0), order=0)
    assert out.dtype == np.int16 and set(np.unique(out)) <= set(np.unique(lab))
    np.testing.assert_array_equal(out[::2, ::2, ::3], lab)
    with pytest.raises(ValueError, match="spacing"):
        resample(lab, np.eye(4), (1.0, 0.0, 1.0))


def test_resample_2d_and_channels():
    img = np.random.default_rng(2).normal(size=(10, 12, 3)).astype(np.float32)
    aff2 = np.diag([0.5, 0.5, 1.0])
    out, new = resample(img, aff2, (0.25, 0.25))
    assert out.shape == (20, 24, 3)
    np.testing.assert_allclose(out[::2, ::2], img, atol=1e-5)
    np.testing.assert_allclose(resample_to_grid(out, new, (10, 12), aff2, order=1), img, atol=1e-5)


def test_intensity_presets_against_numpy():
    rng = np.random.default_rng(3)
    ct = rng.normal(0, 400, size=(8, 8, 8))
    np.testing.assert_allclose(
        intensity(ct, {"preset": "ct_window", "low": -160, "high": 240}),
        (np.clip(ct, -160, 240) + 160) / 400,
        atol=1e-6,
    )
    lo, hi = np.percentile(ct, [0.5, 99.5])
    np.testing.assert_allclose(intensity(ct, "percentile"), (np.clip(ct, lo, hi) - lo) / (hi - lo), atol=1e-6)
    mask = ct > 0
    z = intensity(ct, "zscore", mask=mask)
    np.testing.assert_allclose(z, (ct - ct[mask].mean()) / (ct[mask].std() + 1e-6), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z[mask].mean(), 0, atol=1e-5)
    bad = ct.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="case7.nii.gz holds 1 NaN"):
        intensity(bad, "zscore", name="case7.nii.gz")
    with pytest.raises(ValueError, match="preset"):
        intensity(ct, "minmax")
    with pytest.raises(ValueError, match="high"):
        intensity(ct, "ct_window", low=10, high=0)


def test_crop_and_uncrop():
    vol = np.full((10, 12, 8), -1024.0)
    vol[3:6, 4:9, 2:5] = 40.0
    crop, box = crop_to_foreground(vol, margin=1)
    assert crop.shape == (5, 7, 5)
    np.testing.assert_array_equal(uncrop(crop, box, vol.shape, fill=-1024.0), vol)
    whole, box = crop_to_foreground(np.zeros((4, 4)))
    assert whole.shape == (4, 4)
