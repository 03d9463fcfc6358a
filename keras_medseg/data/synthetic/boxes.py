"""Synthetic "bright squares / cubes" detection data (2D and 3D) with exact boxes.

Each image is Gaussian noise around a dark background with one or more bright
axis-aligned squares (2D) or cubes (3D) whose faces lie on voxel borders, so
the ground-truth box is exact in the coordinate convention of
`keras_medseg.boxes` (voxel `i` covers `[i, i + 1)`; `x` along W, `y` along H,
`z` along D; centre format `(cx, cy[, cz], w, h[, d])`).
"""

from __future__ import annotations

import numbers

import numpy as np

from keras_medseg.utils.validation import check_positive, check_positive_int


def _count_range(num_objects):
    if isinstance(num_objects, numbers.Integral) and not isinstance(num_objects, bool):
        lo = hi = int(num_objects)
    elif isinstance(num_objects, (tuple, list)) and len(num_objects) == 2:
        lo, hi = (int(v) for v in num_objects)
    else:
        raise ValueError(
            "`num_objects` must be an int or a (min, max) pair. "
            f"Received: num_objects={num_objects!r}"
        )
    if lo < 0 or hi < lo:
        raise ValueError(f"`num_objects` must satisfy 0 <= min <= max. Received: num_objects={num_objects!r}")
    return lo, hi


def synthetic_boxes(n: int, image_shape: tuple = (32, 32, 32), num_objects: int | tuple[int, int] = 1,
                    size_range: tuple[int, int] = (6, 12), isotropic: bool = True, intensity: float = 1.0,
                    noise: float = 0.2, max_tries: int = 100, seed: int = 0) -> tuple[np.ndarray, list]:
    """Images with bright squares/cubes and their exact bounding boxes.

    Args:
        n: int, number of images.
        image_shape: spatial shape, `(H, W)` for 2D or `(D, H, W)` for 3D
            (default `(32, 32, 32)`).
        num_objects: int or `(min, max)` number of objects per image (default 1).
            Objects never overlap.
        size_range: `(min, max)` side length in voxels, inclusive (default `(6, 12)`).
        isotropic: bool, draw one side length per object (squares/cubes,
            default) or one per axis (rectangles/boxes).
        intensity: brightness added inside the objects (default 1.0).
        noise: standard deviation of the Gaussian background noise (default 0.2).
        max_tries: placement attempts per object before giving up (default 100).
        seed: int, random seed (default 0).

    Returns:
        `(images, boxes)`: `images` is float32 `(n, *image_shape, 1)`; `boxes`
        is a list of `n` float32 arrays `(K_i, 4)` (2D) or `(K_i, 6)` (3D) in
        centre format.

    Raises:
        ValueError: bad `image_shape`, `size_range` larger than the image,
            bad `num_objects`, or objects that cannot be placed without overlap.

    Example:

    ```python
    x, boxes = keras_medseg.data.synthetic.boxes(4, image_shape=(32, 32, 32))
    x.shape, boxes[0]  # (4, 32, 32, 32, 1), [[cx, cy, cz, w, h, d]]
    ```
    """
    n = check_positive_int(n, "n")
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) not in (2, 3) or min(image_shape) < 1:
        raise ValueError(
            "`image_shape` must be a 2D (H, W) or 3D (D, H, W) spatial shape of positive sizes. "
            f"Received: image_shape={image_shape}"
        )
    d = len(image_shape)
    lo_n, hi_n = _count_range(num_objects)
    if len(size_range) != 2 or not 1 <= int(size_range[0]) <= int(size_range[1]):
        raise ValueError(f"`size_range` must be (min, max) with 1 <= min <= max. Received: size_range={size_range}")
    smin, smax = int(size_range[0]), int(size_range[1])
    if smax > min(image_shape):
        raise ValueError(
            f"`size_range` max must fit in the image. Received: size_range={size_range}, image_shape={image_shape}"
        )
    check_positive(noise, "noise", allow_zero=True)
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, noise, size=(n, *image_shape, 1)).astype("float32")
    all_boxes = []
    for i in range(n):
        k = int(rng.integers(lo_n, hi_n + 1))
        occupied = np.zeros(image_shape, bool)
        boxes = []
        for _ in range(k):
            for _try in range(max_tries):
                if isotropic:
                    sides = np.full(d, rng.integers(smin, smax + 1))
                else:
                    sides = rng.integers(smin, smax + 1, size=d)
                # sides/starts in array-axis order (D, H, W) / (H, W)
                starts = np.array([rng.integers(0, image_shape[a] - sides[a] + 1) for a in range(d)])
                region = tuple(slice(s, s + w) for s, w in zip(starts, sides))
                if not occupied[region].any():
                    break
            else:
                raise ValueError(
                    f"Could not place {k} non-overlapping objects of sizes {size_range} in an image of "
                    f"shape {image_shape}. Received: num_objects={num_objects!r}"
                )
            occupied[region] = True
            images[(i, *region, 0)] += intensity
            # array axes are (.., H, W): x <-> last axis, y <-> the one before, z <-> first in 3D
            centre = (starts + sides / 2.0)[::-1]
            boxes.append(np.concatenate([centre, sides[::-1].astype(float)]))
        all_boxes.append(np.asarray(boxes, "float32").reshape(-1, 2 * d))
    return images, all_boxes
