"""Q-tips: the synthetic segmentation set of the IMEXnet paper.

Each image is a grey canvas (value 112) with one thin rod (value 128) of random
length and orientation. A 2x2 marker sits at each end of the rod; the pair of
marker values says the class:

=====  ==================  ============================
class  marker values       meaning
=====  ==================  ============================
1      255 / 255           both ends bright
2      255 / 1             one end bright, one end dark
3      1 / 1               both ends dark
=====  ==================  ============================

The label map holds the class id over the whole rod (markers included) and 0
elsewhere. The class of a rod pixel can only be told by looking at both ends
of the rod, up to 60 pixels apart, which is why a large receptive field
matters (the point of the IMEXnet experiment).

Reference: Haber, Lensink, Treister, Ruthotto, "IMEXnet: a forward stable deep
neural network", ICML 2019, and their talk "Semi-Implicit Convolutional Neural
Networks" (CSE19, "Q-tips dataset").
"""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_medseg.utils.validation import check_positive_int

BACKGROUND = 112.0
ROD = 128.0
BRIGHT = 255.0
DARK = 1.0
NUM_CLASSES = 4  # background + 3 rod classes
CLASS_MARKERS = {1: (BRIGHT, BRIGHT), 2: (BRIGHT, DARK), 3: (DARK, DARK)}
# Readable class names, after the rod's two end markers.
CLASS_NAMES = ("background", "rod, both ends bright", "rod, one end bright, one dark", "rod, both ends dark")
ROD_WIDTH = 2
MARKER_LENGTH = 2


def normalize_qtips(images: np.ndarray) -> np.ndarray:
    """Map raw Q-tips intensities (0..255) to [-1, 1]: `(x - 127.5) / 127.5`.

    Args:
        images: array of raw intensities, any shape.

    Returns:
        float32 array of the same shape (background -0.12, rod 0.004, bright
        marker 1, dark marker -0.99).
    """
    return ((np.asarray(images, dtype=np.float32) - 127.5) / 127.5).astype(np.float32)


def _default_length_range(size):
    # 32..60 on the reference 64x64 canvas, scaled for other sizes.
    return (size // 2, min((size * 15) // 16, size - 4))


def _draw_rod(size, length, theta, centre, class_id):
    """Rasterise one rod by nearest-neighbour inverse mapping of a 2 x length template."""
    template = np.full((ROD_WIDTH, length), ROD, dtype=np.float32)
    first, last = CLASS_MARKERS[class_id]
    template[:, :MARKER_LENGTH] = first
    template[:, length - MARKER_LENGTH:] = last
    # pixel centres in (row, col) = (y, x)
    yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = math.cos(theta), math.sin(theta)
    along = dx * c + dy * s + length / 2.0  # 0..length along the rod
    across = -dx * s + dy * c + ROD_WIDTH / 2.0  # 0..width across the rod
    col = np.floor(along).astype(np.int64)
    row = np.floor(across).astype(np.int64)
    inside = (col >= 0) & (col < length) & (row >= 0) & (row < ROD_WIDTH)
    image = np.full((size, size), BACKGROUND, dtype=np.float32)
    image[inside] = template[row[inside], col[inside]]
    label = np.zeros((size, size), dtype=np.int32)
    label[inside] = class_id
    return image, label


def qtips(n: int, size: int = 64, seed: int | None = None, length_range: tuple[int, int] | None = None,
          normalize: bool = False, return_params: bool = False) -> tuple:
    """Generate `n` Q-tips images and their label maps.

    Args:
        n: number of images (int >= 1).
        size: canvas side in pixels (default 64, as in the reference; >= 16).
        seed: seed of the NumPy generator (default None: fresh entropy); the
            same seed always gives the same images.
        length_range: inclusive `(min, max)` rod length in pixels; default
            `(size // 2, min(15 * size // 16, size - 4))`, i.e. 32..60 on the 64x64 canvas.
        normalize: if True return `normalize_qtips(images)` (values in
            [-1, 1]) instead of the raw 0..255 intensities (default False).
        return_params: if True also return a dict of per-image arrays
            `class_id`, `length`, `theta` (radians, in [0, pi)), `centre`.

    Returns:
        `(images, labels)`: images float32 `(n, size, size, 1)` with raw
        intensities (background 112, rod 128, markers 255 or 1) unless
        `normalize=True`; labels int32 `(n, size, size)` with 0 = background
        and the class id 1..3 on the rod.

    Raises:
        ValueError / TypeError: `n` or `size` not a positive int, `size` < 16,
            or a `length_range` that is empty or does not fit on the canvas.

    Example:

    >>> images, labels = keras_medseg.data.synthetic.qtips(8, seed=0)
    >>> images.shape, labels.shape
    ((8, 64, 64, 1), (8, 64, 64))

    Reference: Haber et al., "IMEXnet: A forward stable deep neural network",
    ICML 2019.
    """
    n = check_positive_int(n, "n")
    size = check_positive_int(size, "size", minimum=16)
    lo, hi = _default_length_range(size) if length_range is None else length_range
    ints = isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer))
    if not ints or lo < 2 * MARKER_LENGTH or hi < lo:
        raise ValueError(
            "`length_range` must be two ints (min, max) with 4 <= min <= max. "
            f"Received: length_range={length_range!r}"
        )
    if hi > size - 4:
        raise ValueError(
            f"`length_range` max must be <= size - 4 = {size - 4} so the rod fits on the canvas. "
            f"Received: length_range={length_range!r}, size={size}"
        )
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 1), dtype=np.float32)
    labels = np.empty((n, size, size), dtype=np.int32)
    params = {k: [] for k in ("class_id", "length", "theta", "centre")}
    for i in range(n):
        class_id = int(rng.integers(1, 4))
        length = int(rng.integers(lo, hi + 1))
        theta = float(rng.uniform(0.0, math.pi))
        # half extents of the rotated rod's bounding box, plus a one-pixel margin
        half_x = 0.5 * (length * abs(math.cos(theta)) + ROD_WIDTH * abs(math.sin(theta))) + 1.0
        half_y = 0.5 * (length * abs(math.sin(theta)) + ROD_WIDTH * abs(math.cos(theta))) + 1.0
        cx = float(rng.uniform(half_x, size - half_x))
        cy = float(rng.uniform(half_y, size - half_y))
        image, label = _draw_rod(size, length, theta, (cy, cx), class_id)
        images[i, ..., 0] = image
        labels[i] = label
        params["class_id"].append(class_id)
        params["length"].append(length)
        params["theta"].append(theta)
        params["centre"].append((cy, cx))
    if normalize:
        images = normalize_qtips(images)
    if return_params:
        return images, labels, {k: np.asarray(v) for k, v in params.items()}
    return images, labels


class QtipsDataset(keras.utils.PyDataset):
    """Q-tips as a `keras.utils.PyDataset` of `(images, labels)` batches.

    The whole set is generated once (deterministic per `seed`) and served in
    batches, optionally reshuffled every epoch.

    Args:
        n: number of images (default 1024, the reference training-set size).
        batch_size: images per batch (default 32).
        size: canvas side (default 64).
        seed: generator seed (default 0).
        normalize: scale images to [-1, 1] with `normalize_qtips` (default True).
        shuffle: reshuffle the order at the end of each epoch (default False).
        **kwargs: forwarded to `keras.utils.PyDataset` (`workers`, ...).

    Batches: images float32 `(batch, size, size, 1)`, labels int32
    `(batch, size, size)` (use a sparse categorical loss with 4 classes).

    Example:

    >>> ds = keras_medseg.data.QtipsDataset(64, batch_size=16, seed=1)
    >>> x, y = ds[0]
    """

    def __init__(self, n=1024, batch_size=32, size=64, seed=0, normalize=True, shuffle=False, **kwargs):
        super().__init__(**kwargs)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.images, self.labels = qtips(n, size=size, seed=seed, normalize=normalize)
        self.shuffle = bool(shuffle)
        self._order = np.arange(len(self.images))
        self._rng = np.random.default_rng(seed)

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index):
        if index < 0 or index >= len(self):
            raise IndexError(f"Batch index out of range. Received: index={index}, len={len(self)}")
        idx = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.images[idx], self.labels[idx]

    def on_epoch_end(self):
        if self.shuffle:
            self._rng.shuffle(self._order)


def qtips_dataset(n: int = 1024, batch_size: int = 32, size: int = 64, seed: int = 0, normalize: bool = True,
                  shuffle: bool = False, **kwargs) -> QtipsDataset:
    """Q-tips batches as a `QtipsDataset` (a `keras.utils.PyDataset`) for `model.fit`.

    Same arguments as `QtipsDataset`.
    """
    return QtipsDataset(n=n, batch_size=batch_size, size=size, seed=seed, normalize=normalize,
                        shuffle=shuffle, **kwargs)
