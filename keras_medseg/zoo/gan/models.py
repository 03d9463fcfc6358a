"""The three zoo GAN models: ConditionalGAN, Pix2Pix, CycleGAN."""

import keras
import numpy as np
from keras import ops

from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import (
    check_choice,
    check_positive,
    check_positive_int,
)
from keras_medseg.zoo.gan.losses import (
    DIRECTIONS,
    _accuracy,
    _l1,
    discriminator_loss,
    generator_loss,
)
from keras_medseg.zoo.gan.trainer import _check_image_batch, _GANBase


@register
class ConditionalGAN(_GANBase):
    """Class-conditional DCGAN: generator `G(z | y)` and discriminator `D(x | y)`.

    Trained by `model.fit(images, labels)`: each step draws `z ~ N(0, I)`,
    updates the discriminator on `(real, y)` vs `(G(z | y), y)` and the
    generator with the non-saturating loss `-log D(G(z | y) | y)`.

    Args:
        generator: `keras.Model` `[z (batch, latent_dim), label (batch, 1)] -> image`
            (see `cgan_generator`).
        discriminator: `keras.Model` `[image, label] -> (batch, 1)` logits.
        latent_dim: size of `z`.
        num_classes: number of class labels.
        adversarial_loss: `"non_saturating"` (default), `"minimax"` or
            `"least_squares"`.
        seed: int seed of the latent sampler. Default None.

    Data: `x` images `(batch, S, S, C)` (2D) or `(batch, S, S, S, C)` (3D) in
    [-1, 1]; `y` int labels `(batch,)` or `(batch, 1)`.

    Raises:
        ValueError: bad `latent_dim`/`num_classes`/`adversarial_loss`;
            `fit` without labels or with images of the wrong shape.

    Example:
    ```python
    model = keras_medseg.zoo.build("cgan", image_size=16, num_classes=3)
    x, y = keras_medseg.data.synthetic.translation.labelled_shapes(64, image_size=16, num_classes=3)
    model.fit(x, y, batch_size=16, epochs=1)
    samples = model.generate([0, 1, 2])
    ```

    Reference: J. Wolterink, "Deep Learning II: Interpretability & Adversarial
    Methods" (lecture, 8DM50) (conditional GAN); Mirza & Osindero 2014; Radford et al. 2016.
    """

    generator_names = ("generator",)
    discriminator_names = ("discriminator",)

    def __init__(self, generator, discriminator, latent_dim=64, num_classes=10,
                 adversarial_loss="non_saturating", seed=None, **kwargs):
        super().__init__(adversarial_loss=adversarial_loss, **kwargs)
        check_positive_int(latent_dim, "latent_dim")
        check_positive_int(num_classes, "num_classes", minimum=1)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.image_shape = tuple(generator.output_shape[1:])
        self._make_trackers(["d_loss", "g_loss", "d_accuracy"])

    def call(self, inputs, training=False):
        """`[z, labels] -> images` (the generator)."""
        return self.generator(inputs, training=training)

    def check_training_data(self, x, y):
        if y is None:
            raise ValueError(
                "ConditionalGAN.fit needs class labels: call `fit(images, labels)`. "
                "Received: y=None"
            )
        _check_image_batch(x, "x", len(self.image_shape) - 1, self.image_shape[-1], 1)
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"Images must have shape (batch,) + {self.image_shape}. Received: x.shape={tuple(x.shape)}"
            )

    def compute_losses(self, x, y, training=False):
        labels = ops.reshape(ops.cast(y, "int32"), (-1, 1))
        batch = ops.shape(x)[0]
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        fake = self.generator([z, labels], training=training)
        d_real = self.discriminator([x, labels], training=training)
        d_fake = self.discriminator([fake, labels], training=training)
        d_loss = discriminator_loss(d_real, d_fake, self.adversarial_loss)
        g_loss = generator_loss(d_fake, self.adversarial_loss)
        acc = _accuracy(d_real, d_fake, self.adversarial_loss)
        return g_loss, d_loss, {"d_loss": d_loss, "g_loss": g_loss, "d_accuracy": acc}

    def generate(self, labels, z=None, seed=None, batch_size=64):
        """Sample images for the given class labels.

        Args:
            labels: int sequence/array `(n,)` in `[0, num_classes)`.
            z: optional latent vectors `(n, latent_dim)`; drawn from N(0, I)
                with `seed` when None.
            seed: int seed for `z`. Default None.
            batch_size: generator batch size. Default 64.

        Returns:
            NumPy float32 array `(n,) + image_shape` in [-1, 1].

        Raises:
            ValueError: labels out of range or `z` of the wrong shape.
        """
        labels = np.asarray(labels).reshape(-1)
        if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"`labels` must be a non-empty sequence of ints. Received: labels={labels!r}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"`labels` must lie in [0, {self.num_classes}). Received: labels={labels.tolist()}"
            )
        if z is None:
            z = np.random.default_rng(seed).standard_normal((labels.size, self.latent_dim))
        z = np.asarray(z, dtype="float32")
        if z.shape != (labels.size, self.latent_dim):
            raise ValueError(
                f"`z` must have shape ({labels.size}, {self.latent_dim}). Received: z.shape={z.shape}"
            )
        return self._predict_in_batches(self.generator, [z, labels.reshape(-1, 1).astype("int32")],
                                        batch_size)

    def discriminate(self, images, labels):
        """Discriminator probabilities `D(x | y)` as a NumPy array `(n,)`."""
        labels = np.asarray(labels).reshape(-1, 1).astype("int32")
        logits = self._predict_in_batches(self.discriminator, [np.asarray(images, "float32"), labels], 64)
        return 1.0 / (1.0 + np.exp(-logits.reshape(-1)))

    def get_config(self):
        config = self._base_config()
        config.update(latent_dim=self.latent_dim, num_classes=self.num_classes, seed=self.seed)
        return config


# --------------------------------------------------------------------------
# pix2pix
# --------------------------------------------------------------------------


def _translation_shapes(network):
    shape = network.input_shape
    return len(shape) - 2, shape[-1], network.output_shape[-1]


@register
class Pix2Pix(_GANBase):
    """Paired image-to-image translation (pix2pix): `G: source -> target`.

    Loss of the generator: `adversarial(D(x, G(x))) + l1_weight * |G(x) - y|_1`;
    the PatchGAN discriminator sees `(source, target)` pairs concatenated on the
    channel axis.

    Args:
        generator: `keras.Model` source image -> target image in [-1, 1]
            (UNet by default, see `zoo.build("pix2pix")`).
        discriminator: `keras.Model` on `concat([source, target], -1)` ->
            patch logits.
        l1_weight: weight `lambda` of the L1 term (>= 0). Default 100.
        adversarial_loss: `"non_saturating"` (default), `"minimax"`,
            `"least_squares"`.
        size_multiple: spatial sizes must be divisible by this. Default 4.

    Data: `fit(source, target)`, 2D `(batch, H, W, C)` or 3D
    `(batch, D, H, W, C)` in [-1, 1]; same spatial shape.

    Raises:
        ValueError: `l1_weight < 0`; source/target of mismatched spatial shape
            or wrong channel count; `fit` without targets.

    Example:
    ```python
    model = keras_medseg.zoo.build("pix2pix", filters=8, depth=2)
    src, tgt = keras_medseg.data.synthetic.translation.paired_stains(32, patch_size=32)
    model.fit(src, tgt, batch_size=8, epochs=1)
    fake = model.translate(src[:4])
    ```

    Reference: J. Wolterink, "Deep Learning II: Interpretability & Adversarial
    Methods" (lecture, 8DM50) (image-conditioned GAN); Isola et al. 2017.
    """

    generator_names = ("generator",)
    discriminator_names = ("discriminator",)

    def __init__(self, generator, discriminator, l1_weight=100.0, adversarial_loss="non_saturating",
                 size_multiple=4, **kwargs):
        super().__init__(adversarial_loss=adversarial_loss, **kwargs)
        check_positive(l1_weight, "l1_weight", allow_zero=True)
        check_positive_int(size_multiple, "size_multiple")
        self.generator = generator
        self.discriminator = discriminator
        self.l1_weight = float(l1_weight)
        self.size_multiple = size_multiple
        self.spatial_dims, self.source_channels, self.target_channels = _translation_shapes(generator)
        self._make_trackers(["d_loss", "g_loss", "l1_loss", "d_accuracy"])

    def call(self, inputs, training=False):
        """`source -> translated target` (the generator)."""
        return self.generator(inputs, training=training)

    def check_training_data(self, x, y):
        if y is None:
            raise ValueError("Pix2Pix.fit needs paired targets: call `fit(source, target)`. Received: y=None")
        _check_image_batch(x, "source", self.spatial_dims, self.source_channels, self.size_multiple)
        _check_image_batch(y, "target", self.spatial_dims, self.target_channels, self.size_multiple)
        if tuple(x.shape[1:-1]) != tuple(y.shape[1:-1]):
            raise ValueError(
                "Source and target images must have the same spatial shape. "
                f"Received: source.shape={tuple(x.shape)}, target.shape={tuple(y.shape)}"
            )

    def compute_losses(self, x, y, training=False):
        fake = self.generator(x, training=training)
        x32 = ops.cast(x, fake.dtype)
        d_real = self.discriminator(ops.concatenate([x32, ops.cast(y, fake.dtype)], axis=-1),
                                    training=training)
        d_fake = self.discriminator(ops.concatenate([x32, fake], axis=-1), training=training)
        l1 = _l1(fake, y)
        adv = generator_loss(d_fake, self.adversarial_loss)
        g_loss = adv + self.l1_weight * l1
        d_loss = discriminator_loss(d_real, d_fake, self.adversarial_loss)
        acc = _accuracy(d_real, d_fake, self.adversarial_loss)
        return g_loss, d_loss, {"d_loss": d_loss, "g_loss": g_loss, "l1_loss": l1, "d_accuracy": acc}

    def translate(self, images, batch_size=16):
        """Translate source images: NumPy `(n, ...spatial, target_channels)` in [-1, 1].

        Raises:
            ValueError: wrong rank, channel count or spatial size.
        """
        images = np.asarray(images, dtype="float32")
        _check_image_batch(images, "images", self.spatial_dims, self.source_channels, self.size_multiple)
        return self._predict_in_batches(self.generator, [images], batch_size)

    def get_config(self):
        config = self._base_config()
        config.update(l1_weight=self.l1_weight, size_multiple=self.size_multiple)
        return config


# --------------------------------------------------------------------------
# CycleGAN
# --------------------------------------------------------------------------


@register
class CycleGAN(_GANBase):
    """Unpaired image-to-image translation with cycle consistency (CycleGAN).

    Generators `G_AB: A -> B`, `G_BA: B -> A`, discriminators `D_A`, `D_B`.
    Generator loss: `adv(D_B(G_AB(a))) + adv(D_A(G_BA(b))) + cycle_weight *
    (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1) + identity_weight *
    (|G_BA(a) - a|_1 + |G_AB(b) - b|_1)` (the identity term needs equal channel
    counts in both domains).

    Args:
        generator_ab, generator_ba: `keras.Model` image -> image in [-1, 1].
        discriminator_a, discriminator_b: `keras.Model` image -> patch logits.
        cycle_weight: `lambda` of the cycle loss (>= 0). Default 10.
        identity_weight: weight of the identity loss (>= 0). Default 0 (off;
            the CycleGAN paper uses `0.5 * cycle_weight` for photo<->painting).
        adversarial_loss: `"non_saturating"` (default), `"minimax"`,
            `"least_squares"`.
        size_multiple: spatial sizes must be divisible by this. Default 4.

    Data: `fit(images_a, images_b)`, unpaired batches of 2D `(batch, H, W, C_A)`
    / `(batch, H, W, C_B)` or 3D images in [-1, 1].

    Raises:
        ValueError: negative weights; identity loss with different channel
            counts; domain images of the wrong rank/channels/size.

    Example:
    ```python
    model = keras_medseg.zoo.build("cyclegan", filters=8, num_residual_blocks=1)
    a, b = keras_medseg.data.synthetic.translation.unpaired_stains(32, patch_size=32)
    model.fit(a, b, batch_size=8, epochs=1)
    fake_b = model.translate(a[:4], direction="a2b")
    ```

    Reference: J. Wolterink, "Deep Learning II: Interpretability & Adversarial
    Methods" (lecture, 8DM50) (CycleGAN, cycle consistency); Zhu et al. 2017.
    """

    generator_names = ("generator_ab", "generator_ba")
    discriminator_names = ("discriminator_a", "discriminator_b")

    def __init__(self, generator_ab, generator_ba, discriminator_a, discriminator_b, cycle_weight=10.0,
                 identity_weight=0.0, adversarial_loss="non_saturating", size_multiple=4, **kwargs):
        super().__init__(adversarial_loss=adversarial_loss, **kwargs)
        check_positive(cycle_weight, "cycle_weight", allow_zero=True)
        check_positive(identity_weight, "identity_weight", allow_zero=True)
        check_positive_int(size_multiple, "size_multiple")
        self.generator_ab = generator_ab
        self.generator_ba = generator_ba
        self.discriminator_a = discriminator_a
        self.discriminator_b = discriminator_b
        self.cycle_weight = float(cycle_weight)
        self.identity_weight = float(identity_weight)
        self.size_multiple = size_multiple
        self.spatial_dims, self.channels_a, self.channels_b = _translation_shapes(generator_ab)
        dims_ba, in_ba, out_ba = _translation_shapes(generator_ba)
        if (dims_ba, in_ba, out_ba) != (self.spatial_dims, self.channels_b, self.channels_a):
            raise ValueError(
                "generator_ba must map domain B back to domain A: expected "
                f"{self.spatial_dims}D, {self.channels_b} -> {self.channels_a} channels. "
                f"Received: generator_ba {dims_ba}D, {in_ba} -> {out_ba} channels"
            )
        if self.identity_weight > 0 and self.channels_a != self.channels_b:
            raise ValueError(
                "The identity loss needs the same number of channels in both domains. "
                f"Received: identity_weight={identity_weight} with channels_a={self.channels_a}, "
                f"channels_b={self.channels_b}"
            )
        self._make_trackers(["d_loss", "g_loss", "cycle_loss", "identity_loss", "d_accuracy"])

    def call(self, inputs, training=False):
        """`A -> B` translation (`generator_ab`)."""
        return self.generator_ab(inputs, training=training)

    def check_training_data(self, x, y):
        if y is None:
            raise ValueError(
                "CycleGAN.fit needs images of both domains: call `fit(images_a, images_b)`. Received: y=None"
            )
        _check_image_batch(x, "images_a", self.spatial_dims, self.channels_a, self.size_multiple)
        _check_image_batch(y, "images_b", self.spatial_dims, self.channels_b, self.size_multiple)

    def cycle_loss(self, images_a, images_b, training=False):
        """`cycle_weight * (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1)` (mean absolute errors)."""
        cyc_a = self.generator_ba(self.generator_ab(images_a, training=training), training=training)
        cyc_b = self.generator_ab(self.generator_ba(images_b, training=training), training=training)
        return self.cycle_weight * (_l1(cyc_a, images_a) + _l1(cyc_b, images_b))

    def compute_losses(self, x, y, training=False):
        a, b = x, y
        fake_b = self.generator_ab(a, training=training)
        fake_a = self.generator_ba(b, training=training)
        cyc_a = self.generator_ba(fake_b, training=training)
        cyc_b = self.generator_ab(fake_a, training=training)
        cycle = self.cycle_weight * (_l1(cyc_a, a) + _l1(cyc_b, b))
        if self.identity_weight > 0:
            identity = self.identity_weight * (_l1(self.generator_ba(a, training=training), a)
                                               + _l1(self.generator_ab(b, training=training), b))
        else:
            identity = ops.zeros((), "float32")
        da_real = self.discriminator_a(a, training=training)
        da_fake = self.discriminator_a(fake_a, training=training)
        db_real = self.discriminator_b(b, training=training)
        db_fake = self.discriminator_b(fake_b, training=training)
        kind = self.adversarial_loss
        g_loss = generator_loss(db_fake, kind) + generator_loss(da_fake, kind) + cycle + identity
        d_loss = discriminator_loss(da_real, da_fake, kind) + discriminator_loss(db_real, db_fake, kind)
        acc = 0.5 * (_accuracy(da_real, da_fake, kind) + _accuracy(db_real, db_fake, kind))
        logs = {"d_loss": d_loss, "g_loss": g_loss, "cycle_loss": cycle, "identity_loss": identity,
                "d_accuracy": acc}
        return g_loss, d_loss, logs

    def translate(self, images, direction="a2b", batch_size=16):
        """Translate images `A -> B` (`direction="a2b"`) or `B -> A` (`"b2a"`).

        Returns:
            NumPy float32 array in [-1, 1], same spatial shape.

        Raises:
            ValueError: unknown direction; wrong rank, channels or spatial size.
        """
        check_choice(direction, "direction", DIRECTIONS)
        images = np.asarray(images, dtype="float32")
        if direction == "a2b":
            _check_image_batch(images, "images", self.spatial_dims, self.channels_a, self.size_multiple)
            return self._predict_in_batches(self.generator_ab, [images], batch_size)
        _check_image_batch(images, "images", self.spatial_dims, self.channels_b, self.size_multiple)
        return self._predict_in_batches(self.generator_ba, [images], batch_size)

    def get_config(self):
        config = self._base_config()
        config.update(cycle_weight=self.cycle_weight, identity_weight=self.identity_weight,
                      size_multiple=self.size_multiple)
        return config
