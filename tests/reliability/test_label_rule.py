"""Issue 27, item 3: one label rule for every path, and label maps on their image's grid.

The same masks (an editor's 0/255 mask, a 255 "ignore" border around 0/1, fractional values, ids {0, 1, 4},
negative ids) go through the 2D folder loader, volume training (`VolumeDataset`), arrays (`load_data`) and
both evaluations; each path maps or refuses them alike, by `keras_medseg.data.cases`. A label map shifted by
5 mm, or stored with swapped axes and an affine that says so, is refused by volume training as by `evaluate`.
"""

import os
import re

import nibabel
import numpy as np
import pytest

from keras_medseg.cli import main
from keras_medseg.data import VolumeDataset, load_data, load_evaluation_data
from keras_medseg.predict.scan_evaluation import evaluate_scans
from keras_medseg.predict.scans import predict_files
from tests.data.scan_factory import write_nifti
from tests.test_scans import _threshold_model


def _mask(kind, shape):
    m = np.zeros(shape, np.float32 if kind == "fractional" else np.int16)
    inner = tuple(slice(2, s - 2) for s in shape)
    m[inner] = 1
    if kind == "editor-0-255":
        m = m * 255
    elif kind == "ignore-border-255":
        m[(0,) * len(shape)] = 255
        m[tuple([slice(None)] + [0] * (len(shape) - 1))] = 255
    elif kind == "fractional":
        m[inner] = 0.5
    elif kind == "sparse-ids":
        m[(0,) * len(shape)] = 4
    elif kind == "negative":
        m[(0,) * len(shape)] = -3
    return m


# kind -> (label values, or the refusal every path gives)
RULES = {
    "editor-0-255": [0, 1],
    "ignore-border-255": r"holds 255 next to other class ids.*pass ignore_value=255 \(--ignore-value 255\)",
    "fractional": r"must hold integer class ids; found fractional values \[0\.5\]",
    "sparse-ids": [0, 1, 4],
    "negative": r"has negative class ids \[-3\]",
}


def _folder2d(root, kind):
    for sub in ("images", "masks"):
        os.makedirs(root / sub, exist_ok=True)
    for i in range(2):
        np.save(root / "images" / f"c{i}.npy", np.random.default_rng(i).random((8, 8)).astype(np.float32))
        np.save(root / "masks" / f"c{i}.npy", _mask(kind, (8, 8)))
    return str(root)


def _volumes(root, kind, shift=None, swap=False):
    for sub in ("images", "labels"):
        os.makedirs(root / sub, exist_ok=True)
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    for i in range(2):
        write_nifti(root / "images" / f"v{i}.nii.gz", np.random.default_rng(i).random((8, 8, 6)).astype(np.float32),
                    aff)
        lab_aff, lab = aff.copy(), _mask(kind, (8, 8, 6))
        if shift is not None and i == 1:
            lab_aff[:3, 3] += shift
        if swap and i == 1:  # the same label map stored (j, i, k), with an affine that says so
            lab, lab_aff = lab.transpose(1, 0, 2), lab_aff[:, [1, 0, 2, 3]]
        write_nifti(root / "labels" / f"v{i}.nii.gz", lab, lab_aff)
    return str(root)


def _arrays(kind):
    x = np.zeros((2, 8, 8, 1), np.float32)
    y = np.stack([_mask(kind, (8, 8))] * 2)
    return (x, y), (x, y)


PATHS = {
    "2d-folder": lambda t, k: load_data(_folder2d(t, k)).label_values,
    "2d-folder-evaluation": lambda t, k: _evaluation_values(load_evaluation_data(_folder2d(t, k))),
    "volumes": lambda t, k: VolumeDataset(_volumes(t, k), patch_size=4).label_values,
    "arrays": lambda t, k: load_data(_arrays(k)).label_values,
}


def _evaluation_values(ev):
    return sorted({0, *np.unique(ev.y[ev.y >= 0]).tolist()})


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("kind", list(RULES))
def test_one_label_rule_on_every_path(kind, path, tmp_path):
    expected = RULES[kind]
    if isinstance(expected, str):
        with pytest.raises(ValueError) as info:
            PATHS[path](tmp_path, kind)
        assert re.search(expected, str(info.value)) and "\n" not in str(info.value), str(info.value)
        return
    if kind == "sparse-ids":
        with pytest.warns(UserWarning, match=r"hold the ids \[0, 1, 4\]; they are used as classes \[0, 1, 2\]"):
            values = PATHS[path](tmp_path, kind)
    else:
        values = PATHS[path](tmp_path, kind)
    if path == "2d-folder-evaluation":
        expected = list(range(len(expected)))  # the class ids the arrays hold
    assert values == expected


def test_ignore_value_on_every_path(tmp_path):
    d = load_data(_folder2d(tmp_path / "f", "ignore-border-255"), ignore_value=255)
    assert d.label_values == [0, 1] and (np.concatenate([d.y_train, d.y_val]) == -1).sum() == 2 * 8
    ds = VolumeDataset(_volumes(tmp_path / "v", "ignore-border-255"), patch_size=(16, 16, 12), ignore_value=255)
    x, y, w = ds[0]  # ignored voxels: class 0 with weight 0, what the losses skip
    assert y.min() == 0 and w.shape == y.shape and set(np.unique(w)) == {0.0, 1.0}
    a = load_data(_arrays("ignore-border-255"), ignore_value=255)
    assert a.label_values == [0, 1] and (a.y_train == -1).sum() == 2 * 8


def test_ignore_value_on_the_command_line(tmp_path, capsys, monkeypatch):
    import keras

    import keras_medseg.training

    data = _folder2d(tmp_path / "f", "ignore-border-255")
    argv = ["train", "unet", "--data", data, "--epochs", "1", "--quiet", "--out", str(tmp_path / "run")]
    assert main(argv) == 2  # refused while the masks load, before any model is built
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--ignore-value 255" in err, err
    given = {}

    def stop(*args, **kwargs):  # the 2D fit itself is tested elsewhere: here, what the CLI hands it
        given.update(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_medseg.training, "train", stop)
    assert main(argv + ["--ignore-value", "255"]) == 130
    assert given["ignore_value"] == 255 and given["resample_irregular"] is False
    monkeypatch.undo()
    # evaluate, on 2D folders and on scan folders: refused without the option, scored with it
    model = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(2, 1, activation="softmax")])
    model.save(str(tmp_path / "m2d.keras"))
    _threshold_model(str(tmp_path / "m3d.keras"), {"intensity": {"preset": "none"}})
    volumes = _volumes(tmp_path / "v", "ignore-border-255")
    for checkpoint, folder, extra in (("m2d.keras", data, []),
                                      ("m3d.keras", volumes, ["--pad", "--csv", str(tmp_path / "s.csv")])):
        argv = ["evaluate", str(tmp_path / checkpoint), "--data", folder, "--quiet", *extra]
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--ignore-value 255" in err, err
        assert main(argv + ["--ignore-value", "255"]) == 0, capsys.readouterr().err
    with open(tmp_path / "s.csv") as f:
        assert "v0" in f.read()


@pytest.mark.parametrize("fault", ["shifted-5mm", "swapped-axes"])
def test_label_map_off_its_image_is_refused_in_training_as_in_evaluate(fault, tmp_path):
    root = _volumes(tmp_path / "d", "editor-0-255", shift=(5.0, 0, 0) if fault == "shifted-5mm" else None,
                    swap=fault == "swapped-axes")
    pattern = r"Label map '.*v1\.nii\.gz' does not lie on its image's grid '.*v1\.nii\.gz': a corner voxel is " \
              + (r"5 mm" if fault == "shifted-5mm" else r"9\.9 mm")
    ds = VolumeDataset(root, patch_size=4, batch_size=2)
    with pytest.raises(ValueError, match=pattern):
        ds[0]
    model = str(tmp_path / "m.keras")
    _threshold_model(model, {"intensity": {"preset": "none"}})
    with pytest.raises(ValueError, match=pattern):
        evaluate_scans(model, root, csv_path=str(tmp_path / "s.csv"), allow_padding=True)


def test_original_label_values_round_trip_through_predict_and_evaluate(tmp_path):
    """A model trained on masks {0, 4} writes 4 again, and evaluate reads 4 as its class 1."""
    root = tmp_path / "d"
    _volumes(root, "editor-0-255")
    for name in ("v0", "v1"):  # masks that use 4 for the foreground
        lab = nibabel.load(str(root / "labels" / f"{name}.nii.gz"))
        fg = np.asarray(lab.dataobj) > 0
        write_nifti(root / "labels" / f"{name}.nii.gz", (fg * 4).astype(np.int16), lab.affine)
        write_nifti(root / "images" / f"{name}.nii.gz", fg.astype(np.float32), lab.affine)
    model = str(tmp_path / "m.keras")
    _threshold_model(model, {"intensity": {"preset": "none"}, "label_values": [0, 4]})
    predict_files(model, str(root / "images"), str(tmp_path / "out"), progress=False, allow_padding=True)
    assert set(np.unique(np.asarray(nibabel.load(str(tmp_path / "out" / "v0.nii.gz")).dataobj))) == {0, 4}
    result = evaluate_scans(model, str(root), csv_path=str(tmp_path / "s.csv"), allow_padding=True)
    assert [m["ball"]["dice"] for m in result.per_case.values()] == [1.0, 1.0]
