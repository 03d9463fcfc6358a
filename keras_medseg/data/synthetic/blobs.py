"""`synthetic_blobs`: a toy localisation data set (bright blob in the left half = positive) with coarse masks.

Made for `zoo.build("attention_classifier")` (targets `{"risk": y, "attention": mask}`).
"""

import numbers

import numpy as np

from keras_medseg.utils.validation import check_positive_int, check_spatial_dims


def synthetic_blobs(n, input_size=64, spatial_dims=2, in_channels=1, positive_fraction=0.5, noise=0.5,
                    seed=0):
    """Toy localisation set: positives hold a bright blob in the left half, the mask is that half.

    Every image is Gaussian noise plus one dark "distractor" blob anywhere;
    positives also get a bright Gaussian blob whose centre lies in the left
    half (first spatial axis of the last two, i.e. width `< size / 2`). The
    coarse mask of a positive is the whole left half ("cancer in the left
    lung"); negatives have an empty mask.

    Args:
        n: number of images.
        input_size: spatial size, int or tuple (default 64).
        spatial_dims: 2 or 3 (default 2).
        in_channels: channels (the same image repeated; default 1).
        positive_fraction: share of positives (default 0.5).
        noise: noise standard deviation (default 0.5).
        seed: random seed (default 0).

    Returns:
        `(x, {"risk": y, "attention": mask})` with `x` `(n, *size, in_channels)`
        float32, `y` `(n, 1)` float32 labels and `mask` `(n, *size, 1)` float32.
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    n = check_positive_int(n, "n")
    if isinstance(input_size, numbers.Integral):
        input_size = (int(input_size),) * spatial_dims
    size = tuple(int(s) for s in input_size)
    if len(size) != spatial_dims:
        raise ValueError(f"`input_size` must have {spatial_dims} entries. Received: input_size={input_size!r}")
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype="float32") for s in size], indexing="ij")
    radius = max(1.5, min(size) / 10)

    def blob(centre):
        d2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
        return np.exp(-d2 / (2 * radius**2))

    labels = (rng.random(n) < positive_fraction).astype("float32")
    if n > 1:  # both classes present
        labels[0], labels[1] = 1.0, 0.0
    x = noise * rng.standard_normal((n,) + size).astype("float32")
    mask = np.zeros((n,) + size, dtype="float32")
    left = [slice(None)] * spatial_dims
    left[-1] = slice(0, size[-1] // 2)
    for i in range(n):
        distractor = [rng.uniform(radius, s - radius) for s in size]
        x[i] -= 2.0 * blob(distractor)
        if labels[i]:
            centre = [rng.uniform(radius, s - radius) for s in size]
            centre[-1] = rng.uniform(radius, size[-1] / 2 - radius)
            x[i] += 2.0 * blob(centre)
            mask[i][tuple(left)] = 1.0
    x = np.repeat(x[..., None], in_channels, axis=-1)
    return x, {"risk": labels[:, None], "attention": mask[..., None]}


__all__ = ["synthetic_blobs"]
