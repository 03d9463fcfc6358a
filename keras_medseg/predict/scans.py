"""Whole scans in, label maps out: the library behind `keras-medseg predict` and `evaluate` on scans.

* `predict_scan(model, record, spec)`: one `ImageRecord` -> label map on the
  scan's own voxel grid (reoriented and resampled to the model's training
  frame, predicted window by window, brought back exactly).
* `predict_files(model_path, inputs, output_dir)`: files or DICOM folders ->
  NIfTI label maps with each input's geometry.
* Multi-label models (a spec with `regions`, `keras_medseg.training.train_volumes`)
  give one 0/1 mask per region; `predict_files` writes them as one label map per
  region (`<name>_<region>.nii.gz`) and/or one merged map (`merged_label_values`:
  the last region listed that holds a voxel wins, so nested regions listed from
  the largest to the smallest give the innermost region), and `evaluate_scans`
  scores every region against the regions of the reference label map.
* Multi-modal scans (a spec with `modalities` and a `modality_pattern`) are read
  as one file per modality (`keras_medseg.data.scans.modalities`).
* `evaluate_scans(model_path, data_dir, csv_path)`: per-case, per-class Dice,
  IoU, HD95, ASSD and surface Dice in mm, with a summary; held-out cases by
  default.

The preprocessing comes from the spec saved with the model
(`keras_medseg.data.scans.preprocess.load_preprocessing`); models saved without one
get `default_preprocessing()` (own voxel grid, per-scan z-score).
"""

import csv
import dataclasses
import io
import logging
import os

import numpy as np

from keras_medseg.data.cases import find_cases, find_scans, mask_ids, standardize_labels
from keras_medseg.data.regions import merge_regions, regions_from_labels
from keras_medseg.data.scans.geometry import check_same_grid, from_model_space, to_model_space
from keras_medseg.data.scans.io import ImageRecord, read_image, write_image
from keras_medseg.data.scans.preprocess import intensity, resolve_preprocessing
from keras_medseg.data.sources import resolve_source
from keras_medseg.evaluation.surface import (
    METRIC_NAMES,
    segmentation_metrics,
    summarize_metrics,
)
from keras_medseg.inference import sliding_window
from keras_medseg.utils.atomic_io import atomic_write_text

__all__ = [
    "ScanEvaluation",
    "evaluate_scans",
    "format_summary",
    "merged_label_values",
    "original_label_values",
    "plan_outputs",
    "predict_files",
    "predict_scan",
]

logger = logging.getLogger(__name__)


def _argmax_uint8(probs, chunk=16):
    """Arg-max over the last axis in slabs, so no int64 copy of the whole volume is made."""
    out = np.empty(probs.shape[:-1], dtype=np.uint8 if probs.shape[-1] <= 256 else np.int32)
    if probs.shape[-1] == 1:
        np.greater(probs[..., 0], 0.5, out=out, casting="unsafe")
        return out
    for i in range(0, probs.shape[0], chunk):
        out[i:i + chunk] = np.argmax(probs[i:i + chunk], axis=-1)
    return out


def predict_scan(model, record, spec=None, overlap=0.5, batch_size=2, progress=False, allow_padding=False):
    """Segment one scan with a model, returning labels on the scan's own grid.

    Steps: reorient to `spec["orientation"]` and resample to `spec["spacing"]`
    (linear), apply `spec["intensity"]`, sliding-window inference with
    windows of `spec["patch_size"]` (Gaussian blending), resample the class
    probabilities back to the scan's exact voxel grid (linear) and take the
    arg-max.

    Args:
        model: Keras model `(B, *patch, C_in)` -> `(B, *patch, K)` (softmax,
            or one sigmoid channel; or R sigmoid regions when `spec` has `regions`).
        record: `ImageRecord` from `keras_medseg.data.read_image`.
        spec: preprocessing dict (see `save_preprocessing`); default
            `resolve_preprocessing` defaults from the model.
        overlap: float in [0, 1), window overlap (default 0.5).
        batch_size: windows per forward pass (default 2; sets peak memory).
        progress: bool, Keras progress bar over the windows.
        allow_padding: bool (default False). A scan smaller than the window
            along some axis is refused unless True (then it is padded).

    Returns:
        uint8 label array with the spatial shape of `record` (voxel index
        order, the record's affine applies); with `spec["regions"]`, uint8
        0/1 masks `(*S, R)`, a voxel in region `r` where its sigmoid
        probability (resampled linearly to the scan's grid) is above 0.5.

    Raises:
        ValueError: the scan is not a single-channel volume/image of the
            model's dimensionality, holds NaN voxels, or is smaller than the
            window (each names the file).

    Example:
    >>> rec = keras_medseg.data.read_image("ct.nii.gz")  # doctest: +SKIP
    >>> labels = keras_medseg.predict.scans.predict_scan(model, rec)  # doctest: +SKIP
    >>> keras_medseg.data.write_image("ct_seg.nii.gz", labels, rec)  # doctest: +SKIP
    """
    if not isinstance(record, ImageRecord):
        raise TypeError(f"`record` must be an ImageRecord from read_image. Received: record={type(record).__name__}")
    if spec is None:
        spec = resolve_preprocessing_from_model(model)
    d = int(spec.get("spatial_dims") or len(model.inputs[0].shape) - 2)
    name = record.path or "scan"
    in_channels = int(model.inputs[0].shape[-1])
    array = np.asarray(record.array)
    if record.spatial_dims != d:
        raise ValueError(f"The model segments {d}D scans; {name!r} is {record.spatial_dims}D with shape {array.shape}.")
    if array.ndim == d and in_channels != 1 or array.ndim == d + 1 and array.shape[-1] != in_channels \
            or array.ndim not in (d, d + 1):
        raise ValueError(f"The model takes {in_channels}-channel {d}D inputs; {name!r} holds a {array.ndim}D array "
                         f"of shape {array.shape}.")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name!r} holds {bad} NaN/inf voxels; clean or mask them before predicting.")
    x, change = to_model_space(array, record.affine, spacing=spec.get("spacing"),
                               orientation=spec.get("orientation"), order=1, spatial_dims=d)
    x = intensity(x, spec.get("intensity") or {"preset": "none"}, name=repr(name), spatial_dims=d)  # per channel
    if x.ndim == d:
        x = x[..., None]
    patch = spec.get("patch_size") or [int(s) if s is not None else None for s in model.inputs[0].shape[1:-1]]
    patch = [s if p is None else int(p) for p, s in zip(patch, x.shape[:d])]
    small = [(i, s, p) for i, (s, p) in enumerate(zip(x.shape[:d], patch)) if s < p]
    if small and not allow_padding:
        raise ValueError(
            f"The window {tuple(patch)} is larger than the scan {name!r} ({tuple(x.shape[:d])} voxels on the model "
            f"grid) along axes {[i for i, _, _ in small]}; pass allow_padding=True (--pad) to pad it."
        )
    probs = sliding_window(model, x, tuple(patch), overlap=overlap, batch_size=batch_size, progress=progress)
    del x
    resampled = tuple(change.model_shape) != tuple(change.reoriented_shape) or \
        not np.allclose(change.model_affine, change.reoriented_affine)
    if spec.get("regions"):  # multi-label: each sigmoid channel on its own
        if resampled:
            return np.ascontiguousarray(from_model_space(probs, change, order=1) > 0.5).astype(np.uint8)
        return np.ascontiguousarray(from_model_space((probs > 0.5).astype(np.uint8), change, order=0))
    if resampled:  # probabilities back onto the scan's grid (linear), then the arg-max
        return _argmax_uint8(from_model_space(probs, change, order=1))
    return np.ascontiguousarray(from_model_space(_argmax_uint8(probs), change, order=0))


def resolve_preprocessing_from_model(model):
    """`default_preprocessing()` filled in from a model's input and output shapes."""
    from keras_medseg.data.scans.preprocess import default_preprocessing

    spec = default_preprocessing()
    spec["spatial_dims"] = len(model.inputs[0].shape) - 2
    spec["patch_size"] = [None if s is None else int(s) for s in model.inputs[0].shape[1:-1]]
    channels = int(model.outputs[0].shape[-1])
    spec["class_names"] = [f"class_{i}" for i in range(max(channels, 2))]
    return spec


def _load(model_path):
    import keras_medseg  # noqa: F401  (registers the project's layers for loading)
    from keras_medseg.utils.model_io import load_model

    model = load_model(model_path, compile=False)
    return model, resolve_preprocessing(model_path, model)


def plan_outputs(scans, output_dir, extension, suffixes=None):
    """The label-map path of every scan, refusing any that would replace an input or another scan's label map.

    Rules (checked before anything is predicted):

    * a label map is never written over an input of the call: an output path that is the same file as an
      input (`os.path.samefile`: the same path, a hard link or a symlink to it; e.g. `--output` is the
      input's folder and the derived name equals an input's) is refused;
    * two scans whose names differ only in case (`Case.nii`, `case.nii.gz`) would share one label map on a
      case-insensitive file system: refused (rename one). Same stems within one folder (`case/`, `case.nii`,
      `case.nii.gz`) are refused by `keras_medseg.data.cases.find_scans`;
    * an output path that is an existing folder is refused. An existing file that is not an input (a label
      map of an earlier run) is replaced, atomically.

    Args:
        scans: `[(name, input_path)]` (`find_scans`; a multi-modal input is a tuple of paths).
        output_dir: str, the output folder.
        extension: ".nii.gz" or ".png".
        suffixes: None (default: one output per scan) or a list of name suffixes (e.g. `["", "_core"]`):
            one output `<name><suffix><extension>` per suffix.

    Returns:
        list of output paths, in the order of `scans` (with `suffixes`: one list of paths per scan).

    Raises:
        ValueError: one of the cases above, naming both paths.
    """
    outputs, seen = [], {}
    inputs = [f for _, src in scans for f in (src if isinstance(src, (list, tuple)) else [src])]
    for name, src in scans:
        paths = [os.path.join(output_dir, name + suffix + extension) for suffix in (suffixes or [""])]
        for out in paths:
            key = os.path.normcase(os.path.abspath(out)).lower()
            if key in seen:
                raise ValueError(f"Scans {seen[key]!r} and {src!r} would both get the label map {out!r}: their "
                                 "names differ only in letter case; rename one.")
            seen[key] = src
            if os.path.isdir(out):
                raise ValueError(f"Cannot write the label map of {src!r} to {out!r}: a folder of that name exists.")
            if os.path.exists(out):
                for other in inputs:
                    if os.path.exists(other) and os.path.samefile(out, other):
                        raise ValueError(
                            f"Refusing to write the label map of {src!r} to {out!r}: that file is an input scan "
                            f"({other!r}) and would be replaced. Choose another output folder (--output).")
        outputs.append(paths if suffixes is not None else paths[0])
    return outputs


def predict_files(model_path, inputs, output_dir, overlap=0.5, batch_size=2, progress=True, allow_padding=False,
                  resample_irregular=False, region_output="merged"):
    """Predict every scan in `inputs` and write NIfTI label maps with each scan's geometry.

    Label maps never replace an input and never collide (`plan_outputs`, checked before the first scan is
    predicted); each is written to a temporary file and moved into place (`write_image`), so a killed run
    leaves complete label maps and no truncated one under a final name; files get the umask's mode. When the
    model's spec records `label_values` (masks with ids such as `{0, 1, 4}`), the label maps hold those
    original values.

    Args:
        model_path: str, a `.keras` model (its saved preprocessing spec is
            repeated; see `keras_medseg.data.scans.preprocess`).
        inputs: str, a scan file, a DICOM series folder, a single DICOM file, or a folder of them.
        output_dir: str, where `<name>.nii.gz` label maps are written (2D
            inputs: `<name>.png`).
        overlap, batch_size, allow_padding: see `predict_scan`.
        progress: bool, progress bar over each scan's windows (default True).
        resample_irregular: bool (default False): resample DICOM series with missing slices, uneven gaps,
            mixed pixel spacing or a tilted stack onto a regular grid instead of refusing them
            (`keras_medseg.data.scans.dicom`); the label map is written on that grid.
        region_output: multi-label models only: "merged" (default: `<name>.nii.gz`, one label map by
            `merged_label_values`), "regions" (`<name>_<region>.nii.gz`, one 0/1 map per region) or "both".

    Multi-modal models (a spec with `modalities` and `modality_pattern`) take a folder of per-modality files,
    grouped into cases as in training; a modality off its case's first modality's grid is refused (named).

    Returns:
        list of `(name, input_path, output_path)` (multi-label: one entry per file written).

    Raises:
        FileNotFoundError / ValueError: missing model or input, unreadable
            scans, bad inputs, outputs that would replace an input or collide
            (each names the file).
    """
    if region_output not in ("merged", "regions", "both"):
        raise ValueError(f"`region_output` must be 'merged', 'regions' or 'both'. Received: {region_output!r}")
    model, spec = _load(model_path)
    d, regions = spec["spatial_dims"], spec.get("regions")
    written = []
    pattern = spec.get("modality_pattern")
    scans = find_scans(inputs, spec.get("modalities") if pattern else None, pattern)
    if os.path.isfile(output_dir):
        raise ValueError(f"`output_dir` must be a folder; {output_dir!r} is a file.")
    suffixes = None
    if regions:  # "" is the merged map, "_<region>" one per region
        suffixes = ([""] if region_output != "regions" else []) + (
            [f"_{r['name']}" for r in regions] if region_output != "merged" else [])
    outputs = plan_outputs(scans, output_dir, ".nii.gz" if d == 3 else ".png", suffixes)
    os.makedirs(output_dir, exist_ok=True)
    for i, ((name, path), out) in enumerate(zip(scans, outputs)):
        logger.info("predict %d/%d: %s", i + 1, len(scans), path)
        record = read_image(path, spatial_dims=d, resample_irregular=resample_irregular,
                            channels=int(model.inputs[0].shape[-1]) > 1)
        labels = predict_scan(model, record, spec, overlap=overlap, batch_size=batch_size, progress=progress,
                              allow_padding=allow_padding)
        if not regions:
            write_image(out, original_label_values(labels, spec), record)
            written.append((name, path, out))
            continue
        maps = ([merge_regions(labels, merged_label_values(regions))] if region_output != "regions" else []) + (
            [labels[..., r] for r in range(len(regions))] if region_output != "merged" else [])
        for target, array in zip(out, maps):
            write_image(target, array, record)
            written.append((name, path, target))
    return written


def merged_label_values(regions):
    """The value each region writes in a merged label map (`keras_medseg.data.regions.merge_regions`).

    Rule: a voxel takes the value of the *last* region listed that holds it; region `r` writes the smallest
    of its mask values that no later region lists (its "own" values), else its smallest value. Nested regions
    listed from the largest to the smallest (whole tumour {1, 2, 3}, tumour core {2, 3}, enhancing {3})
    therefore give back the label map (1, 2, 3): the innermost region wins.

    Args:
        regions: the spec's regions, `[{"name", "values"}]` in channel order.

    Returns:
        list of int, one per region.

    Example:

    >>> keras_medseg.predict.scans.merged_label_values([{"name": "wt", "values": [1, 2, 4]},
    ...     {"name": "tc", "values": [1, 4]}, {"name": "et", "values": [4]}])
    [2, 1, 4]
    """
    out = []
    for r, region in enumerate(regions):
        later = {v for other in regions[r + 1:] for v in other["values"]}
        own = [v for v in region["values"] if v not in later]
        out.append(min(own or region["values"]))
    return out


def original_label_values(labels, spec):
    """Class ids -> the voxel values the training masks used (`spec["label_values"]`), when they differ."""
    values = spec.get("label_values")
    if not values or list(values) == list(range(len(values))):
        return labels
    lut = np.asarray(values, dtype=np.int64)
    if int(labels.max(initial=0)) >= len(lut):
        raise ValueError(f"The model predicts class {int(labels.max())} but its spec lists only {len(lut)} label "
                         f"values {list(values)}.")
    return lut[labels]


@dataclasses.dataclass
class ScanEvaluation:
    """What `evaluate_scans` scored: per-case metrics, summary and which cases they were."""

    per_case: dict
    summary: dict
    roles: dict
    csv_path: str
    skipped: list
    note: str


def evaluate_scans(model_path, data_dir, csv_path=None, include_training=False, tolerance=1.0, overlap=0.5,
                   batch_size=2, progress=False, allow_padding=False, ignore_value=None, resample_irregular=False):
    """Per-case, per-class Dice, IoU, HD95, ASSD and surface Dice (mm) of a model on a folder of scans.

    Args:
        model_path: str, a `.keras` model with (or without) a saved spec.
        data_dir: a scan folder, as a typed source (`keras_medseg.data.sources`)
            or a path it decides on: `DIR/images/<name>.<ext>` (files or DICOM
            folders) and `DIR/masks/<name>.<ext>` (or `DIR/labels/`) label maps on
            the same grids, or a `dataset.json`; the cases are those of
            `keras_medseg.data.cases.find_cases`.
        csv_path: str or None; default `DIR/evaluation.csv` (the folder of a `dataset.json`). One row per case
            and class (`case, role, class, dice, iou, hd95, assd,
            surface_dice`).
        include_training: bool (default False). When the model's spec
            records a split, cases it was trained on are skipped unless
            True (then their rows say `train`).
        tolerance: surface Dice tolerance in mm (default 1.0).
        overlap, batch_size, progress, allow_padding: see `predict_scan`.
        ignore_value: mask value left out of every score (default None).
        resample_irregular: see `predict_files`.

    A multi-label model (spec `regions`) is scored per region: its 0/1 mask against the reference's region
    (voxels whose mask value is one of the region's), rows named by the region.

    Label maps are read by the one mask rule (`keras_medseg.data.cases`):
    with the model's saved `label_values` when it has them (so masks with
    ids `{0, 1, 4}` are scored as the classes the model learnt), else with
    their ids kept as they are (0/255 editor masks as 0/1). Each must lie on
    its image's grid (`keras_medseg.data.scans.geometry.check_same_grid`).

    Returns:
        `ScanEvaluation` (per-case metrics, summary, each case's role
        `validation`/`unseen`/`train`/`unknown`, CSV path, skipped training
        cases, and a note saying which cases were scored).

    Raises:
        FileNotFoundError: missing folders or a scan without a label map.
        ValueError: a label map whose geometry differs from its image's, and
            the `predict_scan` errors (each names the file).
    """
    model, spec = _load(model_path)
    d, regions = spec["spatial_dims"], spec.get("regions")
    pattern = spec.get("modality_pattern")  # per-modality files, found as in training
    source = resolve_source(data_dir, modalities=spec.get("modalities") if pattern else None, modality_pattern=pattern)
    cases = {c["name"]: c for c in find_cases(source)}  # refuses a source without cases
    data_dir = source.path
    csv_path = csv_path or os.path.join(data_dir, "evaluation.csv")
    for case in cases.values():  # before any work: the scores never replace a scan or a label map
        for key, f in [(k, f) for k in ("image", "label") for f in np.atleast_1d(case[k]).tolist()]:
            if os.path.isfile(csv_path) and os.path.samefile(csv_path, f):
                raise ValueError(f"Refusing to write the scores to {csv_path!r}: that file is the {key} of case "
                                 f"{case['name']!r}. Choose another CSV path (--csv).")
    split = spec.get("split")
    train = set(split.get("train", [])) if split else set()
    val = set(split.get("validation", [])) if split else set()
    roles, skipped = {}, []
    for name in sorted(cases):
        if not split:
            roles[name] = "unknown"
        elif name in train:
            if not include_training:
                skipped.append(name)
                continue
            roles[name] = "train"
        else:
            roles[name] = "validation" if name in val else "unseen"
    class_names = spec.get("class_names") or []
    per_case = {}
    for name in roles:
        image = read_image(cases[name]["image"], spatial_dims=d, resample_irregular=resample_irregular,
                           channels=True)
        mask = read_image(cases[name]["label"], spatial_dims=d, resample_irregular=resample_irregular)
        check_same_grid(image, mask)
        ids, where = mask_ids(mask.array, d, name=repr(mask.path)), repr(mask.path)
        if regions:  # multi-label: each region of the prediction against that region of the label map
            per_case[name] = _region_metrics(ids, model, image, spec, ignore_value, tolerance, overlap=overlap,
                                             batch_size=batch_size, progress=progress, allow_padding=allow_padding)
            continue
        if spec.get("label_values"):  # the classes the model learnt, by their mask values
            truth, _ = standardize_labels(ids, ignore_value=ignore_value, label_values=spec["label_values"],
                                          names=where)
        else:
            # The one mask rule, but class ids are kept as they are within a case (a case may
            # lack a class): editor binary masks (0/255, 0/65535) become 0/1, other ids stay.
            truth, values = standardize_labels(ids, ignore_value=ignore_value, names=where)
            if values != list(range(len(values))):
                truth, _ = standardize_labels(ids, ignore_value=ignore_value, names=where,
                                              label_values=range(max(values) + 1))
        pred = predict_scan(model, image, spec, overlap=overlap, batch_size=batch_size, progress=progress,
                            allow_padding=allow_padding)
        if np.any(truth < 0):  # ignored voxels count in neither map
            pred, truth = np.where(truth < 0, 0, pred), np.maximum(truth, 0)
        classes = {i: (class_names[i] if i < len(class_names) else str(i))
                   for i in range(1, max(len(class_names), int(truth.max()) + 1, int(pred.max()) + 1))}
        per_case[name] = segmentation_metrics(pred, truth, spacing=image.spacing, classes=classes,
                                              tolerance=tolerance)
    if not per_case:
        raise ValueError(
            f"No held-out case to score in {data_dir!r}: all {len(skipped)} cases were training cases of this "
            "model. Pass include_training=True (--include-training) to score them anyway."
        )
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(["case", "role", "class", *METRIC_NAMES])
    for name, metrics in per_case.items():
        for cname, vals in metrics.items():
            w.writerow([name, roles[name], cname, *(f"{vals[m]:.6g}" for m in METRIC_NAMES)])
    atomic_write_text(csv_path, buffer.getvalue())
    counts = {r: sum(1 for v in roles.values() if v == r) for r in ("validation", "unseen", "train", "unknown")}
    if not split:
        note = (f"scored all {len(per_case)} cases; the model records no training split, so some may be "
                "training cases")
    else:
        note = (f"scored {len(per_case)} cases ({counts['validation']} validation, {counts['unseen']} unseen"
                + (f", {counts['train']} TRAINING" if counts["train"] else "")
                + f"); skipped {len(skipped)} training cases")
    return ScanEvaluation(per_case, summarize_metrics(per_case), roles, csv_path, skipped, note)


def _region_metrics(ids, model, image, spec, ignore_value, tolerance, **kwargs):
    """`segmentation_metrics` of every region: `{region name: {metric: value}}` (ignored voxels in neither)."""
    truth = regions_from_labels(ids, [r["values"] for r in spec["regions"]])
    pred = predict_scan(model, image, spec, **kwargs)
    keep = ids != ignore_value if ignore_value is not None else np.ones(ids.shape, bool)
    metrics = {}
    for r, region in enumerate(spec["regions"]):
        metrics.update(segmentation_metrics(np.where(keep, pred[..., r], 0), np.where(keep, truth[..., r], 0),
                                            spacing=image.spacing, classes={1: region["name"]}, tolerance=tolerance))
    return metrics


def format_summary(result):
    """A plain-text report of `evaluate_scans`: which cases were scored, then mean/median per class and metric."""
    lines = [result.note + ":"]
    lines += [f"  {name:24s} {role}" for name, role in result.roles.items() if name in result.per_case]
    if result.skipped:
        lines.append(f"skipped (training cases): {', '.join(result.skipped)}")
    lines.append("")
    header = f"{'class':16s}" + "".join(f"{m:>22s}" for m in METRIC_NAMES)
    lines.append(header)
    lines.append(" " * 16 + "".join(f"{'mean / median':>22s}" for _ in METRIC_NAMES))
    for cname, metrics in result.summary.items():
        cells = []
        for m in METRIC_NAMES:
            st = metrics[m]
            cell = f"{st['mean']:.4g} / {st['median']:.4g}"
            if st["n_infinite"]:
                cell += f" ({st['n_infinite']} inf)"
            cells.append(f"{cell:>22s}")
        lines.append(f"{cname:16s}" + "".join(cells))
    lines.append("")
    lines.append("hd95, assd in mm; surface_dice at the tolerance; inf: one of the two masks is empty")
    lines.append(f"per-case CSV {result.csv_path}")
    return "\n".join(lines)
