"""Multi-modal scans: 4D NIfTI and per-modality files through read_image, the case finder, per-channel
intensity, VolumeDataset (channels and overlapping region targets) and augmentation; the geometry check."""

import os

import nibabel as nib
import numpy as np
import pytest

from keras_medseg.data import VolumeDataset, find_cases, read_image
from keras_medseg.data.scans.modalities import detect_numbered, group_modalities
from keras_medseg.data.scans.preprocess import intensity
from keras_medseg.data.sources import resolve_source
from tests.data.scan_factory import oblique_affine

MODALITIES = ("t1", "t1ce", "t2", "flair")
# brain-tumour style label values 1, 2, 3 and three nested regions
REGIONS = [("whole", [1, 2, 3]), ("core", [2, 3]), ("enhancing", [3])]


def _save(path, array, affine):
    nib.save(nib.Nifti1Image(np.asarray(array), affine), path)
    return path


def write_multimodal_cases(root, n=3, shape=(16, 16, 16), layout="pattern", seed=0):
    """`n` cases of 4 MR-like channels with a nested lesion (labels 1 oedema, 2 core, 3 enhancing), spacing
    1 x 1 x 1.5 mm; `layout` "pattern" (`case_t1.nii.gz`, ...), "numbered" (`case_0000.nii.gz`, ...) or "4d"
    (one `(i, j, k, 4)` file). Returns `root`."""
    rng = np.random.default_rng(seed)
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "labels"))
    grid = np.indices(shape)
    for i in range(n):
        centre = [rng.integers(6, s - 6) for s in shape]
        r2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
        labels = np.select([r2 <= 2, r2 <= 6, r2 <= 14], [3, 2, 1], 0).astype(np.uint8)
        brain = (r2 <= 60).astype(np.float32)  # a "skull-stripped" head: zero outside
        channels = [brain * (rng.normal(100 + 30 * k, 5 + k, size=shape) + (20 + 10 * k) * labels)
                    for k in range(len(MODALITIES))]
        name = f"case{i:02d}"
        _save(os.path.join(root, "labels", f"{name}.nii.gz"), labels, affine)
        if layout == "4d":
            _save(os.path.join(root, "images", f"{name}.nii.gz"), np.stack(channels, -1).astype(np.float32), affine)
            continue
        for k, (mod, ch) in enumerate(zip(MODALITIES, channels)):
            suffix = mod if layout == "pattern" else f"{k:04d}"
            _save(os.path.join(root, "images", f"{name}_{suffix}.nii.gz"), ch.astype(np.float32), affine)
    return root


def test_4d_nifti_and_per_modality_files_equal_nibabel(tmp_path):
    root = write_multimodal_cases(str(tmp_path / "p"), n=1)
    files = [os.path.join(root, "images", f"case00_{m}.nii.gz") for m in MODALITIES]
    rec = read_image(files)
    expected = np.stack([np.asarray(nib.load(f).dataobj) for f in files], axis=-1)
    assert rec.array.shape == (16, 16, 16, 4) and rec.spatial_dims == 3
    np.testing.assert_array_equal(rec.array, expected)
    np.testing.assert_allclose(rec.affine, nib.load(files[0]).affine)
    four = write_multimodal_cases(str(tmp_path / "f"), n=1, layout="4d")
    path = os.path.join(four, "images", "case00.nii.gz")
    with pytest.raises(ValueError, match=r"case00\.nii\.gz.*4D.*channels=True"):
        read_image(path, spatial_dims=3)
    rec4 = read_image(path, spatial_dims=3, channels=True)
    np.testing.assert_array_equal(rec4.array, np.asarray(nib.load(path).dataobj))
    np.testing.assert_allclose(rec4.array, rec.array)  # same seed: the same voxels either way


def test_modality_off_the_grid_is_named(tmp_path):
    root = write_multimodal_cases(str(tmp_path / "p"), n=1)
    files = [os.path.join(root, "images", f"case00_{m}.nii.gz") for m in MODALITIES]
    data = np.asarray(nib.load(files[2]).dataobj)
    _save(files[2], data, oblique_affine())  # T2 with another affine
    with pytest.raises(ValueError, match=r"^Modality file '.*case00_t2\.nii\.gz' does not share the voxel grid "
                                         r"of the case's first modality '.*case00_t1\.nii\.gz'.* mm away"):
        read_image(files)
    _save(files[3], data[:, :, :12], np.diag([1.0, 1.0, 1.5, 1.0]))  # FLAIR cropped
    with pytest.raises(ValueError, match=r"case00_flair\.nii\.gz' has shape \(16, 16, 12\).*\(16, 16, 16\)"):
        read_image([files[0], files[3]])
    ds = VolumeDataset([(tuple(files[:3]), os.path.join(root, "labels", "case00.nii.gz"))], patch_size=8)
    with pytest.raises(ValueError, match=r"case00_t2\.nii\.gz"):
        ds[0]


def test_case_finder_groups_modalities(tmp_path):
    root = write_multimodal_cases(str(tmp_path / "p"), n=2)
    cases = find_cases(resolve_source(root, modalities=MODALITIES))
    assert [c["name"] for c in cases] == ["case00", "case01"]
    assert [os.path.basename(f) for f in cases[1]["image"]] == [f"case01_{m}.nii.gz" for m in MODALITIES]
    assert cases[0]["modalities"] == list(MODALITIES)
    numbered = write_multimodal_cases(str(tmp_path / "n"), n=2, layout="numbered")
    cases = find_cases(numbered)  # nnU-Net's numbering needs no flag
    assert cases[0]["modalities"] == ["0000", "0001", "0002", "0003"] and len(cases[0]["image"]) == 4
    os.remove(os.path.join(root, "images", "case01_t2.nii.gz"))
    with pytest.raises(FileNotFoundError, match=r"'case01' has no 't2' modality: expected case01_t2"):
        find_cases(resolve_source(root, modalities=MODALITIES))
    with pytest.raises(ValueError, match=r"stray\.nii\.gz.*not named"):
        group_modalities({"case00_t1": "a", "stray": "stray.nii.gz"}, ("t1",))
    with pytest.raises(ValueError, match="without a gap"):
        detect_numbered(["a_0000", "a_0002"])
    assert detect_numbered(["a_0000", "b"]) is None


def test_per_channel_intensity_formula():
    rng = np.random.default_rng(0)
    x = rng.normal([0.0, 50.0, 500.0], [1.0, 10.0, 100.0], size=(6, 5, 4, 3)).astype(np.float32)
    x[0] = 0.0
    out = intensity(x, {"preset": "zscore"}, spatial_dims=3)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], (x[..., c] - x[..., c].mean()) / (x[..., c].std() + 1e-6),
                                   rtol=1e-5, atol=1e-5)
    nz = intensity(x, {"preset": "zscore", "nonzero": True}, spatial_dims=3)
    for c in range(3):
        sel = x[..., c][x[..., c] != 0]
        ref = np.where(x[..., c] != 0, (x[..., c] - sel.mean()) / (sel.std() + 1e-6), 0.0)
        np.testing.assert_allclose(nz[..., c], ref, rtol=1e-5, atol=1e-5)
    joint = intensity(x, "zscore")  # no spatial_dims: one set of statistics, as before
    np.testing.assert_allclose(joint, (x - x.mean()) / (x.std() + 1e-6), rtol=1e-5, atol=1e-5)


def test_volume_dataset_channels_regions_and_normalisation(tmp_path):
    root = write_multimodal_cases(str(tmp_path / "p"), n=2)
    ds = VolumeDataset(resolve_source(root, modalities=MODALITIES), patch_size=8, batch_size=2, regions=REGIONS,
                       intensity={"preset": "zscore", "nonzero": True})
    x, y = ds[0]
    assert x.shape == (2, 8, 8, 8, 4) and x.dtype == np.float32
    assert y.shape == (2, 8, 8, 8, 3) and y.dtype == np.float32
    assert np.all(y[..., 0] >= y[..., 1]) and np.all(y[..., 1] >= y[..., 2])  # nested regions
    image, labels, _, _ = ds.load_case(0)
    files = ds.cases[0]["image"]
    for k, f in enumerate(files):
        raw = np.asarray(nib.load(f).dataobj, dtype=np.float64)
        sel = raw[raw != 0]
        ref = np.where(raw != 0, (raw - sel.mean()) / (sel.std() + 1e-6), 0.0)
        np.testing.assert_allclose(image[..., k], ref, rtol=1e-4, atol=1e-4)
    truth = np.asarray(nib.load(ds.cases[0]["label"]).dataobj)
    np.testing.assert_array_equal(labels, truth)
    assert ds.spec()["regions"] == [{"name": "whole", "values": [1, 2, 3]}, {"name": "core", "values": [2, 3]},
                                    {"name": "enhancing", "values": [3]}]
    with pytest.raises(ValueError, match=r"Region 'x' lists mask values \[7\]"):
        VolumeDataset([(c["image"], c["label"]) for c in ds.cases], patch_size=8, regions={"x": [7]})


def test_augmentation_keeps_channels_aligned(tmp_path):
    from keras_medseg.data import augment as A

    root = write_multimodal_cases(str(tmp_path / "p"), n=1)
    files = [os.path.join(root, "images", f"case00_{m}.nii.gz") for m in MODALITIES]
    label = os.path.join(root, "labels", "case00.nii.gz")
    aug = A.Compose([A.RandomFlip(probability=1.0, seed=1),
                     A.RandomAffine(rotation=0.3, scaling=0.1, probability=1.0, seed=2)])
    kw = {"patch_size": 12, "batch_size": 2, "pos_fraction": 1.0, "intensity": "none"}
    plain = VolumeDataset([(tuple(files), label)], **kw)[0]
    warped = VolumeDataset([(tuple(files), label)], augment=aug, **kw)[0]
    assert warped[0].shape == plain[0].shape == (2, 12, 12, 12, 4)
    assert not np.allclose(warped[0], plain[0])
    # every channel is its (masked) lesion-shaped signal: after the same warp, where one channel's brain mask
    # holds, every other channel's does too (one draw for all channels and the labels)
    inside = warped[0] > 1.0
    assert (inside.all(-1) == inside.any(-1)).mean() > 0.97
    lesion = warped[1] > 0
    bright = warped[0][..., 3][lesion].mean() > warped[0][..., 3][~lesion & inside[..., 3]].mean()
    assert bright  # the labels moved with the image


def test_msd_dataset_json_with_4d_images(tmp_path):
    import json

    from keras_medseg.data.dataset_json import channel_names

    root = write_multimodal_cases(str(tmp_path / "msd"), n=2, layout="4d")
    meta = {"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            "labels": {"0": "background", "1": "oedema", "2": "non-enhancing", "3": "enhancing"},
            "training": [{"image": f"./images/case{i:02d}.nii.gz", "label": f"./labels/case{i:02d}.nii.gz"}
                         for i in range(2)]}
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump(meta, f)
    ds = VolumeDataset(os.path.join(root, "dataset.json"), patch_size=8, batch_size=2, regions=REGIONS)
    x, y = ds[0]
    assert x.shape == (2, 8, 8, 8, 4) and y.shape == (2, 8, 8, 8, 3)
    assert channel_names(os.path.join(root, "dataset.json")) == ["FLAIR", "T1w", "t1gd", "T2w"]


def test_regions_with_an_ignore_value(tmp_path):
    root = write_multimodal_cases(str(tmp_path / "p"), n=1)
    label = os.path.join(root, "labels", "case00.nii.gz")
    lab = np.asarray(nib.load(label).dataobj).copy()
    lab[:, :, :2] = 255  # an unlabelled border
    _save(label, lab, np.diag([1.0, 1.0, 1.5, 1.0]))
    ds = VolumeDataset(resolve_source(root, modalities=MODALITIES), patch_size=16, batch_size=1, regions=REGIONS,
                       ignore_value=255, pos_fraction=1.0)
    x, y, w = ds[0]
    assert y.shape == (1, 16, 16, 16, 3) and w.shape == (1, 16, 16, 16)
    crop = ds.sample_patch(*ds.load_case(0), np.random.default_rng([0, 0, 0]))[1]
    np.testing.assert_array_equal(w[0], (crop >= 0).astype(np.float32))
    assert np.all(y[0][w[0] == 0] == 0)  # ignored voxels are in no region


def write_nnunet_dataset(root, n=3, labels=None, channel_names=None):
    """nnU-Net v2's raw layout of `write_multimodal_cases(layout="numbered")`: `imagesTr/caseNN_0000.nii.gz`, ...,
    `labelsTr/caseNN.nii.gz` and a `dataset.json` without a `training` list. Returns the dataset.json's path."""
    import json

    write_multimodal_cases(root, n=n, layout="numbered")
    os.rename(os.path.join(root, "images"), os.path.join(root, "imagesTr"))
    os.rename(os.path.join(root, "labels"), os.path.join(root, "labelsTr"))
    meta = {"channel_names": channel_names or {str(k): m.upper() for k, m in enumerate(MODALITIES)},
            "labels": labels or {"background": 0, "oedema": 1, "core": 2, "enhancing": 3},
            "numTraining": n, "file_ending": ".nii.gz"}
    path = os.path.join(root, "dataset.json")
    with open(path, "w") as f:
        json.dump(meta, f)
    return path


def test_nnunet_v2_raw_dataset(tmp_path):
    """nnU-Net v2's dataset.json (no `training` list): the cases are imagesTr/ + labelsTr/ grouped by channel
    number as a data folder's; `labels` maps names to values (or, region-based, names to lists of values);
    a missing folder, a channel count off `channel_names` and a bad `file_ending` are one line naming them."""
    import json

    from keras_medseg.data.dataset_json import channel_names, label_names, label_regions

    path = write_nnunet_dataset(str(tmp_path / "Dataset001_Brain"))
    root = os.path.dirname(path)
    for source in (path, root):
        cases = find_cases(source)
        assert [c["name"] for c in cases] == ["case00", "case01", "case02"]
        assert cases[1]["image"] == tuple(os.path.join(root, "imagesTr", f"case01_{k:04d}.nii.gz") for k in range(4))
        assert cases[1]["label"] == os.path.join(root, "labelsTr", "case01.nii.gz")
        assert cases[0]["modalities"] == ["0000", "0001", "0002", "0003"]
    assert label_names(path) == {0: "background", 1: "oedema", 2: "core", 3: "enhancing"}
    assert label_regions(path) is None
    assert channel_names(path) == ["T1", "T1CE", "T2", "FLAIR"]
    ds = VolumeDataset(path, patch_size=8, batch_size=2)
    x, y = ds[0]
    assert x.shape == (2, 8, 8, 8, 4) and y.shape == (2, 8, 8, 8)
    # nnU-Net's region-based labels: every entry but the background is a region (a single value too)
    meta = json.load(open(path))
    meta["labels"] = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    meta["regions_class_order"] = [1, 2, 3]
    json.dump(meta, open(path, "w"))
    assert label_names(path) is None
    assert label_regions(path) == [("whole tumor", [1, 2, 3]), ("tumor core", [2, 3]), ("enhancing tumor", 3)]
    # its explicit `dataset` table, paths relative to the dataset.json
    meta["dataset"] = {"p1": {"images": [f"imagesTr/case02_{k:04d}.nii.gz" for k in range(4)],
                              "label": "labelsTr/case02.nii.gz"}}
    json.dump(meta, open(path, "w"))
    (case,) = find_cases(path)
    assert case["name"] == "p1" and case["image"] == cases[2]["image"] and case["label"] == cases[2]["label"]
    meta.pop("dataset")
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    json.dump(meta, open(path, "w"))
    with pytest.raises(ValueError, match=r"'channel_names' lists 2 channels but the cases in .*imagesTr.* have 4"):
        find_cases(path)
    meta["file_ending"] = "nii"
    json.dump(meta, open(path, "w"))
    with pytest.raises(ValueError, match=r"'file_ending' must be a file extension .*Received: 'nii'"):
        find_cases(path)
    meta["file_ending"] = ".nii.gz"
    json.dump(meta, open(path, "w"))
    os.rename(os.path.join(root, "labelsTr"), os.path.join(root, "masks"))
    with pytest.raises(FileNotFoundError, match=r"has no labelsTr/ folder"):
        find_cases(path)
    meta.pop("file_ending")
    json.dump(meta, open(path, "w"))
    with pytest.raises(ValueError, match=r"needs a non-empty 'training' list .* or nnU-Net v2's 'file_ending'"):
        find_cases(path)
    json.dump({"labels": {"a": 1, "b": 1}}, open(path, "w"))
    with pytest.raises(ValueError, match=r"names to distinct integer values \(nnU-Net\)"):
        label_names(path)


def test_a_dataset_json_validation_list_is_the_split(tmp_path, eager_tf_functions):
    """MONAI's datalists (`training` + `validation` lists): `find_cases` marks each case's split, `VolumeDataset`
    trains on the training list only, and `train_volumes` keeps that split (not a random one)."""
    import json

    from keras_medseg.training import train_volumes

    root = write_multimodal_cases(str(tmp_path / "d"), n=3, layout="4d")
    entry = [{"image": f"images/case{i:02d}.nii.gz", "label": f"labels/case{i:02d}.nii.gz"} for i in range(3)]
    path = os.path.join(root, "dataset.json")
    json.dump({"training": [entry[0], entry[2]], "validation": [entry[1]]}, open(path, "w"))
    cases = find_cases(path)
    assert [(c["name"], c["split"]) for c in cases] == [("case00", "train"), ("case02", "train"),
                                                         ("case01", "validation")]
    assert [c["name"] for c in VolumeDataset(path, patch_size=8).cases] == ["case00", "case02"]
    r = train_volumes("unet", path, out_dir=str(tmp_path / "run"), patch_size=8, epochs=1, steps_per_epoch=1,
                      batch_size=2, augment=False, cache_dir=None, val_every=9, verbose=0,
                      model_kwargs={"filters": 2, "depth": 1})
    assert r.split == {"train": ["case00", "case02"], "validation": ["case01"]}
    json.dump({"training": [entry[0]], "validation": [{"image": "x.nii.gz"}]}, open(path, "w"))
    with pytest.raises(ValueError, match=r"'validation' entries need 'image' and 'label' files"):
        find_cases(path)
