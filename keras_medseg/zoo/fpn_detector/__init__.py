"""`fpn_detector`: feature-pyramid box detector with per-cell heads (2D and 3D).

Architecture (A. Yala, "Advanced Imaging: Localization and Segmentation",
"Bounding box prediction"): a small convolutional
backbone (stride-2 stages) -> a feature pyramid (1x1 lateral convolutions,
coarse levels upsampled and summed top-down into the finer ones, 3x3
smoothing) -> shared per-cell heads at every pyramid level predicting
`(p, centre offset relative to the cell, size)`.

Coordinate conventions (those of `keras_medseg.boxes`): voxel `i` covers
`[i, i + 1)`; `x` runs along W (last spatial axis), `y` along H, `z` along D;
boxes are `(cx, cy, w, h)` in 2D and `(cx, cy, cz, w, h, d)` in 3D, in voxels.

Cells and targets: a pyramid level with stride `s` splits the image into
cells of `s` voxels per axis. A ground-truth box is assigned to the level
whose anchor size (default: the cell size `s`) is closest to the box's
geometric-mean side in log scale, and to the cell containing its centre.
That cell's target is `(1, (c / s - cell index), log(size / anchor))`: the
offsets lie in [0, 1) (the model predicts them through a sigmoid), the sizes
are log-ratios to the level's anchor. All other cells have `p = 0` (their
box channels are ignored by the loss). The model output concatenates the
cells of every level, finest first, each level in row-major (array) order:
`(N, num_cells, 1 + 2d)` with channel 0 the probability `p`.

Example:

```python
from keras_medseg import data, zoo
from keras_medseg.zoo import fpn_detector
model = zoo.build("fpn_detector", spatial_dims=3, image_shape=(32, 32, 32))
x, boxes = data.synthetic_boxes(8, image_shape=(32, 32, 32))
coder = fpn_detector.box_coder(model)
model.fit(x, coder.encode(boxes), epochs=1)
pred_boxes, pred_scores = coder.decode(model.predict(x), score_threshold=0.5)
```

Reference:
    A. Yala, "Advanced Imaging: Localization and Segmentation" (lecture,
    CPH 100A); Lin et al., "Feature Pyramid Networks for Object Detection",
    CVPR 2017; Redmon et al., "YOLO" (per-cell heads).
"""

from keras_medseg.zoo.fpn_detector.coder import BoxCoder, decode, encode_targets
from keras_medseg.zoo.fpn_detector.model import CellPredictions, box_coder, fpn_detector

__all__ = ["BoxCoder", "CellPredictions", "box_coder", "decode", "encode_targets", "fpn_detector"]
