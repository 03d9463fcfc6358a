"""Tests of the generative models `cgan`, `pix2pix`, `cyclegan` (keras_medseg.zoo.gan).

The adversarial training step runs on TensorFlow, JAX and torch
(`test_fit_updates_the_right_networks_on_every_backend`); the longer training
tests run on TensorFlow. Loss formulas are checked against NumPy.
"""

import os

import keras
import numpy as np
import pytest

from keras_medseg import zoo
from keras_medseg.data.synthetic import translation as T
from keras_medseg.training.callbacks import GANSampleGrid, make_grid, sample_rows
from keras_medseg.zoo import gan

TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                             reason="the GAN training step runs on TensorFlow only")

TINY_CGAN = dict(image_size=8, filters=4, latent_dim=8, num_classes=3)
TINY_P2P = dict(filters=4, depth=2, discriminator_filters=4, discriminator_layers=2)
TINY_CYC = dict(filters=4, num_residual_blocks=1, discriminator_filters=4, discriminator_layers=2)


def _eager(model):
    """Tiny models: eager steps are cheaper than tracing the graph (the cgan tests cover graph mode)."""
    model.compile(run_eagerly=True)
    return model


def _finite(history):
    return all(np.all(np.isfinite(v)) for v in history.history.values())


# ---------------------------------------------------------------- registry / losses


def test_registered():
    names = zoo.list()
    for n in ("cgan", "pix2pix", "cyclegan"):
        assert n in names


@pytest.mark.backend_agnostic
def test_adversarial_losses_match_numpy():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(4, 3, 3, 1)).astype("float32")
    fake = rng.normal(size=(4, 3, 3, 1)).astype("float32")
    sig = lambda v: 1.0 / (1.0 + np.exp(-v.astype("float64")))  # noqa: E731
    d_ref = -0.5 * (np.mean(np.log(sig(real))) + np.mean(np.log(1 - sig(fake))))
    ns_ref = -np.mean(np.log(sig(fake)))
    mm_ref = np.mean(np.log(1 - sig(fake)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gan.discriminator_loss(real, fake)), d_ref, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gan.generator_loss(fake)), ns_ref, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gan.generator_loss(fake, "minimax")), mm_ref,
                               rtol=1e-5)
    ls_d = 0.5 * (np.mean((real - 1) ** 2) + np.mean(fake ** 2))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(gan.discriminator_loss(real, fake, "least_squares")), ls_d, rtol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(gan.generator_loss(fake, "least_squares")), np.mean((fake - 1) ** 2),
        rtol=1e-5)


@pytest.mark.backend_agnostic
def test_build_and_sample_on_every_backend(tmp_path):
    model = zoo.build("cyclegan", **TINY_CYC)
    a, _ = T.paired_shapes(2, image_size=16)
    out = model.translate(a, direction="a2b")
    assert out.shape == a.shape and np.abs(out).max() <= 1.0
    path = str(tmp_path / "c.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.translate(a), out, atol=1e-5)


class _Batches(keras.utils.PyDataset):
    """A PyDataset of `(x, y)` batches, as a user would write one."""

    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, i):
        sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[sl], self.y[sl]


@pytest.mark.backend_agnostic
def test_fit_updates_the_right_networks_on_every_backend():
    """Arrays and PyDataset, with validation, on TF, JAX and torch: each loss moves only its own network."""
    model = gan.cgan(**TINY_CGAN, seed=0)
    # generator frozen: only the discriminator's gradients may move weights
    model.compile(optimizers={"generator": keras.optimizers.Adam(0.0)})
    x, y = T.labelled_shapes(16, image_size=8, num_classes=3)
    g0 = [keras.ops.convert_to_numpy(w).copy() for w in model.generator.trainable_weights]
    d0 = [keras.ops.convert_to_numpy(w).copy() for w in model.discriminator.trainable_weights]
    hist = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    hist = model.fit(_Batches(x, y, 8), epochs=1, verbose=0, validation_data=(x[:8], y[:8]))
    assert _finite(hist)
    assert {"d_loss", "g_loss", "val_d_loss", "val_g_loss"} <= set(hist.history)
    for w, w0 in zip(model.generator.trainable_weights, g0):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), w0)
    moved = [np.abs(keras.ops.convert_to_numpy(w) - w0).max() > 0
             for w, w0 in zip(model.discriminator.trainable_weights, d0)]
    assert all(moved)
    assert {n: int(keras.ops.convert_to_numpy(o.iterations)) for n, o in model.network_optimizers.items()} == {
        "generator": 4, "discriminator": 4}
    logs = model.train_on_batch(x[:8], y[:8], return_dict=True)
    assert {"d_loss", "g_loss", "d_accuracy"} <= set(logs) and np.isfinite(float(logs["d_loss"]))
    assert int(keras.ops.convert_to_numpy(model.discriminator_optimizer.iterations)) == 5
    ev = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert set(ev) == {"d_loss", "g_loss", "d_accuracy"} and all(np.isfinite(float(v)) for v in ev.values())


@pytest.mark.backend_agnostic
@pytest.mark.slow
def test_fit_from_tf_data_with_validation():
    """A tf.data pipeline feeds the GAN on every backend where TensorFlow is installed."""
    tf = pytest.importorskip("tensorflow")
    model = _eager(zoo.build("pix2pix", **TINY_P2P))
    a, b = T.paired_shapes(8, image_size=16)
    ds = tf.data.Dataset.from_tensor_slices((a, b)).batch(4)
    hist = model.fit(ds, epochs=1, verbose=0, validation_data=ds)
    assert _finite(hist) and "val_g_loss" in hist.history


def test_jax_fit_rejects_unsupported_options():
    if keras.backend.backend() != "jax":
        pytest.skip("the JAX epoch loop's own error")
    model = gan.cgan(**TINY_CGAN)
    model.compile()
    x, y = T.labelled_shapes(8, image_size=8, num_classes=3)
    with pytest.raises(NotImplementedError, match="validation_split"):
        model.fit(x, y, validation_split=0.5, verbose=0)


# ---------------------------------------------------------------- cgan


@TF_ONLY
def test_cgan_trains_and_generates():
    model = zoo.build("cgan", **TINY_CGAN, seed=1)
    x, y = T.labelled_shapes(32, image_size=8, num_classes=3)
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert _finite(hist)
    assert set(hist.history) == {"d_loss", "g_loss", "d_accuracy"}
    logs = model.train_on_batch(x[:16], y[:16], return_dict=True)
    assert np.isfinite(logs["g_loss"]) and int(model.generator_optimizer.iterations) == 5
    samples = model.generate([0, 1, 2, 2], seed=0)
    assert samples.shape == (4, 8, 8, 1) and samples.dtype == np.float32
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    # conditioning: the same z with two labels gives two different images
    z = np.random.default_rng(0).standard_normal((1, 8)).astype("float32")
    s0, s1 = model.generate([0], z=z), model.generate([1], z=z)
    assert np.abs(s0 - s1).mean() > 0.01 * np.abs(s0).mean() > 0
    np.testing.assert_array_equal(model.generate([1], z=z), s1)  # deterministic given z
    p = model.discriminate(x[:4], y[:4])
    assert p.shape == (4,) and np.all((p > 0) & (p < 1))


@TF_ONLY
def test_discriminator_separates_real_from_fixed_generator():
    # generator frozen (learning rate 0): its samples are fixed noise images
    model = gan.cgan(**TINY_CGAN, seed=0)
    model.compile(optimizers={"generator": keras.optimizers.Adam(0.0),
                              "discriminator": keras.optimizers.Adam(2e-3, beta_1=0.5)})
    x, y = T.labelled_shapes(64, image_size=8, num_classes=3, seed=2)
    g_before = [np.array(w) for w in model.generator.trainable_weights]
    model.fit(x, y, batch_size=32, epochs=12, verbose=0)
    for before, after in zip(g_before, model.generator.trainable_weights):
        np.testing.assert_array_equal(before, np.array(after))
    xt, yt = T.labelled_shapes(48, image_size=8, num_classes=3, seed=3)
    fake = model.generate(yt, seed=4)
    p_real = model.discriminate(xt, yt)
    p_fake = model.discriminate(fake, yt)
    accuracy = 0.5 * (np.mean(p_real > 0.5) + np.mean(p_fake < 0.5))
    assert accuracy > 0.9


@TF_ONLY
def test_cgan_3d():
    model = _eager(zoo.build("cgan", **dict(TINY_CGAN, spatial_dims=3)))
    x, y = T.labelled_shapes(8, image_size=8, num_classes=3, spatial_dims=3)
    assert _finite(model.fit(x, y, batch_size=8, epochs=1, verbose=0))
    assert model.generate([0, 1]).shape == (2, 8, 8, 8, 1)


# ---------------------------------------------------------------- pix2pix


@TF_ONLY
def test_pix2pix_trains_and_translates():
    model = _eager(zoo.build("pix2pix", **TINY_P2P))
    assert model.l1_weight == 100.0
    a, b = T.paired_shapes(16, image_size=16)
    hist = model.fit(a, b, batch_size=8, epochs=2, verbose=0)
    assert _finite(hist)
    assert "l1_loss" in hist.history
    out = model.translate(a[:3])
    assert out.shape == (3, 16, 16, 1) and np.abs(out).max() <= 1.0
    # the L1 term is the mean absolute error of the translation
    ev = model.evaluate(a[:8], b[:8], batch_size=8, verbose=0, return_dict=True)
    np.testing.assert_allclose(ev["l1_loss"], np.mean(np.abs(model.translate(a[:8]) - b[:8])), rtol=1e-4)


@TF_ONLY
def test_pix2pix_resnet_3d():
    model = zoo.build("pix2pix", generator="resnet", filters=2, num_residual_blocks=1,
                      discriminator_filters=2, discriminator_layers=2, spatial_dims=3)
    _eager(model)
    a, b = T.paired_shapes(4, image_size=8, spatial_dims=3)
    assert _finite(model.fit(a, b, batch_size=4, epochs=1, verbose=0))
    assert model.translate(a[:1]).shape == (1, 8, 8, 8, 1)


# ---------------------------------------------------------------- cyclegan


def _identity_network(channels, name):
    inp = keras.Input((None, None, channels))
    return keras.Model(inp, keras.layers.Identity()(inp), name=name)


def test_cycle_loss_of_identity_mapping_is_zero():
    d_a = gan.patchgan_discriminator(1, 4, 2, name="da")
    d_b = gan.patchgan_discriminator(1, 4, 2, name="db")
    model = gan.CycleGAN(_identity_network(1, "gab"), _identity_network(1, "gba"), d_a, d_b)
    a, b = T.unpaired_shapes(4, image_size=16)
    assert float(keras.ops.convert_to_numpy(model.cycle_loss(a, b))) == 0.0
    g, _, logs = model.compute_losses(a, b)
    assert float(keras.ops.convert_to_numpy(logs["cycle_loss"])) == 0.0


def test_cycle_loss_matches_numpy():
    model = zoo.build("cyclegan", **TINY_CYC, cycle_weight=3.0)
    a, b = T.unpaired_shapes(4, image_size=16)
    cyc_a = model.translate(model.translate(a, "a2b"), "b2a")
    cyc_b = model.translate(model.translate(b, "b2a"), "a2b")
    ref = 3.0 * (np.mean(np.abs(cyc_a - a)) + np.mean(np.abs(cyc_b - b)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.cycle_loss(a, b)), ref, rtol=1e-4)


@TF_ONLY
def test_cyclegan_trains_with_identity_loss():
    model = _eager(zoo.build("cyclegan", **TINY_CYC, identity_weight=5.0))
    assert model.cycle_weight == 10.0
    assert len(model.network_optimizers) == 4
    a, b = T.unpaired_shapes(16, image_size=16)
    hist = model.fit(a, b, batch_size=8, epochs=1, verbose=0)
    assert _finite(hist)
    assert hist.history["identity_loss"][-1] > 0
    assert model.translate(b[:2], direction="b2a").shape == (2, 16, 16, 1)
    for opt in model.network_optimizers.values():
        assert int(opt.iterations.numpy()) == 2


# ---------------------------------------------------------------- save / load / resume


def _optimizer_state(model):
    return {n: [np.array(v) for v in opt.variables] for n, opt in model.network_optimizers.items()}


@TF_ONLY
@pytest.mark.parametrize("name", ["cgan", "cyclegan"])
def test_save_load_resume(name, tmp_path):
    if name == "cgan":
        model = zoo.build("cgan", **TINY_CGAN)
        x, y = T.labelled_shapes(16, image_size=8, num_classes=3)
    else:
        model = _eager(zoo.build("cyclegan", **TINY_CYC))
        x, y = T.unpaired_shapes(16, image_size=16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    assert loaded.get_config()["adversarial_loss"] == "non_saturating"
    for w0, w1 in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    state0, state1 = _optimizer_state(model), _optimizer_state(loaded)
    assert state0.keys() == state1.keys()
    for n in state0:
        assert int(loaded.network_optimizers[n].iterations.numpy()) == 2
        for v0, v1 in zip(state0[n], state1[n]):
            np.testing.assert_array_equal(v0, v1)
    hist = loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert _finite(hist)
    for opt in loaded.network_optimizers.values():
        assert int(opt.iterations.numpy()) == 4


# ---------------------------------------------------------------- callback


@TF_ONLY
def test_sample_grid_callback(tmp_path):
    model = _eager(zoo.build("cgan", **TINY_CGAN))
    x, y = T.labelled_shapes(16, image_size=8, num_classes=3)
    cb = GANSampleGrid(tmp_path / "grids", every=2, num_samples=4)
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[cb])
    assert [os.path.basename(p) for p in cb.paths] == ["samples_epoch002.png", "samples_epoch004.png"]
    import matplotlib.pyplot as plt

    img = plt.imread(cb.paths[-1])
    assert img.shape[:2] == (3 * 9 + 1, 4 * 9 + 1)  # 3 labels x 4 samples of 8x8 + 1px padding


def test_sample_rows_translation_models():
    p2p = zoo.build("pix2pix", **TINY_P2P)
    a, b = T.paired_shapes(3, image_size=16)
    rows = sample_rows(p2p, (a, b), num_samples=2)
    assert len(rows) == 3 and rows[1].shape == (2, 16, 16, 1)
    cyc = zoo.build("cyclegan", **TINY_CYC)
    assert len(sample_rows(cyc, (a, b), num_samples=2)) == 6
    grid = make_grid(rows)
    assert grid.shape == (3 * 17 + 1, 2 * 17 + 1, 3)
    with pytest.raises(ValueError, match="inputs"):
        sample_rows(p2p, None)
    with pytest.raises(TypeError, match="model"):
        sample_rows(keras.Sequential([keras.layers.Dense(1)]), None)
    with pytest.raises(ValueError, match="every"):
        GANSampleGrid("x", every=0)


# ---------------------------------------------------------------- bad inputs


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="l1_weight"):
        zoo.build("pix2pix", **TINY_P2P, l1_weight=-1.0)
    with pytest.raises(ValueError, match="cycle_weight"):
        zoo.build("cyclegan", **TINY_CYC, cycle_weight=-10.0)
    with pytest.raises(ValueError, match="identity_weight"):
        zoo.build("cyclegan", **TINY_CYC, identity_weight=-1.0)
    with pytest.raises(ValueError, match="identity loss"):
        zoo.build("cyclegan", **TINY_CYC, channels_b=3, identity_weight=1.0)
    with pytest.raises(ValueError, match="image_size"):
        zoo.build("cgan", image_size=30)
    with pytest.raises(ValueError, match="adversarial_loss"):
        zoo.build("cgan", **TINY_CGAN, adversarial_loss="wasserstein")
    with pytest.raises(ValueError, match="generator"):
        zoo.build("pix2pix", generator="vgg")
    with pytest.raises(ValueError, match="generator_ba"):
        gan.CycleGAN(gan.resnet_generator(1, 2, 4, 1), gan.resnet_generator(1, 1, 4, 1),
                     gan.patchgan_discriminator(1, 4, 2), gan.patchgan_discriminator(2, 4, 2))
    model = zoo.build("cgan", **TINY_CGAN)
    with pytest.raises(ValueError, match="optimizers"):
        model.compile(optimizers={"critic": "adam"})


@TF_ONLY
def test_bad_training_data():
    cg = _eager(zoo.build("cgan", **TINY_CGAN))
    x, y = T.labelled_shapes(8, image_size=8, num_classes=3)
    with pytest.raises(ValueError, match="labels"):
        cg.fit(x, batch_size=8, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="labels"):
        cg.generate([0, 5])
    p2p = _eager(zoo.build("pix2pix", **TINY_P2P))
    a, _ = T.paired_shapes(4, image_size=16)
    _, b = T.paired_shapes(4, image_size=32)
    with pytest.raises(ValueError, match="same spatial shape"):
        p2p.fit(a, b[:, :16], batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="target"):
        p2p.fit(a, np.repeat(a, 2, axis=-1), batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="divisible"):
        p2p.translate(np.zeros((1, 18, 18, 1)))
    cyc = _eager(zoo.build("cyclegan", **TINY_CYC))
    with pytest.raises(ValueError, match="images_b"):
        cyc.fit(a, np.zeros((4, 16, 16, 3), "float32"), batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="direction"):
        cyc.translate(a, direction="ab")
