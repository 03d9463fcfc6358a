"""Image/mask folders: formats, layout errors naming the file."""

import numpy as np
import pytest
import skimage.io

from keras_medseg.data import load_folder
from keras_medseg.data.scans.io import read_array

pytestmark = pytest.mark.backend_agnostic


def _make(tmp_path, n=3, size=8, ext=".png", mask_ext=None):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    images, masks = [], []
    for i in range(n):
        img = rng.integers(0, 255, size=(size, size), dtype=np.uint8)
        mask = (img > 128).astype(np.uint8)
        for folder, arr, e in (("images", img, ext), ("masks", mask, mask_ext or ext)):
            path = tmp_path / folder / f"case{i}{e}"
            if e == ".npy":
                np.save(path, arr)
            else:
                skimage.io.imsave(path, arr, check_contrast=False)
        images.append(img)
        masks.append(mask)
    return np.stack(images), np.stack(masks)


@pytest.mark.parametrize("ext", [".png", ".tif", ".npy"])
def test_reads_formats(tmp_path, ext):
    raw, masks = _make(tmp_path, ext=ext)
    x, y, names = load_folder(tmp_path, normalize=False)
    assert names == ["case0", "case1", "case2"]
    np.testing.assert_array_equal(x[..., 0], raw.astype(np.float32))
    np.testing.assert_array_equal(y, masks)
    assert x.shape == (3, 8, 8, 1) and y.dtype == np.int32


def test_normalize_and_255_masks(tmp_path):
    _make(tmp_path)
    skimage.io.imsave(tmp_path / "masks" / "case0.png", np.full((8, 8), 255, np.uint8) * (np.eye(8) > 0),
                      check_contrast=False)
    x, y, _ = load_folder(tmp_path)
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_array_equal(y[0], np.eye(8, dtype=np.int32))


def test_nifti_volumes(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    vol = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    nibabel.save(nibabel.Nifti1Image(vol, np.eye(4)), tmp_path / "images" / "a.nii.gz")
    nibabel.save(nibabel.Nifti1Image((vol > 50).astype(np.int16), np.eye(4)), tmp_path / "masks" / "a.nii.gz")
    x, y, names = load_folder(tmp_path, spatial_dims=3, normalize=False)
    assert x.shape == (1, 4, 6, 8, 1) and names == ["a"]
    np.testing.assert_array_equal(y[0], vol > 50)


def test_missing_mask_names_the_file(tmp_path):
    _make(tmp_path)
    (tmp_path / "masks" / "case1.png").unlink()
    with pytest.raises(FileNotFoundError, match="case1.png.*has no mask"):
        load_folder(tmp_path)


def test_mask_without_image(tmp_path):
    _make(tmp_path)
    (tmp_path / "images" / "case2.png").unlink()
    with pytest.raises(ValueError, match="case2.png.*no matching image"):
        load_folder(tmp_path)


def test_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_folder(tmp_path / "nope")
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="masks"):
        load_folder(tmp_path)


def test_corrupt_file_is_named(tmp_path):
    _make(tmp_path)
    (tmp_path / "images" / "case1.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="case1.png"):
        load_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_array(str(tmp_path / "missing.png"))


def test_shape_mismatch_is_named(tmp_path):
    _make(tmp_path)
    skimage.io.imsave(tmp_path / "masks" / "case2.png", np.zeros((4, 4), np.uint8), check_contrast=False)
    with pytest.raises(ValueError, match="case2.png.*shape"):
        load_folder(tmp_path)
    skimage.io.imsave(tmp_path / "masks" / "case2.png", np.zeros((6, 6), np.uint8), check_contrast=False)
    skimage.io.imsave(tmp_path / "images" / "case2.png", np.zeros((6, 6), np.uint8), check_contrast=False)
    with pytest.raises(ValueError, match="case2.png.*different from the first"):
        load_folder(tmp_path)
