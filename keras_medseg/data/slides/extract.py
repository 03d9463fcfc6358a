"""Tissue mask, patch grid and patch extraction from a whole-slide image (inner-square labels)."""

import collections

import numpy as np

from keras_medseg.utils.validation import check_positive, check_positive_int

PatchSet = collections.namedtuple("PatchSet", ["patches", "labels", "tumor_ids", "coords"])


# --------------------------------------------------------------------------- extraction


def tissue_mask(image, threshold=0.07):
    """Tissue pixels of an RGB slide: HSV saturation above `threshold`.

    Glass / background in brightfield slides is nearly white (saturation ~0);
    stained tissue is coloured.

    Args:
        image: `(H, W, 3)` RGB array (uint8 or float in [0, 1]).
        threshold: saturation threshold in [0, 1], default 0.07.

    Returns:
        `(H, W)` bool array.
    """
    from skimage.color import rgb2hsv

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"`image` must be an (H, W, 3) RGB array for tissue detection. Received: image.shape={image.shape}"
        )
    return rgb2hsv(image)[..., 1] > threshold


def _tumor_labels(mask):
    """Integer tumour label map: a 0/1 mask is split into 8-connected components."""
    from skimage.measure import label as connected_components

    mask = np.asarray(mask)
    if mask.dtype == bool or np.isin(mask, (0, 1)).all():
        return connected_components(mask.astype(bool), connectivity=2).astype(np.int64)
    if not np.issubdtype(mask.dtype, np.integer) or mask.min() < 0:
        raise ValueError(
            "`mask` must be a 0/1 (bool) annotation or a non-negative integer tumour label map. "
            f"Received: mask.dtype={mask.dtype}, min={mask.min()}"
        )
    return mask.astype(np.int64)


def _grid(length, size, stride):
    return range(0, length - size + 1, stride)


def _check_extract_args(image, mask, size, stride, inner_size, min_tissue):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"`image` must be (H, W) or (H, W, C). Received: image.shape={image.shape}")
    size = check_positive_int(size, "size")
    inner_size = size // 2 if inner_size is None else check_positive_int(inner_size, "inner_size")
    if inner_size > size:
        raise ValueError(f"`inner_size` must be <= size={size}. Received: inner_size={inner_size}")
    stride = inner_size if stride is None else check_positive_int(stride, "stride")
    if image.shape[0] < size or image.shape[1] < size:
        raise ValueError(
            f"`image` ({image.shape[0]}x{image.shape[1]}) is smaller than one patch. Received: size={size}"
        )
    if mask is not None and np.asarray(mask).shape != image.shape[:2]:
        raise ValueError(
            f"`mask` must have the image's spatial shape {image.shape[:2]}. "
            f"Received: mask.shape={np.asarray(mask).shape}"
        )
    check_positive(min_tissue, "min_tissue", allow_zero=True)
    if min_tissue > 1:
        raise ValueError(f"`min_tissue` is a fraction in [0, 1]. Received: min_tissue={min_tissue}")
    if min_tissue > 0 and image.shape[-1] != 3:
        raise ValueError(f"`min_tissue` > 0 needs an RGB image. Received: image.shape={image.shape}")
    return image, size, stride, inner_size


def iter_patches(image, mask=None, size=512, stride=None, inner_size=None, min_tissue=0.0,
                 tissue_threshold=0.07, batch_size=256):
    """Generator version of `extract_patches`: yields `PatchSet` batches of at most `batch_size` patches."""
    image, size, stride, inner_size = _check_extract_args(image, mask, size, stride, inner_size, min_tissue)
    batch_size = check_positive_int(batch_size, "batch_size")
    tumors = _tumor_labels(mask) if mask is not None else None
    tissue = tissue_mask(image, tissue_threshold) if min_tissue > 0 else None
    off = (size - inner_size) // 2
    buf = ([], [], [], [])
    for r in _grid(image.shape[0], size, stride):
        for c in _grid(image.shape[1], size, stride):
            tumor_id = -1
            if tumors is not None:
                inner = tumors[r + off:r + off + inner_size, c + off:c + off + inner_size]
                hits = inner[inner > 0]
                if hits.size:
                    tumor_id = int(np.bincount(hits).argmax())  # the tumour covering most of it
            if tumor_id < 0 and tissue is not None and tissue[r:r + size, c:c + size].mean() < min_tissue:
                continue  # background patch (annotated patches are always kept)
            buf[0].append(image[r:r + size, c:c + size])
            buf[1].append(int(tumor_id >= 0))
            buf[2].append(tumor_id)
            buf[3].append((r, c))
            if len(buf[0]) == batch_size:
                yield _patch_set(buf, image)
                buf = ([], [], [], [])
    if buf[0]:
        yield _patch_set(buf, image)


def _patch_set(buf, image):
    return PatchSet(
        patches=np.stack(buf[0]).astype(image.dtype, copy=False),
        labels=np.asarray(buf[1], np.uint8),
        tumor_ids=np.asarray(buf[2], np.int32),
        coords=np.asarray(buf[3], np.int32).reshape(-1, 2),
    )


def extract_patches(image, mask=None, size=512, stride=None, inner_size=None, min_tissue=0.0,
                    tissue_threshold=0.07):
    """Cut a slide into square patches and label them with the inner-square rule.

    A patch is positive iff its inner square (centred, side `inner_size`)
    intersects the annotation. Its tumour id is the annotated region covering
    most of the inner square (-1 for a negative patch); tumours are the
    8-connected components of a 0/1 mask, or the labels of an integer label
    map. Only whole patches are cut (no padding).

    Args:
        image: `(H, W)` or `(H, W, C)` slide (e.g. uint8 RGB).
        mask: `(H, W)` annotation, 0/1 or a tumour label map; `None` = a
            normal slide (all patches negative).
        size: patch side, default 512 (the lecture's patch size).
        stride: grid step, default `inner_size` (inner squares tile the slide).
        inner_size: side of the inner square, default `size // 2`.
        min_tissue: drop negative patches whose tissue fraction (see
            `tissue_mask`) is below this, default 0 (keep all). RGB only.
        tissue_threshold: HSV saturation threshold of `tissue_mask`.

    Returns:
        `PatchSet(patches (N, size, size, C), labels (N,) uint8,
        tumor_ids (N,) int32, coords (N, 2) int32 (row, col))`.

    Raises:
        ValueError: image smaller than a patch, mask of another shape,
            `inner_size > size`, bad `min_tissue`, a negative or float mask.

    Example:

    >>> image = np.zeros((64, 64, 3), np.uint8); mask = np.zeros((64, 64), bool)
    >>> mask[30:34, 30:34] = True
    >>> p = keras_medseg.data.extract_patches(image, mask, size=32)
    >>> p.patches.shape, int(p.labels.sum())
    ((9, 32, 32, 3), 1)

    Reference: the lecture "Convolutional networks - theory"
    ("Patch positive iff the inner square intersects the annotation").
    """
    sets = list(iter_patches(image, mask, size, stride, inner_size, min_tissue, tissue_threshold))
    if not sets:
        image = np.asarray(image)
        channels = 1 if image.ndim == 2 else image.shape[-1]
        return PatchSet(np.zeros((0, size, size, channels), image.dtype), np.zeros(0, np.uint8),
                        np.zeros(0, np.int32), np.zeros((0, 2), np.int32))
    return PatchSet(*(np.concatenate(parts) for parts in zip(*sets)))
