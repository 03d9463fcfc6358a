"""Synthetic data sets made on the fly: Q-tips, blobs with attention masks, boxes, translation pairs.

Modules: `qtips` (the IMEXnet paper's Q-tips segmentation set), `blobs` (images with a
class-defining blob and its mask, for attention classifiers), `boxes` (images with boxes, for
detectors) and `translation` (paired and unpaired image-to-image sets for the GANs).
"""

from keras_medseg.data.synthetic import translation
from keras_medseg.data.synthetic.blobs import synthetic_blobs
from keras_medseg.data.synthetic.boxes import synthetic_boxes
from keras_medseg.data.synthetic.qtips import QtipsDataset, normalize_qtips, qtips, qtips_dataset

__all__ = ["QtipsDataset", "normalize_qtips", "qtips", "qtips_dataset", "synthetic_blobs", "synthetic_boxes",
           "translation"]
