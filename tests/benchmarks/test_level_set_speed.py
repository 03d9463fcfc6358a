"""benchmarks/level_set_speed.py: inputs, the three solvers on a disk, the table."""

import level_set_speed
import numpy as np
import pytest

pytest.importorskip("itk")


def test_coins_seed_sits_in_a_bright_coin():
    image, u0 = level_set_speed.coins_case(256)
    assert image.shape == u0.shape == (256, 256)
    inside = u0 < 0
    assert 50 < inside.sum() < 200
    assert image[inside].mean() > np.median(image) + 30  # a coin is brighter than the background


def test_solvers_agree_on_a_disk_and_table_has_every_row():
    from keras_medseg.zoo.level_set import signed_distance_to_sphere

    dist = signed_distance_to_sphere((40, 40), (20, 20), 10.0)
    g = np.where(np.abs(dist) < 1.5, 0.01, 1.0).astype("float32")  # a closed edge of radius 10
    u0 = signed_distance_to_sphere((40, 40), (20, 20), 3.0).astype("float32")
    itk_inside, its = level_set_speed.run_itk(g, u0, 300, 0.0)
    sk_inside = level_set_speed.run_skimage(g, u0, 60)
    truth = dist < 0
    assert level_set_speed.dice(itk_inside, truth) > 0.85
    # scikit-image's threshold="auto" (40th percentile of g) is 1.0 on this two-valued g: no balloon, so only the
    # shape and type are checked here
    assert sk_inside.shape == truth.shape and sk_inside.dtype == bool
    assert its == 300 and level_set_speed.copy_bandwidth() > 1e8
    image = np.where(dist < 0, 1.0, 0.0).astype("float32")
    row = level_set_speed.measure("disk", image, u0, 2, 8, None, 1, True, 1e10)
    assert row["lse_steps"] == 8 and row["itk_iterations"] == 8 and 0.0 <= row["dice_lse_vs_itk"] <= 1.0
    assert row["dice_lse_vs_dense"] == 1.0  # 40 x 40 is below the smallest useful window: both run dense
    # to convergence: ITK timed at the fewest iterations of the ladder that give its converged segmentation
    converged = level_set_speed.measure("disk", image, u0, 1, 150, 2e-3, 1, False, 1e10)
    assert converged["regime"] == "to convergence" and converged["itk_iterations"] in level_set_speed.ITK_LADDER
    assert converged["itk_rms_stop_iterations"] >= converged["itk_iterations"]
    assert converged["lse_steps"] <= 150 and "skimage_min_s" not in converged
    text = level_set_speed.markdown({"backend": "x", "alpha": -0.5, "beta": 0.2, "gamma": 1.0,
                                     "copy_bandwidth_GBs": 10.0, "rows": [row, converged]})
    assert "| disk | 40x40 | equal iterations | 8 / 8 |" in text and "| disk | 40x40 | to convergence |" in text
