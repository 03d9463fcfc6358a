"""A multi-modal case folder (4 MR-like channels, one file per modality) with 3 overlapping regions, end to end
from the command line: `train --modalities ... --regions ...`, `predict` (region maps and the merged map in the
input's geometry), `evaluate` (Dice per region); a modality on another grid gets one line naming it."""

import os

import nibabel as nib
import numpy as np
import pytest

from keras_medseg.cli import main
from keras_medseg.data import load_preprocessing
from keras_medseg.predict.scans import merged_label_values
from tests.data.test_modalities import MODALITIES, write_multimodal_cases

REGIONS = "whole=1,2,3;core=2,3;enhancing=3"


def _train_argv(root, out, *extra):
    return ["train", "unet", "--data", root, "--spatial-dims", "3", "--patch-size", "16", "--epochs", "1",
            "--steps-per-epoch", "2", "--batch-size", "2", "--out", out, "--arg", "filters=4", "--arg", "depth=2",
            "--modalities", ",".join(MODALITIES), "--regions", REGIONS, "--intensity", "zscore:nonzero",
            "--no-augment", "--quiet", *extra]


@pytest.mark.slow
def test_multimodal_multilabel_train_predict_evaluate(tmp_path, capsys, eager_tf_functions):
    root = write_multimodal_cases(str(tmp_path / "data"), n=4)
    out, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    assert main(_train_argv(root, out, "--cache-dir", cache)) == 0
    printed = capsys.readouterr().out
    # the disk cache holds every case read (4 modalities + labels each), preprocessed, and nothing half-written
    entries = os.listdir(cache)
    assert len(entries) == 4 and not [e for e in entries if e.startswith(".")]
    assert "regions ['whole', 'core', 'enhancing']" in printed and "Dice per region" in printed
    best = os.path.join(out, "best.keras")
    spec = load_preprocessing(best)
    assert spec["modalities"] == list(MODALITIES) and spec["modality_pattern"] == "{case}_{modality}"
    assert [r["values"] for r in spec["regions"]] == [[1, 2, 3], [2, 3], [3]]
    assert spec["intensity"] == {"preset": "zscore", "nonzero": True}
    log = open(os.path.join(out, "log.csv")).readline()
    assert all(f"val_dice_{r}" in log for r in ("whole", "core", "enhancing"))
    # predict: per-modality files grouped as in training; region maps and the merged map in the input's geometry
    pred = str(tmp_path / "pred")
    assert main(["predict", best, "--input", os.path.join(root, "images"), "--output", pred,
                 "--region-output", "both", "--quiet"]) == 0
    reference = nib.load(os.path.join(root, "images", "case00_t1.nii.gz"))
    merged = nib.load(os.path.join(pred, "case00.nii.gz"))
    np.testing.assert_allclose(merged.affine, reference.affine, atol=1e-6)
    assert merged.shape == reference.shape
    maps = [np.asarray(nib.load(os.path.join(pred, f"case00_{r}.nii.gz")).dataobj) for r in
            ("whole", "core", "enhancing")]
    assert all(m.shape == reference.shape and set(np.unique(m)) <= {0, 1} for m in maps)
    expected = np.select([maps[2] > 0, maps[1] > 0, maps[0] > 0], [3, 2, 1], 0)  # the innermost region wins
    np.testing.assert_array_equal(np.asarray(merged.dataobj), expected)
    assert sorted(os.listdir(pred)) == sorted(f"case{i:02d}{s}.nii.gz" for i in range(4)
                                              for s in ("", "_whole", "_core", "_enhancing"))
    # evaluate: the held-out case, one row per region
    csv = str(tmp_path / "eval.csv")
    assert main(["evaluate", best, "--data", root, "--csv", csv, "--quiet"]) == 0
    table = capsys.readouterr().out
    assert all(any(line.startswith(r) for line in table.splitlines()) for r in ("whole", "core", "enhancing"))
    rows = open(csv).read().splitlines()
    assert rows[0].startswith("case,role,class,dice") and len(rows) == 1 + 3


def test_modality_on_another_grid_is_one_line(tmp_path, capsys):
    root = write_multimodal_cases(str(tmp_path / "data"), n=2)
    bad = os.path.join(root, "images", "case01_flair.nii.gz")
    img = nib.load(bad)
    shifted = img.affine.copy()
    shifted[:3, 3] += (0.0, 0.0, 3.0)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), bad)
    assert main(_train_argv(root, str(tmp_path / "run"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "case01_flair.nii.gz" in err[0] and "case01_t1.nii.gz" in err[0] and "3 mm" in err[0]


def test_merge_rule_and_region_option_errors():
    from keras_medseg.commands._options import parse_regions

    regions = [{"name": n, "values": v} for n, v in parse_regions(REGIONS)]
    assert merged_label_values(regions) == [1, 2, 3]
    assert parse_regions("1,2;2") == [("region_0", [1, 2]), ("region_1", [2])]
    with pytest.raises(ValueError, match="--regions"):
        parse_regions("whole=a,b")


def test_every_volume_segmenter_gets_sigmoid_region_heads():
    import keras

    from keras_medseg import zoo
    from keras_medseg.training.volumes import multilabel_model

    names = [n for n in zoo.list() if zoo.get_spec(n).task == "segmentation" and 3 in zoo.get_spec(n).spatial_dims
             and {"num_classes", "in_channels"} <= set(zoo.describe(n)["arguments"])]  # what train_volumes builds
    assert {"unet", "segresnet", "unetr", "swin_unetr", "dynunet"} <= set(names)
    for name in names:
        tiny = {k: v for k, v in zoo.get_spec(name).tiny.items() if k not in ("deep_supervision", "num_classes")}
        size = tiny.get("input_size") or 16
        model = multilabel_model(zoo.build(name, spatial_dims=3, in_channels=4, num_classes=3, **tiny),
                                 ["whole", "core", "enhancing"])
        y = keras.ops.convert_to_numpy(model(np.random.default_rng(0).normal(size=(1, size, size, size, 4))))
        assert y.shape == (1, size, size, size, 3), name
        assert np.all((y > 0) & (y < 1)) and not np.allclose(y.sum(-1), 1.0), name  # sigmoids, not a softmax
    with pytest.raises(ValueError, match="one per region, 2"):
        multilabel_model(zoo.build("unet", spatial_dims=3, num_classes=3, depth=2, filters=4), ["a", "b"])


def test_predict_4d_nifti_with_a_region_model(tmp_path):
    from keras_medseg import zoo
    from keras_medseg.data import save_preprocessing
    from keras_medseg.predict.scans import predict_files
    from keras_medseg.training.volumes import multilabel_model

    root = write_multimodal_cases(str(tmp_path / "d"), n=1, layout="4d")
    model = multilabel_model(zoo.build("unet", spatial_dims=3, in_channels=4, num_classes=3, depth=2, filters=4),
                             ["whole", "core", "enhancing"])
    path = str(tmp_path / "m.keras")
    model.save(path)
    regions = [{"name": n, "values": v} for n, v in (("whole", [1, 2, 3]), ("core", [2, 3]), ("enhancing", [3]))]
    save_preprocessing(path, {"regions": regions, "patch_size": [16, 16, 16], "spatial_dims": 3,
                              "modalities": ["FLAIR", "T1w", "t1gd", "T2w"]})
    written = predict_files(path, os.path.join(root, "images"), str(tmp_path / "out"), progress=False,
                            region_output="regions")
    assert [os.path.basename(w[2]) for w in written] == ["case00_whole.nii.gz", "case00_core.nii.gz",
                                                         "case00_enhancing.nii.gz"]
    source = nib.load(os.path.join(root, "images", "case00.nii.gz"))
    for _, _, out in written:
        img = nib.load(out)
        assert img.shape == source.shape[:3]
        np.testing.assert_allclose(img.affine, source.affine, atol=1e-6)


@pytest.mark.slow
def test_nnunet_v2_raw_dataset_trains_with_its_regions_and_predicts_its_case_names(tmp_path, capsys,
                                                                                     eager_tf_functions):
    """`--data nnUNet_raw/Dataset001_X`: the channels from imagesTr's numbering, the regions from the
    dataset.json's region-based `labels` (no --modalities, no --regions); predict on nnU-Net-named files writes
    `<case>.nii.gz` as nnU-Net does; evaluate scores the held-out case on the same --data."""
    from tests.data.test_modalities import write_nnunet_dataset

    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    root = os.path.dirname(write_nnunet_dataset(str(tmp_path / "Dataset001_Brain"), labels=labels))
    out = str(tmp_path / "run")
    argv = ["train", "unet", "--data", root, "--spatial-dims", "3", "--patch-size", "16", "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "2", "--out", out, "--arg", "filters=4", "--arg", "depth=2",
            "--intensity", "zscore:nonzero", "--no-augment", "--quiet", "--cache-dir", "none"]
    assert main(argv) == 0
    assert "regions ['whole tumor', 'tumor core', 'enhancing tumor']" in capsys.readouterr().out
    best = os.path.join(out, "best.keras")
    spec = load_preprocessing(best)
    assert [r["values"] for r in spec["regions"]] == [[1, 2, 3], [2, 3], [3]]
    assert spec["modalities"] == ["0000", "0001", "0002", "0003"]
    pred = str(tmp_path / "pred")
    assert main(["predict", best, "--input", os.path.join(root, "imagesTr"), "--output", pred, "--quiet"]) == 0
    assert sorted(os.listdir(pred)) == ["case00.nii.gz", "case01.nii.gz", "case02.nii.gz"]
    merged = nib.load(os.path.join(pred, "case00.nii.gz"))
    np.testing.assert_allclose(merged.affine, nib.load(os.path.join(root, "imagesTr", "case00_0000.nii.gz")).affine)
    csv = str(tmp_path / "eval.csv")  # evaluate on the same --data: the held-out case, one row per region
    assert main(["evaluate", best, "--data", root, "--csv", csv, "--quiet"]) == 0
    rows = open(csv).read().splitlines()
    assert rows[0].startswith("case,role,class,dice") and len(rows) == 1 + 3
    assert [r.split(",")[2] for r in rows[1:]] == ["whole tumor", "tumor core", "enhancing tumor"]
