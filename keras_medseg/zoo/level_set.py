"""Level-set models: `lse` (classical level-set evolution) and `lsn` (Level Set Network).

Both unroll `steps` forward-Euler steps of the level-set equation (J. Actor,
"Identification of Kernels in a Convolutional Neural Network")

    u_t = alpha g |grad u| + beta g kappa(u) |grad u| + gamma grad g . grad u

with `g = 1 / (1 + |grad I|^2)` the edge indicator of the (rescaled) image,
upwind differences for `|grad u|` (Osher-Sethian, side chosen by the sign of
the normal speed `g (alpha + beta kappa)`) and for the convection term
(velocity `gamma grad g`), see `keras_medseg.layers.LevelSetStep`. The level
set is negative inside the object; the output is the probability of "inside",
`sigmoid(-u / tau)`, shape `(N, *S, 1)`.

* `lse`: every kernel frozen at the finite-difference stencils and alpha,
  beta, gamma fixed (by default): the textbook scheme. Semi-automatic: inputs
  `[image, initial_level_set]`.
* `lsn`: the same network with learned kernels and coefficients; by default a
  small convolutional network predicts the initial level set from the image
  (`init="learned"`, single input), or the user passes it (`init="input"`).

Sign conventions (u < 0 inside): `alpha < 0` inflates the contour (balloon),
`alpha > 0` shrinks it, `beta > 0` smooths it (mean-curvature flow),
`gamma > 0` attracts it to edges.

Layer names: `{name}_image_scale`, `{name}_edge` (EdgeIndicator), `{name}_step`
(one LevelSetStep shared by all time steps), `{name}_init_conv{i}` /
`{name}_init_out` (learned initialisation), `{name}_logits`, `{name}_probability`.

Reference: J. Actor, "Identification of kernels in a convolutional neural
network" (Rice University, 2020): LSE -> LSN.
"""


import keras
import numpy as np

from keras_medseg.layers.edge_indicator import EdgeIndicator
from keras_medseg.layers.level_set_step import LevelSetStep
from keras_medseg.ops.finite_differences import check_kernel_size_arg
from keras_medseg.utils.validation import (
    check_choice,
    check_positive,
    check_positive_int,
    check_spatial_dims,
    spatial_shape,
)
from keras_medseg.zoo.registry import register_model

_CONV = {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}


def signed_distance_to_sphere(shape, centre, radius):
    """Signed distance (negative inside) to a circle/sphere on a grid of `shape` (unit spacing)."""
    grids = np.meshgrid(*[np.arange(s, dtype="float64") for s in shape], indexing="ij")
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre))) - radius


def synthetic_disks(n, size=32, spatial_dims=2, channels=1, noise=0.05, seed=0):
    """Random bright disks (spheres in 3D) on a dark background, for level-set demos and tests.

    Args:
        n: number of images.
        size: side length of the square/cubic grid, default 32.
        spatial_dims: 2 (disks) or 3 (spheres), default 2.
        channels: image channels (the disk appears in each), default 1.
        noise: standard deviation of added Gaussian noise, default 0.05.
        seed: random seed, default 0.

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
        radius = rng.uniform(0.2, 0.32) * size
        centre = rng.uniform(radius + 1, size - radius - 2, size=d)
        dist = signed_distance_to_sphere(shape, centre, radius)
        masks[i, ..., 0] = dist < 0
        images[i] = (dist < 0)[..., None] + noise * rng.standard_normal(shape + (channels,))
        init[i, ..., 0] = signed_distance_to_sphere(shape, centre, 0.35 * radius)
    return images, masks, init


def _example(model, batch_size, seed):
    image_input = model.inputs[0]
    d = len(image_input.shape) - 2
    size = next((int(s) for s in image_input.shape[1:-1] if s is not None), 16)
    images, masks, init = synthetic_disks(batch_size, size=size, spatial_dims=d,
                                          channels=int(image_input.shape[-1]), seed=seed)
    x = [images, init] if len(model.inputs) == 2 else images
    return x, masks


def _level_set_network(*, name, spatial_dims, channels, input_size, alpha, beta, gamma, dt, steps, tau, eps,
                       kernel_size, num_edge_kernels, smoothing_sigma, image_scale, trainable_kernels,
                       trainable_coefficients, init, init_filters):
    # -- arguments
    d = check_spatial_dims(spatial_dims)
    channels = check_positive_int(channels, "channels")
    spatial = spatial_shape(input_size, d)
    steps = check_positive_int(steps, "steps")
    check_positive(dt, "dt")
    check_positive(eps, "eps")
    check_kernel_size_arg(kernel_size)
    check_positive(tau, "tau")
    check_positive(image_scale, "image_scale")
    check_choice(init, "init", ("input", "learned"))
    init_filters = check_positive_int(init_filters, "init_filters")

    # -- inputs and initial level set
    image = keras.Input(spatial + (channels,), name=f"{name}_image")
    inputs = [image]
    if init == "input":
        u = keras.Input(spatial + (1,), name=f"{name}_initial_level_set")
        inputs.append(u)
    else:
        x = image
        for i in range(2):
            x = _CONV[d](init_filters, 3, padding="same", activation="relu", name=f"{name}_init_conv{i}")(x)
        u = _CONV[d](1, 3, padding="same", name=f"{name}_init_out")(x)

    # -- edge indicator and unrolled forward-Euler steps (one shared step layer)
    scaled = keras.layers.Rescaling(float(image_scale), name=f"{name}_image_scale")(image)
    g = EdgeIndicator(num_kernels=num_edge_kernels, kernel_size=kernel_size, smoothing_sigma=smoothing_sigma,
                      trainable_kernels=trainable_kernels, name=f"{name}_edge")(scaled)
    step = LevelSetStep(alpha=alpha, beta=beta, gamma=gamma, dt=dt, eps=eps, kernel_size=kernel_size,
                        trainable_kernels=trainable_kernels, trainable_coefficients=trainable_coefficients,
                        name=f"{name}_step")
    for _ in range(steps):
        u = step([u, g])

    # -- probability of "inside" (u < 0)
    logits = keras.layers.Rescaling(-1.0 / float(tau), name=f"{name}_logits")(u)
    probability = keras.layers.Activation("sigmoid", dtype="float32", name=f"{name}_probability")(logits)
    return keras.Model(inputs if len(inputs) > 1 else image, probability, name=name)


def _compile(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.5, name="iou")],
    )
    return model


@register_model(
    "lse",
    description="Classical level-set evolution (balloon + curvature + convection, upwind, forward Euler), "
    "kernels frozen at the finite-difference stencils; inputs [image, initial level set].",
    spatial_dims=(2, 3),
    tiny={"steps": 3, "input_size": 16},
    example=_example,
    trainable_with_fit=False,
)
def lse(spatial_dims=2, channels=1, input_size=None, alpha=-1.0, beta=0.2, gamma=1.0, dt=0.2, steps=100,
        tau=1.0, eps=1e-8, kernel_size=3, smoothing_sigma=None, image_scale=10.0, learn_coefficients=False,
        learning_rate=1e-2, name="lse"):
    """Classical level-set evolution with frozen finite-difference kernels (semi-automatic).

    `steps` forward-Euler steps of
    `u_t = alpha g |grad u| + beta g kappa |grad u| + gamma grad g . grad u`
    starting from the user's initial level set (negative inside), with
    `g = 1 / (1 + |grad (image_scale * I)|^2)`; output `sigmoid(-u / tau)`.

    Args:
        spatial_dims: 2 or 3, default 2.
        channels: image channels, default 1 (channels are summed in the edge
            indicator's convolutions).
        input_size: None (any size, default), an int or a tuple per axis.
        alpha: balloon coefficient, default -1.0 (negative inflates).
        beta: curvature coefficient, default 0.2 (positive smooths).
        gamma: convection coefficient, default 1.0 (positive attracts to edges).
        dt: time step, default 0.2 (keep `dt * max|alpha| <= 0.5`).
        steps: number of time steps, default 100.
        tau: sharpness of the output sigmoid, default 1.0 (in voxels).
        eps: curvature regulariser, default 1e-8.
        kernel_size: stencil kernel size (odd >= 3), default 3.
        smoothing_sigma: optional Gaussian pre-smoothing of the image, default None.
        image_scale: factor applied to the image before the edge indicator
            (edge contrast), default 10.0 for images scaled to about [0, 1].
        learn_coefficients: make alpha, beta, gamma trainable (default False).
        learning_rate: Adam learning rate for the compiled model, default 1e-2.
        name: model and layer-name prefix, default "lse".

    Input shape: `[image (N, *S, channels), initial_level_set (N, *S, 1)]`.
    Output shape: `(N, *S, 1)`, probability of "inside".

    Raises:
        ValueError: bad `spatial_dims`, `steps`, `dt`, `tau`, `eps`,
            `kernel_size`, `image_scale` or `input_size`.

    Example:
    >>> model = keras_medseg.zoo.build("lse", steps=50)
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
        trainable_coefficients=learn_coefficients, init="input", init_filters=1,
    )
    return _compile(model, learning_rate)


@register_model(
    "lsn",
    description="Level Set Network: unrolled forward-Euler level-set steps with learned kernels and "
    "alpha/beta/gamma, optional learned initialisation; output sigmoid(-u/tau).",
    spatial_dims=(2, 3),
    tiny={"steps": 2, "input_size": 16, "init_filters": 4},
    example=_example,
)
def lsn(spatial_dims=2, channels=1, input_size=None, steps=10, dt=0.05, alpha=-1.0, beta=0.2, gamma=1.0,
        tau=1.0, eps=1e-8, kernel_size=3, num_edge_kernels=None, smoothing_sigma=None, image_scale=10.0,
        init="learned", init_filters=8, learning_rate=5e-3, name="lsn"):
    """Level Set Network: the level-set scheme with learned kernels and coefficients.

    Same structure as `lse`, but the edge-indicator, upwind and curvature
    kernels start at the finite-difference stencils and are trained, as are
    alpha, beta and gamma (shared across the `steps` unrolled steps). With
    `init="learned"` two ReLU convolutions and a linear one predict the initial
    level set from the image, so the model needs no user seed.

    Args:
        spatial_dims: 2 or 3, default 2.
        channels: image channels, default 1.
        input_size: None (any size, default), an int or a tuple per axis.
        steps: unrolled time steps, default 10.
        dt: time step, default 0.05 (as in the reference implementation).
        alpha, beta, gamma: initial coefficients, defaults -1.0, 0.2, 1.0.
        tau: sharpness of the output sigmoid, default 1.0.
        eps: curvature regulariser, default 1e-8.
        kernel_size: odd >= 3, default 3.
        num_edge_kernels: edge-indicator kernels (None = spatial_dims).
        smoothing_sigma: optional Gaussian pre-smoothing, default None.
        image_scale: image factor before the edge indicator, default 10.0.
        init: `"learned"` (default, input: image) or `"input"` (inputs:
            `[image, initial_level_set]`).
        init_filters: width of the learned initialisation, default 8.
        learning_rate: Adam learning rate, default 5e-3 (loss: binary cross-entropy).
        name: model and layer-name prefix, default "lsn".

    Input shape: `(N, *S, channels)` or `[image, initial_level_set (N, *S, 1)]`.
    Output shape: `(N, *S, 1)`, probability of "inside".

    Raises:
        ValueError: bad `spatial_dims`, `steps`, `dt`, `tau`, `eps`,
            `kernel_size`, `init` or `input_size`.

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
    )
    return _compile(model, learning_rate)
