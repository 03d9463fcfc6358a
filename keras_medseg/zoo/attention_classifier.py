"""Attention classifier with attention-mask supervision (`zoo.build("attention_classifier", ...)`).

A small CNN encoder (2D or 3D) produces a feature map `Z`; a multi-head
`AttentionPool` turns it into one weighted average per head (the maps `alpha`
say *where* the model looks); a dense layer and one sigmoid unit give the risk
`p`. The model has two outputs, `risk` and `attention`, and is compiled with

    L = BCE(label, risk) + mask_weight * AttentionMaskLoss(mask, attention)

(`loss_weights={"risk": 1, "attention": mask_weight}`), so training targets are
`{"risk": label, "attention": mask}` where the mask (exact or coarse, e.g. "left
half") is given at image resolution and area-resized to the attention grid by
the loss. `mask_weight=0` trains without mask supervision. Samples with an empty
mask (negatives) do not contribute to the attention loss.

Helpers (re-exported here, defined in `keras_medseg.explain.attention` and
`keras_medseg.data.synthetic.blobs`): `upsample_attention` (maps -> image size,
for display), `attention_mass_inside` (how much attention lies inside a mask)
and `synthetic_blobs` (a toy data set: a bright blob in the left half = positive).

Layer names: `{name}_stage{i}_conv{j}`, `{name}_stage{i}_bn{j}`,
`{name}_stage{i}_relu{j}`, `{name}_stage{i}_pool`, `{name}_attention_pool`,
`{name}_fc`, `{name}_dropout`, outputs `risk` and `attention`.

Reference: A. Yala, "Advanced Imaging: Localization and Segmentation" (lecture,
CPH 100A; localisation as attention): CNN -> `[AttnPool(Z), AttnPool(Z), ...]`
-> `sigma(theta z + b)`, `L = L_Risk + lambda L_Attn`.
"""

import keras

# synthetic_blobs (now in data/) and the attention tools (now in explain/) stay importable from here.
from keras_medseg.data.synthetic.blobs import synthetic_blobs
from keras_medseg.explain.attention import attention_mass_inside, upsample_attention
from keras_medseg.layers.attention_pool import AttentionPool
from keras_medseg.layers.factories import layers_for, normalization
from keras_medseg.losses import AttentionMaskLoss
from keras_medseg.utils.validation import (
    check_positive,
    check_positive_int,
    check_spatial_dims,
    spatial_shape,
)
from keras_medseg.zoo.registry import register_model

_DEFAULT_SIZE = {2: 128, 3: 64}


@register_model(
    "attention_classifier",
    spatial_dims=(2, 3),
    task="classification",
    tiny={"input_size": 16, "filters": (4, 8), "convs_per_stage": 1, "heads": 2, "dense_units": 8},
    example=lambda model, batch_size, seed: attention_classifier_example(model, batch_size, seed),
)
def attention_classifier(
    spatial_dims=2,
    input_size=None,
    in_channels=1,
    filters=(16, 32, 64),
    convs_per_stage=2,
    batch_norm=True,
    heads=4,
    dense_units=64,
    dropout=0.0,
    mask_weight=1.0,
    learning_rate=1e-3,
    eps=1e-7,
    name="attention_classifier",
):
    """CNN + multi-head attention pooling + sigmoid risk, trained with the attention-mask loss.

    Args:
        spatial_dims: 2 or 3 (default 2).
        input_size: spatial input size, int or tuple (default None = 128 in 2D,
            64 in 3D). Static, so masks can be resized to the attention grid.
            Must be divisible by `2 ** (len(filters) - 1)`.
        in_channels: input channels (default 1).
        filters: widths of the encoder stages (default (16, 32, 64)); every
            stage but the last ends with 2x max pooling, so the attention grid
            is `input_size / 2 ** (len(filters) - 1)`.
        convs_per_stage: 3x3 convolutions per stage (default 2).
        batch_norm: batch normalisation after each convolution (default True).
        heads: attention heads (default 4).
        dense_units: width of the hidden dense layer (default 64; 0 = none).
        dropout: dropout rate before the risk unit (default 0.0).
        mask_weight: `lambda`, weight of the attention-mask loss (default 1.0;
            0 = no mask supervision).
        learning_rate: Adam learning rate (default 1e-3).
        eps: `eps` of the attention-mask loss (default 1e-7).
        name: model name and layer-name prefix (default "attention_classifier").

    Returns:
        A compiled functional `keras.Model` with input `(N, *input_size,
        in_channels)` and outputs `[risk (N, 1), attention (N, *grid, heads)]`
        (named `risk` and `attention`); fit it with targets
        `{"risk": (N, 1) labels, "attention": (N, *any_size[, 1]) masks}`.

    Raises:
        ValueError: bad `spatial_dims`, `input_size`, `filters`, `heads`,
            `dropout`, `mask_weight`, `learning_rate` or `eps`.

    Example:
        >>> from keras_medseg import zoo
        >>> from keras_medseg.zoo.attention_classifier import synthetic_blobs
        >>> model = zoo.build("attention_classifier", input_size=32, filters=(8, 16))
        >>> x, y = synthetic_blobs(16, 32)
        >>> model.fit(x, y, epochs=1, verbose=0)
        >>> risk, attention = model.predict(x, verbose=0)   # (16, 1), (16, 16, 16, 4)

    Reference:
        A. Yala, "Advanced Imaging: Localization and Segmentation" (lecture,
        CPH 100A), "Localisation as attention map supervision".
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    in_channels = check_positive_int(in_channels, "in_channels")
    if not isinstance(filters, (tuple, list)) or not filters:
        raise ValueError(f"`filters` must be a non-empty tuple of positive ints. Received: filters={filters!r}")
    filters = tuple(check_positive_int(f, "filters") for f in filters)
    if input_size is None:
        input_size = _DEFAULT_SIZE[spatial_dims]
    size = spatial_shape(input_size, spatial_dims, divisible_by=2 ** (len(filters) - 1), allow_none=False,
                         why="2 ** (len(filters) - 1) max-pooling steps")
    convs_per_stage = check_positive_int(convs_per_stage, "convs_per_stage")
    heads = check_positive_int(heads, "heads")
    dense_units = check_positive_int(dense_units, "dense_units", minimum=0)
    check_positive(dropout, "dropout", allow_zero=True)
    if dropout >= 1:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
    check_positive(mask_weight, "mask_weight", allow_zero=True)
    check_positive(learning_rate, "learning_rate")
    check_positive(eps, "eps")

    inputs = keras.Input(shape=size + (in_channels,), name=f"{name}_image")
    x = inputs
    for i, width in enumerate(filters):
        for j in range(1, convs_per_stage + 1):
            x = layers_for(spatial_dims).conv(
                width, 3, padding="same", use_bias=not batch_norm, name=f"{name}_stage{i}_conv{j}"
            )(x)
            if batch_norm:
                x = normalization("batch", f"{name}_stage{i}_bn{j}")(x)
            x = keras.layers.Activation("relu", name=f"{name}_stage{i}_relu{j}")(x)
        if i < len(filters) - 1:
            x = layers_for(spatial_dims).max_pool(2, name=f"{name}_stage{i}_pool")(x)
    pooled, attention = AttentionPool(heads=heads, return_attention=True, name=f"{name}_attention_pool")(x)
    h = pooled
    if dense_units:
        h = keras.layers.Dense(dense_units, activation="relu", name=f"{name}_fc")(h)
    if dropout:
        h = keras.layers.Dropout(dropout, name=f"{name}_dropout")(h)
    risk = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="risk")(h)
    attention = keras.layers.Identity(dtype="float32", name="attention")(attention)
    model = keras.Model(inputs, [risk, attention], name=name)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={"risk": keras.losses.BinaryCrossentropy(), "attention": AttentionMaskLoss(eps=eps)},
        loss_weights={"risk": 1.0, "attention": float(mask_weight)},
        metrics={"risk": [keras.metrics.AUC(name="auc")]},
    )
    return model


def attention_classifier_example(model, batch_size, seed):
    """Zoo example batch for an `attention_classifier` model: `synthetic_blobs` of its input shape."""
    shape = tuple(model.inputs[0].shape[1:])
    return synthetic_blobs(batch_size, shape[:-1], spatial_dims=len(shape) - 1, in_channels=shape[-1], seed=seed)


__all__ = [
    "attention_classifier",
    "attention_classifier_example",
    "attention_mass_inside",
    "synthetic_blobs",
    "upsample_attention",
]
