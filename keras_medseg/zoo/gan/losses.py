"""Adversarial losses of the zoo GANs, on discriminator logits (float32).

Reference: Goodfellow et al. 2014 (GAN); Mao et al. 2017 (LSGAN).
"""

import keras
from keras import ops

ADVERSARIAL_LOSSES = ("non_saturating", "minimax", "least_squares")
NORMS = ("batch", "instance", "none")
DIRECTIONS = ("a2b", "b2a")


def _default_optimizer(learning_rate=2e-4, beta_1=0.5):
    """Adam(2e-4, beta_1=0.5), the DCGAN / pix2pix / CycleGAN setting."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1)


# --------------------------------------------------------------------------
# Adversarial losses on discriminator logits (float32)
# --------------------------------------------------------------------------


def discriminator_loss(real_logits, fake_logits, kind="non_saturating"):
    """Discriminator loss `-(E log D(x) + E log(1 - D(G(z)))) / 2` (or the LSGAN one).

    Args:
        real_logits: discriminator outputs (logits) on real samples, any shape.
        fake_logits: discriminator outputs on generated samples.
        kind: `"non_saturating"` or `"minimax"` (both use the cross-entropy
            discriminator loss) or `"least_squares"`
            (`((D(x) - 1)^2 + D(G(z))^2) / 2`).

    Returns:
        Scalar float32 tensor.
    """
    real = ops.cast(real_logits, "float32")
    fake = ops.cast(fake_logits, "float32")
    if kind == "least_squares":
        return 0.5 * (ops.mean(ops.square(real - 1.0)) + ops.mean(ops.square(fake)))
    # -log sigmoid(l) = softplus(-l), -log(1 - sigmoid(l)) = softplus(l)
    return 0.5 * (ops.mean(ops.softplus(-real)) + ops.mean(ops.softplus(fake)))


def generator_loss(fake_logits, kind="non_saturating"):
    """Generator adversarial loss.

    Args:
        fake_logits: discriminator logits on generated samples.
        kind: `"non_saturating"`: `-E log D(G(z))` (default);
            `"minimax"`: `E log(1 - D(G(z)))`; `"least_squares"`:
            `E (D(G(z)) - 1)^2`.

    Returns:
        Scalar float32 tensor.
    """
    fake = ops.cast(fake_logits, "float32")
    if kind == "least_squares":
        return ops.mean(ops.square(fake - 1.0))
    if kind == "minimax":
        return -ops.mean(ops.softplus(fake))
    return ops.mean(ops.softplus(-fake))


def _accuracy(real_logits, fake_logits, kind):
    threshold = 0.5 if kind == "least_squares" else 0.0
    real = ops.cast(ops.cast(real_logits, "float32") > threshold, "float32")
    fake = ops.cast(ops.cast(fake_logits, "float32") <= threshold, "float32")
    return 0.5 * (ops.mean(real) + ops.mean(fake))


def _l1(a, b):
    return ops.mean(ops.abs(ops.cast(a, "float32") - ops.cast(b, "float32")))


# --------------------------------------------------------------------------
# N-D building blocks (one implementation for 2D and 3D)
