"""A data set's `dataset.json`: the Medical Segmentation Decathlon's and nnU-Net v2's.

* **Medical Segmentation Decathlon**: a `training` list of `{"image", "label"}`
  paths relative to the file (an image may be 4D, channels last), `modality`
  `{"0": "CT"}` and `labels` `{"0": "background", "1": "spleen"}` (value to name);
  MONAI's datalists add a `validation` list of the same form, a fixed split.
* **nnU-Net v2 raw data set** (`nnUNet_raw/Dataset001_X/dataset.json`): no
  `training` list, but `file_ending` (".nii.gz"), `channel_names` `{"0": "CT"}`
  and `labels` `{"background": 0, "spleen": 1}` (name to value), or
  region-based `{"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
  "enhancing tumor": 3}`. Its cases are `imagesTr/<case>_0000<file_ending>`,
  `<case>_0001...` (one file per channel) and `labelsTr/<case><file_ending>`
  beside the file, read as a data folder's (`keras_medseg.data.cases`), or its
  optional `dataset` table `{case: {"images": [...], "label": ...}}`.

`keras_medseg.data.cases.find_cases` lists the cases (`layout`, `listed_cases`,
`nnunet_folders`, `check_channels`); `keras_medseg.training.train_volumes`
takes the class names (`label_names`), nnU-Net's regions (`label_regions`) and
the channel names (`channel_names`) from here.
"""

import json
import os

from keras_medseg.data.scans.io import image_stem

__all__ = ["channel_names", "check_channels", "label_names", "label_regions", "layout", "listed_cases",
           "nnunet_folders", "read"]


def read(json_path):
    """The parsed `dataset.json` (a dict).

    Raises:
        ValueError: not JSON, or not an object (named).
    """
    with open(json_path) as f:
        try:
            meta = json.load(f)
        except ValueError as exc:
            raise ValueError(f"`source` is not a valid dataset.json: {exc}. Received: source={json_path!r}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"`source` is not a valid dataset.json: expected an object. Received: source={json_path!r}")
    return meta


def layout(meta, json_path):
    """"msd" (a `training` list), "nnunet_table" (nnU-Net's `dataset` table) or "nnunet" (`file_ending`:
    imagesTr/ + labelsTr/).

    Raises:
        ValueError: none of them (naming the file).
    """
    training = meta.get("training")
    if isinstance(training, list) and training:
        return "msd"
    if isinstance(meta.get("dataset"), dict) and meta["dataset"]:
        return "nnunet_table"
    if "file_ending" in meta:
        return "nnunet"
    raise ValueError(f"dataset.json needs a non-empty 'training' list of {{'image', 'label'}} pairs (Medical "
                     f"Segmentation Decathlon), or nnU-Net v2's 'file_ending' with imagesTr/ and labelsTr/ beside "
                     f"it. Received: source={json_path!r}")


def listed_cases(meta, json_path):
    """The `[{"name", "image", "label"}]` cases an MSD `training` list or nnU-Net's `dataset` table names, in
    file order, paths made absolute from the file's folder (nnU-Net's: `image` a tuple, one file per channel,
    `modalities` its channel numbers). A `validation` list beside `training` (MONAI's datalists, e.g.
    `load_decathlon_datalist(..., "validation")`) fixes the split: its cases follow the training ones, and
    every case gets `"split"`: "train" or "validation"."""
    root = os.path.dirname(os.path.abspath(json_path))

    def path(p):
        return os.path.normpath(os.path.join(root, p))
    if layout(meta, json_path) == "msd":
        validation = meta.get("validation")
        fixed = isinstance(validation, list) and bool(validation)
        cases = []
        for split, items in (("train", meta["training"]), ("validation", validation if fixed else [])):
            for item in items:
                if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("image", "label")):
                    raise ValueError(f"dataset.json '{'training' if split == 'train' else split}' entries need "
                                     f"'image' and 'label' files. Received: {item!r} in {json_path!r}")
                image, label = (path(item[k]) for k in ("image", "label"))
                cases.append({"name": image_stem(os.path.basename(image))[0] or os.path.basename(image),
                              "image": image, "label": label, **({"split": split} if fixed else {})})
        return cases
    cases = []
    for name, item in meta["dataset"].items():
        images = item.get("images") if isinstance(item, dict) else None
        if not isinstance(images, list) or not images or not isinstance(item.get("label"), str):
            raise ValueError(f"dataset.json 'dataset' entry {name!r} needs 'images' (a list of files, one per "
                             f"channel) and 'label' (a file). Received: {item!r} in {json_path!r}")
        cases.append({"name": str(name), "image": tuple(path(f) for f in images), "label": path(item["label"]),
                      "modalities": [f"{k:04d}" for k in range(len(images))]})
    return cases


def nnunet_folders(meta, json_path):
    """`(imagesTr, labelsTr)` folders of an nnU-Net v2 raw data set.

    Raises:
        ValueError: a `file_ending` that is not an extension such as ".nii.gz".
        FileNotFoundError: a missing folder (named).
    """
    ending = meta["file_ending"]
    if not isinstance(ending, str) or not ending.startswith("."):
        raise ValueError(f"dataset.json 'file_ending' must be a file extension such as '.nii.gz'. "
                         f"Received: {ending!r} in {json_path!r}")
    root = os.path.dirname(os.path.abspath(json_path))
    folders = tuple(os.path.join(root, sub) for sub in ("imagesTr", "labelsTr"))
    for folder in folders:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"nnU-Net dataset {json_path!r} has no {os.path.basename(folder)}/ folder: "
                                    f"expected {folder!r}")
    return folders


def check_channels(meta, cases, json_path):
    """nnU-Net's cases must have one `_NNNN` file per channel of `channel_names`.

    Raises:
        ValueError: images not numbered, or another channel count than `channel_names` lists (named).
    """
    ending, first = meta["file_ending"], cases[0]
    if not isinstance(first["image"], tuple):
        raise ValueError(f"nnU-Net images must be named <case>_0000{ending} (one file per channel); "
                         f"{first['image']!r} is not. Received: source={json_path!r}")
    names = meta.get("channel_names") or meta.get("modality")
    if isinstance(names, dict) and len(names) != len(first["image"]):
        raise ValueError(f"dataset.json 'channel_names' lists {len(names)} channels but the cases in "
                         f"{os.path.dirname(first['image'][0])!r} have {len(first['image'])} files each "
                         f"({first['name']}_0000{ending}, ...).")


def _labels(json_path):
    if json_path is None:
        return None
    labels = read(json_path).get("labels")
    return labels if isinstance(labels, dict) and labels else None


def _is_value(v):
    return isinstance(v, int) and not isinstance(v, bool)


def label_names(json_path):
    """`{mask value: class name}` from the `labels` table, or None (no file, no table, or nnU-Net's
    region-based one: `label_regions`). MSD maps values to names, nnU-Net names to values; both are read.

    Raises:
        ValueError: a table that is neither (named).
    """
    labels = _labels(json_path)
    if labels is None or any(isinstance(v, list) for v in labels.values()):
        return None
    try:
        return {int(k): str(v) for k, v in labels.items()}
    except ValueError:
        pass
    if all(_is_value(v) for v in labels.values()) and len(set(labels.values())) == len(labels):
        return {int(v): str(k) for k, v in labels.items()}
    raise ValueError(f"dataset.json `labels` must map integer mask values to names (MSD) or names to distinct "
                     f"integer values (nnU-Net). Received: {labels!r} in {json_path!r}")


def label_regions(json_path):
    """nnU-Net's region-based `labels` (any value a list) as `[(name, values)]`, every entry but the
    background's, in file order (the form `keras_medseg.data.scans.preprocess.check_regions` takes); None
    for a plain table.

    Raises:
        ValueError: a region that is not a mask value or a list of them (named).
    """
    labels = _labels(json_path)
    if labels is None or not any(isinstance(v, list) for v in labels.values()):
        return None
    regions = [(str(k), v) for k, v in labels.items() if v != 0 and v != [0]]
    for name, values in regions:
        if not (_is_value(values) or isinstance(values, list) and values and all(_is_value(x) for x in values)):
            raise ValueError(f"dataset.json region {name!r} must be a mask value or a list of them. "
                             f"Received: {values!r} in {json_path!r}")
    return regions


def channel_names(json_path):
    """The channel names in channel order from `channel_names` (nnU-Net v2) or `modality` (MSD), both
    `{"0": "FLAIR", "1": "T1w", ...}`, or None.

    Raises:
        ValueError: keys that are not channel numbers (named).
    """
    if json_path is None:
        return None
    meta = read(json_path)
    mods = meta.get("channel_names") or meta.get("modality")
    if not isinstance(mods, dict) or not mods:
        return None
    try:
        return [str(mods[k]) for k in sorted(mods, key=int)]
    except ValueError:
        raise ValueError(f"dataset.json `modality` / `channel_names` must map channel numbers to names. "
                         f"Received: {mods!r} in {json_path!r}") from None
