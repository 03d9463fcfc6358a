"""Bad-input sweep across the public API (issue 8).

Each row feeds one bad input to one public entry point and asserts the
exception type and that the message names the argument or the file. A user
mistake must never surface as a backend traceback.
"""

import os

import h5py
import keras
import numpy as np
import pytest

from keras_medseg import data, evaluation, explain, kernels, layers, losses, ops, zoo
from keras_medseg.cli import main as cli_main
from keras_medseg.inference import sliding_window

R = np.random.default_rng(0)
IMG2 = R.standard_normal((1, 8, 8, 1)).astype("float32")
IMG3 = R.standard_normal((1, 6, 6, 6, 1)).astype("float32")


def _classifier():
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))


def _write(path, content):
    with open(path, "wb") as f:
        f.write(content)
    return str(path)


def _truncated_h5(tmp):
    path = os.path.join(tmp, "store.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("patches", data=np.zeros((64, 8, 8, 3), "uint8"))
    raw = open(path, "rb").read()
    return _write(os.path.join(tmp, "truncated.h5"), raw[: len(raw) // 3])


def _folder(tmp, with_mask=True, corrupt=False):
    from skimage import io

    root = os.path.join(tmp, "ds")
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    io.imsave(os.path.join(root, "images", "a.png"), np.zeros((8, 8), "uint8"), check_contrast=False)
    if with_mask:
        path = os.path.join(root, "masks", "a.png")
        if corrupt:
            _write(path, b"\x89PNG garbage")
        else:
            io.imsave(path, np.zeros((8, 8), "uint8"), check_contrast=False)
    return root


# (id, function of a temporary folder that makes the bad call, exception, message regex)
CASES = [
    # ops
    ("edge_indicator rank", lambda t: ops.edge_indicator(np.zeros((8, 8))), ValueError, "image"),
    ("edge_indicator 4 spatial dims", lambda t: ops.edge_indicator(np.zeros((1, 4, 4, 4, 4, 1))), ValueError,
     "image"),
    ("edge_indicator not an array", lambda t: ops.edge_indicator("ct.png"), TypeError, "image"),
    ("upwind_advection velocity channels", lambda t: ops.upwind_advection(IMG2, np.zeros((1, 8, 8, 3))),
     ValueError, "velocity"),
    ("upwind_grad_norm speed grid", lambda t: ops.upwind_grad_norm(IMG2, np.zeros((1, 4, 4, 1))), ValueError,
     "speed"),
    ("curvature eps 0", lambda t: ops.curvature(IMG2, eps=0.0), ValueError, "eps"),
    ("curvature eps negative", lambda t: ops.curvature(IMG2, eps=-1e-3), ValueError, "eps"),
    ("implicit h 0", lambda t: ops.implicit_conv_solve(IMG2, np.ones((3, 3, 1)), h=0.0), ValueError, "h"),
    ("implicit h nan", lambda t: ops.implicit_conv_solve(IMG2, np.ones((3, 3, 1)), h=float("nan")),
     ValueError, "h"),
    ("implicit even kernel", lambda t: ops.implicit_conv_solve(IMG2, np.ones((4, 4, 1)), h=1.0), ValueError,
     "kernel"),
    ("implicit kernel channels", lambda t: ops.implicit_conv_solve(IMG2, np.ones((3, 3, 2)), h=1.0),
     ValueError, "kernel"),
    ("implicit kernel larger than image", lambda t: ops.implicit_conv_solve(IMG2, np.ones((9, 9, 1)), h=1.0),
     ValueError, "kernel"),
    ("attention grid mismatch", lambda t: ops.attention_pool(IMG2, np.zeros((1, 4, 4, 2))), ValueError,
     "logits"),
    # layers and losses
    ("ImplicitFFTConv h", lambda t: layers.ImplicitFFTConv(h=-1.0), ValueError, "h"),
    ("ImplicitFFTConv even kernel", lambda t: layers.ImplicitFFTConv(kernel_size=4), ValueError, "kernel_size"),
    ("CurvatureConv eps", lambda t: layers.CurvatureConv(eps=0.0), ValueError, "eps"),
    ("AttentionPool heads", lambda t: layers.AttentionPool(heads=0), ValueError, "heads"),
    ("UpwindConv mode", lambda t: layers.UpwindConv(mode="sideways"), ValueError, "mode"),
    ("IMEXBlock width", lambda t: layers.IMEXBlock(filters=8)(np.zeros((1, 8, 8, 4), "float32")), ValueError,
     "filters"),
    ("EdgeIndicator 1D input", lambda t: layers.EdgeIndicator()(np.zeros((1, 8, 1), "float32")), ValueError,
     "image|input"),
    ("AttentionMaskLoss rank", lambda t: losses.AttentionMaskLoss()(np.ones((1, 8, 8, 8, 1)),
                                                                    np.ones((1, 4, 4, 1)) / 16),
     ValueError, "mask|y_true|attention|y_pred"),
    # zoo
    ("zoo unknown name", lambda t: zoo.build("unte"), ValueError, "unet"),
    ("zoo unknown argument", lambda t: zoo.build("unet", depht=3), ValueError, "depht"),
    ("zoo wrong type", lambda t: zoo.build("unet", filters="16"), ValueError, "filters"),
    ("zoo spatial_dims", lambda t: zoo.build("unet", spatial_dims=4), ValueError, "spatial_dims"),
    ("zoo negative depth", lambda t: zoo.build("unet", depth=-1), ValueError, "depth"),
    ("zoo negative num_classes", lambda t: zoo.build("imexnet", num_classes=-2), ValueError, "num_classes"),
    ("zoo describe unknown", lambda t: zoo.describe("vgg"), ValueError, "vgg16_classifier"),
    # data
    ("qtips negative n", lambda t: data.qtips(-1), ValueError, "n"),
    ("qtips zero size", lambda t: data.qtips(4, size=0), ValueError, "size"),
    ("folder missing", lambda t: data.load_folder(os.path.join(t, "nowhere")), FileNotFoundError, "nowhere"),
    ("folder missing mask", lambda t: data.load_folder(_folder(t, with_mask=False)), (FileNotFoundError,
                                                                                     ValueError), "a.png"),
    ("folder corrupt mask", lambda t: data.load_folder(_folder(t, corrupt=True)), ValueError, "a.png"),
    ("extract_patches mask shape", lambda t: data.extract_patches(np.zeros((64, 64, 3), "uint8"),
                                                                  np.zeros((32, 32), bool), size=16),
     ValueError, "mask"),
    ("extract_patches size", lambda t: data.extract_patches(np.zeros((64, 64, 3), "uint8"), size=-5),
     ValueError, "size"),
    ("patch store missing", lambda t: data.PatchStore(os.path.join(t, "none.h5")), FileNotFoundError,
     "none.h5"),
    ("patch store not hdf5", lambda t: data.PatchStore(_write(os.path.join(t, "notes.h5"), b"hello")),
     ValueError, "notes.h5"),
    ("patch store truncated", lambda t: data.PatchStore(_truncated_h5(t)), ValueError, "truncated.h5"),
    # explain
    ("saliency rank", lambda t: explain.saliency(_classifier(), np.zeros((8, 8, 1), "float32"), 0), ValueError,
     "x"),
    ("saliency class index", lambda t: explain.saliency(_classifier(), IMG2, 7), ValueError, "class_index"),
    ("smoothgrad samples", lambda t: explain.smoothgrad(_classifier(), IMG2, 0, samples=0), ValueError,
     "samples"),
    ("occlusion patch", lambda t: explain.occlusion(_classifier(), IMG2, 0, patch=0), ValueError, "patch"),
    ("gradcam layer", lambda t: explain.gradcam(_classifier(), IMG2, 0, layer="nope"), ValueError, "nope"),
    ("lime samples", lambda t: explain.lime(_classifier(), IMG2, 0, samples=0), ValueError, "samples"),
    # kernels
    ("singular values grid", lambda t: kernels.conv_singular_values(np.ones((5, 5)), (3, 3)), ValueError,
     "grid_shape|kernel"),
    ("identify 1D kernel", lambda t: kernels.identify(np.ones(9)), ValueError, "kernel"),
    ("reference even size", lambda t: kernels.reference_kernels(size=2), ValueError, "size"),
    # evaluation
    ("froc lengths", lambda t: evaluation.froc_curve([0.1, 0.2], [1], ["a", "b"], ["b"]), ValueError,
     "tumor_ids"),
    ("froc nan scores", lambda t: evaluation.froc_curve([np.nan, 0.2], [1, -1], ["a", "b"], ["b"]), ValueError,
     "scores"),
    ("slide_level empty", lambda t: evaluation.slide_level([], []), ValueError, "scores"),
    ("froc negative rate", lambda t: evaluation.froc_score([0.1, 0.9], [1, -1], ["a", "b"], ["b"],
                                                           fp_rates=(-1,)), ValueError, "fp_rates"),
    # inference
    ("sliding window overlap", lambda t: sliding_window(_classifier(), IMG2[0], (8, 8), overlap=1.5),
     ValueError, "overlap"),
    ("sliding window nan", lambda t: sliding_window(_classifier(), np.full((8, 8, 1), np.nan), (8, 8)),
     ValueError, "volume"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(case, tmp_path):
    _, call, exc, match = case
    with pytest.raises(exc, match=match):
        call(str(tmp_path))


def test_sweep_is_wide():
    assert len(CASES) >= 40


@pytest.mark.parametrize("argv,needle", [
    (["evaluate", "missing.keras", "--data", "qtips"], "missing.keras"),
    (["explain", "missing.keras", "image.png"], "missing.keras"),
    (["kernels", "missing.keras"], "missing.keras"),
    (["train", "unte", "--data", "qtips"], "unet"),
])
def test_cli_reports_bad_input_in_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(argv) != 0
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_nan_never_becomes_a_valid_segmentation():
    """Documented behaviour: the ops propagate NaN; model entry points refuse it.

    A Keras model on its own can hide a NaN pixel (max pooling drops it), so
    keras-medseg's entry points (sliding-window inference, data loaders, the
    CLI) check inputs for NaN/inf and raise instead of returning a clean mask.
    """
    x = IMG2.copy()
    x[0, 3, 3, 0] = np.nan
    assert np.isnan(np.asarray(keras.ops.convert_to_numpy(ops.edge_indicator(x)))).any()
    model = zoo.build("unet", depth=2, filters=4, batch_norm=False)
    with pytest.raises(ValueError, match="NaN"):
        sliding_window(model, x[0], (8, 8))
