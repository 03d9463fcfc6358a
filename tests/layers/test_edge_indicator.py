"""EdgeIndicator: frozen = 1/(1+|grad I|^2), harness, gradients, bad input."""

import numpy as np
import pytest
import scipy.ndimage as ndi
from keras import ops

from keras_medseg.layers import EdgeIndicator
from tests.ops.test_level_set import np_edge_indicator
from tests.testing import check_layer_gradients, run_layer_test

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize("shape", [(2, 7, 5, 1), (1, 5, 4, 3, 2)])
def test_frozen_equals_textbook(shape):
    image = np.random.default_rng(0).standard_normal(shape)
    layer = EdgeIndicator(trainable_kernels=False, dtype="float64")
    out = np.asarray(ops.convert_to_numpy(layer(image)))
    np.testing.assert_allclose(out[..., 0], np_edge_indicator(image), rtol=1e-12)
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 1


def test_smoothing_matches_scipy_gaussian():
    image = np.random.default_rng(1).standard_normal((1, 15, 13, 1))
    out = ops.convert_to_numpy(EdgeIndicator(smoothing_sigma=1.0, dtype="float64")(image))
    smooth = ndi.gaussian_filter(image[0, ..., 0], sigma=1.0, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(np.asarray(out)[0, ..., 0], np_edge_indicator(smooth[None, ..., None])[0], rtol=1e-10)


def test_extra_kernels_are_learnable_and_small():
    image = np.random.default_rng(2).standard_normal((1, 9, 9, 1)).astype("float32")
    layer = EdgeIndicator(num_kernels=4)
    out = np.asarray(ops.convert_to_numpy(layer(image)))
    assert [tuple(w.shape) for w in layer.trainable_weights] == [(3, 3, 1, 2), (3, 3, 1, 2)]
    np.testing.assert_allclose(out[..., 0], np_edge_indicator(image.astype("float64")), atol=5e-2)


@pytest.mark.parametrize("kwargs,shape", [
    ({}, (2, 7, 5, 1)),
    ({"num_kernels": 3, "kernel_size": 5, "smoothing_sigma": 0.8}, (2, 7, 5, 2)),
    ({"trainable_kernels": False}, (1, 5, 3, 7, 1)),
    ({"kernel_size": (3, 5, 3)}, (1, 5, 3, 7, 2)),
])
def test_layer_harness(kwargs, shape):
    run_layer_test(EdgeIndicator, kwargs, shape, expected_output_shape=shape[:-1] + (1,))


def test_threshold_adds_the_propagation_channel():
    # a noisy flat background (32 x 32: on 20 x 20 the square's smoothed border is 40% of the pixels, too many
    # for the default threshold_k = 9 to count it as an outlier of the gradient)
    image = 0.02 * np.random.default_rng(3).standard_normal((1, 32, 32, 1))
    image[:, 8:24, 8:24] += 1.0
    image = np.concatenate([image, 250.0 * image - 40.0]).astype("float32")  # other units, same answer
    layer = EdgeIndicator(trainable_kernels=False, smoothing_sigma=1.0, scale="auto", threshold="auto")
    out = np.asarray(ops.convert_to_numpy(layer(image)))
    assert out.shape == (2, 32, 32, 2) and layer.compute_output_shape((None, 32, 32, 1)) == (None, 32, 32, 2)
    np.testing.assert_allclose(out[0], out[1], atol=1e-4)
    g, p = out[0, ..., 0], out[0, ..., 1]
    assert p.max() <= 1.0 and np.all(p <= g + 1e-6) and p[8, 16] == 0.0 and p[16, 16] > 0.9
    run_layer_test(EdgeIndicator, {"threshold": 0.3, "threshold_k": 2.0}, (2, 7, 5, 1),
                   expected_output_shape=(2, 7, 5, 2))


@pytest.mark.parametrize("shape", [(2, 5, 4, 2), (1, 3, 4, 3, 1)])
def test_gradients(shape):
    errors = check_layer_gradients(EdgeIndicator, {"num_kernels": len(shape)}, shape, max_entries=8)
    assert max(errors.values()) < 1e-4


def test_bad_input():
    with pytest.raises(ValueError, match="kernel_size"):
        EdgeIndicator(kernel_size=4)
    with pytest.raises(ValueError, match="num_kernels"):
        EdgeIndicator(num_kernels=0)
    with pytest.raises(ValueError, match="smoothing_sigma"):
        EdgeIndicator(smoothing_sigma=0.0)
    with pytest.raises(ValueError, match="num_kernels"):
        EdgeIndicator(num_kernels=2)(np.zeros((1, 4, 4, 4, 1)))
    with pytest.raises(ValueError, match="image"):
        EdgeIndicator()(np.zeros((1, 4, 1)))
    with pytest.raises(ValueError, match="image"):
        EdgeIndicator()(np.zeros((1, 3, 3, 3, 3, 1)))
    with pytest.raises(ValueError, match="kernel_size"):
        EdgeIndicator(kernel_size=(3, 3))(np.zeros((1, 4, 4, 4, 1)))
    with pytest.raises(ValueError, match="threshold"):
        EdgeIndicator(threshold=1.5)
    with pytest.raises(ValueError, match="threshold_k"):
        EdgeIndicator(threshold="auto", threshold_k=-1.0)
