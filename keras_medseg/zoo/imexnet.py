"""IMEXnet and its explicit twin, the ResNet segmenter (`zoo.build("imexnet")`, `zoo.build("resnet_seg")`).

Both models share one builder and one geometry: a stem convolution, then
stages of `IMEXBlock`s (`stages = ((blocks, width), ...)`), a 1x1 convolution
(+ normalization + ReLU) that changes the width between stages (after a 2x
average pooling when `coarsen=True`), upsampling back to the input resolution
when coarsened, and a 1x1 softmax head over `num_classes`. The only difference
is `implicit=True` (IMEX step `Y+ = Y + h (I + hL)^-1 f(Y)`, one FFT solve per
block) vs `implicit=False` (ResNet step `Y+ = Y + h f(Y)`), so the two have the
same parameters apart from the depthwise `L` kernels
(`prod(kernel_size) * width` per block).

Layer names: `{name}_stem_conv`, `{name}_stem_norm`, `{name}_stem_act`,
`{name}_stage{i}_pool`, `{name}_stage{i}_conv`, `{name}_stage{i}_norm`,
`{name}_stage{i}_act`, `{name}_stage{i}_block{j}`, `{name}_upsample`,
`{name}_head`, `{name}_output`.

Reference: Haber, Lensink, Treister, Ruthotto, "IMEXnet: A forward stable
deep neural network", ICML 2019, and their talk "Semi-Implicit Convolutional
Neural Networks" (CSE19; Q-tips experiment: 3 stages of 4
blocks, widths 64/128/256).
"""

import numbers

import keras
import numpy as np

from keras_medseg.layers.factories import layers_for
from keras_medseg.layers.factories import normalization as norm_layer
from keras_medseg.layers.imex_block import NORMALIZATIONS, IMEXBlock, MultiscaleLaplacian
from keras_medseg.utils.validation import check_positive, check_positive_int, check_spatial_dims, spatial_shape
from keras_medseg.zoo.registry import register_model

PAPER_STAGES = ((4, 64), (4, 128), (4, 256))
# 3D default: 1.32 M parameters (4 classes), about the zoo's 3D UNet at its defaults (1.40 M); the paper's
# stages have 18.7 M parameters in 3D (27-tap kernels), too many for volumes on one device
VOLUME_STAGES = ((2, 24), (2, 48), (2, 96))
L_INITS = ("glorot_uniform", "multiscale")


def _check_stages(stages, spatial_dims=2):
    if stages is None:
        return PAPER_STAGES if spatial_dims == 2 else VOLUME_STAGES
    ok = isinstance(stages, (tuple, list)) and len(stages) > 0
    if ok:
        for stage in stages:
            if not (isinstance(stage, (tuple, list)) and len(stage) == 2 and all(
                    isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in stage)):
                ok = False
    if not ok:
        raise ValueError(
            "`stages` must be a non-empty sequence of (blocks, width) pairs of positive ints, "
            f"e.g. ((4, 64), (4, 128)). Received: stages={stages!r}"
        )
    return tuple((int(b), int(w)) for b, w in stages)


def imex_segmenter(implicit=True, spatial_dims=2, input_size=64, in_channels=1, num_classes=4,
                   stages=None, kernel_size=3, h=1.0, normalization="layer", coarsen=True,
                   learning_rate=1e-3, l_init="glorot_uniform", decay_steps=None, name="imexnet"):
    """The shared builder of `imexnet` (implicit=True) and `resnet_seg` (implicit=False).

    See `imexnet` for the arguments. Returns a compiled functional model.
    """
    from keras_medseg.losses import SegmentationCrossentropy
    from keras_medseg.metrics import segmentation_metrics

    spatial_dims = check_spatial_dims(spatial_dims)
    stages = _check_stages(stages, spatial_dims)
    in_channels = check_positive_int(in_channels, "in_channels")
    num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    check_positive(h, "h")
    check_positive(learning_rate, "learning_rate")
    if l_init not in L_INITS:
        raise ValueError(f"`l_init` must be one of {list(L_INITS)}. Received: l_init={l_init!r}")
    if l_init == "multiscale" and implicit and kernel_size not in (3, (3,) * spatial_dims, [3] * spatial_dims):
        raise ValueError(f"`l_init='multiscale'` needs kernel_size=3. Received: kernel_size={kernel_size!r}")
    if decay_steps is not None:
        decay_steps = check_positive_int(decay_steps, "decay_steps")
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {list(NORMALIZATIONS)}. Received: normalization={normalization!r}"
        )
    factor = 2 ** (len(stages) - 1) if coarsen else 1
    spatial = spatial_shape(input_size, spatial_dims, divisible_by=factor, allow_none=not implicit,
                            why="the FFT solve needs static sizes; one 2x pooling between stages with coarsen=True")
    if implicit:
        smallest = min(spatial) // factor
        k = max(kernel_size) if isinstance(kernel_size, (tuple, list)) else kernel_size
        if isinstance(k, numbers.Integral) and k > smallest:
            raise ValueError(
                f"`kernel_size` must not exceed the coarsest grid ({smallest} px for input_size={spatial} "
                f"with {len(stages)} stages). Received: kernel_size={kernel_size!r}"
            )

    L = layers_for(spatial_dims)
    conv = L.conv
    inputs = keras.Input(shape=(*spatial, in_channels), name=f"{name}_input")
    x = conv(stages[0][1], kernel_size, padding="same", use_bias=normalization is None,
             name=f"{name}_stem_conv")(inputs)
    x = norm_layer(normalization, f"{name}_stem_norm")(x)
    x = keras.layers.Activation("relu", name=f"{name}_stem_act")(x)
    grid = max(spatial) if all(s is not None for s in spatial) else None
    for i, (blocks, width) in enumerate(stages):
        if i > 0:
            if coarsen:
                x = L.average_pool(2, name=f"{name}_stage{i}_pool")(x)
                grid = grid // 2 if grid is not None else None
            x = conv(width, 1, use_bias=normalization is None, name=f"{name}_stage{i}_conv")(x)
            x = norm_layer(normalization, f"{name}_stage{i}_norm")(x)
            x = keras.layers.Activation("relu", name=f"{name}_stage{i}_act")(x)
        init = MultiscaleLaplacian(grid, h=h) if implicit and l_init == "multiscale" else "glorot_uniform"
        for j in range(blocks):
            x = IMEXBlock(width, kernel_size=kernel_size, implicit=implicit, h=h, normalization=normalization,
                          implicit_initializer=init, name=f"{name}_stage{i}_block{j}")(x)
    if factor > 1:
        x = L.upsampling(factor, name=f"{name}_upsample")(x)
    x = conv(num_classes, 1, name=f"{name}_head")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name=f"{name}_output")(x)
    model = keras.Model(inputs, outputs, name=name)
    # On TensorFlow, XLA makes both the FFT solve and the convolutions slower on
    # CPU and takes seconds to compile the FFT gradients, so it is left off there
    # (measured with benchmarks/implicit_solve.py's step setting); JAX keeps jit.
    jit_compile = False if keras.backend.backend() == "tensorflow" else "auto"
    model.compile(optimizer=keras.optimizers.Adam(learning_schedule(learning_rate, decay_steps)),
                  loss=SegmentationCrossentropy(),
                  metrics=segmentation_metrics(num_classes), jit_compile=jit_compile)
    return model


def learning_schedule(learning_rate, decay_steps=None):
    """`learning_rate` (constant) or, with `decay_steps`, a linear warm-up over the first
    10 % of the steps to `learning_rate` followed by a cosine decay to 0
    (`keras.optimizers.schedules.CosineDecay` with `warmup_steps`)."""
    if decay_steps is None:
        return learning_rate
    warmup = max(1, decay_steps // 10)
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(1, decay_steps - warmup), alpha=0.0, warmup_target=learning_rate, warmup_steps=warmup)


def _example(model, batch_size, seed):
    """A Q-tips batch for 2D models (normalised images, integer labels); random arrays for 3D."""
    spatial = tuple(s if s is not None else 16 for s in model.inputs[0].shape[1:-1])
    in_channels = model.inputs[0].shape[-1]
    num_classes = model.outputs[0].shape[-1]
    if len(spatial) == 2 and spatial[0] == spatial[1] and spatial[0] >= 16 and in_channels == 1 \
            and num_classes >= 4:
        from keras_medseg.data import qtips

        return qtips(batch_size, size=spatial[0], seed=seed, normalize=True)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size, *spatial, in_channels)).astype("float32")
    y = rng.integers(0, num_classes, size=(batch_size, *spatial)).astype("int32")
    return x, y


_TINY = {"input_size": 16, "stages": ((1, 4), (1, 8)), "num_classes": 4}


@register_model(
    "imexnet",
    description="IMEXnet: stages of implicit-explicit (IMEX) blocks with an FFT solve, softmax segmentation head",
    spatial_dims=(2, 3),
    task="segmentation",
    tiny=_TINY,
    example=_example,
)
def imexnet(spatial_dims=2, input_size=64, in_channels=1, num_classes=4, stages=None, kernel_size=3,
            h=1.0, normalization="layer", coarsen=True, learning_rate=1e-3, l_init="glorot_uniform", decay_steps=None,
            name="imexnet"):
    """IMEXnet segmentation model, compiled (Adam, flattened sparse cross-entropy, accuracy/mean IoU/mean Dice).

    Every block is one IMEX step `Y+ = Y + h (I + hL)^-1 f(Y)` with `f` the
    ResNet residual and `L = C^T C` a learnable periodic depthwise operator
    solved by FFT (`keras_medseg.layers.IMEXBlock`): each block sees the whole
    image, which the Q-tips task (class told by both ends of a long rod) needs.

    Args:
        spatial_dims: 2 or 3 (default 2).
        input_size: spatial size, int or tuple (default 64, the Q-tips canvas);
            required (the FFT needs static sizes) and divisible by
            `2**(len(stages) - 1)` when `coarsen=True`.
        in_channels: image channels (default 1).
        num_classes: softmax classes incl. background (default 4 = background
            + the 3 Q-tips classes).
        stages: `((blocks, width), ...)` (default None: `((4, 64), (4, 128),
            (4, 256))` as in the paper in 2D; `((2, 24), (2, 48), (2, 96))` in
            3D, 1.32 M parameters, about the 3D `unet` at its defaults (1.40 M),
            where the paper's stages would have 18.7 M).
        kernel_size: odd size of the block convolutions and of `L` (default 3).
        h: step size (default 1.0).
        normalization: "layer" (default; per pixel over channels, the same in
            training and inference), "batch", "instance" or None.
        coarsen: 2x average pooling between stages and upsampling back before
            the head (default True).
        learning_rate: Adam learning rate (default 1e-3).
        l_init: initialisation of the `L` kernels: "glorot_uniform" (default)
            or "multiscale" (`keras_medseg.layers.MultiscaleLaplacian`:
            diffusion lengths from 1 px to the stage's grid; kernel_size 3).
        decay_steps: None (constant learning rate, default) or the number of
            training steps for a 10 % linear warm-up + cosine decay to 0.
        name: model name / layer prefix (default "imexnet").

    Input/output shapes: 2D `(N, H, W, in_channels) -> (N, H, W, num_classes)`,
    3D `(N, D, H, W, in_channels) -> (N, D, H, W, num_classes)`; labels
    `(N, H, W)` / `(N, D, H, W)` integer class ids.

    Raises:
        ValueError: bad `spatial_dims`, `stages`, `num_classes`, `h`,
            `normalization`, `learning_rate`, or `input_size` (None, wrong
            length, not divisible by the coarsening factor).

    Example:

    >>> model = keras_medseg.zoo.build("imexnet", stages=((2, 16), (2, 32)))
    >>> images, labels = keras_medseg.data.synthetic.qtips(32, seed=0, normalize=True)
    >>> history = model.fit(images, labels, epochs=1, verbose=0)

    Reference: Haber et al., "IMEXnet: A forward stable deep neural network", ICML 2019.
    """
    return imex_segmenter(implicit=True, spatial_dims=spatial_dims, input_size=input_size,
                          in_channels=in_channels, num_classes=num_classes, stages=stages,
                          kernel_size=kernel_size, h=h, normalization=normalization, coarsen=coarsen,
                          learning_rate=learning_rate, l_init=l_init, decay_steps=decay_steps, name=name)


@register_model(
    "resnet_seg",
    description="ResNet segmenter: the explicit (forward Euler) twin of imexnet, same geometry without L",
    spatial_dims=(2, 3),
    task="segmentation",
    tiny=_TINY,
    example=_example,
)
def resnet_seg(spatial_dims=2, input_size=64, in_channels=1, num_classes=4, stages=None, kernel_size=3,
               h=1.0, normalization="layer", coarsen=True, learning_rate=1e-3, l_init="glorot_uniform",
               decay_steps=None, name="resnet_seg"):
    """ResNet segmentation model: `imexnet` with explicit steps `Y+ = Y + h f(Y)`, compiled like it.

    Same arguments, layers and parameters as `imexnet` except the implicit
    `L` kernels (the baseline of the IMEXnet paper). `input_size=None` is
    allowed here (any size divisible by the coarsening factor).

    Args:
        spatial_dims: 2 or 3 (default 2).
        input_size: spatial size, int, tuple or None (default 64).
        in_channels: image channels (default 1).
        num_classes: softmax classes incl. background (default 4).
        stages: `((blocks, width), ...)` (default None: as `imexnet`, by `spatial_dims`).
        kernel_size: odd size of the block convolutions (default 3).
        h: step size (default 1.0).
        normalization: "layer" (default), "batch", "instance" or None.
        coarsen: pooling between stages + upsampling back (default True).
        learning_rate: Adam learning rate (default 1e-3).
        l_init: accepted for symmetry with `imexnet` (there is no `L`).
        decay_steps: as `imexnet` (warm-up + cosine decay).
        name: model name / layer prefix (default "resnet_seg").

    Input/output shapes: as `imexnet`.

    Raises:
        ValueError: as `imexnet`.

    Example:

    >>> model = keras_medseg.zoo.build("resnet_seg", stages=((2, 16), (2, 32)))

    Reference: He et al., "Deep residual learning", CVPR 2016; the baseline of
    Haber et al., "IMEXnet: A forward stable deep neural network", ICML 2019.
    """
    return imex_segmenter(implicit=False, spatial_dims=spatial_dims, input_size=input_size,
                          in_channels=in_channels, num_classes=num_classes, stages=stages,
                          kernel_size=kernel_size, h=h, normalization=normalization, coarsen=coarsen,
                          learning_rate=learning_rate, l_init=l_init, decay_steps=decay_steps, name=name)
