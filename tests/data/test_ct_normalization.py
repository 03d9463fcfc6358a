"""nnU-Net's CT normalisation: the data set's foreground statistics (checked against NumPy over the same voxels),
the "ct" intensity preset's formula, and `train` using it for a dataset.json whose one channel is CT."""

import json
import os

import nibabel as nib
import numpy as np
import pytest

from keras_medseg.cli import main
from keras_medseg.data import load_preprocessing
from keras_medseg.data.scans.ct_normalization import ct_preset, foreground_statistics
from keras_medseg.data.scans.preprocess import intensity


def _ct_cases(root, n=3, shape=(24, 20, 10), seed=0):
    """`n` CT-like cases (air -1000, body 0 +- 30 HU, an organ of 60 +- 20 HU labelled 1, a rim labelled 255)."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "imagesTr"))
    os.makedirs(os.path.join(root, "labelsTr"))
    cases = []
    for i in range(n):
        labels = np.zeros(shape, np.uint8)
        labels[6:16, 5:14, 2:8] = 1
        labels[4, 4, :] = 255
        image = np.full(shape, -1000.0)
        image[2:22, 2:18, :] = rng.normal(0, 30, (20, 16, shape[2]))
        image[labels == 1] = rng.normal(60 + 10 * i, 20, int((labels == 1).sum()))
        image = np.round(image).astype(np.int16)
        paths = (os.path.join(root, "imagesTr", f"ct_{i:03d}_0000.nii.gz"), os.path.join(root, "labelsTr",
                                                                                          f"ct_{i:03d}.nii.gz"))
        nib.save(nib.Nifti1Image(image, np.diag([0.8, 0.8, 2.5, 1.0])), paths[0])
        nib.save(nib.Nifti1Image(labels, np.diag([0.8, 0.8, 2.5, 1.0])), paths[1])
        cases.append({"name": f"ct_{i:03d}", "image": paths[0], "label": paths[1], "arrays": (image, labels)})
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "rim": 255},
                   "numTraining": n, "file_ending": ".nii.gz"}, f)
    return cases


def test_foreground_statistics_equal_numpy_over_the_same_voxels(tmp_path):
    cases = _ct_cases(str(tmp_path / "d"))
    every = np.concatenate([img[lab > 0] for img, lab in (c["arrays"] for c in cases)]).astype(np.float64)
    stats = foreground_statistics(cases, samples_per_case=10**6)
    np.testing.assert_allclose([stats["low"], stats["high"]], np.percentile(every, [0.5, 99.5]))
    np.testing.assert_allclose([stats["mean"], stats["std"]], [every.mean(), every.std()])
    assert stats["voxels"] == every.size
    organ = np.concatenate([img[lab == 1] for img, lab in (c["arrays"] for c in cases)]).astype(np.float64)
    assert foreground_statistics(cases, samples_per_case=10**6, ignore_value=255)["mean"] == pytest.approx(
        organ.mean())
    capped = foreground_statistics(cases, samples_per_case=50, seed=3)
    assert capped["voxels"] == 150 and capped == foreground_statistics(cases, samples_per_case=50, seed=3)
    preset = ct_preset(cases, samples_per_case=10**6)
    assert preset == {"preset": "ct", **{k: round(stats[k], 4) for k in ("low", "high", "mean", "std")}}
    x = cases[0]["arrays"][0]
    expected = (np.clip(x, preset["low"], preset["high"]) - preset["mean"]) / preset["std"]
    np.testing.assert_allclose(intensity(x, preset), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"foreground statistics \['low', 'high', 'mean', 'std'\]"):
        intensity(x, "ct")
    empty = [dict(cases[0], label=cases[0]["image"].replace("ct_000_0000", "none"))]
    nib.save(nib.Nifti1Image(np.zeros(x.shape, np.uint8), np.diag([0.8, 0.8, 2.5, 1.0])), empty[0]["label"])
    with pytest.raises(ValueError, match="No foreground voxel"):
        foreground_statistics(empty)
    with pytest.raises(ValueError, match="single-channel CT; case 'ct_000' has 2 image files"):
        foreground_statistics([dict(cases[0], image=(cases[0]["image"], cases[0]["image"]))])


def test_train_on_a_ct_dataset_json_uses_the_ct_normalisation(tmp_path, eager_tf_functions):
    root = str(tmp_path / "Dataset002_CT")
    cases = _ct_cases(root, n=4)
    argv = ["train", "unet", "--data", root, "--spatial-dims", "3", "--patch-size", "8", "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "2", "--arg", "filters=2", "--arg", "depth=1", "--quiet",
            "--no-augment", "--cache-dir", "none", "--val-every", "9", "--ignore-value", "255"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0
    spec = load_preprocessing(str(tmp_path / "a" / "best.keras"))
    train = [c for c in cases if c["name"] in spec["split"]["train"]]
    assert len(train) == 3
    assert spec["intensity"] == ct_preset(train, seed=0, ignore_value=255)
    assert main(argv + ["--out", str(tmp_path / "b"), "--intensity", "zscore"]) == 0  # asked for: as given
    assert load_preprocessing(str(tmp_path / "b" / "best.keras"))["intensity"] == {"preset": "zscore"}
