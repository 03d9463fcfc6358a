"""`lse` and `lsn`: frozen lse = NumPy forward Euler, lsn learns disks, bad inputs."""

import keras
import numpy as np
import pytest

from keras_medseg import zoo
from keras_medseg.zoo.level_set import signed_distance_to_sphere, synthetic_disks
from tests.layers.test_level_set_step import np_level_set_step
from tests.ops.test_level_set import np_edge_indicator

pytestmark = pytest.mark.backend_agnostic


def np_lse(image, u0, alpha, beta, gamma, dt, steps, tau, image_scale):
    g = np_edge_indicator(image_scale * image)
    u = u0[..., 0]
    for _ in range(steps):
        u = np_level_set_step(u, g, alpha, beta, gamma, dt)
    return 1.0 / (1.0 + np.exp(u / tau))


@pytest.mark.parametrize("spatial_dims,size", [(2, 17), (3, 11)])
def test_lse_equals_numpy_forward_euler(spatial_dims, size):
    images, _, init = synthetic_disks(2, size=size, spatial_dims=spatial_dims, seed=3)
    kwargs = {"alpha": -0.8, "beta": 0.3, "gamma": 1.2, "dt": 0.15, "steps": 4, "tau": 0.5, "image_scale": 3.0}
    keras.config.set_dtype_policy("float64")
    model = zoo.build("lse", spatial_dims=spatial_dims, smoothing_sigma=None, tolerance=None, edge_threshold=None,
                      region_margin=None, **kwargs)
    prob = np.asarray(model.predict([images.astype("float64"), init.astype("float64")], verbose=0))
    keras.config.set_dtype_policy("float32")
    assert not model.trainable_weights
    ref = np_lse(images.astype("float64"), init.astype("float64"), **kwargs)
    # the output sigmoid is float32 by design (mixed precision): float32 tolerance
    np.testing.assert_allclose(prob[..., 0], ref, rtol=2e-6, atol=1e-9)
    # the evolution really moved the contour (inflating balloon)
    assert (ref > 0.5).sum() > (init < 0).sum()


@pytest.mark.slow
def test_lse_segments_a_disk():
    images, masks, init = synthetic_disks(2, size=24, seed=0)
    model = zoo.build("lse", steps=30, dt=0.3, alpha=-1.0, smoothing_sigma=None, image_scale=10.0, tolerance=None)
    pred = model.predict([images, init], verbose=0) > 0.5
    dice = 2 * (pred * masks).sum() / (pred.sum() + masks.sum())
    assert dice > 0.85


@pytest.mark.slow
def test_lsn_learns_disks():
    images, masks, _ = synthetic_disks(16, size=16, seed=1)
    keras.utils.set_random_seed(0)
    model = zoo.build("lsn", input_size=16, steps=3, init_filters=4, learning_rate=5e-2)
    history = model.fit(images, masks, epochs=8, batch_size=16, verbose=0)
    losses = history.history["loss"]
    # measured: 0.69 -> 0.17 (TensorFlow), 0.70 -> 0.27 (JAX) in these 8 Adam steps
    assert losses[-1] < 0.6 * losses[0]
    step = model.get_layer("lsn_evolution").step
    assert len(step.trainable_weights) == 10
    assert len(model.get_layer("lsn_edge").trainable_weights) == 1


@pytest.mark.slow
def test_lsn_does_not_collapse_on_small_targets(xla_optimized):
    # issue 15: disks covering 1-13% of the image; the previous defaults (unbounded learned initial level set,
    # 10 steps x dt 0.05) ended with everything outside (validation Dice 0.0, measured with 64 images x 15 epochs).
    # 20 steps of 8 images: validation Dice 0.82-0.999 over seeds 0-2 on TensorFlow, JAX and torch (64 images x 15
    # epochs: 0.997-0.999, 5x the CPU); the lowest, 0.82, is TensorFlow with seed 0, this test's seed
    images, masks, _ = synthetic_disks(16, size=32, radius_range=(0.08, 0.2), noise=0.1, seed=1)
    val_images, val_masks, _ = synthetic_disks(16, size=32, radius_range=(0.08, 0.2), noise=0.1, seed=2)
    assert masks.reshape(16, -1).mean(axis=1).max() <= 0.15
    keras.utils.set_random_seed(0)
    model = zoo.build("lsn", input_size=32)
    model.fit(images, masks, epochs=10, batch_size=8, verbose=0)
    pred = model.predict(val_images, verbose=0) > 0.5
    dice = 2 * (pred * val_masks).sum() / (pred.sum() + val_masks.sum())
    assert dice > 0.6


def test_lsn_with_input_initialisation():
    model = zoo.build("lsn", init="input", steps=2, spatial_dims=3)
    assert len(model.inputs) == 2
    images, masks, init = synthetic_disks(1, size=8, spatial_dims=3)
    assert model.predict([images, init], verbose=0).shape == (1, 8, 8, 8, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        zoo.build("lse", steps=0)
    with pytest.raises(ValueError, match="dt"):
        zoo.build("lsn", dt=-0.1)
    with pytest.raises(ValueError, match="tau"):
        zoo.build("lse", tau=0.0)
    with pytest.raises(ValueError, match="init"):
        zoo.build("lsn", init="otsu")
    with pytest.raises(ValueError, match="spatial_dims"):
        zoo.build("lsn", spatial_dims=1)
    with pytest.raises(ValueError, match="kernel_size"):
        zoo.build("lse", kernel_size=4)
    with pytest.raises(ValueError, match="input_size"):
        zoo.build("lse", input_size=(16, 16, 16))
    with pytest.raises(ValueError, match="image_scale"):
        zoo.build("lsn", image_scale=-1.0)


def test_predict_on_three_sizes_twice():
    # issue 32: `model.predict` on a second image size failed on TensorFlow (the while loop's level set lost its
    # static batch size once Keras relaxed the input shapes); sizes and batch sizes in any order, twice
    model = zoo.build("lse", steps=8, check_every=4)
    rng = np.random.default_rng(0)
    inputs, first = {}, {}
    for shape, batch in [((20, 24), 1), ((31, 17), 2), ((16, 16), 1)]:
        images = rng.random((batch,) + shape + (1,)).astype("float32")
        images[:, shape[0] // 4: 3 * shape[0] // 4, shape[1] // 4: 3 * shape[1] // 4] += 2.0
        seed = signed_distance_to_sphere(shape, (shape[0] / 2, shape[1] / 2), 2.0).astype("float32")
        inputs[shape] = (images, np.repeat(seed[None, ..., None], batch, axis=0))
    for shape, (images, u0) in list(inputs.items()) * 2:
        prob = model.predict([images, u0], verbose=0)
        assert prob.shape == images.shape
        assert (prob > 0.5).sum() > (u0 < 0).sum()  # the front moved
        if shape in first:
            np.testing.assert_allclose(prob, first[shape], atol=1e-5)
        first.setdefault(shape, prob)
    images, u0 = inputs[(31, 17)]
    np.testing.assert_allclose(np.asarray(model([images, u0])), first[(31, 17)], atol=1e-5)
