"""VolumeDataset: folders and dataset.json of NIfTI volumes of different shapes, pos/neg sampling,
reproducible draws, the cache budget, 2D slices, spacing, augmentation."""

import json
import os

import nibabel as nib
import numpy as np
import pytest

from keras_medseg.data import VolumeDataset, find_cases
from keras_medseg.data.augment import Compose, RandomAffine, RandomGamma


def write_cases(root, shapes=((20, 24, 16), (28, 18, 22), (16, 16, 30)), seed=0, layout="folder"):
    """NIfTI volumes of different shapes, each with one bright ball labelled 1 (spacing 1 x 1 x 2 mm)."""
    rng = np.random.default_rng(seed)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    img_dir = os.path.join(root, "images" if layout == "folder" else "imagesTr")
    lab_dir = os.path.join(root, "labels" if layout == "folder" else "labelsTr")
    os.makedirs(img_dir)
    os.makedirs(lab_dir)
    training = []
    for i, shape in enumerate(shapes):
        grid = np.indices(shape)
        centre = [rng.integers(5, s - 5) for s in shape]
        ball = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= 9
        image = rng.normal(100, 10, size=shape) + 80 * ball
        name = f"case{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(image.astype("float32"), affine), os.path.join(img_dir, name))
        nib.save(nib.Nifti1Image(ball.astype("uint8"), affine), os.path.join(lab_dir, name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    if layout == "msd":
        with open(os.path.join(root, "dataset.json"), "w") as f:
            json.dump({"name": "balls", "labels": {"0": "background", "1": "ball"}, "training": training}, f)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_cases(str(tmp_path_factory.mktemp("vols")))


def test_folder_and_msd_sources(folder, tmp_path):
    cases = find_cases(folder)
    assert [c["name"] for c in cases] == ["case00", "case01", "case02"]
    msd = write_cases(str(tmp_path / "msd"), layout="msd")
    assert [c["name"] for c in find_cases(os.path.join(msd, "dataset.json"))] == ["case00", "case01", "case02"]
    assert len(find_cases(msd)) == 3
    ds = VolumeDataset(os.path.join(msd, "dataset.json"), patch_size=8, batch_size=3)
    x, y = ds[0]
    assert x.shape == (3, 8, 8, 8, 1) and x.dtype == np.float32 and y.shape == (3, 8, 8, 8) and y.dtype == np.int32


def test_positive_patches_are_centred_on_foreground_and_ratio(folder):
    ds = VolumeDataset(folder, patch_size=(8, 10, 6), batch_size=4, pos_fraction=1.0, steps_per_epoch=5)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (4, 8, 10, 6, 1)
        assert np.all(y[:, 4, 5, 3] == 1)  # the centre voxel (size // 2) is foreground
    ds = VolumeDataset(folder, patch_size=8, batch_size=4, pos_fraction=0.5, steps_per_epoch=50, seed=3)
    image, labels, fg, fill = ds.load_case(0)
    rng = np.random.default_rng(0)
    positives = [ds.sample_patch(image, labels, fg, fill, rng)[2] for _ in range(400)]
    assert 0.42 < np.mean(positives) < 0.58
    neg = VolumeDataset(folder, patch_size=8, batch_size=4, pos_fraction=0.0, steps_per_epoch=20)
    centre_fg = np.mean([neg[i][1][:, 4, 4, 4].mean() for i in range(len(neg))])
    assert centre_fg < 0.2  # a ball is a small part of each volume


def test_reproducible_and_seeded_with_augmentation(folder):
    def make(seed):
        aug = Compose([RandomAffine(rotation=0.3, scaling=0.1, seed=1), RandomGamma(seed=2)])
        return VolumeDataset(folder, patch_size=8, batch_size=2, steps_per_epoch=3, augment=aug, seed=seed)
    a, b, c = make(0), make(0), make(1)
    for i in (2, 0, 1):  # any order
        np.testing.assert_array_equal(a[i][0], b[i][0])
        np.testing.assert_array_equal(a[i][1], b[i][1])
    assert not np.array_equal(a[0][0], c[0][0])
    a.on_epoch_end()
    assert not np.array_equal(a[0][0], b[0][0])  # a new epoch draws new patches


def test_cache_budget(folder):
    big = VolumeDataset(folder, patch_size=8, batch_size=3, cache_bytes=2**30)
    big[0]
    big[0]
    assert big.loads == 3 and len(big._cache) == 3
    sizes = [sum(a.nbytes for a in entry[:3]) for entry in big._cache.values()]
    assert big.cached_bytes == sum(sizes)
    ds = VolumeDataset(folder, patch_size=8, batch_size=3, cache_bytes=max(sizes))
    ds[0]
    assert ds.cached_bytes <= max(sizes) and len(ds._cache) < 3 and ds.loads == 3
    none = VolumeDataset(folder, patch_size=8, batch_size=3, cache_bytes=0)
    none[0]
    assert none.cached_bytes == 0 and len(none._cache) == 0


def test_two_d_slices_and_spacing(folder):
    ds = VolumeDataset(folder, patch_size=(12, 12), spatial_dims=2, batch_size=3, pos_fraction=1.0)
    x, y = ds[0]
    assert x.shape == (3, 12, 12, 1) and y.shape == (3, 12, 12)
    assert np.all(y[:, 6, 6] == 1)
    iso = VolumeDataset(folder, patch_size=8, spacing=(2.0, 2.0, 2.0))
    image, labels, _, _ = iso.load_case(0)
    assert labels.shape == (10, 12, 16)  # (20, 24, 16) at 1 x 1 x 2 mm -> 2 mm voxels
    assert abs(float(image.mean())) < 1e-3  # z-scored
    assert iso.spec(["background", "ball"])["spacing"] == [2.0, 2.0, 2.0]


def test_bad_sources_and_arguments(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="source"):
        find_cases(str(tmp_path / "nothing"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="images/"):
        find_cases(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="patch_size"):
        VolumeDataset(folder, patch_size=(8, 8))
    with pytest.raises(ValueError, match="pos_fraction"):
        VolumeDataset(folder, patch_size=8, pos_fraction=2)
    with pytest.raises(ValueError, match="spatial_dims"):
        VolumeDataset(folder, patch_size=8, spatial_dims=4)
