"""Losses that Keras does not ship, in one namespace: `keras_medseg.losses.NAME`.

- `attention`: attention-mask supervision (`AttentionMaskLoss`, `attention_mask_loss`,
  `attention_mask_to_grid`);
- `boxes`: the detector's per-cell loss (`BoxLoss`, `box_loss`);
- `multilabel`: one sigmoid channel per (possibly overlapping) region (`MultiLabelDiceLoss`,
  `MultiLabelDiceCELoss`, `multilabel_dice_loss`, `multilabel_crossentropy`);
- `segmentation`: sparse 2D/3D label-map losses with an ignore label (`DiceLoss`, `DiceCELoss`,
  `TverskyLoss`, `FocalLoss`, `SegmentationCrossentropy` and their functions).
"""

from keras_medseg.losses.attention import (
    AttentionMaskLoss,
    attention_mask_loss,
    attention_mask_to_grid,
)
from keras_medseg.losses.boxes import BoxLoss, box_loss
from keras_medseg.losses.multilabel import (
    MultiLabelDiceCELoss,
    MultiLabelDiceLoss,
    multilabel_crossentropy,
    multilabel_dice_loss,
)
from keras_medseg.losses.segmentation import (
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    SegmentationCrossentropy,
    TverskyLoss,
    dice_loss,
    focal_loss,
    sparse_segmentation_crossentropy,
    tversky_loss,
)

__all__ = [
    "AttentionMaskLoss",
    "BoxLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "MultiLabelDiceCELoss",
    "MultiLabelDiceLoss",
    "SegmentationCrossentropy",
    "TverskyLoss",
    "attention_mask_loss",
    "attention_mask_to_grid",
    "box_loss",
    "dice_loss",
    "focal_loss",
    "multilabel_crossentropy",
    "multilabel_dice_loss",
    "sparse_segmentation_crossentropy",
    "tversky_loss",
]
