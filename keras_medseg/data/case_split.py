"""Which cases train and which validate: a fixed list, a fold of a K-fold split, or a random fraction.

In this order of precedence (`split_cases`):

* nnU-Net's `splits_final.json` (`splits`: a list of `{"train": [...], "val": [...]}` case names,
  one entry per fold) and a `fold`: the same cases as an nnU-Net run on that fold, so the two
  are compared on the same validation cases (cases named in neither list are left out);
* a `fold` alone: fold `k` of `folds` (default 5) folds of the cases in a seeded random order;
* a dataset.json's own `validation` list (MONAI's datalists; `find_cases` marks each case's
  `split`);
* otherwise a seeded random `val_fraction` of the cases (at least one when there are two).
"""

import json
import os

import numpy as np

__all__ = ["split_cases"]


def _read_splits(splits):
    if isinstance(splits, (str, os.PathLike)):
        with open(splits) as f:
            try:
                return json.load(f)
            except ValueError as exc:
                raise ValueError(f"`splits` is not a JSON file: {exc}. Received: splits={os.fspath(splits)!r}") from exc
    return splits


def split_cases(cases, seed=0, val_fraction=0.2, fold=None, folds=5, splits=None):
    """`(train_cases, val_cases)`, each in the order of `cases` (the rules in the module docstring).

    Args:
        cases: `[{"name", ...}]` (`keras_medseg.data.cases.find_cases`), optionally with `"split"`.
        seed: int, the random order's seed.
        val_fraction: float in [0, 1), the validation share of a random split.
        fold: int in `[0, folds)` (with `splits`: an index into it), or None.
        folds: int >= 2, the number of folds without `splits` (default 5).
        splits: None, nnU-Net's `splits_final.json` path, or its list of `{"train", "val"}` dicts.

    Returns:
        two lists of cases.

    Raises:
        ValueError: a bad `fold`, `folds` or `val_fraction`, `splits` without `fold`, a splits file that is not
            nnU-Net's form or names a case the data does not have (named), a fold together with a
            dataset.json's validation list.
    """
    names = [c["name"] for c in cases]
    if splits is not None and fold is None:
        raise ValueError("`splits` needs `fold`, the entry of the splits file to use (e.g. --fold 0).")
    if fold is not None:
        if any(c.get("split") for c in cases):
            raise ValueError("The dataset.json has its own `validation` list; leave out `fold` (and `splits`) or "
                             "remove the list.")
        if splits is not None:
            table = _read_splits(splits)
            if not isinstance(table, list) or not all(isinstance(e, dict) and isinstance(e.get("train"), list)
                                                      and isinstance(e.get("val"), list) for e in table):
                raise ValueError("`splits` must be nnU-Net's splits_final.json: a list of {\"train\": [...], "
                                 f"\"val\": [...]}} case names. Received: splits={splits!r}")
            if not isinstance(fold, int) or not 0 <= fold < len(table):
                raise ValueError(f"`fold` must be an int in [0, {len(table)}) for this splits file. Received: "
                                 f"fold={fold!r}")
            entry = table[fold]
            unknown = sorted((set(entry["train"]) | set(entry["val"])) - set(names))
            if unknown:
                raise ValueError(f"Fold {fold} of the splits file names cases the data does not have: {unknown[:5]}"
                                 f"{' ...' if len(unknown) > 5 else ''}")
            val, train = set(entry["val"]), set(entry["train"])
            return [c for c in cases if c["name"] in train], [c for c in cases if c["name"] in val]
        if not isinstance(folds, int) or isinstance(folds, bool) or not 2 <= folds <= len(cases):
            raise ValueError(f"`folds` must be an int in [2, {len(cases)}] (the number of cases). "
                             f"Received: folds={folds!r}")
        if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < folds:
            raise ValueError(f"`fold` must be an int in [0, {folds}). Received: fold={fold!r}")
        order = np.random.default_rng(seed).permutation(len(cases))
        val = set(np.array_split(order, folds)[fold].tolist())
        return [c for i, c in enumerate(cases) if i not in val], [c for i, c in enumerate(cases) if i in val]
    if any(c.get("split") for c in cases):  # the dataset.json's own validation list
        return [c for c in cases if c.get("split") != "validation"], [c for c in cases
                                                                      if c.get("split") == "validation"]
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"`val_fraction` must be in [0, 1). Received: val_fraction={val_fraction!r}")
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = 0 if len(cases) < 2 or val_fraction == 0 else max(1, round(val_fraction * len(cases)))
    val = set(order[:n_val].tolist())
    return [c for i, c in enumerate(cases) if i not in val], [c for i, c in enumerate(cases) if i in val]
