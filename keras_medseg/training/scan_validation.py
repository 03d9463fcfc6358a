"""Whole-scan validation during training: the checkpoint is chosen on the Dice of whole validation scans.

Patch validation (a few random patches per epoch) is a noisy measure of what
`keras-medseg predict` will do; `ScanValidation` runs the prediction path
itself on the whole validation scans every `every` epochs: each scan is read
with its geometry, predicted by `keras_medseg.predict.scans.predict_scan`
(reoriented and resampled to the training frame, sliding windows with
Gaussian blending, brought back to the scan's own grid) and scored on the
scan's grid against its label map read by the one mask rule
(`keras_medseg.data.cases.standardize_labels` with the training
`label_values`; voxels of `ignore_value` count in neither map), as
`keras_medseg.predict.scan_evaluation.evaluate_scans` scores them.

Log keys (added to the epoch's logs, so the CSV log, the backup and the best
checkpoint see them):

* `val_scan_dice`: mean Dice over the validation cases and the foreground
  classes (multi-label models: over the regions);
* `val_scan_dice_<class>`: mean over the cases of one class (region);
* with `hd95=True`, `val_scan_hd95` and `val_scan_hd95_<class>` in mm
  (`keras_medseg.evaluation.surface`; inf where one of the two masks is
  empty).

Epochs without whole-scan validation log NaN under these keys: the best
checkpoint (`monitor="val_scan_dice"`, mode max) skips non-finite values, so
it is always the model of a validated epoch. The last epoch of a `fit` call is
always validated. Every validated epoch's per-case scores are written to
`csv_path` (`epoch, case, class, dice[, hd95]`, rewritten atomically; a
resumed run keeps the rows of the epochs before it), read back with
`read_scan_scores`.

Dice per class: `2 |P & T| / (|P| + |T|)`, 1 when both masks are empty (the
convention of `keras_medseg.evaluation.surface`); checked in the tests
against a NumPy computation on the predicted label map and the reference
read with nibabel.

Several processes (`keras_medseg.training.distribute`): each rank predicts
its share of the cases (`cases[rank::size]`) with a model that needs no
collective (`ProcessGroup.local_model`), then the per-case scores are summed
over the ranks (`ProcessGroup.mean` times the size; every rank takes part in
every epoch's exchange, validated or not decided by the epoch alone), so every
rank logs the same values and none waits on another; rank 0 alone shows the
progress bar and writes the CSV.
"""

import csv
import io
import os
import re

import keras
import numpy as np

__all__ = ["ScanValidation", "check_val_every", "read_scan_scores", "region_metric_name", "scan_dice"]

MONITOR = "val_scan_dice"


def region_metric_name(name):
    """The log name of a region's Dice: `"dice_<name>"`, non-word characters as `_` (`"tumour core"` ->
    `dice_tumour_core`); `train_volumes`' per-region metrics and the whole-scan keys use it."""
    return "dice_" + (re.sub(r"\W+", "_", name).strip("_") or "region")


def check_val_every(val_every):
    """`val_every` as an int >= 0 (0: no whole-scan validation).

    Raises:
        ValueError: not an int >= 0 (bools refused), named.
    """
    if isinstance(val_every, bool) or not isinstance(val_every, (int, np.integer)) or val_every < 0:
        raise ValueError("`val_every` must be an int >= 0 (validate the whole scans every that many epochs; 0: "
                         f"never). Received: val_every={val_every!r}")
    return int(val_every)


def scan_dice(prediction, truth):
    """Dice of two binary masks: `2 |P & T| / (|P| + |T|)`, 1.0 when both are empty.

    Args:
        prediction, truth: bool arrays of one shape.

    Returns:
        float.
    """
    p, t = np.asarray(prediction, bool), np.asarray(truth, bool)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(p & t)) / total


class ScanValidation(keras.callbacks.Callback):
    """Sliding-window prediction on whole validation scans every `every` epochs; Dice (and HD95) in the logs.

    Args:
        cases: validation cases, dicts with `name`, `image` (a file, DICOM
            folder, or a list of per-modality files) and `label`
            (`keras_medseg.data.cases.find_cases`).
        spec: the preprocessing spec the model is trained with
            (`VolumeDataset.spec`: spacing, orientation, intensity,
            patch_size, spatial_dims, label_values, class_names, regions).
        every: int >= 1, validate every that many epochs (epochs `every - 1`,
            `2 * every - 1`, ... counted from 0) and always the last one
            (default 1).
        hd95: bool, also log HD95 in mm (default False; distance transforms
            cost more than the Dice).
        ignore_value: mask value left out of the scores (default None).
        overlap: sliding-window overlap (default 0.5, as `predict`).
        batch_size: windows per forward pass (default 2).
        resample_irregular: see `keras_medseg.data.read_image`.
        csv_path: per-case scores CSV, or None (default: not written).
        verbose: int, a Keras progress bar over the cases when > 0 (rank 0).

    Raises:
        ValueError: no cases, a spec without `spatial_dims`/`class_names`, a
            bad `every` (named).
    """

    def __init__(self, cases, spec, every=1, hd95=False, ignore_value=None, overlap=0.5, batch_size=2,
                 resample_irregular=False, csv_path=None, verbose=1):
        super().__init__()
        if not cases:
            raise ValueError("`cases` must hold at least one validation case. Received: cases=[]")
        every = check_val_every(every)
        if every < 1:
            raise ValueError(f"`every` must be an int >= 1. Received: every={every!r}")
        if not spec.get("spatial_dims") or not spec.get("class_names"):
            raise ValueError("`spec` must give `spatial_dims` and `class_names` (VolumeDataset.spec). "
                             f"Received keys: {sorted(spec)}")
        self.cases, self.spec, self.every, self.hd95 = list(cases), dict(spec), every, bool(hd95)
        self.ignore_value, self.overlap, self.batch_size = ignore_value, overlap, batch_size
        self.resample_irregular, self.csv_path, self.verbose = bool(resample_irregular), csv_path, verbose
        regions = self.spec.get("regions")
        names = list(self.spec["class_names"])
        self.classes = names if regions else names[1:]  # softmax: class 0 is the background
        self.metrics = ("dice", "hd95") if self.hd95 else ("dice",)
        self.scores = {}  # epoch -> {case: {class: {metric: value}}}
        self._rows = None
        self._first_epoch = None

    # -- keys ------------------------------------------------------------------
    def log_keys(self):
        """The log keys this callback writes, in order."""
        keys = []
        for metric in self.metrics:
            keys.append(f"val_scan_{metric}")
            keys += [f"val_scan_{metric}_" + region_metric_name(c)[len("dice_"):] for c in self.classes]
        return keys

    def validates(self, epoch):
        """Whether epoch `epoch` (from 0) is validated: every `every`-th and the last one of the `fit` call."""
        last = int((self.params or {}).get("epochs") or 0) - 1
        return (epoch + 1) % self.every == 0 or epoch == last

    # -- one case --------------------------------------------------------------
    def _score_case(self, model, case):
        """`{class: {metric: value}}` of one case on its own grid."""
        from keras_medseg.data.cases import mask_ids, standardize_labels
        from keras_medseg.data.regions import regions_from_labels
        from keras_medseg.data.scans.geometry import check_same_grid
        from keras_medseg.data.scans.io import read_image
        from keras_medseg.evaluation.surface import binary_surface_metrics
        from keras_medseg.predict.scans import predict_scan

        d = int(self.spec["spatial_dims"])
        image = read_image(case["image"], spatial_dims=d, resample_irregular=self.resample_irregular, channels=True)
        mask = read_image(case["label"], spatial_dims=d, resample_irregular=self.resample_irregular)
        check_same_grid(image, mask)
        ids = mask_ids(mask.array, d, name=repr(mask.path))
        pred = predict_scan(model, image, self.spec, overlap=self.overlap, batch_size=self.batch_size,
                            allow_padding=True)
        keep = np.ones(ids.shape, bool) if self.ignore_value is None else ids != self.ignore_value
        if self.spec.get("regions"):
            truth = regions_from_labels(ids, [r["values"] for r in self.spec["regions"]])
            pairs = [((pred[..., r] > 0) & keep, (truth[..., r] > 0) & keep) for r in range(len(self.classes))]
        else:
            truth, _ = standardize_labels(ids, ignore_value=self.ignore_value, label_values=self.spec["label_values"],
                                          names=repr(mask.path))
            keep &= truth >= 0
            pairs = [((pred == c) & keep, (truth == c) & keep) for c in range(1, len(self.classes) + 1)]
        out = {}
        for name, (p, t) in zip(self.classes, pairs):
            out[name] = {"dice": scan_dice(p, t)}
            if self.hd95:
                out[name]["hd95"] = float(binary_surface_metrics(p, t, spacing=image.spacing)["hd95"])
        return out

    # -- Keras hooks -----------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = int(epoch)
            self._rows = [r for r in self._read_rows() if int(r[0]) < self._first_epoch]  # a resume keeps them

    def on_epoch_end(self, epoch, logs=None):
        from keras_medseg.training.distribute import current_group

        if logs is None:
            return
        if not self.validates(epoch):
            logs.update({k: float("nan") for k in self.log_keys()})
            return
        group = current_group()
        mine = list(range(group.rank, len(self.cases), group.size))
        bar = keras.utils.Progbar(len(mine), unit_name="case") if self.verbose and group.is_writer else None
        flat = np.zeros((len(self.cases), len(self.classes), len(self.metrics)), np.float64)
        with group.local_scope():
            model = group.local_model(self.model)
            for i in mine:
                scores = self._score_case(model, self.cases[i])
                flat[i] = [[scores[c][m] for m in self.metrics] for c in self.classes]
                if bar is not None:
                    bar.add(1)
        if group.distributed:  # every rank holds zeros for the others' cases: the sum over ranks is the whole table
            flat = np.asarray(group.mean(flat.ravel()), np.float64).reshape(flat.shape) * group.size
        per_case = {c["name"]: {cls: {m: float(flat[i, j, k]) for k, m in enumerate(self.metrics)}
                                for j, cls in enumerate(self.classes)} for i, c in enumerate(self.cases)}
        self.scores[int(epoch)] = per_case
        logs.update(self._summary(flat))
        if group.is_writer and self.csv_path:
            self._write_rows(int(epoch), per_case)

    def _summary(self, flat):
        out = {}
        for k, metric in enumerate(self.metrics):
            out[f"val_scan_{metric}"] = float(np.mean(flat[:, :, k]))
            for j, name in enumerate(self.classes):
                out[f"val_scan_{metric}_" + region_metric_name(name)[len("dice_"):]] = float(np.mean(flat[:, j, k]))
        return out

    # -- CSV -------------------------------------------------------------------
    def _read_rows(self):
        if not self.csv_path or not os.path.exists(self.csv_path):
            return []
        with open(self.csv_path, newline="") as f:
            rows = list(csv.reader(f))
        return [r for r in rows[1:] if r and r[0].isdigit()]

    def _write_rows(self, epoch, per_case):
        from keras_medseg.utils.atomic_io import atomic_write_text

        rows = [r for r in (self._rows or []) if int(r[0]) != epoch]
        rows += [[str(epoch), case, cls, *(f"{v[m]:.6g}" for m in self.metrics)]
                 for case, classes in per_case.items() for cls, v in classes.items()]
        self._rows = rows
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["epoch", "case", "class", *self.metrics])
        writer.writerows(rows)
        atomic_write_text(self.csv_path, buf.getvalue())


def read_scan_scores(csv_path, epoch=None):
    """The per-case scores a `ScanValidation` wrote: `{case: {class: {metric: float}}}` of one epoch.

    Args:
        csv_path: the CSV (`<out_dir>/scan_validation.csv` of `train_volumes`).
        epoch: int, the epoch (from 0); default None: the last epoch in the file.

    Returns:
        dict (empty when the file or the epoch is absent).
    """
    if not os.path.exists(csv_path):
        return {}
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    epoch = max(int(r["epoch"]) for r in rows) if epoch is None else int(epoch)
    out = {}
    for r in rows:
        if int(r["epoch"]) == epoch:
            out.setdefault(r["case"], {})[r["class"]] = {k: float(v) for k, v in r.items()
                                                         if k not in ("epoch", "case", "class")}
    return out
