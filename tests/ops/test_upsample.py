"""Tests for `keras_medseg.ops.upsample_linear`: PyTorch's interpolate and `resize_spatial` as references."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_medseg.ops import resize_spatial, upsample_linear
from tests.testing import check_op_gradients

# the NumPy-reference tests run on every backend; the comparisons with MONAI / PyTorch (same numbers, heavy
# imports) run once, in the TensorFlow phase
AGNOSTIC = pytest.mark.backend_agnostic


@AGNOSTIC
@pytest.mark.parametrize("shape,factor", [((2, 5, 4, 3), 2), ((1, 3, 4, 5, 2), 2), ((1, 3, 2, 4, 2), (3, 1, 2))])
def test_matches_resize_spatial_linear(shape, factor, rng):
    x = rng.standard_normal(shape).astype("float32")
    f = factor if isinstance(factor, tuple) else (factor,) * (len(shape) - 2)
    want = resize_spatial(x, tuple(s * g for s, g in zip(shape[1:-1], f)), method="linear")
    np.testing.assert_allclose(ops.convert_to_numpy(upsample_linear(x, factor)), ops.convert_to_numpy(want),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (1, 3, 4, 5, 2)])
def test_matches_torch_interpolate_align_corners_false(shape, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape).astype("float32")
    mode = "bilinear" if len(shape) == 4 else "trilinear"
    want = torch.nn.functional.interpolate(torch.from_numpy(np.moveaxis(x, -1, 1)), scale_factor=2, mode=mode,
                                           align_corners=False).numpy()
    np.testing.assert_allclose(ops.convert_to_numpy(upsample_linear(x, 2)), np.moveaxis(want, 1, -1),
                               rtol=1e-5, atol=1e-6)


@AGNOSTIC
def test_sizes_unknown_until_run_time(rng):
    """Inside a model built for any size (the `LinearUpsampling` layer), the op works on run-time shapes."""
    from keras_medseg.layers import LinearUpsampling

    inputs = keras.Input((None, None, None, 2))
    model = keras.Model(inputs, LinearUpsampling(2)(inputs))
    x = rng.standard_normal((1, 3, 4, 5, 2)).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(model.predict(x, verbose=0)),
                               ops.convert_to_numpy(upsample_linear(x, 2)), rtol=1e-6, atol=1e-6)


@AGNOSTIC
def test_gradients(rng):
    errors = check_op_gradients(lambda x: upsample_linear(x, (2, 3)), rng.standard_normal((1, 3, 2, 2)))
    assert max(errors.values()) < 1e-6


@AGNOSTIC
@pytest.mark.parametrize("factor", [0, (2, 2, 2), 1.5, True])
def test_bad_factor(factor):
    with pytest.raises(ValueError, match="`factor` must be a positive int"):
        upsample_linear(np.zeros((1, 4, 4, 1), "float32"), factor)


@AGNOSTIC
def test_bad_rank():
    with pytest.raises(ValueError, match=r"`x` must be .*Received: x.shape=\(4, 4\)"):
        upsample_linear(np.zeros((4, 4), "float32"))
