"""benchmarks/lse_vs_itk.py: smoke run, Dice helper, images, and the lse <-> ITK sign mapping on a disk."""

import json

import lse_vs_itk
import numpy as np
import pytest

itk = pytest.importorskip("itk")


def test_images_load_offline_and_seed_is_inside():
    for spec in lse_vs_itk.PRESETS["cpu"]["images"].values():
        image, u0 = lse_vs_itk.prepare_image(spec)
        assert image.dtype == np.float32 and image.min() == 0.0 and image.max() == 1.0
        assert u0.shape == image.shape and (u0 < 0).sum() > 10  # a disk of pixels inside


def test_bad_arguments():
    with pytest.raises(ValueError, match="preset"):
        lse_vs_itk.run("huge")
    with pytest.raises(ValueError, match="source"):
        lse_vs_itk.load_image("skimage.data.nonexistent")


@pytest.mark.slow
def test_sign_mapping_on_a_disk():
    """alpha < 0 inflates and alpha > 0 shrinks in both solvers, by a similar amount (flat image, g = 1)."""
    from keras_medseg.zoo.level_set import signed_distance_to_sphere

    u0 = signed_distance_to_sphere((48, 48), (24, 24), 10).astype("float32")
    g = np.ones_like(u0)
    start = int((u0 < 0).sum())
    for alpha in (-1.0, 1.0):
        settings = {"alpha": alpha, "beta": 0.0, "gamma": 0.0, "itk_rms": 0.0, "itk_iterations": 8}
        inside, _, iterations, _ = lse_vs_itk.run_itk(g, u0, settings)
        assert iterations == 8
        assert (inside.sum() > start) == (alpha < 0) and (inside.sum() < start) == (alpha > 0)
        # 8 steps in the compiled loop, no convergence stop
        lse_settings = {"alpha": alpha, "beta": 0.0, "gamma": 0.0, "dt": 0.25, "chunk": 4, "max_chunks": 2,
                        "tolerance": None, "smoothing_sigma": None}
        lse_inside, _, _, steps, _ = lse_vs_itk.run_lse(np.zeros_like(u0), u0, lse_settings, image_scale=1.0)
        assert steps == 8
        # ITK's time step on a flat image is 0.25 per iteration: both moved the front ~2 pixels
        assert lse_vs_itk.dice(lse_inside, inside) > 0.95


@pytest.mark.slow
def test_smoke_run(tmp_path):
    result = lse_vs_itk.run("smoke", out_dir=str(tmp_path), progress=False)
    assert result["preset"] == "smoke" and result["settings"] == lse_vs_itk.PRESETS["smoke"]
    assert result["seconds"] > 0 and len(result["images"]) == len(lse_vs_itk.PRESETS["smoke"]["images"])
    for row in result["images"]:
        assert 0.0 <= row["dice"] <= 1.0 and row["meets_target"] == (row["dice"] >= 0.95)
        assert row["both_pixels"] + row["lse_only_pixels"] == row["lse_pixels"]
        assert row["both_pixels"] + row["itk_only_pixels"] == row["itk_pixels"]
        assert row["lse_seconds"] > 0 and row["itk_seconds"] > 0
    for fig in result["figures"]:
        path = tmp_path / fig
        assert fig.endswith(".png") and path.exists() and path.stat().st_size < 300_000
    text = lse_vs_itk.markdown(result, fig_prefix="results/lse_vs_itk/")
    assert "| image | size | hand-tuned image_scale | Dice default vs hand-tuned | Dice lse vs ITK |" in text
    assert "](results/lse_vs_itk/contours.png)" in text
    assert ("NOT met" in text) == (not all(row["meets_target"] for row in result["images"]))
    json.dumps(result)  # plain Python types only


def test_near_boundary_fraction():
    b = np.zeros((30, 30), bool)
    b[5:25, 5:25] = True
    a = b.copy()
    a[4, 10:15] = True  # one-pixel bump just outside the boundary
    assert lse_vs_itk.near_boundary_fraction(a, b, 2) == 1.0
    a[15, 15] = False  # a hole in the middle, 10 px from the boundary
    assert lse_vs_itk.near_boundary_fraction(a, b, 2) == pytest.approx(5 / 6)
    assert lse_vs_itk.near_boundary_fraction(b, b) == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(lse_vs_itk.PRESETS["cpu"]["images"]))  # one image per test: each < 60 s
def test_lse_defaults_on_real_images_match_hand_tuned_and_itk(name):
    """Issue 15: `zoo.build("lse")` with default arguments (adaptive edge scale, convergence stop) on each of
    four real images gives Dice >= 0.9 against the run with the hand-tuned `image_scale` of the previous version, and
    Dice >= 0.95 against ITK's geodesic active contour with the same g and seed."""
    settings = {**lse_vs_itk.PRESETS["cpu"], "max_chunks": 80}
    spec = lse_vs_itk.PRESETS["cpu"]["images"][name]
    image, u0 = lse_vs_itk.prepare_image(spec, pad=settings["pad"])
    # one compiled evolution for both runs (only the edge indicator depends on image_scale), no timed rerun
    evolution = lse_vs_itk.lse_solver(image.shape, settings)[1]
    default, g, _, steps, _ = lse_vs_itk.run_lse(image, u0, settings, evolution=evolution, timed=False)
    hand = lse_vs_itk.run_lse(image, u0, settings, image_scale=spec["image_scale"], evolution=evolution,
                              timed=False)[0]
    itk_inside = lse_vs_itk.run_itk(g, u0, settings)[0]
    core = (slice(settings["pad"], -settings["pad"]),) * 2
    assert lse_vs_itk.dice(default[core], hand[core]) >= 0.9, name
    assert lse_vs_itk.dice(default[core], itk_inside[core]) >= 0.95, name
    assert default[core].sum() > 3 * (u0[core] < 0).sum(), name  # the front really grew


def test_lse_default_is_invariant_to_the_intensity_units():
    """The adaptive edge scale makes g the same for the CT slice in [0, 1] and in raw-like units (x 3000 - 1000)."""
    import keras

    from keras_medseg import zoo

    image, _ = lse_vs_itk.prepare_image(lse_vs_itk.PRESETS["cpu"]["images"]["ct_left_lung"])
    model = zoo.build("lse", steps=2)
    edge = keras.Model(model.inputs[0], model.get_layer("lse_edge").output)
    g01 = np.asarray(edge.predict_on_batch(image[None, ..., None]))
    g_hu = np.asarray(edge.predict_on_batch((3000.0 * image - 1000.0)[None, ..., None]))
    np.testing.assert_allclose(g_hu, g01, atol=1e-4)
    assert g01.min() < 0.05 and np.median(g01) > 0.5  # strong edges stop the front, flat regions do not
