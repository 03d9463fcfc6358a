"""CurvatureConv: frozen = textbook curvature, circle/sphere check, harness, gradients, bad input."""

import numpy as np
import pytest
from keras import ops

from keras_medseg.layers import CurvatureConv
from tests.ops.test_level_set import np_curvature
from tests.testing import check_layer_gradients, run_layer_test

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize("spatial", [(7, 5), (5, 4, 3)])
def test_frozen_equals_textbook(spatial):
    u = np.random.default_rng(0).standard_normal((2,) + spatial + (1,))
    out = CurvatureConv(eps=1e-3, trainable_kernels=False, dtype="float64")(u)
    np.testing.assert_allclose(np.asarray(ops.convert_to_numpy(out))[..., 0], np_curvature(u[..., 0], 1e-3),
                               rtol=1e-8, atol=1e-8)


def test_circle_curvature_is_one_over_radius():
    y, x = np.meshgrid(np.arange(33.0), np.arange(33.0), indexing="ij")
    u = np.sqrt((y - 16.2) ** 2 + (x - 15.9) ** 2) - 10.0
    kappa = np.asarray(ops.convert_to_numpy(CurvatureConv()(u[None, ..., None].astype("float32"))))[0, ..., 0]
    assert abs(kappa[np.abs(u) < 0.5].mean() - 0.1) < 0.002


@pytest.mark.parametrize("kwargs,shape", [
    ({}, (2, 7, 5, 1)),
    ({"eps": 1e-2, "kernel_size": 5}, (1, 5, 3, 7, 1)),
    ({"trainable_kernels": False}, (2, 5, 3, 1)),
])
def test_layer_harness(kwargs, shape):
    run_layer_test(CurvatureConv, kwargs, shape, expected_output_shape=shape)


@pytest.mark.parametrize("shape", [(1, 5, 4, 1), (1, 3, 4, 3, 1)])
def test_gradients(shape):
    errors = check_layer_gradients(CurvatureConv, {"eps": 1e-2}, shape, max_entries=8)
    assert max(errors.values()) < 1e-4


def test_bad_input():
    with pytest.raises(ValueError, match="eps"):
        CurvatureConv(eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        CurvatureConv(eps=-1.0)
    with pytest.raises(ValueError, match="kernel_size"):
        CurvatureConv(kernel_size=6)
    with pytest.raises(ValueError, match="u"):
        CurvatureConv()(np.zeros((1, 4, 4, 2)))
    with pytest.raises(ValueError, match="u"):
        CurvatureConv()(np.zeros((1, 4, 1)))
    with pytest.raises(ValueError, match="u"):
        CurvatureConv()(np.zeros((1, 3, 3, 3, 3, 1)))
