"""Scoring a model on a folder of scans: per-case Dice, IoU, HD95, ASSD and surface Dice in mm.

`evaluate_scans` (the library behind `keras-medseg evaluate` on scans) predicts every held-out case with
`keras_medseg.predict.scans.predict_scan` and scores it with `keras_medseg.evaluation.surface`;
`format_summary` prints the result. Also importable from `keras_medseg.predict`.
"""

import csv
import dataclasses
import io
import os

import numpy as np

from keras_medseg.data.cases import find_cases, mask_ids, standardize_labels
from keras_medseg.data.regions import regions_from_labels
from keras_medseg.data.scans.geometry import check_same_grid
from keras_medseg.data.scans.io import read_image
from keras_medseg.data.sources import resolve_source
from keras_medseg.evaluation.surface import METRIC_NAMES, segmentation_metrics, summarize_metrics
from keras_medseg.utils.atomic_io import atomic_write_text

__all__ = ["ScanEvaluation", "evaluate_scans", "format_summary"]


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
                   batch_size=2, progress=False, allow_padding=True, ignore_value=None, resample_irregular=False):
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
    from keras_medseg.predict import scans  # imported here: scans re-exports this module's names

    model, spec = scans._load(model_path)
    d, regions = spec["spatial_dims"], spec.get("regions")
    pattern = spec.get("modality_pattern")  # per-modality files, found as in training
    source = resolve_source(data_dir)
    if pattern and not getattr(source, "dataset_json", None):  # a dataset.json's cases carry their own files
        source = resolve_source(data_dir, modalities=spec.get("modalities"), modality_pattern=pattern)
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
        pred = scans.predict_scan(model, image, spec, overlap=overlap, batch_size=batch_size, progress=progress,
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
    from keras_medseg.predict.scans import predict_scan

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
