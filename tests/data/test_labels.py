"""`standardize_labels`: the one rule for 0/255, 0/65535, ignore borders and non-contiguous ids."""

import numpy as np
import pytest

from keras_medseg.data.cases import IGNORE_INDEX, standardize_labels


def test_editor_binary_masks():
    m8 = np.array([[0, 255], [255, 0]], np.uint8)
    y, values = standardize_labels(m8)
    assert values == [0, 1] and y.dtype == np.int32
    np.testing.assert_array_equal(y, [[0, 1], [1, 0]])
    m16 = np.zeros((64, 64), np.uint16)
    m16[10:20, 5:9] = 65535
    y, values = standardize_labels(m16)
    assert values == [0, 1] and y.max() == 1 and y.sum() == 40
    # Decided per mask: a 0/1 mask and a 0/255 mask mix in one dataset.
    ys, values = standardize_labels([np.array([0, 1]), m8.ravel()])
    assert values == [0, 1] and ys[1].tolist() == [0, 1, 1, 0]
    # A 0/255 mask with ignore_value=255 is all background and ignore; with 255 listed it stays a class.
    assert standardize_labels(m8, ignore_value=255)[0].tolist() == [[0, -1], [-1, 0]]
    assert standardize_labels(m8, label_values=[0, 255])[0].tolist() == [[0, 1], [1, 0]]


def test_ignore_border():
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 1
    m[0, :] = 255
    with pytest.raises(
        ValueError, match=r"case3\.png holds 255 next to other class ids.*\[0, 1, 255\].*ignore_value=255"
    ):
        standardize_labels(m, names="case3.png")
    y, values = standardize_labels(m, ignore_value=255)
    assert values == [0, 1]
    assert (y[0] == IGNORE_INDEX).all() and y[2:5, 2:5].sum() == 9
    y, values = standardize_labels(m, label_values=[0, 1, 255])  # or keep the border as a class
    assert y.max() == 2


def test_non_contiguous_ids_across_cases():
    a = np.array([[0, 1], [2, 2]])
    b = np.array([[0, 4], [4, 0]])
    ys, values = standardize_labels([a, b], names=["a.nii.gz", "b.nii.gz"])
    assert values == [0, 1, 2, 4]
    np.testing.assert_array_equal(ys[1], [[0, 3], [3, 0]])
    np.testing.assert_array_equal(ys[0], a)  # contiguous part kept as is
    # One case at a time with the dataset's values maps the same way.
    y_b, _ = standardize_labels(b, label_values=values)
    np.testing.assert_array_equal(y_b, ys[1])
    with pytest.raises(ValueError, match=r"b\.nii\.gz holds ids \[4\].*label_values=\[0, 1, 2\]"):
        standardize_labels([a, b], names=["a.nii.gz", "b.nii.gz"], label_values=[0, 1, 2])


def test_refusals_name_the_mask_and_values():
    with pytest.raises(ValueError, match=r"m\.tif must hold integer class ids; found fractional values \[0\.5\]"):
        standardize_labels(np.array([0.0, 0.5, 1.0]), names="m.tif")
    with pytest.raises(ValueError, match=r"img\.png.*200 distinct"):
        standardize_labels(np.arange(200).reshape(10, 20), names="img.png")
    with pytest.raises(ValueError, match=r"negative class ids \[-3\]"):
        standardize_labels(np.array([0, 1, -3]))
    with pytest.raises(ValueError, match="NaN"):
        standardize_labels(np.array([0.0, np.nan]))
    y, _ = standardize_labels(np.array([0, 1, -1]), ignore_value=-1)
    np.testing.assert_array_equal(y, [0, 1, IGNORE_INDEX])


def test_plain_ids_kept_and_bool():
    y, values = standardize_labels(np.array([[0, 1], [2, 0]], np.uint8))
    assert values == [0, 1, 2]
    y, values = standardize_labels(np.array([True, False]))
    assert values == [0, 1] and y.tolist() == [1, 0]
    y, values = standardize_labels(np.array([1, 1, 2]))  # background 0 is always class 0
    assert values == [0, 1, 2] and y.tolist() == [1, 1, 2]


def test_standardising_twice_changes_nothing():
    m = np.array([[0, 255, 1], [4, 4, 0]])
    y, values = standardize_labels(m, ignore_value=255)
    assert values == [0, 1, 4]
    y2, values2 = standardize_labels(y)
    np.testing.assert_array_equal(y2, y)
    assert values2 == [0, 1, 2] and y[0, 1] == IGNORE_INDEX
