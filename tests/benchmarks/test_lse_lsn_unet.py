"""benchmarks/lse_lsn_unet.py: smoke run, the Dice helper, the slab splitter and the initial level set."""

import json
import os

import numpy as np
import pytest

import lse_lsn_unet


@pytest.mark.slow
def test_smoke_run(tmp_path):
    result = lse_lsn_unet.run("smoke", out_dir=str(tmp_path), progress=False)
    assert result["preset"] == "smoke" and result["settings"] == lse_lsn_unet.PRESETS["smoke"]
    assert result["seconds"] > 0
    assert len(result["folds"]) == len(lse_lsn_unet.PRESETS["smoke"]["folds_to_run"])
    for fold in result["folds"]:
        for key in ("lse", "lsn_test", "lsn_val", "unet", "init_dice_test"):
            assert 0.0 <= fold[key] <= 1.0
        assert fold["n_train"] + fold["n_val"] + fold["n_test"] == result["data"]["n_slices"]
    assert sum(result["data"]["slab_sizes"]) == result["data"]["n_slices"]
    for key in ("avg", "median"):
        assert set(result["summary"][key]) == {"lse", "lsn_test", "lsn_val", "unet"}
    for name in (result["unet_model"], result["lsn_model"]):
        assert os.path.isfile(tmp_path / name)
    for fig in result["figures"]:
        path = tmp_path / fig
        assert fig.endswith(".png") and path.exists() and path.stat().st_size < 300_000
    text = lse_lsn_unet.markdown(result, fig_prefix="results/lse_lsn_unet/")
    assert "| K-Fold | LSE | LSN Test | LSN Validation | UNet |" in text
    assert "](results/lse_lsn_unet/examples.png)" in text
    avg = result["summary"]["avg"]
    holds = avg["lse"] < avg["lsn_test"] < avg["unet"]
    assert ("LSE < LSN < UNet (on average) holds" in text) == holds
    json.dumps(result)  # plain Python types only


@pytest.mark.parametrize("n_items,n_folds", [(5, 5), (22, 5), (69, 5), (10, 3)])
def test_slab_folds_contiguous_disjoint_covering(n_items, n_folds):
    slabs = lse_lsn_unet.slab_folds(n_items, n_folds)
    assert len(slabs) == n_folds
    for slab in slabs:
        assert len(slab) > 0 and np.all(np.diff(slab) == 1)  # contiguous
    allidx = np.concatenate(slabs)
    assert np.array_equal(allidx, np.arange(n_items))  # disjoint, covering, in order
    sizes = [len(s) for s in slabs]
    assert max(sizes) - min(sizes) <= 1


def test_fold_split_roles():
    for k in range(5):
        test, val, train = lse_lsn_unet.fold_split(k, 5)
        assert test == k and val == (k + 1) % 5
        assert sorted([test, val] + train) == list(range(5))
    with pytest.raises(ValueError, match="k"):
        lse_lsn_unet.fold_split(5, 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_folds"):
        lse_lsn_unet.slab_folds(10, 1)
    with pytest.raises(ValueError, match="n_items"):
        lse_lsn_unet.slab_folds(3, 5)
    with pytest.raises(ValueError, match="preset"):
        lse_lsn_unet.run("huge")


def test_initial_level_set_signed_distance():
    img = np.zeros((2, 32, 32, 1), "float32")
    img[0, 8:24, 8:24] = 1.0  # a bright square; slice 1 is empty
    u = lse_lsn_unet.initial_level_set(img, threshold=0.5, clip=5.0)
    assert u.shape == img.shape and u.dtype == np.float32
    assert u[0, 16, 16, 0] == -5.0 and u[0, 0, 0, 0] == 5.0  # clipped deep inside / far outside
    inside = u[0, ..., 0] < 0
    assert inside[10:22, 10:22].all() and not inside[:6].any()
    assert np.all(u[1] == 5.0)  # nothing above threshold: all outside
