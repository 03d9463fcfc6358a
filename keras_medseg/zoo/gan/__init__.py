"""Generative adversarial networks: `cgan`, `pix2pix` and `cyclegan`.

Three `keras.Model` subclasses that hold their sub-networks (generators and
discriminators, plain functional models), one optimiser per sub-network, and a
custom `train_step`, so they train with a plain `model.fit(...)`:

* `ConditionalGAN` (`zoo.build("cgan")`): DCGAN-style generator `G(z | y)` and
  discriminator `D(x | y)` conditioned on an integer class label `y`.
  `fit(images, labels)`; `generate(labels)`.
* `Pix2Pix` (`zoo.build("pix2pix")`): paired image-to-image translation, UNet
  (or ResNet) generator, PatchGAN discriminator on (input, output) pairs, loss
  `adversarial + l1_weight * |G(x) - y|_1` (`l1_weight = 100`).
  `fit(source, target)`; `translate(images)`.
* `CycleGAN` (`zoo.build("cyclegan")`): unpaired translation with two
  generators `G_AB`, `G_BA`, two PatchGAN discriminators and the cycle loss
  `cycle_weight * (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1)` (+ an
  optional identity loss). `fit(images_a, images_b)`; `translate(images,
  direction="a2b")`.

The adversarial losses work on discriminator logits. The default generator
loss is the non-saturating `-log D(G(z))` (Wolterink's lecture recommends it over the
minimax `log(1 - D(G(z)))`, whose gradient vanishes when the discriminator
wins); `"minimax"` and `"least_squares"` (LSGAN) are available.

Images live in `[-1, 1]` (generators end in `tanh`); channels-last, 2D
`(batch, H, W, C)` or 3D `(batch, D, H, W, C)` with every spatial size
divisible by 4 (by `2 ** depth` for the UNet generator).

Backends: on TensorFlow `fit`/`evaluate` are Keras' own loops around the
custom `train_step` (tf.GradientTape). On JAX `fit` runs a small epoch loop
around one jitted pure step (`keras.StatelessScope` + `jax.vjp`, every
optimiser's `stateless_apply`) that takes in-memory arrays and the arguments
`batch_size, epochs, verbose, callbacks, shuffle, initial_epoch`; datasets,
validation data and `evaluate` raise a `NotImplementedError` there (and on
torch every training call does). Building, saving/loading, `generate` and
`translate` work on every backend.

Reference: seed `004_762146f54cf05d81` (J. Wolterink, "Deep Learning II:
Interpretability & Adversarial Methods"); Goodfellow et al. 2014 (GAN); Mirza &
Osindero 2014 (cGAN); Radford et al. 2016 (DCGAN); Isola et al. 2017
(pix2pix); Zhu et al. 2017 (CycleGAN).
"""

from keras_medseg.zoo.gan.builders import cgan, cyclegan, pix2pix
from keras_medseg.zoo.gan.losses import discriminator_loss, generator_loss
from keras_medseg.zoo.gan.models import ConditionalGAN, CycleGAN, Pix2Pix
from keras_medseg.zoo.gan.networks import (
    cgan_discriminator,
    cgan_generator,
    patchgan_discriminator,
    resnet_generator,
    unet_generator,
)

__all__ = [
    "ConditionalGAN",
    "CycleGAN",
    "Pix2Pix",
    "cgan",
    "cgan_discriminator",
    "cgan_generator",
    "cyclegan",
    "discriminator_loss",
    "generator_loss",
    "patchgan_discriminator",
    "pix2pix",
    "resnet_generator",
    "unet_generator",
]
