"""One mask rule through folders (2D and NIfTI volumes), arrays given to training, and evaluation.

0/255, 0/65535, an ignore border and non-contiguous ids: never a model with more classes than the data holds.
"""

import numpy as np
import pytest
import skimage.io

from keras_medseg import zoo
from keras_medseg.data import IGNORE_INDEX, load_data, load_folder, standardize_labels
from keras_medseg.training import train
from tests.data.scan_factory import oblique_affine, write_nifti


def _folder(tmp_path, masks, ext=".png"):
    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i, m in enumerate(masks):
        img = rng.integers(0, 255, size=m.shape, dtype=np.uint8)
        if ext == ".png":
            skimage.io.imsave(tmp_path / "images" / f"case{i}.png", img, check_contrast=False)
            skimage.io.imsave(tmp_path / "masks" / f"case{i}.png", m, check_contrast=False)
        else:
            write_nifti(tmp_path / "images" / f"case{i}.nii.gz", img.astype(np.float32), oblique_affine())
            write_nifti(tmp_path / "masks" / f"case{i}.nii.gz", m, oblique_affine())
    return str(tmp_path)


def _square(size, value, border=None, dtype=np.uint8):
    m = np.zeros((size, size), dtype)
    m[4:10, 5:12] = value
    if border is not None:
        m[0, :] = border
    return m


def test_folder_0_255_and_0_65535(tmp_path):
    _, y, _ = load_folder(_folder(tmp_path / "a", [_square(16, 255), _square(16, 255)]))
    assert sorted(np.unique(y)) == [0, 1]
    _, y, _ = load_folder(_folder(tmp_path / "b", [_square(16, 65535, dtype=np.uint16)] * 2))
    assert sorted(np.unique(y)) == [0, 1]


def test_folder_ignore_border_refused_or_ignored(tmp_path):
    path = _folder(tmp_path, [_square(16, 1, border=255), _square(16, 1)])
    with pytest.raises(ValueError, match=r"case0\.png.*holds 255 next to other class ids.*\[0, 1, 255\]"):
        load_folder(path)
    _, y, _ = load_folder(path, ignore_value=255)
    assert sorted(np.unique(y)) == [IGNORE_INDEX, 0, 1] and (y[0, 0] == IGNORE_INDEX).all()


def test_folder_non_contiguous_ids_compacted(tmp_path):
    path = _folder(tmp_path, [_square(16, 1), _square(16, 4)])
    with pytest.warns(UserWarning, match=r"\[0, 1, 4\]"):
        _, y, _ = load_folder(path)
    assert sorted(np.unique(y)) == [0, 1, 2]


def test_volume_folder_0_255(tmp_path):
    vol = np.zeros((10, 12, 6), np.uint8)
    vol[2:6, 3:8, 1:4] = 255
    _, y, _ = load_folder(_folder(tmp_path, [vol, vol], ext=".nii.gz"), spatial_dims=3)
    assert y.shape == (2, 10, 12, 6) and sorted(np.unique(y)) == [0, 1]


def test_arrays_given_to_training(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 16, 16, 1)).astype("float32")
    y255 = np.stack([_square(16, 255)] * 8)
    data = load_data(((x[:6], y255[:6]), (x[6:], y255[6:])))
    assert data.num_classes == 2 and data.y_train.max() == 1
    y16 = np.stack([_square(16, 65535, dtype=np.uint16)] * 8)
    assert load_data(((x[:6], y16[:6]), (x[6:], y16[6:]))).num_classes == 2  # no 65536-class model
    ybig = np.stack([_square(16, 7)] * 8)
    assert load_data(((x[:6], ybig[:6]), (x[6:], ybig[6:]))).num_classes == 2  # {0, 7}: 2 classes
    border = np.stack([_square(16, 1, border=255)] * 8)
    with pytest.raises(ValueError, match=r"y_train holds 255 next to other class ids"):
        load_data(((x[:6], border[:6]), (x[6:], border[6:])))
    # An ignore border, standardised once by the rule, trains with those voxels weighted 0.
    y_ig, values = standardize_labels(border, ignore_value=255)
    data = load_data(((x[:6], y_ig[:6]), (x[6:], y_ig[6:])))
    assert data.num_classes == len(values) == 2
    model = zoo.build("unet", depth=1, filters=4, num_classes=2, input_size=16)
    result = train(model, ((x[:6], y_ig[:6]), (x[6:], y_ig[6:])), epochs=1, out_dir=str(tmp_path), batch_size=6,
                   verbose=0)
    assert result.model.outputs[0].shape[-1] == 2
    assert np.isfinite(result.history["loss"][0]) and np.isfinite(result.history["val_loss"][0])
    assert result.table["classes"] == [0, 1]
