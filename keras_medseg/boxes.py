"""Axis-aligned box utilities for 2D and 3D detection (one adapter module).

Conventions (used by the whole package: `keras_medseg.zoo.fpn_detector`,
`keras_medseg.evaluation.detection`, `keras_medseg.data.synthetic.boxes`):

* Coordinates are continuous pixel/voxel coordinates: the voxel with array
  index `i` covers `[i, i + 1)` along its axis, so an image of width `W`
  spans `[0, W]`.
* `x` runs along the last spatial array axis (W), `y` along H and, in 3D, `z`
  along D (the first spatial axis of a channels-last `(N, D, H, W, C)` batch).
* `box_format="center"`: 2D `(cx, cy, w, h)` (Keras `"center_xywh"`), 3D
  `(cx, cy, cz, w, h, d)`. `box_format="corners"`: 2D `(x0, y0, x1, y1)`
  (Keras `"xyxy"`), 3D `(x0, y0, z0, x1, y1, z1)`.

2D boxes reuse `keras.utils.bounding_boxes` (format conversion, IoU); 3D IoU
and one N-D greedy non-max suppression (2D and 3D) are written here in
`keras.ops`, so they run on TensorFlow, JAX and torch. keras-cv is optional:
`non_max_suppression(..., implementation="keras_cv")` uses its 2D layer when
a user asks for it (`pip install keras-cv`).

Example:

```python
import numpy as np
from keras_medseg import boxes
a = np.array([[5.0, 5.0, 5.0, 4.0, 4.0, 4.0]])  # one 3D box, centre format
boxes.compute_iou(a, a)  # [[1.0]]
```
"""

import numpy as np
from keras import ops
from keras.utils import bounding_boxes as _kbb

BOX_FORMATS = ("center", "corners")
_KERAS_2D = {"center": "center_xywh", "corners": "xyxy"}


def box_dims(boxes, name="boxes"):
    """Spatial dims (2 or 3) of a `(..., 4)` or `(..., 6)` box array; `ValueError` otherwise."""
    shape = tuple(getattr(boxes, "shape", np.shape(boxes)))
    if len(shape) < 1 or shape[-1] not in (4, 6):
        raise ValueError(
            f"`{name}` must have a last axis of 4 (2D boxes) or 6 (3D boxes). "
            f"Received: {name}.shape={shape}"
        )
    return shape[-1] // 2


def check_box_format(box_format):
    """Check that `box_format` is one of `BOX_FORMATS` (`"center"`, `"corners"`).

    Args:
        box_format: the format name to check.

    Raises:
        ValueError: `box_format` is not a known format.
    """
    if box_format not in BOX_FORMATS:
        raise ValueError(
            f"`box_format` must be one of {list(BOX_FORMATS)}. Received: box_format={box_format!r}"
        )


_check_format = check_box_format  # former private name, kept as an alias


def convert_format(boxes, source, target):
    """Convert boxes between `"center"` and `"corners"` formats.

    Args:
        boxes: `(..., 4)` (2D) or `(..., 6)` (3D) tensor or array.
        source: `"center"` or `"corners"`.
        target: `"center"` or `"corners"`.

    Returns:
        Tensor of the same shape in the target format. 2D uses
        `keras.utils.bounding_boxes.convert_format`; 3D is written in
        `keras.ops`.

    Raises:
        ValueError: unknown format or a last axis other than 4 or 6.

    Example:

    ```python
    keras_medseg.boxes.convert_format([[5.0, 5.0, 2.0, 4.0]], "center", "corners")
    # [[4.0, 3.0, 6.0, 7.0]]
    ```
    """
    check_box_format(source)
    check_box_format(target)
    d = box_dims(boxes)
    boxes = ops.convert_to_tensor(boxes)
    if "float" not in str(boxes.dtype):
        boxes = ops.cast(boxes, "float32")
    if source == target:
        return boxes
    if d == 2:
        return _kbb.convert_format(boxes, source=_KERAS_2D[source], target=_KERAS_2D[target],
                                   dtype=boxes.dtype)
    a, b = boxes[..., :d], boxes[..., d:]
    if source == "center":
        return ops.concatenate([a - b / 2, a + b / 2], axis=-1)
    return ops.concatenate([(a + b) / 2, b - a], axis=-1)


def _iou_corners(b1, b2):
    """Pairwise IoU of corner-format N-D boxes `(M, 2d)`, `(K, 2d)` -> `(M, K)` in keras.ops."""
    d = int(b1.shape[-1]) // 2
    lo = ops.maximum(b1[:, None, :d], b2[None, :, :d])
    hi = ops.minimum(b1[:, None, d:], b2[None, :, d:])
    inter = ops.prod(ops.maximum(hi - lo, 0.0), axis=-1)
    vol1 = ops.prod(ops.maximum(b1[:, d:] - b1[:, :d], 0.0), axis=-1)
    vol2 = ops.prod(ops.maximum(b2[:, d:] - b2[:, :d], 0.0), axis=-1)
    union = vol1[:, None] + vol2[None, :] - inter
    return ops.divide_no_nan(inter, union)


_iou_corners_3d = _iou_corners  # former private name, kept as an alias


def compute_iou(boxes1, boxes2, box_format="center"):
    """Pairwise intersection over union of two sets of 2D or 3D boxes.

    Args:
        boxes1: `(M, 4)` or `(M, 6)` boxes.
        boxes2: `(K, 4)` or `(K, 6)` boxes (same spatial dims as `boxes1`).
        box_format: `"center"` (default) or `"corners"`, see the module docstring.

    Returns:
        `(M, K)` tensor of IoU values in [0, 1] (0 for empty boxes). 2D uses
        `keras.utils.bounding_boxes.compute_iou`; 3D is written in `keras.ops`.

    Raises:
        ValueError: mismatched or unsupported box sizes, unknown format.

    Example:

    ```python
    keras_medseg.boxes.compute_iou([[0, 0, 2, 2]], [[1, 0, 3, 2]], box_format="corners")
    # [[0.3333]]
    ```
    """
    check_box_format(box_format)
    d1, d2 = box_dims(boxes1, "boxes1"), box_dims(boxes2, "boxes2")
    if d1 != d2:
        raise ValueError(
            "`boxes1` and `boxes2` must both be 2D or both be 3D boxes. "
            f"Received: boxes1.shape={tuple(np.shape(boxes1))}, boxes2.shape={tuple(np.shape(boxes2))}"
        )
    for nm, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        if len(np.shape(b)) != 2:
            raise ValueError(f"`{nm}` must have shape (num_boxes, {2 * d1}). Received: {nm}.shape="
                             f"{tuple(np.shape(b))}")
    c1 = convert_format(boxes1, box_format, "corners")
    c2 = convert_format(boxes2, box_format, "corners")
    if d1 == 2:
        return _kbb.compute_iou(c1, c2, "xyxy")
    return _iou_corners(c1, c2)


def greedy_nms(iou_matrix, iou_threshold):
    """Greedy non-max suppression on a precomputed IoU matrix, in `keras.ops`.

    Args:
        iou_matrix: `(K, K)` IoU of boxes already sorted by decreasing score.
        iou_threshold: a box is suppressed when its IoU with a kept box of
            higher score is strictly greater than this.

    Returns:
        `(K,)` float tensor, 1 for kept boxes and 0 for suppressed ones.
    """
    iou_matrix = ops.convert_to_tensor(iou_matrix)
    k = int(iou_matrix.shape[0])
    over = ops.cast(iou_matrix > iou_threshold, "float32")

    def body(i, keep):
        column = ops.take(over, i, axis=1)
        suppressed = ops.max(keep * column)
        return keep + ops.one_hot(i, k, dtype="float32") * (1.0 - suppressed)

    return ops.fori_loop(0, k, body, ops.zeros((k,), "float32"))


NMS_IMPLEMENTATIONS = ("keras", "keras_cv")


def _nms_2d_keras_cv(boxes_c, scores, iou_threshold, max_detections):
    try:
        import keras_cv  # optional extra, imported lazily: it is slow to import
    except ImportError as err:
        raise ImportError(
            "`non_max_suppression(..., implementation='keras_cv')` needs keras-cv "
            "(`pip install keras-cv`; on torch it also needs torchvision). "
            "The default implementation='keras' needs nothing extra."
        ) from err

    layer = keras_cv.layers.NonMaxSuppression(
        bounding_box_format="xyxy", from_logits=False, iou_threshold=float(iou_threshold),
        confidence_threshold=-1e30, max_detections=int(max_detections))
    out = layer(boxes_c[None].astype("float32"), scores[None, :, None].astype("float32"))
    n = int(ops.convert_to_numpy(out["num_detections"])[0])
    kept = np.asarray(ops.convert_to_numpy(out["boxes"]))[0, :n]
    kept_scores = np.asarray(ops.convert_to_numpy(out["confidence"]))[0, :n]
    return kept, kept_scores


def non_max_suppression(boxes, scores, iou_threshold=0.5, score_threshold=None, max_detections=100,
                        box_format="center", implementation="keras"):
    """Greedy non-max suppression of the boxes of ONE image (2D or 3D).

    Boxes are visited in decreasing score order; a box is dropped when its IoU
    with an already kept box is greater than `iou_threshold`.

    Args:
        boxes: `(K, 4)` (2D) or `(K, 6)` (3D) boxes.
        scores: `(K,)` scores.
        iou_threshold: float in [0, 1], default 0.5.
        score_threshold: keep only boxes with `score >= score_threshold`
            before suppression (default `None`: keep all).
        max_detections: int, most boxes returned (default 100).
        box_format: `"center"` (default) or `"corners"`, for input and output.
        implementation: `"keras"` (default): `greedy_nms` on the N-D
            `keras.ops` IoU matrix, 2D and 3D, every backend; `"keras_cv"`:
            `keras_cv.layers.NonMaxSuppression` (2D only, needs keras-cv).

    Returns:
        `(kept_boxes, kept_scores)` NumPy arrays sorted by decreasing score.
        The `"keras"` result is checked against keras-cv's 2D layer and a
        NumPy loop in `tests/test_boxes.py`.

    Raises:
        ValueError: bad box shape, mismatched scores, threshold out of range,
            unknown `implementation`, or `"keras_cv"` with 3D boxes.
        ImportError: `implementation="keras_cv"` without keras-cv installed.

    Example:

    ```python
    b = [[5, 5, 5, 4, 4, 4], [5, 5, 6, 4, 4, 4], [20, 20, 20, 4, 4, 4]]
    keras_medseg.boxes.non_max_suppression(b, [0.9, 0.8, 0.7])  # keeps boxes 0 and 2
    ```
    """
    check_box_format(box_format)
    d = box_dims(boxes)
    if implementation not in NMS_IMPLEMENTATIONS:
        raise ValueError(f"`implementation` must be one of {list(NMS_IMPLEMENTATIONS)}. "
                         f"Received: implementation={implementation!r}")
    if implementation == "keras_cv" and d != 2:
        raise ValueError("`implementation='keras_cv'` supports 2D boxes only (last axis 4). "
                         f"Received: boxes with last axis {2 * d}")
    boxes = np.asarray(ops.convert_to_numpy(boxes), dtype="float64")
    scores = np.asarray(ops.convert_to_numpy(scores), dtype="float64")
    if boxes.ndim != 2 or scores.shape != boxes.shape[:1]:
        raise ValueError(
            "`boxes` must have shape (K, 4 or 6) and `scores` shape (K,). "
            f"Received: boxes.shape={boxes.shape}, scores.shape={scores.shape}"
        )
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"`iou_threshold` must be in [0, 1]. Received: iou_threshold={iou_threshold}")
    if isinstance(max_detections, bool) or int(max_detections) != max_detections or max_detections < 1:
        raise ValueError(f"`max_detections` must be a positive integer. Received: "
                         f"max_detections={max_detections}")
    if score_threshold is not None:
        keep = scores >= score_threshold
        boxes, scores = boxes[keep], scores[keep]
    empty = (np.zeros((0, 2 * d), "float32"), np.zeros((0,), "float32"))
    if len(scores) == 0:
        return empty
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    corners = np.asarray(ops.convert_to_numpy(convert_format(boxes.astype("float32"), box_format,
                                                             "corners")))
    if implementation == "keras_cv":
        kept, kept_scores = _nms_2d_keras_cv(corners, scores, iou_threshold,
                                             min(int(max_detections), len(scores)))
        kept = np.asarray(ops.convert_to_numpy(convert_format(kept, "corners", box_format)))
        return kept.astype("float32"), kept_scores.astype("float32")
    iou = _iou_corners(ops.convert_to_tensor(corners), ops.convert_to_tensor(corners))
    keep = np.asarray(ops.convert_to_numpy(greedy_nms(iou, float(iou_threshold)))) > 0.5
    idx = np.flatnonzero(keep)[: int(max_detections)]
    return boxes[idx].astype("float32"), scores[idx].astype("float32")
