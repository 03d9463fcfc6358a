"""UpwindConv: frozen = textbook upwind formulas, harness, gradients, bad input."""

import numpy as np
import pytest
from keras import ops

from keras_medseg.layers import UpwindConv
from tests.ops.test_level_set import np_upwind_advection, np_upwind_grad_norm
from tests.testing import check_layer_gradients, run_layer_test

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize("spatial", [(7, 5), (5, 4, 3)])
def test_frozen_equals_textbook(spatial):
    rng = np.random.default_rng(0)
    d = len(spatial)
    u = rng.standard_normal((2,) + spatial + (1,))
    v = rng.standard_normal((2,) + spatial + (d,))
    adv = UpwindConv("advection", trainable_kernels=False, dtype="float64")([u, v])
    np.testing.assert_allclose(np.asarray(ops.convert_to_numpy(adv))[..., 0], np_upwind_advection(u[..., 0], v),
                               rtol=1e-12, atol=1e-12)
    norm = UpwindConv("grad_norm", kernel_size=5, trainable_kernels=False, dtype="float64")([u, v[..., :1]])
    np.testing.assert_allclose(np.asarray(ops.convert_to_numpy(norm))[..., 0],
                               np_upwind_grad_norm(u[..., 0], v[..., 0]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["advection", "grad_norm"])
@pytest.mark.parametrize("spatial", [(7, 5), (5, 3, 3)])
def test_layer_harness(mode, spatial):
    d = len(spatial)
    second = d if mode == "advection" else 1
    shapes = [(2,) + spatial + (1,), (2,) + spatial + (second,)]
    run_layer_test(UpwindConv, {"mode": mode}, shapes, expected_output_shape=shapes[0])


@pytest.mark.parametrize("mode,spatial", [("advection", (3, 4, 3)), ("grad_norm", (5, 4)), ("grad_norm", (3, 3, 4))])
def test_gradients(mode, spatial):
    d = len(spatial)
    shapes = [(1,) + spatial + (1,), (1,) + spatial + (d if mode == "advection" else 1,)]
    rng = np.random.default_rng(3)
    data = [rng.standard_normal(s) for s in shapes]
    if mode == "grad_norm":
        # |grad u| is not differentiable where the chosen upwind sum is exactly 0
        # (replicate boundaries make that happen at corners): take per voxel the
        # side with the larger sum, so the check stays away from that kink.
        u = data[0][..., 0]
        larger = np_upwind_grad_norm(u, np.ones_like(u)) >= np_upwind_grad_norm(u, -np.ones_like(u))
        data[1] = np.where(larger, 1.0, -1.0)[..., None] * (0.5 + np.abs(data[1]))
    errors = check_layer_gradients(UpwindConv, {"mode": mode}, shapes, input_data=data, max_entries=8)
    if mode == "grad_norm":  # only the sign of the speed is used: zero gradient
        assert errors["input 1"] < 1e-4
    assert max(errors.values()) < 1e-4


def test_bad_input():
    u = np.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="mode"):
        UpwindConv("diffusion")
    with pytest.raises(ValueError, match="kernel_size"):
        UpwindConv(kernel_size=2)
    with pytest.raises(ValueError, match="velocity"):
        UpwindConv("advection")([u, np.zeros((1, 4, 4, 3))])
    with pytest.raises(ValueError, match="speed"):
        UpwindConv("grad_norm")([u, np.zeros((1, 4, 4, 2))])
    with pytest.raises(ValueError, match="u"):
        UpwindConv("grad_norm")([np.zeros((1, 4, 4, 2)), u])
    with pytest.raises(ValueError, match="two inputs"):
        UpwindConv()(u)
    with pytest.raises(ValueError, match="u"):
        UpwindConv()([np.zeros((1, 4, 1)), np.zeros((1, 4, 1))])
