"""Box target coder of `fpn_detector`: per-cell targets (encode) and boxes from outputs (decode).

Cells, levels and the target layout are described in `keras_medseg.zoo.fpn_detector`.
"""

import warnings

import numpy as np
from keras import ops

from keras_medseg import boxes as box_utils
from keras_medseg.utils.validation import check_positive, check_positive_int


def _check_geometry(image_shape, strides, anchor_sizes):
    """Validate and normalise `(image_shape, strides, anchor_sizes)`."""
    if image_shape is None or len(tuple(image_shape)) not in (2, 3):
        raise ValueError(
            "`image_shape` must be the spatial shape (H, W) or (D, H, W). "
            f"Received: image_shape={image_shape!r}"
        )
    image_shape = tuple(check_positive_int(int(s), "image_shape") for s in image_shape)
    if not isinstance(strides, (tuple, list)) or not strides:
        raise ValueError(f"`strides` must be a non-empty tuple of ints. Received: strides={strides!r}")
    strides = tuple(int(s) for s in strides)
    for i, s in enumerate(strides):
        if s < 1 or s & (s - 1):
            raise ValueError(f"`strides` must be powers of two. Received: strides={strides}")
        if i and s != 2 * strides[i - 1]:
            raise ValueError(
                f"`strides` must double from one pyramid level to the next (e.g. (4, 8, 16)). "
                f"Received: strides={strides}"
            )
    if any(n % strides[-1] for n in image_shape):
        raise ValueError(
            f"Every entry of `image_shape` must be divisible by the largest stride {strides[-1]}. "
            f"Received: image_shape={image_shape}, strides={strides}"
        )
    if anchor_sizes is None:
        anchor_sizes = tuple(float(s) for s in strides)
    else:
        if not isinstance(anchor_sizes, (tuple, list)) or len(anchor_sizes) != len(strides):
            raise ValueError(
                f"`anchor_sizes` must give one size per stride ({len(strides)}). "
                f"Received: anchor_sizes={anchor_sizes!r}"
            )
        anchor_sizes = tuple(float(check_positive(a, "anchor_sizes")) for a in anchor_sizes)
    return image_shape, strides, anchor_sizes


class BoxCoder:
    """Encode ground-truth boxes into per-cell targets and decode predictions back.

    Args:
        image_shape: spatial shape `(H, W)` or `(D, H, W)`.
        strides: tuple of pyramid strides (cell sizes), doubling, default `(4, 8, 16)`.
        anchor_sizes: tuple, one reference box side per stride (default: the strides).

    Raises:
        ValueError: strides not doubling powers of two, image not divisible by
            the largest stride, wrong number of anchor sizes.

    Example:

    ```python
    coder = keras_medseg.zoo.fpn_detector.BoxCoder((32, 32, 32))
    y = coder.encode([np.array([[10.0, 12.0, 9.0, 8.0, 8.0, 8.0]])])   # (1, 584, 7)
    boxes, scores = coder.decode(y)   # recovers the box with score 1
    ```
    """

    def __init__(self, image_shape, strides=(4, 8, 16), anchor_sizes=None):
        self.image_shape, self.strides, self.anchor_sizes = _check_geometry(image_shape, strides, anchor_sizes)
        self.spatial_dims = len(self.image_shape)
        d = self.spatial_dims
        self.grid_shapes = tuple(tuple(n // s for n in self.image_shape) for s in self.strides)
        origins, cell_stride, cell_anchor, offsets = [], [], [], [0]
        for s, a, grid in zip(self.strides, self.anchor_sizes, self.grid_shapes):
            idx = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing="ij"), -1).reshape(-1, d)
            origins.append(idx[:, ::-1].astype("float64"))  # array-axis order -> (x, y[, z])
            cell_stride.append(np.full(len(idx), float(s)))
            cell_anchor.append(np.full(len(idx), a))
            offsets.append(offsets[-1] + len(idx))
        self._origins = np.concatenate(origins)
        self._cell_stride = np.concatenate(cell_stride)
        self._cell_anchor = np.concatenate(cell_anchor)
        self._level_offsets = tuple(offsets)
        self.num_cells = offsets[-1]
        self.channels = 1 + 2 * d

    def get_config(self):
        return {"image_shape": self.image_shape, "strides": self.strides, "anchor_sizes": self.anchor_sizes}

    def assign_level(self, sizes):
        """Pyramid level of each box: anchor size closest to the geometric-mean side (log scale)."""
        sizes = np.asarray(sizes, "float64").reshape(-1, self.spatial_dims)
        g = np.exp(np.mean(np.log(sizes), axis=1))
        return np.argmin(np.abs(np.log(g)[:, None] - np.log(np.asarray(self.anchor_sizes))[None, :]), axis=1)

    def cell_index(self, level, centre):
        """Flat output index of the cell of `level` that contains `centre` (x, y[, z])."""
        s = self.strides[level]
        grid = self.grid_shapes[level]
        ijk = np.floor(np.asarray(centre, "float64") / s).astype(int)[::-1]  # -> array-axis order
        ijk = np.minimum(ijk, np.asarray(grid) - 1)
        return self._level_offsets[level] + int(np.ravel_multi_index(tuple(ijk), grid))

    def encode(self, boxes):
        """Per-cell targets `(N, num_cells, 1 + 2d)` float32 from a list of `(K_i, 2d)` boxes (centre format).

        Raises:
            ValueError: wrong box size for the image's dims, non-positive sizes,
                centres outside the image.
        """
        if isinstance(boxes, np.ndarray) and boxes.ndim == 2:
            boxes = [boxes]
        d = self.spatial_dims
        out = np.zeros((len(boxes), self.num_cells, self.channels), "float32")
        extent = np.asarray(self.image_shape[::-1], "float64")  # (W, H[, D]) for (x, y[, z])
        for n, b in enumerate(boxes):
            b = np.asarray(ops.convert_to_numpy(b) if not isinstance(b, np.ndarray) else b, "float64")
            b = b.reshape(-1, b.shape[-1]) if b.size else np.zeros((0, 2 * d))
            if b.shape[-1] != 2 * d:
                raise ValueError(
                    f"`boxes` for a {d}D image must have {2 * d} values per box "
                    f"({'cx, cy, w, h' if d == 2 else 'cx, cy, cz, w, h, d'}). Received: boxes[{n}].shape={b.shape}"
                )
            if np.any(b[:, d:] <= 0):
                raise ValueError(f"`boxes` sizes must be > 0. Received: boxes[{n}]={b.tolist()}")
            if np.any(b[:, :d] < 0) or np.any(b[:, :d] >= extent):
                raise ValueError(
                    f"`boxes` centres must lie inside the image (0 <= c < {tuple(extent)} for x, y[, z]). "
                    f"Received: boxes[{n}]={b.tolist()}"
                )
            levels = self.assign_level(b[:, d:])
            for box, level in zip(b, levels):
                c = self.cell_index(level, box[:d])
                if out[n, c, 0] == 1.0:
                    warnings.warn(
                        f"Two boxes of image {n} fall into the same cell at stride {self.strides[level]}; "
                        f"keeping the first, dropping {box.tolist()}.", stacklevel=2)
                    continue
                s, a = self.strides[level], self.anchor_sizes[level]
                out[n, c, 0] = 1.0
                out[n, c, 1:1 + d] = box[:d] / s - self._origins[c]
                out[n, c, 1 + d:] = np.log(box[d:] / a)
        return out

    def decode_all(self, predictions):
        """All cells as boxes: `(boxes (N, num_cells, 2d), scores (N, num_cells))`, no thresholding."""
        p = np.asarray(ops.convert_to_numpy(predictions), "float64")
        if p.ndim != 3 or p.shape[1:] != (self.num_cells, self.channels):
            raise ValueError(
                f"`predictions` must have shape (N, {self.num_cells}, {self.channels}) for this coder. "
                f"Received: predictions.shape={p.shape}"
            )
        d = self.spatial_dims
        centres = (self._origins[None] + p[..., 1:1 + d]) * self._cell_stride[None, :, None]
        sizes = self._cell_anchor[None, :, None] * np.exp(p[..., 1 + d:])
        return np.concatenate([centres, sizes], axis=-1), p[..., 0]

    def decode(self, predictions, score_threshold=0.5, iou_threshold=0.5, max_detections=100):
        """Boxes per image after score thresholding and non-max suppression.

        Args:
            predictions: `(N, num_cells, 1 + 2d)` model output (or encoded targets).
            score_threshold: keep cells with `p >= score_threshold` (default 0.5).
            iou_threshold: NMS IoU threshold (default 0.5); the N-D `keras.ops`
                NMS of `keras_medseg.boxes` (2D and 3D, every backend).
            max_detections: most boxes per image (default 100).

        Returns:
            `(boxes, scores)`: lists of `N` arrays `(K_i, 2d)` (centre format)
            and `(K_i,)`, sorted by decreasing score.
        """
        all_boxes, all_scores = self.decode_all(predictions)
        out_b, out_s = [], []
        for b, s in zip(all_boxes, all_scores):
            kb, ks = box_utils.non_max_suppression(b, s, iou_threshold=iou_threshold,
                                                   score_threshold=score_threshold,
                                                   max_detections=max_detections)
            out_b.append(kb)
            out_s.append(ks)
        return out_b, out_s


def encode_targets(boxes, image_shape, strides=(4, 8, 16), anchor_sizes=None):
    """Per-cell training targets for `fpn_detector` (see `BoxCoder.encode`).

    Args:
        boxes: list of `(K_i, 4)` (2D) or `(K_i, 6)` (3D) boxes per image, centre format.
        image_shape: spatial shape `(H, W)` or `(D, H, W)`.
        strides: pyramid strides, default `(4, 8, 16)`.
        anchor_sizes: one anchor side per stride (default: the strides).

    Returns:
        float32 array `(N, num_cells, 1 + 2d)`.
    """
    return BoxCoder(image_shape, strides, anchor_sizes).encode(boxes)


def decode(predictions, image_shape, strides=(4, 8, 16), anchor_sizes=None, score_threshold=0.5,
           iou_threshold=0.5, max_detections=100):
    """Boxes and scores per image from `fpn_detector` outputs (see `BoxCoder.decode`)."""
    return BoxCoder(image_shape, strides, anchor_sizes).decode(
        predictions, score_threshold=score_threshold, iou_threshold=iou_threshold,
        max_detections=max_detections)
