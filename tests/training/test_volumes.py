"""`keras-medseg train unet --data DIR --spatial-dims 3 --patch-size N` on NIfTI volumes of different
shapes, resumed, then a Python predict in each scan's own geometry and the metrics in mm, and the same through
`keras-medseg predict` and `keras-medseg evaluate`."""

import os

import keras
import numpy as np
import pytest

from keras_medseg.cli import main
from keras_medseg.data import load_preprocessing, read_image
from keras_medseg.evaluation import segmentation_metrics
from keras_medseg.predict.scans import predict_scan
from keras_medseg.training import default_augmentation, train_volumes
from tests.data.test_volume_dataset import write_cases


@pytest.mark.slow
def test_train_command_on_volumes_then_predict_and_evaluate(tmp_path, eager_tf_functions):
    root = write_cases(str(tmp_path / "data"), shapes=((20, 24, 16), (28, 18, 22), (16, 20, 18), (24, 24, 20)))
    out = str(tmp_path / "run")
    argv = ["train", "unet", "--data", root, "--spatial-dims", "3", "--patch-size", "16", "--epochs", "1",
            "--steps-per-epoch", "2", "--batch-size", "2", "--out", out, "--arg", "filters=4", "--arg", "depth=2",
            "--quiet"]
    assert main(argv) == 0
    best = os.path.join(out, "best.keras")
    spec = load_preprocessing(best)
    assert spec["patch_size"] == [16, 16, 16] and spec["spatial_dims"] == 3
    assert spec["class_names"] == ["class_0", "class_1"] and spec["intensity"] == {"preset": "zscore"}
    assert len(spec["split"]["validation"]) == 1 and len(spec["split"]["train"]) == 3
    assert main(argv) == 0  # the same command again resumes from the backup (nothing left to train)
    model = keras.saving.load_model(best)
    for name in spec["split"]["validation"]:
        rec = read_image(os.path.join(root, "images", f"{name}.nii.gz"))
        truth = read_image(os.path.join(root, "labels", f"{name}.nii.gz")).array.astype(np.int32)
        pred = predict_scan(model, rec, load_preprocessing(best), allow_padding=True)
        assert pred.shape == truth.shape
        metrics = segmentation_metrics(pred, truth, spacing=rec.spacing, classes={1: "ball"})
        assert set(metrics["ball"]) >= {"dice", "hd95", "assd"}
    # the same through the command line: predict writes label maps in each scan's geometry, evaluate scores
    # the held-out case only and writes the per-case CSV
    labels_out = str(tmp_path / "pred")
    assert main(["predict", best, "--input", os.path.join(root, "images"), "--output", labels_out, "--pad",
                 "--quiet"]) == 0
    import nibabel

    for name in os.listdir(os.path.join(root, "images")):
        written = nibabel.load(os.path.join(labels_out, name))
        source = nibabel.load(os.path.join(root, "images", name))
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
        assert written.shape == source.shape
    csv = str(tmp_path / "eval.csv")
    assert main(["evaluate", best, "--data", root, "--csv", csv, "--pad"]) == 0
    text = open(csv).read()
    assert spec["split"]["validation"][0] in text
    assert not any(case in text for case in spec["split"]["train"])


def test_train_volumes_arguments(tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        train_volumes("unet", str(tmp_path), val_fraction=1.5)
    aug = default_augmentation(3)
    assert [type(t).__name__ for t in aug.transforms][:3] == ["RandomFlip", "RandomAffine", "RandomElastic"]
