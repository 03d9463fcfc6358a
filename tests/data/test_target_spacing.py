"""`spacing="median"`: one training voxel size from the data set's headers, nnU-Net's rule (median per axis,
the 10th percentile along a strongly anisotropic axis), on the model grid's axes after reorientation; and the
warning when no spacing is given for scans of different voxel sizes."""

import os
import warnings

import nibabel as nib
import numpy as np
import pytest

from keras_medseg.cli import main
from keras_medseg.data import load_preprocessing
from keras_medseg.data.scans.target_spacing import case_grids, grid_summary, target_spacing


def test_median_per_axis_and_the_anisotropic_axis():
    rng = np.random.default_rng(0)
    spacings = np.column_stack([rng.uniform(0.6, 1.0, 9), rng.uniform(0.6, 1.0, 9), rng.uniform(0.6, 1.2, 9)])
    shapes = rng.integers(100, 300, size=(9, 3))
    np.testing.assert_allclose(target_spacing(spacings, shapes), np.median(spacings, axis=0), atol=1e-4)
    # thick slices (median 5 mm against 0.8 mm in plane) on few slices (40 against 512): the 10th percentile
    z = np.array([5.0, 5.0, 5.0, 3.0, 2.5, 5.0, 5.0, 1.25, 5.0, 5.0])
    thick = np.column_stack([np.full(10, 0.8), np.full(10, 0.7), z])
    few = np.tile([512, 512, 40], (10, 1))
    assert target_spacing(thick, few) == (0.8, 0.7, round(float(np.percentile(z, 10)), 4))
    # many slices along that axis (as many as in plane): the median stays
    assert target_spacing(thick, np.tile([512, 512, 400], (10, 1)))[2] == 5.0
    # the 10th percentile is never below the largest in-plane voxel size
    tiny = thick.copy()
    tiny[:2, 2] = 0.3
    assert target_spacing(tiny, few)[2] == 0.8
    low, high, spread = grid_summary(thick)
    np.testing.assert_allclose(low, [0.8, 0.7, 1.25]) and np.testing.assert_allclose(high, [0.8, 0.7, 5.0])
    assert spread == 4.0


def test_case_grids_on_the_model_axes(tmp_path):
    """Voxel sizes and shapes per axis of the model grid: the header's, permuted as nibabel's reorientation
    permutes the axes (checked against nibabel's `as_closest_canonical`)."""
    affine = np.array([[0.0, 0.0, 3.0, 0.0], [-0.7, 0.0, 0.0, 0.0], [0.0, 0.9, 0.0, 0.0], [0, 0, 0, 1]])
    path = str(tmp_path / "perm.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((10, 12, 7), np.float32), affine), path)
    spacing, shape = case_grids([{"image": path}])
    np.testing.assert_allclose(spacing[0], [0.7, 0.9, 3.0]) and np.testing.assert_array_equal(shape[0], [10, 12, 7])
    spacing, shape = case_grids([{"image": (path, path)}], orientation="RAS")
    canonical = nib.as_closest_canonical(nib.load(path))
    np.testing.assert_allclose(spacing[0], canonical.header.get_zooms()[:3])
    np.testing.assert_array_equal(shape[0], canonical.shape)
    assert case_grids([{"image": str(tmp_path / "x.npy")}], headers_only=True)[0].shape == (0, 3)


def _write(root, spacings, shape=(20, 20, 12)):
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "labels"))
    rng = np.random.default_rng(1)
    for i, sp in enumerate(spacings):
        labels = np.zeros(shape, np.uint8)
        labels[6:14, 6:14, 3:9] = 1
        image = rng.normal(0, 1, shape).astype(np.float32) + 3 * labels
        for sub, arr in (("images", image), ("labels", labels)):
            nib.save(nib.Nifti1Image(arr, np.diag(list(sp) + [1.0])), os.path.join(root, sub, f"c{i}.nii.gz"))
    return root


def test_train_with_median_spacing_saves_it_and_warns_without(tmp_path, capsys, eager_tf_functions):
    spacings = [(1.0, 1.0, 2.0), (1.2, 1.2, 2.0), (0.8, 0.8, 2.5), (1.0, 1.1, 3.0)]
    root = _write(str(tmp_path / "d"), spacings)
    argv = ["train", "unet", "--data", root, "--spatial-dims", "3", "--patch-size", "8", "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "2", "--arg", "filters=2", "--arg", "depth=1", "--quiet",
            "--no-augment", "--cache-dir", "none", "--val-every", "9"]
    assert main(argv + ["--out", str(tmp_path / "a"), "--spacing", "median"]) == 0
    spec = load_preprocessing(str(tmp_path / "a" / "best.keras"))
    train = [spacings[int(name[1:])] for name in spec["split"]["train"]]
    np.testing.assert_allclose(spec["spacing"], np.median(train, axis=0), atol=1e-4)
    assert "(chosen from the training cases, --spacing median)" in capsys.readouterr().out
    assert spec["split"]["validation"] == ["c2"]  # the warning is about the training cases: c0, c1, c3
    with pytest.warns(UserWarning, match=r"voxel sizes differ \(from 1 x 1 x 2 to 1\.2 x 1\.2 x 3 mm per "
                                         r"axis\).*--spacing median"):
        assert main(argv + ["--out", str(tmp_path / "b")]) == 0
    with warnings.catch_warnings(record=True) as caught:  # one voxel size: no warning
        warnings.simplefilter("always")
        same = _write(str(tmp_path / "same"), [(1.0, 1.0, 2.0)] * 3)
        assert main([a if a != root else same for a in argv] + ["--out", str(tmp_path / "c")]) == 0
    assert not [w for w in caught if "voxel sizes differ" in str(w.message)]
    assert main(argv + ["--out", str(tmp_path / "e"), "--spacing", "fine"]) == 2
    assert "--spacing takes voxel sizes in mm (e.g. 1.5 1.5 3) or 'median'" in capsys.readouterr().err
