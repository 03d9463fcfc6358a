"""SeedRegionGate: the propagation channel gated by the seed's side of Otsu's threshold; harness, bad input."""

import numpy as np
import pytest
from keras import ops

from keras_medseg.layers import SeedRegionGate
from keras_medseg.zoo.level_set import signed_distance_to_sphere
from tests.testing import run_layer_test

pytestmark = pytest.mark.backend_agnostic


def _square(size=16):
    image = np.zeros((1, size, size, 1), "float32")
    image[0, 4:12, 4:12] = 1.0
    u0 = signed_distance_to_sphere((size, size), (8, 8), 2.0)[None, ..., None].astype("float32")
    return image, u0


def test_gate_keeps_g_and_zeroes_the_balloon_off_the_seed_side():
    image, u0 = _square()
    g = np.random.default_rng(0).uniform(0.2, 1.0, image.shape).astype("float32")
    p = 0.5 * g
    out = np.asarray(ops.convert_to_numpy(SeedRegionGate(smoothing_sigma=None, margin=0.1)(
        [image, np.concatenate([g, p], -1), u0])))
    np.testing.assert_allclose(out[..., 0], g[..., 0])
    inside = image[..., 0] > 0.5
    np.testing.assert_allclose(out[..., 1][inside], p[..., 0][inside])
    assert out[..., 1][~inside].max() == 0.0
    # one-channel g: the balloon image starts as g itself
    one = np.asarray(ops.convert_to_numpy(SeedRegionGate(smoothing_sigma=None)([image, g, u0])))
    np.testing.assert_allclose(one[..., 1], np.where(inside, g[..., 0], 0.0), atol=1e-7)
    # the seed in the background: the dark side is the one allowed
    dark = signed_distance_to_sphere((16, 16), (1, 1), 1.5)[None, ..., None].astype("float32")
    out = np.asarray(ops.convert_to_numpy(SeedRegionGate(smoothing_sigma=None)([image, g, dark])))
    assert out[..., 1][inside].max() == 0.0 and out[..., 1][~inside].min() > 0.0


def test_confidence_interval_separates_two_tissues_of_one_otsu_class():
    # background 0, a grey region 0.5 and inside it a brighter square 0.7: Otsu puts both on the bright side,
    # the seed's interval (mean 0.7, std 0 floored at 0.05 of the class gap) keeps the balloon in the square
    image = np.zeros((1, 24, 24, 1), "float32")
    image[0, 2:22, 2:22] = 0.5
    image[0, 8:16, 8:16] = 0.7
    u0 = signed_distance_to_sphere((24, 24), (12, 12), 2.0)[None, ..., None].astype("float32")
    g = np.ones((1, 24, 24, 2), "float32")
    otsu_only = np.asarray(ops.convert_to_numpy(SeedRegionGate(smoothing_sigma=None, confidence_k=None)(
        [image, g, u0])))[0, ..., 1]
    both = np.asarray(ops.convert_to_numpy(SeedRegionGate(smoothing_sigma=None)([image, g, u0])))[0, ..., 1]
    assert otsu_only.sum() == 400 and both.sum() == 64 and both[8:16, 8:16].all()
    interval_only = np.asarray(ops.convert_to_numpy(SeedRegionGate(smoothing_sigma=None, margin=None)(
        [image, g, u0])))[0, ..., 1]
    np.testing.assert_array_equal(interval_only, both)


def test_layer_harness():
    image, u0 = _square(9)
    g = np.ones((1, 9, 9, 2), "float32")
    run_layer_test(SeedRegionGate, {"margin": 0.2, "confidence_k": 2.5, "confidence_floor": 0.1},
                   [image.shape, g.shape, u0.shape],
                   expected_output_shape=(1, 9, 9, 2), input_data=[image, g, u0])


def test_bad_input():
    image, u0 = _square()
    with pytest.raises(ValueError, match="margin"):
        SeedRegionGate(margin=-0.5)
    with pytest.raises(ValueError, match="confidence_k"):
        SeedRegionGate(confidence_k=0.0)
    with pytest.raises(ValueError, match="confidence_floor"):
        SeedRegionGate(confidence_floor=-0.1)
    with pytest.raises(ValueError, match="smoothing_sigma"):
        SeedRegionGate(smoothing_sigma=0.0)
    with pytest.raises(ValueError, match="three inputs"):
        SeedRegionGate()([image, u0])
    with pytest.raises(ValueError, match="initial_level_set"):
        SeedRegionGate()([image, np.ones_like(image), u0[:, :10]])
    with pytest.raises(ValueError, match="1 or 2 channels"):
        SeedRegionGate()([image, np.ones((1, 16, 16, 3), "float32"), u0])
