"""A refused `patches extract` leaves nothing behind, so the corrected command runs (trust of the real path)."""

import os

import numpy as np
import pytest

from keras_medseg.cli import main
from keras_medseg.data import PatchStore

tifffile = pytest.importorskip("tifffile")


@pytest.mark.parametrize("bad", [["--size", "512"], ["--size", "64", "--inner-size", "100"],
                                 ["--size", "64", "--stride", "0"]])
def test_refused_extract_leaves_no_store_and_the_corrected_command_runs(tmp_path, bad, capsys):
    slide = str(tmp_path / "s.tif")
    image = (np.random.default_rng(0).random((300, 300, 3)) * 255).astype("uint8")
    tifffile.imwrite(slide, image, tile=(128, 128))
    out = str(tmp_path / "p.h5")
    assert main(["patches", "extract", slide, "--out", out, "--quiet", *bad]) == 2
    assert "error" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["s.tif"], "a refused extract wrote something"
    assert main(["patches", "extract", slide, "--out", out, "--quiet", "--size", "64", "--min-tissue", "0"]) == 0
    with PatchStore(out) as store:
        assert len(store) > 0 and store.patch_size == 64
