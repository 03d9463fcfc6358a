"""`keras_medseg.data.scans.io.read_array`: the one image/array reader."""

import numpy as np
import pytest
import skimage.io

from keras_medseg.data.scans.io import SCAN_EXTENSIONS, read_array
from keras_medseg.data.sources import PatchStoreSource, resolve_source


def test_read_array_formats(tmp_path):
    a = np.arange(12, dtype="uint8").reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "a.npz", first=a, second=a + 1)
    skimage.io.imsave(tmp_path / "a.png", a, check_contrast=False)
    for name in ("a.npy", "a.npz", "a.png"):
        np.testing.assert_array_equal(read_array(tmp_path / name), a)


def test_read_array_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="mask file not found: .*nope.png"):
        read_array(str(tmp_path / "nope.png"), "mask file")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="Unsupported file type .*x.txt"):
        read_array(str(tmp_path / "x.txt"), extensions=SCAN_EXTENSIONS)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="Cannot read image .*bad.png"):
        read_array(str(tmp_path / "bad.png"), "image file")
    assert isinstance(resolve_source("s.hdf5"), PatchStoreSource)
