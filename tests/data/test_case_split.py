"""Which cases validate: nnU-Net's splits_final.json fold, a seeded K-fold, a dataset.json's validation list, or
a random fraction (`keras_medseg.data.case_split`); `train --fold/--splits` keeps that split in the spec."""

import json
import os

import numpy as np
import pytest

from keras_medseg.cli import main
from keras_medseg.data import load_preprocessing
from keras_medseg.data.case_split import split_cases

CASES = [{"name": f"c{i}"} for i in range(10)]


def _names(cases):
    return [c["name"] for c in cases]


def test_folds_partition_the_cases_and_each_is_validated_once():
    vals = []
    for k in range(5):
        train, val = split_cases(CASES, seed=3, fold=k, folds=5)
        assert len(val) == 2 and sorted(_names(train) + _names(val)) == sorted(_names(CASES))
        assert _names(val) == [n for n in _names(CASES) if n in _names(val)]  # the order of `cases`
        vals += _names(val)
    assert sorted(vals) == sorted(_names(CASES))
    assert split_cases(CASES, seed=3, fold=1) == split_cases(CASES, seed=3, fold=1)
    assert split_cases(CASES, seed=3, fold=1) != split_cases(CASES, seed=4, fold=1)
    # the random fraction (the default) is the one train_volumes always drew: permutation(seed)[:n_val]
    order = np.random.default_rng(0).permutation(10)
    assert set(_names(split_cases(CASES, seed=0)[1])) == {f"c{i}" for i in order[:2]}
    for bad, match in (({"fold": 5}, r"`fold` must be an int in \[0, 5\)"), ({"fold": 0, "folds": 11}, "`folds`"),
                       ({"splits": []}, "`splits` needs `fold`"), ({"val_fraction": 1.0}, "val_fraction")):
        with pytest.raises(ValueError, match=match):
            split_cases(CASES, **bad)
    fixed = [dict(c, split="validation" if i < 3 else "train") for i, c in enumerate(CASES)]
    assert _names(split_cases(fixed)[1]) == ["c0", "c1", "c2"]
    with pytest.raises(ValueError, match="its own `validation` list"):
        split_cases(fixed, fold=0)


def test_nnunet_splits_file(tmp_path):
    path = str(tmp_path / "splits_final.json")
    table = [{"train": [f"c{i}" for i in range(10) if i % 2 != k], "val": [f"c{i}" for i in range(10) if i % 2 == k]}
             for k in range(2)]
    json.dump(table, open(path, "w"))
    train, val = split_cases(CASES, fold=1, splits=path)
    assert _names(val) == ["c1", "c3", "c5", "c7", "c9"] and _names(train) == ["c0", "c2", "c4", "c6", "c8"]
    assert split_cases(CASES[:9], fold=0, splits=[{"train": ["c0"], "val": ["c1"]}]) == ([CASES[0]], [CASES[1]])
    with pytest.raises(ValueError, match=r"Fold 0 of the splits file names cases the data does not have: \['c9'\]"):
        split_cases(CASES[:9], fold=0, splits=path)
    with pytest.raises(ValueError, match=r"`fold` must be an int in \[0, 2\) for this splits file"):
        split_cases(CASES, fold=2, splits=path)
    with pytest.raises(ValueError, match="nnU-Net's splits_final.json"):
        split_cases(CASES, fold=0, splits=[{"train": "c0"}])


def test_train_fold_from_an_nnunet_splits_file(tmp_path, capsys, eager_tf_functions):
    from tests.data.test_volume_dataset import write_cases

    root = write_cases(str(tmp_path / "data"), shapes=((12, 12, 12),) * 4)
    names = sorted(f.split(".")[0] for f in os.listdir(os.path.join(root, "images")))
    splits = str(tmp_path / "splits_final.json")
    json.dump([{"train": names[1:], "val": names[:1]}, {"train": names[:3], "val": names[3:]}], open(splits, "w"))
    argv = ["train", "unet", "--data", root, "--spatial-dims", "3", "--patch-size", "8", "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "2", "--arg", "filters=2", "--arg", "depth=1", "--quiet",
            "--no-augment", "--cache-dir", "none", "--val-every", "9", "--out", str(tmp_path / "run")]
    assert main(argv + ["--fold", "1", "--splits", splits]) == 0
    assert load_preprocessing(str(tmp_path / "run" / "best.keras"))["split"] == {"train": names[:3],
                                                                                  "validation": names[3:]}
    # the same folder resumes only that run: another fold is one line, and the saved model stays as it was
    saved = open(str(tmp_path / "run" / "best.keras"), "rb").read()
    capsys.readouterr()
    assert main(argv + ["--fold", "0", "--splits", splits]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run with another split" in err[0] and "use a new --out" in err[0]
    assert open(str(tmp_path / "run" / "best.keras"), "rb").read() == saved
    assert main(argv + ["--fold", "1", "--splits", splits, "--epochs", "2"]) == 0  # its own arguments: resumes
    assert len(open(str(tmp_path / "run" / "log.csv")).read().splitlines()) == 1 + 2
    assert main(["train", "unet", "--data", "qtips", "--fold", "0", "--quiet"]) == 2
    assert "--fold and --splits split the cases of a volume data set" in capsys.readouterr().err
