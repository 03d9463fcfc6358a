"""Level-set models: `lse` (classical level-set evolution) and `lsn` (Level Set Network).

Both run `steps` forward-Euler steps of the level-set equation (J. Actor,
"Identification of Kernels in a Convolutional Neural Network")

    u_t = alpha g |grad u| + beta g kappa(u) |grad u| + gamma grad g . grad u

with `g = 1 / (1 + |grad (s I)|^2)` the edge indicator of the image (edge
scale `s` adaptive by default: `image_scale=None`), upwind differences for
`|grad u|` (Osher-Sethian, side chosen by the sign of the normal speed
`g (alpha + beta kappa)`) and for the convection term (velocity
`gamma grad g`), see `keras_medseg.layers.LevelSetStep`. The steps run in ONE
compiled loop (`keras_medseg.layers.LevelSetEvolution`: `keras.ops.fori_loop`
/ `while_loop`), so building and compiling costs the same for 50 or 5000
steps and inference memory does not grow with `steps`. The level set is
negative inside the object; the output is the probability of "inside",
`sigmoid(-u / tau)`, shape `(N, *S, 1)`.

* `lse`: every kernel frozen at the finite-difference stencils and alpha,
  beta, gamma fixed (by default): the textbook scheme. Semi-automatic: inputs
  `[image, initial_level_set]`. By default the balloon is driven by its own
  propagation image `P` instead of `g` (the term `alpha P |grad u|`): `g` cut
  off at edges stronger than an automatic threshold
  (`EdgeIndicator(threshold="auto")`) and gated by a region test around the
  seed (`SeedRegionGate`), so that running to convergence does not flood
  through weak borders. Runs to convergence by default (at most 2000 steps;
  stops when the front's mean speed is below 5e-4 voxels per step over 25
  steps).
* `lsn`: the same network with learned kernels and coefficients; by default a
  small convolutional network predicts the initial level set from the image
  (`init="learned"`, single input, bounded to +-`init_scale` voxels by a
  tanh), or the user passes it (`init="input"`).

Sign conventions (u < 0 inside): `alpha < 0` inflates the contour (balloon),
`alpha > 0` shrinks it, `beta > 0` smooths it (mean-curvature flow),
`gamma > 0` attracts it to edges.

Layer names: `{name}_edge` (EdgeIndicator), `{name}_region` (SeedRegionGate,
`lse` with a `region_margin`), `{name}_evolution`
(LevelSetEvolution; its `.step` is the one LevelSetStep shared by all time
steps), `{name}_init_conv{i}` / `{name}_init_out` / `{name}_init_tanh` /
`{name}_init_scale` (learned initialisation), `{name}_logits`,
`{name}_probability`.

Reference: J. Actor, "Identification of kernels in a convolutional neural
network" (Rice University, 2020): LSE -> LSN.
"""


import keras
import numpy as np

from keras_medseg.layers.edge_indicator import EdgeIndicator
from keras_medseg.layers.factories import layers_for
from keras_medseg.layers.level_set_evolution import LevelSetEvolution
from keras_medseg.layers.level_set_region import SeedRegionGate
from keras_medseg.ops.finite_differences import check_kernel_size_arg
from keras_medseg.ops.level_set_stopping import AUTO_THRESHOLD_K, CONFIDENCE_FLOOR, CONFIDENCE_K, REGION_MARGIN
from keras_medseg.utils.validation import (
    check_choice,
    check_positive,
    check_positive_int,
    check_spatial_dims,
    spatial_shape,
)
from keras_medseg.zoo.registry import register_model


def signed_distance_to_sphere(shape, centre, radius):
    """Signed distance (negative inside) to a circle/sphere on a grid of `shape` (unit spacing)."""
    grids = np.meshgrid(*[np.arange(s, dtype="float64") for s in shape], indexing="ij")
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre))) - radius


def synthetic_disks(n, size=32, spatial_dims=2, channels=1, noise=0.05, seed=0, radius_range=(0.2, 0.32)):
    """Random bright disks (spheres in 3D) on a dark background, for level-set demos and tests.

    Args:
        n: number of images.
        size: side length of the square/cubic grid, default 32.
        spatial_dims: 2 (disks) or 3 (spheres), default 2.
        channels: image channels (the disk appears in each), default 1.
        noise: standard deviation of added Gaussian noise, default 0.05.
        seed: random seed, default 0.
        radius_range: `(low, high)` range of the radius as a fraction of `size`,
            default (0.2, 0.32); e.g. (0.08, 0.2) for small targets (<= 13%
            of a 2D image).

    Returns:
        `(images, masks, initial_level_sets)`: float32 arrays `(n, *S, channels)`,
        `(n, *S, 1)` (1 inside) and `(n, *S, 1)` (signed distance to a small
        circle at the disk centre, negative inside: a user-style seed).

    Example:
    >>> images, masks, u0 = keras_medseg.zoo.level_set.synthetic_disks(8, size=32)
    """
    check_positive_int(n, "n")
    check_positive_int(size, "size", minimum=8)
    d = check_spatial_dims(spatial_dims)
    rng = np.random.default_rng(seed)
    shape = (size,) * d
    images = np.zeros((n,) + shape + (channels,), "float32")
    masks = np.zeros((n,) + shape + (1,), "float32")
    init = np.zeros((n,) + shape + (1,), "float32")
    for i in range(n):
        r = rng.uniform(*radius_range) * size
        centre = rng.uniform(r + 1, size - r - 2, size=d)
        dist = signed_distance_to_sphere(shape, centre, r)
        masks[i, ..., 0] = dist < 0
        images[i] = (dist < 0)[..., None] + noise * rng.standard_normal(shape + (channels,))
        init[i, ..., 0] = signed_distance_to_sphere(shape, centre, 0.35 * r)
    return images, masks, init


def _example(model, batch_size, seed):
    image_input = model.inputs[0]
    d = len(image_input.shape) - 2
    size = next((int(s) for s in image_input.shape[1:-1] if s is not None), 16)
    images, masks, init = synthetic_disks(batch_size, size=size, spatial_dims=d,
                                          channels=int(image_input.shape[-1]), seed=seed)
    x = [images, init] if len(model.inputs) == 2 else images
    return x, masks


def _check_image_scale(image_scale):
    if image_scale is None:
        return "auto"
    if isinstance(image_scale, str):
        if image_scale != "auto":
            raise ValueError(
                f"`image_scale` must be a positive number, 'auto' or None. Received: image_scale={image_scale!r}")
        return image_scale
    return float(check_positive(image_scale, "image_scale"))


def _level_set_network(*, name, spatial_dims, channels, input_size, alpha, beta, gamma, dt, steps, tau, eps,
                       kernel_size, num_edge_kernels, smoothing_sigma, image_scale, trainable_kernels,
                       trainable_coefficients, init, init_filters, tolerance, check_every, reinit_every,
                       backprop_steps, init_scale=None, front_window=False, edge_threshold=None,
                       threshold_k=AUTO_THRESHOLD_K, region_margin=None, confidence_k=None,
                       confidence_floor=CONFIDENCE_FLOOR):
    # -- arguments (the evolution layer checks steps, dt, tolerance, check_every, reinit_every, backprop_steps)
    d = check_spatial_dims(spatial_dims)
    channels = check_positive_int(channels, "channels")
    spatial = spatial_shape(input_size, d)
    check_kernel_size_arg(kernel_size)
    check_positive(tau, "tau")
    image_scale = _check_image_scale(image_scale)
    check_choice(init, "init", ("input", "learned"))
    init_filters = check_positive_int(init_filters, "init_filters")
    evolution = LevelSetEvolution(
        steps=steps, alpha=alpha, beta=beta, gamma=gamma, dt=dt, eps=eps, kernel_size=kernel_size,
        trainable_kernels=trainable_kernels, trainable_coefficients=trainable_coefficients, tolerance=tolerance,
        check_every=check_every, reinit_every=reinit_every, backprop_steps=backprop_steps,
        front_window=front_window, name=f"{name}_evolution")

    # -- inputs and initial level set
    image = keras.Input(spatial + (channels,), name=f"{name}_image")
    inputs = [image]
    if init == "input":
        u = keras.Input(spatial + (1,), name=f"{name}_initial_level_set")
        inputs.append(u)
    else:
        x = image
        for i in range(2):
            x = layers_for(d).conv(init_filters, 3, padding="same", activation="relu", name=f"{name}_init_conv{i}")(x)
        u = layers_for(d).conv(1, 3, padding="same", name=f"{name}_init_out")(x)
        if init_scale is not None:
            # bounded initial level set: init_scale * tanh(.), a signed-distance-like band of +-init_scale voxels
            u = keras.layers.Activation("tanh", name=f"{name}_init_tanh")(u)
            u = keras.layers.Rescaling(float(init_scale), name=f"{name}_init_scale")(u)

    # -- edge indicator and the compiled time loop (one shared step inside a keras.ops loop)
    g = EdgeIndicator(num_kernels=num_edge_kernels, kernel_size=kernel_size, smoothing_sigma=smoothing_sigma,
                      trainable_kernels=trainable_kernels, scale=image_scale, threshold=edge_threshold,
                      threshold_k=threshold_k, name=f"{name}_edge")(image)
    if region_margin is not None:  # the region test: Otsu's side of the seed and (confidence_k) its interval
        g = SeedRegionGate(smoothing_sigma=smoothing_sigma, margin=region_margin, confidence_k=confidence_k,
                           confidence_floor=confidence_floor, name=f"{name}_region")([image, g, u])
    u = evolution([u, g])

    # -- probability of "inside" (u < 0)
    logits = keras.layers.Rescaling(-1.0 / float(tau), name=f"{name}_logits")(u)
    probability = keras.layers.Activation("sigmoid", dtype="float32", name=f"{name}_probability")(logits)
    return keras.Model(inputs if len(inputs) > 1 else image, probability, name=name)


def _loss(name):
    if name == "dice_ce":
        from keras_medseg.losses import DiceCELoss

        return DiceCELoss()
    return keras.losses.BinaryCrossentropy()


def _compile(model, learning_rate, loss="bce"):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=_loss(loss),
        metrics=[keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.5, name="iou")],
    )
    return model


@register_model(
    "lse",
    description="Classical level-set evolution (balloon + curvature + convection, upwind, forward Euler), "
    "kernels frozen at the finite-difference stencils; inputs [image, initial level set].",
    spatial_dims=(2, 3),
    task="segmentation",
    tiny={"steps": 3, "input_size": 16},
    example=_example,
    trainable_with_fit=False,
)
def lse(spatial_dims=2, channels=1, input_size=None, alpha=-0.5, beta=0.2, gamma=1.0, dt=0.2, steps=2000,
        tau=1.0, eps=1e-8, kernel_size=3, smoothing_sigma=1.0, image_scale=None, edge_threshold="auto",
        threshold_k=AUTO_THRESHOLD_K, region_margin=REGION_MARGIN, confidence_k=CONFIDENCE_K,
        confidence_floor=CONFIDENCE_FLOOR, learn_coefficients=False, learning_rate=1e-2,
        tolerance=5e-4, check_every=25, reinit_every=None, front_window=True, name="lse"):
    """Classical level-set evolution with frozen finite-difference kernels (semi-automatic).

    Up to `steps` forward-Euler steps of
    `u_t = alpha g |grad u| + beta g kappa |grad u| + gamma grad g . grad u`
    in one compiled loop, starting from the user's initial level set
    (negative inside), with `g = 1 / (1 + |grad (s * G_sigma I)|^2)`; output
    `sigmoid(-u / tau)`. With the default stopping terms the balloon term is
    `alpha P |grad u|` with `P = max(g - t, 0) / (1 - t)` (0 on every edge
    stronger than the per-image threshold `t`: the gradient level
    `median + threshold_k * 1.4826 MAD`), times 0 where the smoothed image
    lies on the other side of Otsu's threshold than the seed (beyond
    `region_margin` of the class-mean gap) or more than `confidence_k`
    standard deviations from the seed pixels' mean intensity (the std at least
    `confidence_floor` of the class-mean gap); curvature and convection keep
    `g`. `threshold_k`, `region_margin`, `confidence_k`, `confidence_floor`
    and `tolerance` were picked on the tuning half of 28 real images from five
    sources and reported on the other half beside scikit-image's
    morphological snakes (`benchmarks/level_set_real.py`, table in
    `benchmarks/README.md`). `edge_threshold=None, region_margin=None`
    is the lecture's equation (balloon = g), the one ITK's geodesic active
    contour solves (`benchmarks/lse_vs_itk.py`).

    Args:
        spatial_dims: 2 or 3, default 2.
        channels: image channels, default 1 (channels are summed in the edge
            indicator's convolutions).
        input_size: None (any size, default), an int or a tuple per axis.
        alpha: balloon coefficient, default -0.5 (negative inflates).
        beta: curvature coefficient, default 0.2 (positive smooths).
        gamma: convection coefficient, default 1.0 (positive attracts to edges).
        dt: time step, default 0.2 (keep `dt * max|alpha| <= 0.5`).
        steps: largest number of time steps, default 2000.
        tau: sharpness of the output sigmoid, default 1.0 (in voxels).
        eps: curvature regulariser, default 1e-8.
        kernel_size: stencil kernel size (odd >= 3), default 3.
        smoothing_sigma: Gaussian pre-smoothing of the image (voxels), default
            1.0; None for none.
        image_scale: edge contrast `s`: None (default) adapts it to each image
            (the 99.5th percentile of the gradient magnitude maps to 7, see
            `keras_medseg.ops.level_set.auto_edge_scale`), so raw HU, MRI
            units or [0, 255] work alike; a positive float overrides it
            (e.g. 10 for images in [0, 1] with strong edges).
        edge_threshold: `"auto"` (default), a float in (0, 1) (the level of
            `g` below which the balloon stops) or None (balloon = g
            everywhere), see `keras_medseg.layers.EdgeIndicator`.
        threshold_k: median absolute deviations above the median gradient
            for `edge_threshold="auto"`, default 9.0.
        region_margin: the seeded region test's margin beyond Otsu's
            threshold, as a fraction of the gap between the class means,
            default 0.3; None for no Otsu test
            (`keras_medseg.layers.SeedRegionGate`).
        confidence_k: part of the region test (ignored when `region_margin`
            is None): the balloon also stops where the smoothed intensity
            lies more than `confidence_k` standard deviations from the seed
            pixels' mean, default 4.0; None for no such test.
        confidence_floor: the smallest standard deviation of that test, as a
            fraction of the gap between Otsu's class means, default 0.05.
        learn_coefficients: make alpha, beta, gamma trainable (default False).
        learning_rate: Adam learning rate for the compiled model, default 1e-2.
        tolerance: convergence stop (inference only): the largest mean speed
            of the front, in voxels per step over `check_every` steps, for it
            to count as stopped, default 5e-4; None runs exactly `steps`
            (documented maximum: `steps`).
        check_every: steps between convergence checks, default 25.
        reinit_every: reinitialise the level set to a signed distance every
            this many steps (`keras_medseg.ops.reinitialize`), default None
            (never: the textbook scheme, which agrees with ITK).
        front_window: in inference, step only a box around the front
            (default True; the dense analogue of ITK's narrow band, same
            zero level set, several times faster on small objects: see
            `LevelSetEvolution`). False steps every voxel.
        name: model and layer-name prefix, default "lse".

    Input shape: `[image (N, *S, channels), initial_level_set (N, *S, 1)]`.
    Output shape: `(N, *S, 1)`, probability of "inside".

    Raises:
        ValueError: bad `spatial_dims`, `steps`, `dt`, `tau`, `eps`,
            `kernel_size`, `image_scale`, `edge_threshold`, `threshold_k`,
            `region_margin`, `confidence_k`, `confidence_floor`, `tolerance`,
            `check_every`, `reinit_every` or
            `input_size`; at call time an image with NaN/Inf or an initial
            level set of another shape.

    Example:
    >>> model = keras_medseg.zoo.build("lse")
    >>> prob = model.predict([images, initial_level_sets])

    Reference: J. Actor, "Identification of Kernels in a Convolutional Neural Network"
    (classical approach: level-set equation).
    """
    if not isinstance(learn_coefficients, bool):
        raise ValueError(f"`learn_coefficients` must be a bool. Received: learn_coefficients={learn_coefficients!r}")
    model = _level_set_network(
        name=name, spatial_dims=spatial_dims, channels=channels, input_size=input_size, alpha=alpha, beta=beta,
        gamma=gamma, dt=dt, steps=steps, tau=tau, eps=eps, kernel_size=kernel_size, num_edge_kernels=None,
        smoothing_sigma=smoothing_sigma, image_scale=image_scale, trainable_kernels=False,
        trainable_coefficients=learn_coefficients, init="input", init_filters=1, tolerance=tolerance,
        check_every=check_every, reinit_every=reinit_every, backprop_steps=None, front_window=front_window,
        edge_threshold=edge_threshold, threshold_k=threshold_k, region_margin=region_margin,
        confidence_k=confidence_k, confidence_floor=confidence_floor,
    )
    return _compile(model, learning_rate)


@register_model(
    "lsn",
    description="Level Set Network: unrolled forward-Euler level-set steps with learned kernels and "
    "alpha/beta/gamma, optional learned initialisation; output sigmoid(-u/tau).",
    spatial_dims=(2, 3),
    task="segmentation",
    tiny={"steps": 2, "input_size": 16, "init_filters": 4},
    example=_example,
)
def lsn(spatial_dims=2, channels=1, input_size=None, steps=20, dt=0.1, alpha=-1.0, beta=0.2, gamma=1.0,
        tau=1.0, eps=1e-8, kernel_size=3, num_edge_kernels=None, smoothing_sigma=None, image_scale=None,
        init="learned", init_filters=8, learning_rate=5e-3, tolerance=None, check_every=10, reinit_every=None,
        backprop_steps=None, init_scale=3.0, loss="dice_ce", name="lsn"):
    """Level Set Network: the level-set scheme with learned kernels and coefficients.

    Same structure as `lse`, but the edge-indicator, upwind and curvature
    kernels start at the finite-difference stencils and are trained, as are
    alpha, beta and gamma (shared across the `steps` steps of the compiled
    loop). With `init="learned"` two ReLU convolutions and a linear one
    predict the initial level set from the image, bounded to
    `init_scale * tanh(.)`, so the model needs no user seed.

    Small targets (issue 32): one disk covering 3-4% of each image, 160
    noisy 64x64 images, 4 epochs: with binary cross-entropy alone the
    network predicted almost nothing inside (held-out Dice 0.11, 0.2% of the
    pixels inside); the default loss is now soft Dice + cross-entropy
    (`keras_medseg.losses.DiceCELoss`), which does not reward "everything
    outside" on a few-percent foreground: 0.98 on 64 32x32 images x 6 epochs
    (0.34 with cross-entropy alone).

    Small targets (issue 15, disks covering 1-13% of a 32x32 image, 64
    images, 15 epochs): the previous defaults (unbounded learned initial
    level set, 10 steps x dt 0.05) collapsed to "everything outside"
    (validation Dice 0.0, loss stuck at 0.055); bounding the initial level
    set (`init_scale=3`) gave 0.991, a sharper output (`tau=0.25`) 0.987,
    `init_scale=3` with 20 steps x dt 0.1 (the new default time span, 4x
    longer, so the front can travel about 2 voxels) 0.981.

    Args:
        spatial_dims: 2 or 3, default 2.
        channels: image channels, default 1.
        input_size: None (any size, default), an int or a tuple per axis.
        steps: time steps, default 20.
        dt: time step, default 0.1.
        alpha, beta, gamma: initial coefficients, defaults -1.0, 0.2, 1.0.
        tau: sharpness of the output sigmoid, default 1.0.
        eps: curvature regulariser, default 1e-8.
        kernel_size: odd >= 3, default 3.
        num_edge_kernels: edge-indicator kernels (None = spatial_dims).
        smoothing_sigma: optional Gaussian pre-smoothing, default None.
        image_scale: edge contrast, None (default: adaptive, as in `lse`) or a positive float.
        init: `"learned"` (default, input: image) or `"input"` (inputs:
            `[image, initial_level_set]`).
        init_filters: width of the learned initialisation, default 8.
        learning_rate: Adam learning rate, default 5e-3.
        tolerance, check_every, reinit_every: as in `lse` (defaults None, 10,
            None); the stop applies in inference only, training runs all steps.
        backprop_steps: truncated backpropagation through time: differentiate
            only the last this many steps (None, default: all). Memory of the
            backward pass grows with the differentiated steps on every backend.
        init_scale: bound of the learned initial level set in voxels (default
            3.0); None for the unbounded linear output of earlier versions.
        loss: `"dice_ce"` (default: soft Dice + binary cross-entropy) or
            `"bce"` (binary cross-entropy alone, the earlier default).
        name: model and layer-name prefix, default "lsn".

    Input shape: `(N, *S, channels)` or `[image, initial_level_set (N, *S, 1)]`.
    Output shape: `(N, *S, 1)`, probability of "inside".

    Raises:
        ValueError: bad `spatial_dims`, `steps`, `dt`, `tau`, `eps`,
            `kernel_size`, `init`, `loss` or `input_size`.

    Example:
    >>> model = keras_medseg.zoo.build("lsn", input_size=64)
    >>> model.fit(images, masks, epochs=20)

    Reference: J. Actor, "Identification of Kernels in a Convolutional Neural Network"
    (Level Set Network).
    """
    model = _level_set_network(
        name=name, spatial_dims=spatial_dims, channels=channels, input_size=input_size, alpha=alpha, beta=beta,
        gamma=gamma, dt=dt, steps=steps, tau=tau, eps=eps, kernel_size=kernel_size,
        num_edge_kernels=num_edge_kernels, smoothing_sigma=smoothing_sigma, image_scale=image_scale,
        trainable_kernels=True, trainable_coefficients=True, init=init, init_filters=init_filters,
        tolerance=tolerance, check_every=check_every, reinit_every=reinit_every, backprop_steps=backprop_steps,
        init_scale=init_scale,
    )
    return _compile(model, learning_rate, check_choice(loss, "loss", ("bce", "dice_ce")))
