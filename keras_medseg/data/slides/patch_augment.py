"""Patch augmentation: random flips and colour perturbations (hue, saturation, brightness, contrast)."""


import numpy as np

_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _colour_matrices(rng, n, hue, saturation):
    """`(n, 3, 3)` RGB -> RGB matrices: rotate the chroma plane (I, Q) by a random hue angle, scale it."""
    theta = 2 * np.pi * rng.uniform(-hue, hue, n)
    scale = 1 + rng.uniform(-saturation, saturation, n)
    m = np.zeros((n, 3, 3))
    m[:, 0, 0] = 1.0
    m[:, 1, 1] = m[:, 2, 2] = scale * np.cos(theta)
    m[:, 1, 2] = -scale * np.sin(theta)
    m[:, 2, 1] = scale * np.sin(theta)
    return _YIQ_TO_RGB[None] @ m @ _RGB_TO_YIQ[None]


def augment_patches(patches, rng=None, flip=True, hue=0.04, saturation=0.25, brightness=0.1, contrast=0.1,
                    max_value=255.0):
    """Random flips and colour perturbation of a batch of RGB patches (NumPy).

    Per patch: horizontal and vertical flips with probability 1/2 each; hue
    rotated by `U(-hue, hue)` of a full turn and saturation (chroma) scaled by
    `1 + U(-saturation, saturation)`, both as one 3x3 colour matrix in YIQ
    space (a linear stand-in for an HSV jitter, fast enough for 512 x 512
    patches); brightness shifted by
    `U(-brightness, brightness) * max_value`; contrast scaled around the patch
    mean by `1 + U(-contrast, contrast)`. Results are clipped to
    `[0, max_value]`. Channels other than 3 get flips, brightness and
    contrast only.

    Args:
        patches: `(N, H, W, C)` array.
        rng: `numpy.random.Generator` (or a seed); default a fresh one.
        flip, hue, saturation, brightness, contrast: strengths (0 / False off).
        max_value: intensity of white, default 255.

    Returns:
        float32 array of the same shape.

    Reference: the lecture "Convolutional networks - theory"
    ("random vertical and horizontal flips, random color perturbations").
    """
    rng = np.random.default_rng(rng)
    x = np.array(patches, np.float32, copy=True)
    if x.ndim != 4:
        raise ValueError(f"`patches` must be (N, H, W, C). Received: patches.shape={x.shape}")
    n = x.shape[0]
    if flip:
        for axis in (1, 2):
            sel = rng.random(n) < 0.5
            x[sel] = np.flip(x[sel], axis=axis)
    if x.shape[-1] == 3 and (hue or saturation):
        m = _colour_matrices(rng, n, hue, saturation).astype(np.float32)
        x = np.matmul(x.reshape(n, -1, 3), np.swapaxes(m, 1, 2)).reshape(x.shape)
    if brightness:
        x += (rng.uniform(-brightness, brightness, n) * max_value)[:, None, None, None].astype(np.float32)
    if contrast:
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * (1 + rng.uniform(-contrast, contrast, n))[:, None, None, None].astype(np.float32) + mean
    return np.clip(x, 0, max_value).astype(np.float32)


# --------------------------------------------------------------------------- datasets
