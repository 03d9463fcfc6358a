"""The five GAN sub-networks (plain functional models), 2D and 3D through `keras_medseg.layers.layers_for`.

Reference: Radford et al. 2016 (DCGAN); Isola et al. 2017 (pix2pix, PatchGAN);
Zhu et al. 2017 (CycleGAN ResNet generator); Ronneberger et al. 2015 (U-Net).
"""

import keras
import numpy as np
from keras import layers

from keras_medseg.layers.factories import layers_for, normalization

# --------------------------------------------------------------------------


# The GANs' "none" is the factory's None (an Identity layer, so the layer names stay the same).
_NORM_KIND = {"batch": "batch", "instance": "instance", "none": None}


def _norm(norm, name):
    return normalization(_NORM_KIND.get(norm), name)


# Keras default initialiser: the DCGAN N(0, 0.02) makes small networks output ~1e-4.
_INIT = "glorot_uniform"


def cgan_generator(image_size=28, channels=1, num_classes=10, latent_dim=64, filters=64,
                   spatial_dims=2, name="cgan_generator"):
    """DCGAN generator `G(z | y)`: (latent vector, class label) -> image in [-1, 1].

    Dense projection of `[z, embed(y)]` to a `(image_size / 4)^d x 2 filters`
    block, then two stride-2 transposed convolutions (batch norm, LeakyReLU),
    `tanh` output.

    Inputs: `z` `(batch, latent_dim)` and `label` `(batch, 1)` int.
    Output: `(batch, S, S, channels)` (2D) or `(batch, S, S, S, channels)` (3D).
    """
    L = layers_for(spatial_dims)
    base = image_size // 4
    z = keras.Input((latent_dim,), name=f"{name}_z")
    label = keras.Input((1,), dtype="int32", name=f"{name}_label")
    emb = layers.Embedding(num_classes, latent_dim, name=f"{name}_embedding")(label)
    emb = layers.Flatten(name=f"{name}_embedding_flat")(emb)
    h = layers.Concatenate(name=f"{name}_concat")([z, emb])
    h = layers.Dense(base ** spatial_dims * 2 * filters, use_bias=False, kernel_initializer=_INIT,
                     name=f"{name}_project")(h)
    h = normalization("batch", f"{name}_project_norm")(h)
    h = layers.LeakyReLU(0.2, name=f"{name}_project_act")(h)
    h = layers.Reshape((base,) * spatial_dims + (2 * filters,), name=f"{name}_reshape")(h)
    h = L.conv_transpose(filters, 4, strides=2, padding="same", use_bias=False,
                         kernel_initializer=_INIT, name=f"{name}_stage1_conv")(h)
    h = normalization("batch", f"{name}_stage1_norm")(h)
    h = layers.LeakyReLU(0.2, name=f"{name}_stage1_act")(h)
    h = L.conv_transpose(channels, 4, strides=2, padding="same",
                         kernel_initializer=_INIT, name=f"{name}_stage2_conv")(h)
    out = layers.Activation("tanh", dtype="float32", name=f"{name}_output")(h)
    return keras.Model([z, label], out, name=name)


def cgan_discriminator(image_size=28, channels=1, num_classes=10, filters=64, spatial_dims=2,
                       name="cgan_discriminator"):
    """DCGAN discriminator `D(x | y)`: (image, label) -> one logit.

    The label is embedded as an extra image channel; two stride-2 convolutions
    with LeakyReLU and dropout, then a dense logit.

    Inputs: `image` `(batch, S, S[, S], channels)` and `label` `(batch, 1)` int.
    Output: `(batch, 1)` logits.
    """
    L = layers_for(spatial_dims)
    spatial = (image_size,) * spatial_dims
    image = keras.Input(spatial + (channels,), name=f"{name}_image")
    label = keras.Input((1,), dtype="int32", name=f"{name}_label")
    emb = layers.Embedding(num_classes, int(np.prod(spatial)), name=f"{name}_embedding")(label)
    emb = layers.Reshape(spatial + (1,), name=f"{name}_label_map")(emb)
    h = layers.Concatenate(name=f"{name}_concat")([image, emb])
    for i, f in enumerate((filters, 2 * filters), start=1):
        h = L.conv(f, 4, strides=2, padding="same", kernel_initializer=_INIT,
                   name=f"{name}_stage{i}_conv")(h)
        h = layers.LeakyReLU(0.2, name=f"{name}_stage{i}_act")(h)
        h = layers.Dropout(0.3, name=f"{name}_stage{i}_dropout")(h)
    h = layers.Flatten(name=f"{name}_flatten")(h)
    out = layers.Dense(1, dtype="float32", name=f"{name}_logit")(h)
    return keras.Model([image, label], out, name=name)


def patchgan_discriminator(channels=2, filters=64, num_layers=3, norm="batch", spatial_dims=2,
                           name="patchgan"):
    """PatchGAN discriminator: image -> map of per-patch real/fake logits.

    `num_layers` stride-2 4^d convolutions (the first without normalisation),
    one stride-1 convolution and a 1-channel stride-1 logit convolution
    (70x70 receptive field for `num_layers=3` as in pix2pix).

    Input: `(batch, H, W, channels)` or `(batch, D, H, W, channels)`, any
    spatial size. Output: `(batch, H / 2^L, W / 2^L, 1)` logits (3D alike).
    """
    L = layers_for(spatial_dims)
    inp = keras.Input((None,) * spatial_dims + (channels,), name=f"{name}_input")
    h = inp
    for i in range(num_layers):
        f = filters * 2 ** min(i, 3)
        h = L.conv(f, 4, strides=2, padding="same", use_bias=(i == 0),
                   kernel_initializer=_INIT, name=f"{name}_stage{i + 1}_conv")(h)
        if i > 0:
            h = _norm(norm, f"{name}_stage{i + 1}_norm")(h)
        h = layers.LeakyReLU(0.2, name=f"{name}_stage{i + 1}_act")(h)
    f = filters * 2 ** min(num_layers, 3)
    h = L.conv(f, 4, padding="same", use_bias=False, kernel_initializer=_INIT,
               name=f"{name}_stage{num_layers + 1}_conv")(h)
    h = _norm(norm, f"{name}_stage{num_layers + 1}_norm")(h)
    h = layers.LeakyReLU(0.2, name=f"{name}_stage{num_layers + 1}_act")(h)
    out = L.conv(1, 4, padding="same", dtype="float32", kernel_initializer=_INIT,
                 name=f"{name}_logits")(h)
    return keras.Model(inp, out, name=name)


def resnet_generator(in_channels=1, out_channels=1, filters=32, num_residual_blocks=6,
                     norm="instance", spatial_dims=2, name="resnet_generator"):
    """CycleGAN ResNet generator: image -> image in [-1, 1] of the same spatial size.

    7^d convolution, two stride-2 downsampling convolutions, residual blocks,
    two stride-2 transposed convolutions, 7^d convolution with `tanh`.

    Input: `(batch, H, W, in_channels)` or `(batch, D, H, W, in_channels)`,
    spatial sizes divisible by 4. Output: same spatial size, `out_channels`.
    """
    L = layers_for(spatial_dims)
    inp = keras.Input((None,) * spatial_dims + (in_channels,), name=f"{name}_input")

    def conv_norm_act(h, f, k, stride, tag, transpose=False, act=True):
        make = L.conv_transpose if transpose else L.conv
        h = make(f, k, strides=stride, padding="same", use_bias=False, kernel_initializer=_INIT,
                 name=f"{tag}_conv")(h)
        h = _norm(norm, f"{tag}_norm")(h)
        return layers.ReLU(name=f"{tag}_act")(h) if act else h

    h = conv_norm_act(inp, filters, 7, 1, f"{name}_stem")
    h = conv_norm_act(h, 2 * filters, 3, 2, f"{name}_down1")
    h = conv_norm_act(h, 4 * filters, 3, 2, f"{name}_down2")
    for i in range(num_residual_blocks):
        r = conv_norm_act(h, 4 * filters, 3, 1, f"{name}_stage{i + 1}_a")
        r = conv_norm_act(r, 4 * filters, 3, 1, f"{name}_stage{i + 1}_b", act=False)
        h = layers.Add(name=f"{name}_stage{i + 1}_add")([h, r])
    h = conv_norm_act(h, 2 * filters, 3, 2, f"{name}_up1", transpose=True)
    h = conv_norm_act(h, filters, 3, 2, f"{name}_up2", transpose=True)
    h = L.conv(out_channels, 7, padding="same", kernel_initializer=_INIT,
               name=f"{name}_head_conv")(h)
    out = layers.Activation("tanh", dtype="float32", name=f"{name}_output")(h)
    return keras.Model(inp, out, name=name)


def unet_generator(in_channels=1, out_channels=1, filters=32, depth=3, spatial_dims=2,
                   name="unet_generator"):
    """UNet generator with a `tanh` head, built from the zoo's `unet` builder.

    Input/output: `(batch, H, W, C)` or `(batch, D, H, W, C)`, spatial sizes
    divisible by `2 ** depth`.
    """
    from keras_medseg.zoo.unet import unet_backbone

    return unet_backbone(spatial_dims=spatial_dims, input_size=None, in_channels=in_channels,
                         out_channels=out_channels, depth=depth, filters=filters, batch_norm=True,
                         output_activation="tanh", name=name)
