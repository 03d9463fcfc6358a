"""benchmarks/lse_lsn_unet.py: smoke run, the Dice helper, the slab splitter and the initial level set."""

import json
import os

import lse_lsn_unet
import numpy as np
import pytest


@pytest.mark.slow
def test_smoke_run(tmp_path, eager_tf_functions):
    result = lse_lsn_unet.run("smoke", out_dir=str(tmp_path), progress=False)
    assert result["preset"] == "smoke" and result["settings"] == lse_lsn_unet.PRESETS["smoke"]
    assert result["seconds"] > 0
    assert len(result["folds"]) == len(lse_lsn_unet.PRESETS["smoke"]["folds_to_run"])
    for fold in result["folds"]:
        for key in ("lse", "lsn_test", "lsn_val", "unet", "init_dice_test"):
            assert 0.0 <= fold[key] <= 1.0
        assert fold["n_train"] + fold["n_val"] + fold["n_test"] == result["data"]["n_slices"]
        # the kept LSN is the one of best validation Dice, epoch 0 (the LSE) included
        curve = fold["lsn_val_dice_per_epoch"]
        assert 2 <= len(curve) <= lse_lsn_unet.PRESETS["smoke"]["lsn_epochs"] + 1
        assert fold["lsn_epoch"] == int(np.argmax(curve))
        assert fold["lsn_val"] == pytest.approx(max(curve), abs=1e-9)
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


def test_lsn_starts_at_the_tuned_lse():
    """Before training, the benchmark's LSN computes the LSE's probabilities (same steps, dt, alpha, edge scale)."""
    from keras_medseg import zoo
    from keras_medseg.zoo.level_set import synthetic_disks

    s = dict(lse_lsn_unet.PRESETS["smoke"], lse_steps=12, lsn_backprop_steps=4)
    images, _, u0 = synthetic_disks(3, size=32, seed=3)
    lse = zoo.build("lse", alpha=-0.8, image_scale=20.0, steps=12, dt=0.2, smoothing_sigma=None, tolerance=None,
                    edge_threshold=None, region_margin=None)
    expected = np.asarray(lse.predict([images, u0], verbose=0))
    lsn = lse_lsn_unet._lsn_from_lse(-0.8, 20.0, s)
    got = np.asarray(lsn.predict([images, u0], verbose=0))
    np.testing.assert_allclose(got, expected, atol=2e-4)
    assert lsn.get_layer("lsn_evolution").backprop_steps == 4


def test_best_validation_dice_keeps_and_restores_the_best_epoch():
    """The callback scores epoch 0 and each epoch; restore() gives back the weights whose Dice was best."""
    import keras

    from keras_medseg.zoo.level_set import synthetic_disks

    keras.utils.set_random_seed(0)
    images, masks, _ = synthetic_disks(8, size=16, seed=1)
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(1, 3, padding="same",
                                                                          activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy")
    select = lse_lsn_unet.best_validation_dice(images[:4], masks[:4], patience=10, batch_size=4)
    model.fit(images[4:], masks[4:], epochs=4, batch_size=4, verbose=0, callbacks=[select])
    assert len(select.history) == 5  # epoch 0 (untrained) and four epochs
    assert select.best_epoch == int(np.argmax(select.history))
    select.restore()
    pred = model.predict(images[:4], verbose=0) > 0.5
    assert lse_lsn_unet.dice(masks[:4], pred) == pytest.approx(select.history[select.best_epoch], abs=1e-9)


def test_best_validation_dice_stops_after_patience():
    import keras

    from keras_medseg.zoo.level_set import synthetic_disks

    images, masks, _ = synthetic_disks(4, size=16, seed=2)
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(1, 3, padding="same",
                                                                          activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="binary_crossentropy")  # lr 0: Dice never improves
    select = lse_lsn_unet.best_validation_dice(images, masks, patience=2, batch_size=4)
    model.fit(images, masks, epochs=10, batch_size=4, verbose=0, callbacks=[select])
    assert len(select.history) == 3 and select.best_epoch == 0


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
