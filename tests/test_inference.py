import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_medseg.inference import importance_map, sliding_window, window_starts

pytestmark = pytest.mark.backend_agnostic


def pointwise_model(d, c_in=2, c_out=3):
    inp = keras.Input((None,) * d + (c_in,))
    conv = (keras.layers.Conv2D if d == 2 else keras.layers.Conv3D)(c_out, 1, activation="sigmoid")
    return keras.Model(inp, conv(inp))


@given(size=st.integers(1, 300), patch=st.integers(1, 64), overlap=st.floats(0.0, 0.9))
@settings(max_examples=200, deadline=None)
def test_windows_cover_the_axis_with_the_requested_overlap(size, patch, overlap):
    starts = window_starts(size, patch, overlap)
    covered = np.zeros(max(size, patch), bool)
    for s in starts:
        covered[s:s + patch] = True
    assert covered[:size].all()
    assert starts[0] == 0 and (size <= patch or starts[-1] + patch == size)
    if len(starts) > 1:
        gaps = np.diff(starts)
        assert gaps.max() <= max(1, int(np.floor(patch * (1 - overlap))))


@pytest.mark.parametrize("shape,patch", [((37, 23, 2), (16, 16)), ((2, 21, 9, 30, 2), (8, 8, 8)),
                                         ((5, 40, 2), (8, 16))])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_pointwise_model_gives_the_full_volume_prediction(shape, patch, blend):
    d = len(patch)
    model = pointwise_model(d)
    volume = np.random.default_rng(0).standard_normal(shape).astype("float32")
    out = sliding_window(model, volume, patch, overlap=0.5, blend=blend, batch_size=3)
    batched = volume if volume.ndim == d + 2 else volume[None]
    full = np.asarray(model.predict_on_batch(batched))
    full = full if volume.ndim == d + 2 else full[0]
    assert out.shape == volume.shape[:-1] + (3,)
    np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-6)


def test_gaussian_importance_map_peaks_in_the_centre():
    w = importance_map((9, 9, 9))
    assert w.shape == (9, 9, 9) and w[4, 4, 4] == pytest.approx(1.0)
    assert w[0, 0, 0] < w[2, 2, 2] < w[4, 4, 4] and w.min() > 0


def test_bad_inputs():
    model = pointwise_model(2)
    vol = np.zeros((32, 32, 2), "float32")
    with pytest.raises(ValueError, match="patch"):
        sliding_window(model, vol, (16,))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window(model, vol, (16, 16), overlap=1.0)
    with pytest.raises(ValueError, match="volume"):
        sliding_window(model, np.zeros((32, 32)), (16, 16, 16))
    with pytest.raises(ValueError, match="blend"):
        sliding_window(model, vol, (16, 16), blend="median")
    with pytest.raises(ValueError, match="batch_size"):
        sliding_window(model, vol, (16, 16), batch_size=0)
    inp = keras.Input((16, 16, 2))
    pooled = keras.Model(inp, keras.layers.MaxPooling2D()(inp))
    with pytest.raises(ValueError, match="size of its input windows"):
        sliding_window(pooled, vol, (16, 16))
