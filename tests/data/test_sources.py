"""One decision of what a data argument is (`data.sources`), one case finder and one mask rule (`data.cases`)."""

import json
import os

import numpy as np
import pytest
import skimage.io

from keras_medseg.data import load_folder
from keras_medseg.data.cases import find_cases, mask_ids
from keras_medseg.data.sources import (
    ArraySource,
    CohortFolderSource,
    ImageFolderSource,
    PatchStoreSource,
    ScanFolderSource,
    SyntheticSource,
    resolve_source,
)


def _png_folder(root, labels="masks", names=("a", "b"), mask=None):
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, labels), exist_ok=True)
    m = np.zeros((8, 8), np.uint8) if mask is None else mask
    for name in names:
        skimage.io.imsave(os.path.join(root, "images", f"{name}.png"), np.zeros(m.shape[:2], np.uint8),
                          check_contrast=False)
        skimage.io.imsave(os.path.join(root, labels, f"{name}.png"), m, check_contrast=False)
    return str(root)


def test_resolve_source_decides_each_kind(tmp_path):
    assert resolve_source("qtips") == resolve_source("QTIPS") == SyntheticSource("qtips")
    x = np.zeros((2, 4, 4, 1))
    assert isinstance(resolve_source((x, x[..., 0])), ArraySource)
    assert resolve_source(((x, x), (x, x))).has_validation and not resolve_source((x, x)).has_validation
    assert resolve_source("not_yet.h5") == PatchStoreSource("not_yet.h5")  # opened (and checked) later
    images = _png_folder(tmp_path / "pngs")
    assert resolve_source(images) == ImageFolderSource(images, 2)
    assert resolve_source(images, spatial_dims=3) == ImageFolderSource(images, 3)
    scans = tmp_path / "scans"
    (scans / "images").mkdir(parents=True)
    (scans / "images" / "c1.nii.gz").write_bytes(b"")
    assert resolve_source(str(scans)) == ScanFolderSource(str(scans), None, 3)
    msd = tmp_path / "msd"
    msd.mkdir()
    (msd / "dataset.json").write_text(json.dumps({"training": []}))
    assert resolve_source(str(msd)).dataset_json == str(msd / "dataset.json")
    assert resolve_source(str(msd / "dataset.json")) == ScanFolderSource(str(msd), str(msd / "dataset.json"), 3)
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for f in ("b.svs", "a.ndpi", "a.xml"):
        (cohort / f).write_bytes(b"")
    assert resolve_source(str(cohort)) == CohortFolderSource(str(cohort), ("a.ndpi", "b.svs"))
    assert resolve_source(resolve_source(images)) == ImageFolderSource(images, 2)  # a typed source stays as it is


def test_resolve_source_refuses_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="source not found.*nowhere"):
        resolve_source(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no data set.*images/"):
        resolve_source(str(tmp_path / "empty"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="single file.*notes.txt"):
        resolve_source(str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="data=3"):
        resolve_source(3)
    with pytest.raises(ValueError, match="spatial_dims"):
        resolve_source("qtips", spatial_dims=4)


def test_one_case_finder_for_masks_and_labels(tmp_path):
    by_masks = find_cases(_png_folder(tmp_path / "m", "masks"))
    by_labels = find_cases(_png_folder(tmp_path / "l", "labels"))
    assert [c["name"] for c in by_masks] == [c["name"] for c in by_labels] == ["a", "b"]
    assert by_labels[0]["label"].endswith(os.path.join("labels", "a.png"))
    both = _png_folder(tmp_path / "both", "masks")
    _png_folder(both, "labels")
    with pytest.raises(ValueError, match="both masks/ and labels/"):
        find_cases(both)
    dup = _png_folder(tmp_path / "dup")
    np.save(os.path.join(dup, "images", "a.npy"), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="same name stem 'a'"):
        find_cases(dup)
    with pytest.raises(ValueError, match="patch store holds no image/label cases"):
        find_cases("x.h5")


def test_mask_rule_for_editor_drawings():
    grey = np.zeros((4, 4, 3), np.uint8)
    grey[1:3, 1:3] = 255
    np.testing.assert_array_equal(mask_ids(grey), grey[..., 0])  # a grey mask saved as RGB keeps its values
    colours = np.zeros((4, 4, 3), np.uint8)
    colours[0, 0] = (255, 0, 0)
    colours[3, 3] = (0, 200, 0)
    expected = np.zeros((4, 4), int)
    expected[3, 3], expected[0, 0] = 1, 2  # black 0, then colours in sorted (R, G, B) order: green < red
    np.testing.assert_array_equal(mask_ids(colours), expected)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[2, :, 3] = 255  # black strokes, drawn on a transparent layer
    np.testing.assert_array_equal(mask_ids(rgba), (np.arange(4)[:, None] == 2) * np.ones((1, 4), int))
    opaque = np.concatenate([colours, np.full((4, 4, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(mask_ids(opaque), expected)  # constant alpha: read as RGB
    plain = np.arange(16).reshape(4, 4)
    assert mask_ids(plain) is plain
    with pytest.raises(ValueError, match="Mask m.*shape"):
        mask_ids(np.zeros((4, 4, 5)), name="m")


def test_a_coloured_mask_means_the_same_in_folders_and_patch_stores(tmp_path):
    """The rule that used to disagree: a green stroke was background in folders (red channel) and tumour in
    `patches extract` (any non-black pixel); both now read it as foreground."""
    from keras_medseg.cli import main
    from keras_medseg.data.slides import PatchStore

    drawing = np.zeros((32, 32, 3), np.uint8)
    drawing[8:24, 8:24] = (0, 200, 0)
    root = _png_folder(tmp_path / "f", mask=drawing)
    _, y, _ = load_folder(root, normalize=False)
    np.testing.assert_array_equal(y[0], (drawing[..., 1] > 0).astype(np.int32))
    image = tmp_path / "slide.png"
    skimage.io.imsave(image, np.full((32, 32, 3), 128, np.uint8), check_contrast=False)
    skimage.io.imsave(tmp_path / "mask.png", drawing, check_contrast=False)
    store = str(tmp_path / "p.h5")
    assert main(["patches", "extract", str(image), str(tmp_path / "mask.png"), "--out", store, "--size", "16",
                 "--quiet"]) == 0
    with PatchStore(store) as s:
        assert s.labels.sum() > 0 and set(np.unique(s.tumor_ids)) == {1}  # one connected tumour


def test_train_refuses_a_folder_of_slides(tmp_path, capsys):
    from keras_medseg.cli import main

    (tmp_path / "slide1.svs").write_bytes(b"")
    assert main(["train", "unet", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "folder of whole slides: cut them into a patch store first" in capsys.readouterr().err
