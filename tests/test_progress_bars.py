"""Progress bars of `evaluate`, `evaluate --froc`, `patches extract` and training from a patch store.

Keras progress bars (`model.predict`/`fit`, verbose=1) go to stdout and show
`.../step`; the WSI tools' tqdm bars go to stderr. `--quiet` turns them off.
"""

import json
import os

import keras
import numpy as np
import pytest

from keras_medseg.cli import main
from keras_medseg.data.slides import PatchStore

KERAS_BAR = "/step"  # what every Keras progress bar line ends with


def _segmenter(path, classes=4):
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Conv2D(classes, 1, activation="softmax")(inputs)
    keras.Model(inputs, outputs).save(path)
    return str(path)


def _classifier(path, size=16):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x)).save(path)
    return str(path)


def _store(path, size=16):
    rng = np.random.default_rng(0)
    with PatchStore(path, "w", patch_size=size) as s:
        for k in range(4):  # slides 0, 1 with one tumour each, 2, 3 normal
            x = rng.integers(0, 100, (6, size, size, 3))
            labels = np.zeros(6, int)
            if k < 2:
                x[:2] += 150
                labels[:2] = 1
            s.append(x, labels, f"s{k}", np.where(labels == 1, 0, -1))
    return str(path)


def test_evaluate_shows_a_bar_unless_quiet(tmp_path, capsys):
    model = _segmenter(tmp_path / "m.keras")
    common = ["evaluate", model, "--n", "4", "--size", "16", "--batch-size", "2"]
    assert main(common) == 0
    out = capsys.readouterr().out
    assert KERAS_BAR in out and "2/2" in out and "Dice" in out
    assert main(common + ["--quiet"]) == 0
    out = capsys.readouterr().out
    assert KERAS_BAR not in out and "Dice" in out


def test_evaluate_froc_on_a_patch_store_shows_a_bar_unless_quiet(tmp_path, capsys):
    model, store = _classifier(tmp_path / "c.keras"), _store(tmp_path / "p.h5")
    common = ["evaluate", model, "--data", store, "--froc", "--batch-size", "8"]
    assert main(common) == 0
    out = capsys.readouterr().out
    assert KERAS_BAR in out and "3/3" in out and "24 patches, 4 slides" in out
    assert main(common + ["--quiet"]) == 0
    out = capsys.readouterr().out
    assert KERAS_BAR not in out and "24 patches, 4 slides" in out


def _prediction_dir(path, slide_id, scores, tumor_ids):
    os.makedirs(path)
    np.savez(os.path.join(path, "predictions.npz"), scores=np.asarray(scores, float),
             tumor_ids=np.asarray(tumor_ids, np.int32))
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump({"slide_id": slide_id, "num_tumors": int(max(tumor_ids) + 1), "slide_score": float(max(scores))},
                  f)
    return str(path)


def test_evaluate_froc_predictions_shows_a_bar_unless_quiet(tmp_path, capsys):
    t = _prediction_dir(tmp_path / "t", "t", [0.9, 0.2, 0.1], [0, -1, -1])
    n = _prediction_dir(tmp_path / "n", "n", [0.3, 0.1], [-1, -1])
    assert main(["evaluate", "--froc", "--predictions", t, n]) == 0
    captured = capsys.readouterr()
    assert "read slide predictions" in captured.err and "2/2" in captured.err
    assert "FROC score" in captured.out
    assert main(["evaluate", "--froc", "--predictions", t, n, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "read slide predictions" not in captured.err and "FROC score" in captured.out


def test_patches_extract_shows_a_bar_unless_quiet(tmp_path, capsys):
    from skimage import io

    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    mask = np.zeros((48, 48), np.uint8)
    mask[20:28, 20:28] = 255
    io.imsave(tmp_path / "slide.png", image, check_contrast=False)
    io.imsave(tmp_path / "mask.png", mask, check_contrast=False)
    slide, mask_path = str(tmp_path / "slide.png"), str(tmp_path / "mask.png")
    # With a mask image (read whole) and streamed (tile by tile), each with and without --quiet.
    runs = [
        ([slide, mask_path, "--out", str(tmp_path / "a.h5"), "--size", "16", "--slide-id", "s01"], "extract s01"),
        ([slide, "--out", str(tmp_path / "b.h5"), "--size", "16", "--min-tissue", "0"], "extract slide"),
    ]
    for arguments, label in runs:
        assert main(["patches", "extract", *arguments]) == 0
        captured = capsys.readouterr()
        assert label in captured.err and "patch" in captured.err
        assert "the store now holds" in captured.out
        os.remove(arguments[arguments.index("--out") + 1])
        assert main(["patches", "extract", *arguments, "--quiet"]) == 0
        captured = capsys.readouterr()
        assert label not in captured.err and "the store now holds" in captured.out

@pytest.mark.slow  # builds and fits a VGG16 classifier on 16 px patches (about 20 s on a busy machine)
def test_train_on_a_patch_store_shows_a_bar(tmp_path, capsys, eager_tf_functions):
    store = _store(tmp_path / "p.h5", size=32)
    assert main(["train", "vgg16_classifier", "--data", store, "--epochs", "1", "--batch-size", "4",
                 "--n-train", "8", "--n-val", "6", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert KERAS_BAR in out and "2/2" in out and "best validation ROC-AUC" in out
