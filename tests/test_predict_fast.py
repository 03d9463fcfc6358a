"""The streamed whole-scan predict path against plain NumPy formulas: blending, mirroring TTA, probability maps."""

import itertools

import keras
import nibabel
import numpy as np
import pytest

from keras_medseg.data.scans.geometry import from_model_space, resample, to_model_space
from keras_medseg.data.scans.io import read_image
from keras_medseg.inference import importance_map, sliding_window, sliding_window_slabs, window_starts
from keras_medseg.predict.scans import predict_files, predict_scan
from tests.test_scans import _threshold_model

pytestmark = pytest.mark.backend_agnostic


def conv_model(d, c_in=1, c_out=3, kernel=None, seed=0):
    """A 3-wide convolution + softmax: windows see their borders, so blending matters."""
    inp = keras.Input((None,) * d + (c_in,))
    conv = (keras.layers.Conv2D if d == 2 else keras.layers.Conv3D)(c_out, 3, padding="same", activation="softmax")
    model = keras.Model(inp, conv(inp))
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3,) * d + (c_in, c_out)).astype("float32") if kernel is None else kernel
    conv.set_weights([w, rng.standard_normal(c_out).astype("float32") * 0.1])
    return model


def reference_blend(model, volume, patch, overlap, sigma_scale=0.125):
    """Gaussian-weighted sliding-window blending written out with NumPy: sum(w * pred) / sum(w) per voxel."""
    spatial = volume.shape[:-1]
    weight = importance_map(patch, "gaussian", sigma_scale).astype(np.float64)
    num, den = None, np.zeros(spatial)
    for corner in itertools.product(*[window_starts(s, p, overlap) for s, p in zip(spatial, patch)]):
        region = tuple(slice(c, c + p) for c, p in zip(corner, patch))
        pred = np.asarray(model.predict_on_batch(volume[region][None]), np.float64)[0]
        num = np.zeros(spatial + pred.shape[-1:]) if num is None else num
        num[region] += pred * weight[..., None]
        den[region] += weight
    return num / den[..., None]


@pytest.mark.parametrize("shape,patch,overlap", [((21, 17, 13, 1), (8, 8, 8), 0.5), ((30, 19, 1), (12, 8), 0.25),
                                                 ((16, 9, 11, 1), (8, 9, 4), 0.6)])
def test_streamed_blending_equals_the_numpy_formula(shape, patch, overlap):
    model = conv_model(len(patch))
    volume = np.random.default_rng(1).standard_normal(shape).astype("float32")
    ref = reference_blend(model, volume, patch, overlap)
    out = sliding_window(model, volume, patch, overlap=overlap, batch_size=3)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-5
    bands = list(sliding_window_slabs(model, volume, patch, overlap=overlap, batch_size=3))
    rows = np.concatenate([np.arange(start, stop) for _, start, stop, _ in bands])
    np.testing.assert_array_equal(rows, np.arange(shape[0]))  # every row once, in order
    np.testing.assert_array_equal(np.concatenate([b for *_, b in bands]), out)  # the bands are the result


def test_batched_volumes_stream_per_sample():
    model = conv_model(3, c_out=2)
    volume = np.random.default_rng(2).standard_normal((2, 12, 10, 9, 1)).astype("float32")
    out = sliding_window(model, volume, (8, 8, 8), overlap=0.5, batch_size=3)
    for n in range(2):
        assert np.abs(out[n] - reference_blend(model, volume[n], (8, 8, 8), 0.5)).max() < 1e-5


def test_mirroring_tta_on_a_flip_equivariant_model_changes_nothing():
    rng = np.random.default_rng(3)
    k = rng.standard_normal((3, 3, 3, 1, 2)).astype("float32")
    for axis in range(3):  # a kernel symmetric along every axis: the convolution commutes with flips
        k = k + np.flip(k, axis)
    model = conv_model(3, c_out=2, kernel=k)
    volume = rng.standard_normal((14, 12, 10, 1)).astype("float32")
    plain = sliding_window(model, volume, (8, 8, 8), overlap=0.5)
    tta = sliding_window(model, volume, (8, 8, 8), overlap=0.5, flips=(0, 1, 2))
    np.testing.assert_allclose(tta, plain, atol=1e-5)


def test_mirroring_tta_averages_the_flipped_predictions():
    model = conv_model(3, c_out=2, seed=4)  # not flip-equivariant
    volume = np.random.default_rng(4).standard_normal((8, 8, 6, 1)).astype("float32")
    expect = np.mean([np.flip(np.asarray(model.predict_on_batch(np.flip(volume, axes)[None]))[0], axes)
                      for axes in [(), (0,), (2,), (0, 2)]], axis=0)
    out = sliding_window(model, volume, (8, 8, 6), flips=(0, 2))  # one window: the whole volume
    np.testing.assert_allclose(out, expect, atol=1e-6)
    assert np.abs(out - sliding_window(model, volume, (8, 8, 6))).max() > 1e-3
    with pytest.raises(ValueError, match="flips"):
        sliding_window(model, volume, (8, 8, 6), flips=(3,))


def _scan(tmp_path, shape=(22, 18, 10)):
    rng = np.random.default_rng(5)
    aff = np.array([[0.0, -0.8, 0.0, 10.0], [0.9, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 3.0], [0, 0, 0, 1.0]])
    path = str(tmp_path / "scan.nii.gz")
    nibabel.save(nibabel.Nifti1Image(rng.normal(0, 1, shape).astype(np.float32), aff), path)
    return read_image(path)


@pytest.mark.parametrize("spec", [{"orientation": "RAS"}, {"orientation": "RAS", "spacing": [1.0, 1.1, 2.0]}])
def test_predict_scan_labels_and_probabilities_match_the_old_formula(tmp_path, spec):
    record = _scan(tmp_path)
    model = conv_model(3, c_out=3, seed=6)
    spec = {"spatial_dims": 3, "patch_size": [8, 8, 8], "intensity": {"preset": "none"}, **spec}
    labels, probs = predict_scan(model, record, spec, overlap=0.5, return_probabilities=True)
    x, change = to_model_space(record.array, record.affine, spacing=spec.get("spacing"),
                               orientation="RAS", order=1)
    old = from_model_space(sliding_window(model, x[..., None].astype(np.float32), (8, 8, 8), overlap=0.5,
                                          batch_size=2), change, order=1)
    assert probs.shape == record.shape + (3,) and labels.shape == record.shape and labels.dtype == np.uint8
    np.testing.assert_allclose(probs, old, atol=1e-6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, np.argmax(probs, -1))
    np.testing.assert_array_equal(predict_scan(model, record, spec, overlap=0.5), labels)  # streamed path


def test_predict_files_writes_probability_maps(tmp_path):
    shape = (20, 18, 9)
    rng = np.random.default_rng(7)
    (tmp_path / "in").mkdir()
    nibabel.save(nibabel.Nifti1Image(rng.normal(0, 1, shape).astype(np.float32), np.diag([0.8, 0.8, 2.0, 1.0])),
                 str(tmp_path / "in" / "a.nii.gz"))
    model = str(tmp_path / "m.keras")
    _threshold_model(model, {"intensity": {"preset": "none"}})
    written = predict_files(model, str(tmp_path / "in"), str(tmp_path / "out"), progress=False, probabilities=True,
                            flips=(0, 1))
    assert [w[2] for w in written] == [str(tmp_path / "out" / "a.nii.gz"),
                                       str(tmp_path / "out" / "a_probabilities.nii.gz")]
    labels = np.asarray(nibabel.load(written[0][2]).dataobj)
    probs = nibabel.load(written[1][2])
    assert probs.shape == shape + (2,) and probs.get_data_dtype() == np.float32
    probs = probs.get_fdata()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, np.argmax(probs, -1))
    with pytest.raises(ValueError, match="probabilities"):
        predict_files(model, str(tmp_path / "in"), str(tmp_path / "out"), progress=False, probabilities="yes")


def test_resample_to_the_same_spacing_is_skipped(monkeypatch):
    import scipy.ndimage

    def fail(*args, **kwargs):
        raise AssertionError("an interpolation pass on a grid that already matches")

    array = np.random.default_rng(8).integers(-1000, 1000, (9, 8, 7)).astype(np.int16)
    aff = np.diag([0.7, 0.7, 1.5, 1.0])
    monkeypatch.setattr(scipy.ndimage, "affine_transform", fail)
    out, new_aff = resample(array, aff, (0.7, 0.7, 1.5))
    assert out.dtype == np.float32 and not np.shares_memory(out, array)
    np.testing.assert_array_equal(out, array)
    np.testing.assert_allclose(new_aff, aff)
    labels, _ = resample(array, aff, (0.7, 0.7, 1.5), order=0)
    assert labels.dtype == np.int16 and not np.shares_memory(labels, array)


def test_the_cached_compiled_call_uses_new_weights_and_lets_the_model_go():
    """The compiled call is cached per model: it must see weights set after the first call (training between two
    validations) and must not keep a model alive once the user drops it (a strong reference from the cache would)."""
    import gc
    import weakref

    model = conv_model(2, c_out=2)
    volume = np.random.default_rng(2).standard_normal((10, 9, 1)).astype("float32")
    first = sliding_window(model, volume, (8, 8), overlap=0.5)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([-kernel, bias])
    second = sliding_window(model, volume, (8, 8), overlap=0.5)
    np.testing.assert_allclose(second, reference_blend(model, volume, (8, 8), 0.5), atol=1e-5)
    assert np.abs(second - first).max() > 1e-3
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
