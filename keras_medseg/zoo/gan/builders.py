"""Registered zoo builders `cgan`, `pix2pix`, `cyclegan`, their checks and example hooks."""

import numpy as np

from keras_medseg.utils.validation import (
    check_choice,
    check_positive,
    check_positive_int,
    check_spatial_dims,
)
from keras_medseg.zoo.gan.losses import ADVERSARIAL_LOSSES, NORMS, _default_optimizer
from keras_medseg.zoo.gan.models import ConditionalGAN, CycleGAN, Pix2Pix
from keras_medseg.zoo.gan.networks import (
    cgan_discriminator,
    cgan_generator,
    patchgan_discriminator,
    resnet_generator,
    unet_generator,
)
from keras_medseg.zoo.registry import register_model

# --------------------------------------------------------------------------
# Zoo builders
# --------------------------------------------------------------------------


def _check_common(spatial_dims, image_size, multiple, filters, adversarial_loss, learning_rate):
    check_spatial_dims(spatial_dims)
    check_positive_int(image_size, "image_size")
    if image_size % multiple:
        raise ValueError(f"`image_size` must be divisible by {multiple}. Received: image_size={image_size}")
    check_positive_int(filters, "filters")
    check_choice(adversarial_loss, "adversarial_loss", ADVERSARIAL_LOSSES)
    check_positive(learning_rate, "learning_rate")


def _compile(model, learning_rate, beta_1):
    model.compile(optimizers={n: _default_optimizer(learning_rate, beta_1) for n in model.network_names})
    return model


def _cgan_example(model, batch_size, seed):
    from keras_medseg.data.synthetic.translation import labelled_shapes

    spatial_dims = len(model.image_shape) - 1
    return labelled_shapes(batch_size, image_size=model.image_shape[0], num_classes=model.num_classes,
                           channels=model.image_shape[-1], spatial_dims=spatial_dims, seed=seed)


def _translation_example(model, batch_size, seed):
    from keras_medseg.data.synthetic.translation import paired_shapes

    size = 16 if model.spatial_dims == 2 else 8
    size = max(size, model.size_multiple)
    src, tgt = paired_shapes(batch_size, image_size=size, spatial_dims=model.spatial_dims, seed=seed)
    cin = getattr(model, "source_channels", getattr(model, "channels_a", 1))
    cout = getattr(model, "target_channels", getattr(model, "channels_b", 1))
    return np.repeat(src, cin, axis=-1), np.repeat(tgt, cout, axis=-1)


@register_model(
    "cgan",
    description="Class-conditional DCGAN (generator G(z|y) + discriminator D(x|y)), trained by fit(images, labels)",
    spatial_dims=(2, 3),
    task="generation",
    tiny=dict(image_size=8, filters=4, latent_dim=8, num_classes=3),
    example=_cgan_example,
    trainable_with_fit=True,
)
def cgan(image_size=28, channels=1, num_classes=10, latent_dim=64, filters=64, spatial_dims=2,
         adversarial_loss="non_saturating", learning_rate=2e-4, beta_1=0.5, seed=None, name="cgan"):
    """Class-conditional DCGAN (`ConditionalGAN`), compiled with Adam(2e-4, 0.5) per network.

    Args:
        image_size: side of the (square/cubic) images, divisible by 4. Default 28.
        channels: image channels. Default 1.
        num_classes: number of class labels. Default 10.
        latent_dim: size of `z`. Default 64.
        filters: width of the first discriminator stage / last generator
            stage. Default 64.
        spatial_dims: 2 or 3. Default 2.
        adversarial_loss: `"non_saturating"`, `"minimax"` or `"least_squares"`.
        learning_rate, beta_1: Adam settings of both optimisers.
        seed: seed of the latent sampler. Default None.
        name: model name; sub-networks are `f"{name}_generator"` and
            `f"{name}_discriminator"`.

    Returns:
        A compiled `ConditionalGAN`.
    """
    _check_common(spatial_dims, image_size, 4, filters, adversarial_loss, learning_rate)
    check_positive_int(channels, "channels")
    check_positive_int(num_classes, "num_classes")
    check_positive_int(latent_dim, "latent_dim")
    gen = cgan_generator(image_size, channels, num_classes, latent_dim, filters, spatial_dims,
                         name=f"{name}_generator")
    disc = cgan_discriminator(image_size, channels, num_classes, filters, spatial_dims,
                              name=f"{name}_discriminator")
    model = ConditionalGAN(gen, disc, latent_dim=latent_dim, num_classes=num_classes,
                           adversarial_loss=adversarial_loss, seed=seed, name=name)
    return _compile(model, learning_rate, beta_1)


def _make_generator(kind, in_channels, out_channels, filters, depth, num_residual_blocks, norm,
                    spatial_dims, name):
    if kind == "unet":
        return unet_generator(in_channels, out_channels, filters, depth, spatial_dims, name=name)
    return resnet_generator(in_channels, out_channels, filters, num_residual_blocks, norm,
                            spatial_dims, name=name)


@register_model(
    "pix2pix",
    description="Paired image-to-image GAN: generator + PatchGAN on (input, output) pairs, adversarial + 100 L1",
    spatial_dims=(2, 3),
    task="generation",
    tiny=dict(filters=4, depth=2, num_residual_blocks=1, discriminator_filters=4, discriminator_layers=2),
    example=_translation_example,
    trainable_with_fit=True,
)
def pix2pix(in_channels=1, out_channels=1, filters=32, depth=3, generator="unet", num_residual_blocks=6,
            discriminator_filters=32, discriminator_layers=3, norm="batch", l1_weight=100.0,
            spatial_dims=2, adversarial_loss="non_saturating", learning_rate=2e-4, beta_1=0.5,
            name="pix2pix"):
    """pix2pix (`Pix2Pix`): UNet generator with `tanh` head + PatchGAN discriminator.

    Fully convolutional: any input size divisible by `2 ** max(depth, 2)`
    (UNet) / 4 (ResNet) and by `2 ** discriminator_layers`.

    Args:
        in_channels, out_channels: source / target channels. Default 1, 1.
        filters: generator base width. Default 32.
        depth: UNet down-sampling stages (generator="unet"). Default 3.
        generator: `"unet"` (the zoo's `unet`, default) or `"resnet"`.
        num_residual_blocks: residual blocks (generator="resnet"). Default 6.
        discriminator_filters, discriminator_layers: PatchGAN width / stride-2
            layers. Default 32, 3.
        norm: PatchGAN (and ResNet generator) normalisation: `"batch"`
            (default), `"instance"`, `"none"`.
        l1_weight: `lambda` of the L1 term. Default 100.
        spatial_dims: 2 or 3. Default 2.
        adversarial_loss, learning_rate, beta_1, name: as in `cgan`.

    Returns:
        A compiled `Pix2Pix`.
    """
    check_spatial_dims(spatial_dims)
    check_choice(generator, "generator", ("unet", "resnet"))
    check_choice(norm, "norm", NORMS)
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels), ("filters", filters),
                       ("depth", depth), ("discriminator_filters", discriminator_filters),
                       ("discriminator_layers", discriminator_layers),
                       ("num_residual_blocks", num_residual_blocks)):
        check_positive_int(value, arg)
    check_positive(l1_weight, "l1_weight", allow_zero=True)
    check_choice(adversarial_loss, "adversarial_loss", ADVERSARIAL_LOSSES)
    check_positive(learning_rate, "learning_rate")
    gen = _make_generator(generator, in_channels, out_channels, filters, depth, num_residual_blocks, norm,
                          spatial_dims, f"{name}_generator")
    disc = patchgan_discriminator(in_channels + out_channels, discriminator_filters, discriminator_layers,
                                  norm, spatial_dims, name=f"{name}_discriminator")
    multiple = max(2 ** depth if generator == "unet" else 4, 2 ** discriminator_layers)
    model = Pix2Pix(gen, disc, l1_weight=l1_weight, adversarial_loss=adversarial_loss,
                    size_multiple=multiple, name=name)
    return _compile(model, learning_rate, beta_1)


@register_model(
    "cyclegan",
    description="Unpaired translation: two generators, two PatchGANs, adversarial + 10 cycle (+ identity) losses",
    spatial_dims=(2, 3),
    task="generation",
    tiny=dict(filters=4, num_residual_blocks=1, discriminator_filters=4, discriminator_layers=2),
    example=_translation_example,
    trainable_with_fit=True,
)
def cyclegan(channels_a=1, channels_b=1, filters=32, generator="resnet", num_residual_blocks=6, depth=3,
             discriminator_filters=32, discriminator_layers=3, norm="instance", cycle_weight=10.0,
             identity_weight=0.0, spatial_dims=2, adversarial_loss="non_saturating", learning_rate=2e-4,
             beta_1=0.5, name="cyclegan"):
    """CycleGAN (`CycleGAN`): two ResNet (or UNet) generators, two PatchGANs.

    Args:
        channels_a, channels_b: channels of domain A / B. Default 1, 1.
        filters: generator base width. Default 32.
        generator: `"resnet"` (default) or `"unet"` (the zoo's `unet`).
        num_residual_blocks: ResNet blocks. Default 6.
        depth: UNet stages (generator="unet"). Default 3.
        discriminator_filters, discriminator_layers: PatchGAN width / depth.
        norm: `"instance"` (default), `"batch"` or `"none"`.
        cycle_weight: `lambda` of the cycle loss. Default 10.
        identity_weight: identity loss weight (0 = off). Default 0.
        spatial_dims: 2 or 3. Default 2.
        adversarial_loss, learning_rate, beta_1, name: as in `cgan`. Sub-networks: `f"{name}_generator_ab"`,
            `..._generator_ba`, `..._discriminator_a`, `..._discriminator_b`.

    Returns:
        A compiled `CycleGAN` (four Adam optimisers).
    """
    check_spatial_dims(spatial_dims)
    check_choice(generator, "generator", ("unet", "resnet"))
    check_choice(norm, "norm", NORMS)
    for arg, value in (("channels_a", channels_a), ("channels_b", channels_b), ("filters", filters),
                       ("depth", depth), ("discriminator_filters", discriminator_filters),
                       ("discriminator_layers", discriminator_layers),
                       ("num_residual_blocks", num_residual_blocks)):
        check_positive_int(value, arg)
    check_positive(cycle_weight, "cycle_weight", allow_zero=True)
    check_positive(identity_weight, "identity_weight", allow_zero=True)
    check_choice(adversarial_loss, "adversarial_loss", ADVERSARIAL_LOSSES)
    check_positive(learning_rate, "learning_rate")
    g_ab = _make_generator(generator, channels_a, channels_b, filters, depth, num_residual_blocks, norm,
                           spatial_dims, f"{name}_generator_ab")
    g_ba = _make_generator(generator, channels_b, channels_a, filters, depth, num_residual_blocks, norm,
                           spatial_dims, f"{name}_generator_ba")
    d_a = patchgan_discriminator(channels_a, discriminator_filters, discriminator_layers, norm, spatial_dims,
                                 name=f"{name}_discriminator_a")
    d_b = patchgan_discriminator(channels_b, discriminator_filters, discriminator_layers, norm, spatial_dims,
                                 name=f"{name}_discriminator_b")
    multiple = max(2 ** depth if generator == "unet" else 4, 2 ** discriminator_layers)
    model = CycleGAN(g_ab, g_ba, d_a, d_b, cycle_weight=cycle_weight, identity_weight=identity_weight,
                     adversarial_loss=adversarial_loss, size_multiple=multiple, name=name)
    return _compile(model, learning_rate, beta_1)
