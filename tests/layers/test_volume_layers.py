"""Tests for the weight-free and embedding layers of the volume segmenters.

`LinearUpsampling` (against PyTorch's trilinear interpolation through its op's
tests), `SpaceToDepth` (against strided slicing) and `PositionEmbedding`
(adds its weight): the layer harness, gradients and errors.
"""

import numpy as np
import pytest
from keras import ops

from keras_medseg.layers import LinearUpsampling, PositionEmbedding, SpaceToDepth
from keras_medseg.ops import space_to_depth, upsample_linear
from tests.testing import check_layer_gradients, run_layer_test

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize("kwargs,shape,expected", [({"factor": 2}, (2, 3, 4, 2), (2, 6, 8, 2)),
                                                   ({"factor": (1, 2, 3)}, (1, 2, 3, 2, 2), (1, 2, 6, 6, 2))])
def test_linear_upsampling_harness(kwargs, shape, expected, rng):
    x = rng.standard_normal(shape).astype("float32")
    out = run_layer_test(LinearUpsampling, kwargs, shape, expected_output_shape=expected, input_data=x)
    np.testing.assert_allclose(out, ops.convert_to_numpy(upsample_linear(x, kwargs["factor"])), atol=1e-6)


@pytest.mark.parametrize("shape,expected", [((2, 4, 5, 3), (2, 2, 3, 12)), ((1, 4, 2, 6, 2), (1, 2, 1, 3, 16))])
def test_space_to_depth_harness(shape, expected, rng):
    x = rng.standard_normal(shape).astype("float32")
    out = run_layer_test(SpaceToDepth, {"block": 2}, shape, expected_output_shape=expected, input_data=x)
    np.testing.assert_array_equal(out, ops.convert_to_numpy(space_to_depth(x, 2)))


def test_position_embedding_adds_its_weight(rng):
    x = rng.standard_normal((2, 2, 3, 2, 4)).astype("float32")
    out = run_layer_test(PositionEmbedding, {}, x.shape, expected_output_shape=x.shape, input_data=x)
    layer = PositionEmbedding()
    y = ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(y, x + ops.convert_to_numpy(layer.embedding)[None], atol=1e-6)
    assert layer.count_params() == 2 * 3 * 2 * 4 and out.shape == x.shape


@pytest.mark.parametrize("cls,kwargs,shape", [(LinearUpsampling, {"factor": 2}, (1, 2, 3, 2)),
                                              (SpaceToDepth, {"block": 2}, (1, 2, 2, 2, 1)),
                                              (PositionEmbedding, {}, (2, 2, 3, 2))])
def test_gradients(cls, kwargs, shape):
    errors = check_layer_gradients(cls, kwargs, shape, max_entries=8)
    assert max(errors.values()) < 1e-6


def test_bad_arguments():
    with pytest.raises(ValueError, match="`factor` must be a positive int"):
        LinearUpsampling(0)
    with pytest.raises(ValueError, match="`factor` must be a positive int or a tuple of 3"):
        LinearUpsampling((2, 2))(np.zeros((1, 2, 2, 2, 1), "float32"))
    with pytest.raises(ValueError, match="block"):
        SpaceToDepth(0)
    with pytest.raises(ValueError, match="static spatial sizes"):
        SpaceToDepth().build((None, None, 4, 4, 1))
    with pytest.raises(ValueError, match="static sizes"):
        PositionEmbedding().build((None, 4, None, 8))
