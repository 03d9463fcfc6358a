"""Small demo sets for the generative models (`cgan`, `pix2pix`, `cyclegan`).

Everything is generated locally or cut from images that ship with installed
packages (no downloads):

* `labelled_shapes`: rendered shapes with class labels (10 classes: disc,
  square, diamond, ring, frame, cross, half disc, horizontal bar, vertical
  bar, two dots) in 2D or 3D - the class-conditional GAN demo.
* `paired_shapes` / `unpaired_shapes`: domain A = binary object masks,
  domain B = "scans" of the same objects (smooth shading, blurred borders,
  background texture, noise). Paired for pix2pix, independent draws for
  CycleGAN. 2D or 3D.
* `paired_stains` / `unpaired_stains`: two stains of the scikit-image
  immunohistochemistry image (`skimage.data.immunohistochemistry()`)
  separated by colour deconvolution (`skimage.color.rgb2hed`): domain A =
  haematoxylin, domain B = DAB, random (flipped/rotated) crops.

All images are float32, channels-last, in `[-1, 1]` (the range of the
generators' `tanh` output); `to_unit_range` maps them back to `[0, 1]`.

Reference: J. Wolterink, "Deep Learning II: Interpretability & Adversarial
Methods" (8DM50; paired and unpaired image-to-image translation);
Ruifrok & Johnston 2001 (colour deconvolution).
"""

import functools

import numpy as np
from scipy import ndimage

from keras_medseg.utils.validation import check_choice, check_positive, check_positive_int, check_spatial_dims

SHAPE_NAMES = (
    "disc", "square", "diamond", "ring", "frame", "cross", "half_disc", "horizontal_bar",
    "vertical_bar", "two_dots",
)


def to_unit_range(images):
    """Map images from `[-1, 1]` to `[0, 1]` (clipped), e.g. for plotting."""
    return np.clip((np.asarray(images, dtype="float32") + 1.0) / 2.0, 0.0, 1.0)


def _check_common(n, image_size, spatial_dims, min_size=4):
    check_positive_int(n, "n")
    check_positive_int(image_size, "image_size", minimum=min_size)
    return check_spatial_dims(spatial_dims)


def _grid(image_size, spatial_dims):
    axes = [np.arange(image_size, dtype="float32") + 0.5] * spatial_dims
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (S,)*d + (d,)


def _shape_mask(label, d):
    """Membership of normalised coordinates `d` (`(..., dims)`, object radius 1) in shape `label`."""
    a = np.abs(d)
    l2 = np.sqrt(np.sum(d ** 2, axis=-1))
    linf = np.max(a, axis=-1)
    name = SHAPE_NAMES[label]
    if name == "disc":
        return l2 <= 1.0
    if name == "square":
        return linf <= 0.8
    if name == "diamond":
        return np.sum(a, axis=-1) <= 1.0
    if name == "ring":
        return (l2 <= 1.0) & (l2 >= 0.6)
    if name == "frame":
        return (linf <= 0.85) & (linf >= 0.5)
    if name == "cross":
        second = np.sort(a, axis=-1)[..., :-1]  # all but the largest coordinate
        return (linf <= 1.0) & np.all(second <= 0.3, axis=-1)
    if name == "half_disc":
        return (l2 <= 1.0) & (d[..., 0] <= 0.0)
    if name == "horizontal_bar":
        return (linf <= 1.0) & (a[..., 0] <= 0.35)
    if name == "vertical_bar":
        return (linf <= 1.0) & (a[..., -1] <= 0.35)
    # two dots along the last axis
    shift = np.zeros(d.shape[-1], dtype="float32")
    shift[-1] = 0.55
    return (np.sqrt(np.sum((d - shift) ** 2, -1)) <= 0.4) | (np.sqrt(np.sum((d + shift) ** 2, -1)) <= 0.4)


def _random_object(rng, grid, image_size, label):
    radius = rng.uniform(0.28, 0.4) * image_size
    centre = rng.uniform(radius, image_size - radius, size=grid.shape[-1])
    return _shape_mask(label, (grid - centre) / radius)


def labelled_shapes(n, image_size=28, num_classes=10, channels=1, spatial_dims=2, seed=0):
    """Rendered shapes with class labels: the conditional-GAN demo set.

    Args:
        n: number of images.
        image_size: side length (>= 4). Default 28 (MNIST size).
        num_classes: number of shape classes, 1..10 (`SHAPE_NAMES[:num_classes]`).
            Default 10.
        channels: image channels (the image is repeated). Default 1.
        spatial_dims: 2 (images `(n, S, S, C)`) or 3 (volumes `(n, S, S, S, C)`).
        seed: random seed. Default 0.

    Returns:
        `(images, labels)`: float32 images in [-1, 1] (background -1, object
        +1, borders slightly smoothed) and int32 labels `(n,)`, balanced.

    Raises:
        ValueError: `num_classes` outside 1..10 or bad sizes.

    Example:
    ```python
    x, y = keras_medseg.data.synthetic.translation.labelled_shapes(100, image_size=16, num_classes=4)
    ```
    """
    spatial_dims = _check_common(n, image_size, spatial_dims)
    check_positive_int(num_classes, "num_classes")
    if num_classes > len(SHAPE_NAMES):
        raise ValueError(
            f"`num_classes` must be at most {len(SHAPE_NAMES)} (shapes {SHAPE_NAMES}). "
            f"Received: num_classes={num_classes}"
        )
    check_positive_int(channels, "channels")
    rng = np.random.default_rng(seed)
    grid = _grid(image_size, spatial_dims)
    labels = (np.arange(n) % num_classes).astype("int32")
    rng.shuffle(labels)
    images = np.empty((n,) + (image_size,) * spatial_dims + (channels,), dtype="float32")
    for i, label in enumerate(labels):
        mask = _random_object(rng, grid, image_size, int(label)).astype("float32")
        img = ndimage.gaussian_filter(mask, 0.5) * 2.0 - 1.0
        images[i] = img[..., None]
    return images, labels


def _scan_from_mask(rng, mask, grid, image_size):
    """Render a synthetic scan of a binary mask: shaded object, blur, texture, noise."""
    d = mask.ndim
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction) + 1e-8
    shading = 0.75 + 0.25 * np.tensordot(grid / image_size - 0.5, direction, axes=1)
    obj = ndimage.gaussian_filter(mask.astype("float32"), 1.0) * shading
    texture = ndimage.gaussian_filter(rng.normal(size=mask.shape), 2.0)
    texture = texture / (np.abs(texture).max() + 1e-8)
    scan = 0.15 + obj + 0.1 * texture + 0.03 * rng.normal(size=mask.shape)
    return np.clip(scan, 0.0, 1.2) / 1.2 * 2.0 - 1.0


def _shape_pair(rng, grid, image_size):
    num_objects = rng.integers(1, 3)
    mask = np.zeros(grid.shape[:-1], dtype=bool)
    for _ in range(num_objects):
        label = int(rng.integers(0, len(SHAPE_NAMES)))
        radius = rng.uniform(0.15, 0.3) * image_size
        centre = rng.uniform(radius, image_size - radius, size=grid.shape[-1])
        mask |= _shape_mask(label, (grid - centre) / radius)
    return mask, _scan_from_mask(rng, mask, grid, image_size)


def paired_shapes(n, image_size=32, spatial_dims=2, seed=0):
    """Paired synthetic translation set: object masks (A) and their rendered scans (B).

    Args:
        n: number of pairs.
        image_size: side length (>= 8). Default 32.
        spatial_dims: 2 -> `(n, S, S, 1)`, 3 -> `(n, S, S, S, 1)`. Default 2.
        seed: random seed. Default 0.

    Returns:
        `(masks, scans)`, float32 in [-1, 1], the same objects in both.

    Example:
    ```python
    a, b = keras_medseg.data.synthetic.translation.paired_shapes(64, image_size=32)
    ```
    """
    spatial_dims = _check_common(n, image_size, spatial_dims, min_size=8)
    rng = np.random.default_rng(seed)
    grid = _grid(image_size, spatial_dims)
    shape = (n,) + (image_size,) * spatial_dims + (1,)
    masks = np.empty(shape, dtype="float32")
    scans = np.empty(shape, dtype="float32")
    for i in range(n):
        mask, scan = _shape_pair(rng, grid, image_size)
        masks[i, ..., 0] = mask * 2.0 - 1.0
        scans[i, ..., 0] = scan
    return masks, scans


def unpaired_shapes(n, image_size=32, spatial_dims=2, seed=0):
    """Unpaired version of `paired_shapes`: masks and scans of independent objects.

    Returns:
        `(masks, scans)`, float32 in [-1, 1]; `masks[i]` and `scans[i]` show
        different, independently drawn objects.
    """
    a, _ = paired_shapes(n, image_size, spatial_dims, seed=seed)
    _, b = paired_shapes(n, image_size, spatial_dims, seed=None if seed is None else seed + 7919)
    return a, b


@functools.lru_cache(maxsize=1)
def ihc_stains():
    """Haematoxylin and DAB stain images of `skimage.data.immunohistochemistry()`.

    Colour deconvolution with `skimage.color.rgb2hed`; each stain is clipped to
    its 0.5-99.5 percentile range and scaled to [-1, 1].

    Returns:
        `(haematoxylin, dab)`: two float32 `(512, 512)` arrays in [-1, 1].
    """
    from skimage import data as skdata
    from skimage.color import rgb2hed

    hed = rgb2hed(skdata.immunohistochemistry())
    out = []
    for channel in (0, 2):
        stain = hed[..., channel]
        lo, hi = np.percentile(stain, [0.5, 99.5])
        out.append((np.clip((stain - lo) / (hi - lo), 0.0, 1.0) * 2.0 - 1.0).astype("float32"))
    return tuple(out)


def _crops(rng, n, patch_size, size):
    corners = rng.integers(0, size - patch_size + 1, size=(n, 2))
    flips = rng.integers(0, 2, size=(n, 2)).astype(bool)
    rots = rng.integers(0, 4, size=n)
    return corners, flips, rots


def _cut(image, corner, flip, rot, patch_size):
    y, x = corner
    patch = image[y:y + patch_size, x:x + patch_size]
    if flip[0]:
        patch = patch[::-1]
    if flip[1]:
        patch = patch[:, ::-1]
    return np.rot90(patch, rot)


def _stain_patches(n, patch_size, seed, paired):
    check_positive_int(n, "n")
    check_positive_int(patch_size, "patch_size", minimum=4)
    h, dab = ihc_stains()
    if patch_size > h.shape[0]:
        raise ValueError(f"`patch_size` must be at most {h.shape[0]}. Received: patch_size={patch_size}")
    rng = np.random.default_rng(seed)
    crops_a = _crops(rng, n, patch_size, h.shape[0])
    crops_b = crops_a if paired else _crops(rng, n, patch_size, h.shape[0])
    a = np.stack([_cut(h, *c, patch_size) for c in zip(*crops_a)])[..., None]
    b = np.stack([_cut(dab, *c, patch_size) for c in zip(*crops_b)])[..., None]
    return np.ascontiguousarray(a, dtype="float32"), np.ascontiguousarray(b, dtype="float32")


def paired_stains(n, patch_size=64, seed=0):
    """Paired stain-translation set: haematoxylin (A) -> DAB (B) crops of the same tissue.

    Args:
        n: number of pairs.
        patch_size: crop side (4..512). Default 64.
        seed: random seed (crop positions, flips, 90-degree rotations). Default 0.

    Returns:
        `(haematoxylin, dab)`: float32 `(n, patch_size, patch_size, 1)` in [-1, 1].

    Raises:
        ValueError: `patch_size` larger than the 512x512 image.

    Example:
    ```python
    a, b = keras_medseg.data.synthetic.translation.paired_stains(32, patch_size=64)
    ```
    """
    return _stain_patches(n, patch_size, seed, paired=True)


def unpaired_stains(n, patch_size=64, seed=0):
    """Unpaired stain sets: haematoxylin and DAB crops at independent positions.

    Same arguments and return value as `paired_stains`.
    """
    return _stain_patches(n, patch_size, seed, paired=False)


def translation_dataset(kind="shapes", n=64, image_size=32, paired=True, spatial_dims=2, seed=0):
    """One entry point for the translation demo sets.

    Args:
        kind: `"shapes"` (masks -> scans, 2D/3D) or `"stains"` (H -> DAB, 2D).
        n, image_size, spatial_dims, seed: as in the specific functions.
        paired: paired (pix2pix) or unpaired (CycleGAN). Default True.

    Returns:
        `(images_a, images_b)`.

    Raises:
        ValueError: unknown `kind`, or `kind="stains"` with `spatial_dims=3`.
    """
    check_choice(kind, "kind", ("shapes", "stains"))
    check_positive(image_size, "image_size")
    if kind == "stains":
        if spatial_dims != 2:
            raise ValueError(f"The stain set is 2D only. Received: spatial_dims={spatial_dims}")
        return (paired_stains if paired else unpaired_stains)(n, image_size, seed)
    return (paired_shapes if paired else unpaired_shapes)(n, image_size, spatial_dims, seed)


__all__ = [
    "SHAPE_NAMES",
    "ihc_stains",
    "labelled_shapes",
    "paired_shapes",
    "paired_stains",
    "to_unit_range",
    "translation_dataset",
    "unpaired_shapes",
    "unpaired_stains",
]
