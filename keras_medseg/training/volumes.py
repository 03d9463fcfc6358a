"""Training a zoo segmentation model on folders of volumes: lazy patches, augmentation, Dice + CE.

`train_volumes` is what `keras-medseg train MODEL --data DIR|dataset.json
--spatial-dims 3 --patch-size 96` runs: cases are split into training and
validation by name (seeded), patches are sampled by
`keras_medseg.data.VolumeDataset` (1:1 positive/negative, the default
augmentation on the training side), the zoo model is built for the data
(classes, channels, spatial dims) with its compile default (Dice + CE for
`unet`, `imexnet`, `resnet_seg`), it is fitted by the one fit runner
(`keras_medseg.training.runner.fit`: resumable, rerun the same call after a
crash), and the preprocessing spec (spacing, orientation, intensity preset,
class names, patch size, the split) is saved inside the best checkpoint so
`keras-medseg predict` repeats it.

By default the best checkpoint is chosen on whole validation scans: every
`val_every` epochs (default 5) and on the last one, each validation scan is
predicted whole by the `predict` path and scored on its own grid
(`keras_medseg.training.scan_validation.ScanValidation`; `val_scan_dice`,
per-class `val_scan_dice_<class>`, optional HD95 in the log; per-case scores
in `scan_validation.csv`). The training cases are preprocessed once into a
disk cache in the run folder (`cache_dir="auto"`: `<out_dir>/cache`, filled
up front with a progress bar) and loaded by 2 worker processes
(`default_workers`, `default_multiprocessing`).

Multi-modal cases (a 4D NIfTI, or one file per modality with `modalities`)
train with one input channel per modality; `regions` (overlapping sets of
mask values, e.g. whole tumour `{1, 2, 3}`, tumour core `{2, 3}`, enhancing
`{3}`) trains a multi-label model instead: one sigmoid channel per region
(`multilabel_model`), `keras_medseg.losses.MultiLabelDiceCELoss`, the mean
and per-region Dice (`keras_medseg.metrics.MultiLabelDice`) in the log; the
regions and modalities are saved in the spec for `predict` and `evaluate`.
"""

import dataclasses
import json
import logging
import os

import keras

from keras_medseg.data import dataset_json
from keras_medseg.data.batches import check_shard
from keras_medseg.training.distribute import current_group, distributable
from keras_medseg.training.scan_validation import region_metric_name
from keras_medseg.training.volume_setup import check_same_run, training_intensity, training_spacing

logger = logging.getLogger(__name__)

#: `train_volumes`' default `val_every`: whole-scan validation every 5 epochs (and on the last one).
DEFAULT_VAL_EVERY = 5

__all__ = ["DEFAULT_VAL_EVERY", "VolumeTrainResult", "default_augmentation", "default_multiprocessing",
           "default_workers", "multilabel_model", "region_metric_name", "resolve_cache_dir", "train_volumes"]


def default_augmentation(spatial_dims, seed=0):
    """The training augmentation used by `train_volumes` (nnU-Net-like, milder).

    Flips on every axis (p 0.5), affine (rotation up to 0.26 rad, zoom
    0.85-1.15; p 0.3), elastic (p 0.2), gamma (p 0.3), Gaussian noise (p 0.15),
    intensity scale/shift (p 0.3), low resolution (p 0.15).
    """
    from keras_medseg.data import augment as A
    return A.Compose([
        A.RandomFlip(probability=0.5, seed=seed + 1),
        A.RandomAffine(rotation=0.26, scaling=0.15, probability=0.3, seed=seed + 2),
        A.RandomElastic(magnitude=(0.0, 3.0), spacing=16, probability=0.2, seed=seed + 3),
        A.RandomGamma((0.7, 1.5), probability=0.3, seed=seed + 4),
        A.RandomGaussianNoise(0.1, probability=0.15, seed=seed + 5),
        A.RandomIntensityScaleShift(0.1, 0.1, probability=0.3, seed=seed + 6),
        A.RandomLowResolution((0.5, 1.0), probability=0.15, seed=seed + 7),
    ], name="augmentation")


@dataclasses.dataclass
class VolumeTrainResult:
    """What `train_volumes` returns.

    Attributes:
        model: the best model (None on a rank other than 0 of a run over several processes).
        history, checkpoint, log, spec, split: the fit's history, `best.keras`, `log.csv`, the preprocessing
            spec saved in the checkpoint, the case split.
        best_epoch: the epoch (from 0) `best.keras` was saved at, or None.
        monitor: the log key that chose it (`val_scan_dice` with whole-scan validation).
        scan_scores: with whole-scan validation, the best epoch's per-case scores
            `{case: {class: {"dice": ..., "hd95": ...}}}` (`scan_validation.csv`); else None.
    """

    model: object
    history: dict
    checkpoint: str
    log: str
    spec: dict
    split: dict
    best_epoch: int = None
    monitor: str = None
    scan_scores: dict = None


def multilabel_model(model, region_names):
    """The model with its softmax head made one sigmoid per region, compiled for multi-label training.

    The zoo's segmenters end in an `Activation` layer (softmax over `num_classes` channels); the new model
    applies a sigmoid to the same logits instead (same layers and weights, same output name), so each
    channel says on its own whether a voxel is in its region. Compiled with the model's optimizer,
    `MultiLabelDiceCELoss` and `MultiLabelDice` (mean over regions as `dice`, and one per region as
    `dice_<name>`).

    Args:
        model: a functional Keras model with one output made by an `Activation` layer, `(N, *S, R)`.
        region_names: list of R str, the regions in channel order.

    Returns:
        compiled `keras.Model` `(N, *S, C) -> (N, *S, R)` sigmoid probabilities.

    Raises:
        ValueError: several outputs (e.g. deep supervision), a head that is not an `Activation` layer, or
            a channel count other than R (named).
    """
    from keras_medseg.losses import MultiLabelDiceCELoss
    from keras_medseg.metrics import MultiLabelDice

    outputs = list(model.outputs or [])
    layer = outputs[0]._keras_history.operation if len(outputs) == 1 else None
    if not isinstance(layer, keras.layers.Activation):
        raise ValueError(f"Multi-label training needs a model with one output made by an Activation layer; "
                         f"{model.name!r} has {len(outputs)} outputs"
                         + ("" if len(outputs) != 1 else f" ending in {type(layer).__name__}") + ".")
    r = len(region_names)
    if int(outputs[0].shape[-1]) != r:
        raise ValueError(f"Model {model.name!r} has {int(outputs[0].shape[-1])} output channels; expected one per "
                         f"region, {r}. Received: regions={list(region_names)}")
    head = keras.layers.Activation("sigmoid", dtype="float32", name=layer.name)(layer.input)
    out = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, head, name=model.name)
    metrics = [MultiLabelDice(r, name="dice")] + [MultiLabelDice(r, region=i, name=region_metric_name(n))
                                                  for i, n in enumerate(region_names)]
    out.compile(optimizer=getattr(model, "optimizer", None) or keras.optimizers.Adam(1e-3),
                loss=MultiLabelDiceCELoss(), metrics=metrics)
    return out


@distributable
def train_volumes(model_name, data, out_dir="runs/train", spatial_dims=3, patch_size=96, epochs=5,
                  steps_per_epoch=50, batch_size=2, spacing=None, orientation=None, intensity=None,
                  val_fraction=0.2, pos_fraction=0.5, augment=True, cache_bytes=2**30, model_kwargs=None,
                  seed=0, verbose=1, backup_every=None, ignore_value=None, resample_irregular=False, regions=None,
                  modalities=None, modality_pattern=None, cache_dir="auto", cache_dir_bytes=None,
                  val_every=DEFAULT_VAL_EVERY, val_hd95=False, workers=None, use_multiprocessing=None, fold=None,
                  folds=5, splits=None):
    """Train a zoo segmentation model on a folder of volumes or a `dataset.json`, resumably.

    Args:
        model_name: zoo name, e.g. "unet".
        data: a typed source (`keras_medseg.data.sources`) or a data argument
            it decides on: a folder with `images/` + `labels/` (or `masks/`),
            an MSD `dataset.json` (or its folder), an nnU-Net v2 raw data set's
            `dataset.json` (or its folder: `imagesTr/` + `labelsTr/`); or a list of
            `(image_path, label_path)` pairs.
        out_dir: run folder: `best.keras` (with the preprocessing spec),
            `log.csv`, `backup/` (default "runs/train").
        spatial_dims: 3 for 3D patches, 2 for 2D slices of the volumes (default 3).
        patch_size: int or tuple, patch voxels per axis (default 96).
        epochs: training epochs (default 5).
        steps_per_epoch: batches per epoch (default 50).
        batch_size: patches per batch (default 2).
        spacing: training voxel size in mm, "median" (chosen from the training
            cases' voxel sizes as nnU-Net does, `keras_medseg.data.scans.target_spacing`,
            saved in the spec), or None for each case's own grid (default; a
            warning when the cases' voxel sizes differ by more than 10 %).
        orientation: e.g. "RAS", or None (default).
        intensity: preset dict for `preprocess.intensity`, or "ct": nnU-Net's CT
            normalisation from the training cases' foreground voxels
            (`keras_medseg.data.scans.ct_normalization`, saved in the spec). Default
            None: z-score per scan, or "ct" when the data set's dataset.json names
            its one channel CT (MSD's `modality`, nnU-Net's `channel_names`).
        val_fraction: fraction of cases held out for validation (default 0.2;
            at least one when there are two or more cases, drawn with `seed`);
            a dataset.json with a `validation` list (MONAI's datalists) uses
            that split instead.
        fold, folds, splits: cross-validation: fold `fold` of `folds` (default 5)
            seeded folds, or with `splits` (nnU-Net's `splits_final.json`, or its
            list) that file's fold, so that a run validates on the cases an
            nnU-Net run on that fold did (`keras_medseg.data.case_split`).
        pos_fraction: positive patch share (default 0.5).
        augment: True for `default_augmentation`, False for none, or a layer.
        cache_bytes: case cache budget per dataset in bytes (default 1 GiB).
        cache_dir: folder of a disk cache of the preprocessed cases, below the
            memory cache (`VolumeDataset(cache_dir=...)`): each case is read,
            resampled and normalised once, then memory-mapped, so data sets
            larger than RAM and worker processes (whose memory caches start
            empty every epoch) do not redo it. Default "auto":
            `<out_dir>/cache` (next to the run it serves, deleted with it,
            reused when the run resumes; pass the same folder to several runs
            to share it); None or "none": no disk cache.
        cache_dir_bytes: size budget of `cache_dir` in bytes (default None: no limit).
        val_every: whole-scan validation every that many epochs and on the
            last epoch (`keras_medseg.training.scan_validation.ScanValidation`:
            sliding-window prediction of every validation scan by the
            `predict` path, Dice per case and class on the scan's grid);
            `best.keras` is then chosen on `val_scan_dice` (max). Default
            `DEFAULT_VAL_EVERY` (5): one pass costs about as many forward
            passes as the windows of the validation scans (a 250x250x100
            voxel scan with 96^3 windows at overlap 0.5: ~100 windows), often
            more than a training epoch of 50 steps; 0 turns it off (then the
            patch `val_loss` chooses). 2D models on slices of 3D volumes
            keep the patch validation (`predict_scan` segments scans of the
            model's dimensionality).
        val_hd95: bool, also log HD95 in mm per class (default False).
        workers: data-loading workers of the training `VolumeDataset`
            (`keras.utils.PyDataset(workers=...)`); default None: 2 (see
            `default_workers`).
        use_multiprocessing: worker processes (True) or threads (False);
            default None: `default_multiprocessing(batches of the run)`:
            processes (started once by a forkserver, one compute thread each;
            a script that calls `train_volumes` must do so under
            `if __name__ == "__main__":`), threads for a run of fewer than
            `PROCESS_MIN_BATCHES` batches.
        model_kwargs: extra builder arguments (default None).
        seed: seed of the split, weights and sampling (default 0).
        verbose: Keras verbosity (default 1).
        backup_every: back up every that many batches too (default None: per epoch).
        ignore_value: mask value left out of the loss (e.g. 255 for an
            unlabelled border; default None).
        resample_irregular: resample irregular DICOM series from their true
            slice positions instead of refusing them (default False).
        regions: None (default: one softmax class per mask value) or the
            regions of a multi-label model, `{name: mask values}` or a list
            of `(name, values)` in channel order (may overlap); see the
            module docstring.
        modalities: names of the per-modality files of each case in channel
            order (e.g. `["t1", "t1ce", "t2", "flair"]` for
            `images/p1_t1.nii.gz`, ...), found by `modality_pattern` (default
            `"{case}_{modality}"`); None (default): one file per case (a 4D
            NIfTI has its channels inside) or nnU-Net's `case_0000`, ...
            numbering.
        processes, coordinator, process_id: train over several processes, as
            for `keras_medseg.training.train` (default None: this one);
            `batch_size` is then the global batch, a multiple of `processes`,
            and every process samples its own cases of each epoch
            (`VolumeDataset(num_shards=...)`).

    Labels follow the one mask rule (`keras_medseg.data.cases`) over every
    label map of the data set, decided once before training: 0/255 masks are
    0/1, ids `{0, 1, 4}` become classes 0, 1, 2 (with a warning; `label_values`
    is saved in the spec, so `predict` writes 0, 1, 4 again), a 255 border next
    to other ids needs `ignore_value`, fractional values are refused; a
    `dataset.json` `labels` table fixes the values and names the classes (MSD's
    `{"1": "spleen"}` or nnU-Net's `{"spleen": 1}`); nnU-Net's region-based table
    (`{"whole tumor": [1, 2, 3], ...}`) gives the `regions` when none are passed.
    Every label map must lie on its image's grid (`check_same_grid`).

    Returns:
        `VolumeTrainResult` (best model, history, paths, spec, split).

    Raises:
        ValueError: bad arguments or data (named), `model_kwargs` that the
            zoo builder does not take.

    Example:

    >>> r = keras_medseg.training.train_volumes("unet", "Task09_Spleen/dataset.json", patch_size=96,
    ...                                         spacing=(1.5, 1.5, 2.0), epochs=100)  # doctest: +SKIP
    """
    from keras_medseg import zoo
    from keras_medseg.data.case_split import split_cases
    from keras_medseg.data.cases import dataset_label_values, find_cases, warn_compacted
    from keras_medseg.data.scans.modalities import DEFAULT_PATTERN, check_case_grids
    from keras_medseg.data.scans.preprocess import check_regions
    from keras_medseg.data.scans.volume_dataset import VolumeDataset
    from keras_medseg.data.sources import resolve_source
    from keras_medseg.training import runner
    from keras_medseg.training.scan_validation import MONITOR, ScanValidation, check_val_every, read_scan_scores
    from keras_medseg.utils.model_io import load_model
    from keras_medseg.utils.validation import check_positive_int

    epochs = check_positive_int(epochs, "epochs")
    val_every = check_val_every(val_every)
    workers = default_workers() if workers is None else check_positive_int(workers, "workers")
    cache_dir = resolve_cache_dir(cache_dir, out_dir)
    group = current_group()
    check_shard(group.size, group.rank, check_positive_int(batch_size, "batch_size"))
    if not 0.0 <= float(val_fraction) < 1.0:  # before any file is read
        raise ValueError(f"`val_fraction` must be in [0, 1). Received: val_fraction={val_fraction!r}")
    runner.set_random_seed(seed)  # as Keras seeds, without importing TensorFlow into a JAX or torch process
    if isinstance(data, (list, tuple)):  # (image, label) path pairs
        cases, json_path, pattern = find_cases(data), None, None
    else:
        source = resolve_source(data, spatial_dims, modalities=modalities, modality_pattern=modality_pattern)
        cases, json_path = find_cases(source), getattr(source, "dataset_json", None)
        pattern = getattr(source, "modality_pattern", None)
    channels = dataset_json.channel_names(json_path)
    modalities = cases[0].get("modalities") or channels
    if cases[0].get("modalities"):  # per-modality files: how predict and evaluate find them again
        pattern = pattern or DEFAULT_PATTERN
    if regions is None:
        regions = dataset_json.label_regions(json_path)  # nnU-Net's region-based labels
    regions = None if regions is None else check_regions(regions)
    check_case_grids(cases)  # one line naming a modality file off its case's grid, before any model is built
    train_cases, val_cases = split_cases(cases, seed, val_fraction, fold, folds, splits)
    split = {"train": [c["name"] for c in train_cases], "validation": [c["name"] for c in val_cases]}
    spacing = training_spacing(spacing, train_cases or cases, orientation, spatial_dims)
    intensity = training_intensity(intensity, train_cases or cases, channels,
                                    ignore_value, seed, verbose and group.is_writer)
    names = dataset_json.label_names(json_path)
    values = dataset_label_values([c["label"] for c in cases], ignore_value=ignore_value,
                                  label_values=sorted(names) if names else None,
                                  spatial_dims=3 if spatial_dims == 3 or orientation is not None else None)
    if names:
        values = sorted(names)
    else:
        warn_compacted(values, repr(getattr(data, "path", data)))
    class_names = [names[v] for v in values] if names else [f"class_{v}" for v in values]
    if regions is not None:  # multi-label: one sigmoid channel per region
        class_names = [r["name"] for r in regions]
    if augment is True:
        augment = default_augmentation(spatial_dims, seed=seed)
    elif augment is False:
        augment = None
    shard = {"num_shards": group.size, "shard_index": group.rank}
    common = {"patch_size": patch_size, "batch_size": batch_size // group.size, "spatial_dims": spatial_dims,
              "spacing": spacing, "orientation": orientation, "intensity": intensity, "pos_fraction": pos_fraction,
              "cache_bytes": cache_bytes, "label_values": values, "ignore_value": ignore_value,
              "resample_irregular": resample_irregular, "regions": regions, "cache_dir": cache_dir,
              "cache_dir_bytes": cache_dir_bytes}
    train_ds = VolumeDataset([(c["image"], c["label"]) for c in train_cases], augment=augment,
                             steps_per_epoch=steps_per_epoch, seed=seed, workers=workers, **common, **shard)
    if use_multiprocessing is None:
        use_multiprocessing = default_multiprocessing(len(train_ds) * epochs)
    train_ds.use_multiprocessing = bool(use_multiprocessing)  # processes with 2 workers or more
    val_ds = None
    if val_cases:
        val_ds = VolumeDataset([(c["image"], c["label"]) for c in val_cases], seed=seed + 1,
                               steps_per_epoch=max(1, -(-len(val_cases) // group.size)), **common, **shard)
    spec = train_ds.spec(class_names)
    spec.update({"split": split, "modalities": modalities, "modality_pattern": pattern})
    check_same_run(out_dir, spec)  # before the cache is filled and a model built: this run, or none
    if cache_dir is not None:  # preprocess every case once, up front, with a progress bar (rank 0)
        train_ds.fill_cache(progress=bool(verbose) and group.is_writer)
        if val_ds is not None:
            val_ds.fill_cache()
    x = train_ds[0][0]
    kwargs = {"spatial_dims": spatial_dims, "num_classes": len(class_names), "in_channels": int(x.shape[-1])}
    kwargs.update(model_kwargs or {})
    with group.model_scope():
        model = zoo.build(model_name, **kwargs)
        if regions is not None:
            model = multilabel_model(model, class_names)
    scans = None
    if val_cases and val_every and _whole_scans(val_cases[0], spatial_dims, resample_irregular):
        scans = ScanValidation(val_cases, spec, every=val_every, hd95=val_hd95, ignore_value=ignore_value,
                               resample_irregular=resample_irregular, verbose=verbose,
                               csv_path=os.path.join(os.fspath(out_dir), SCAN_CSV))
    monitor = MONITOR if scans else "val_loss" if val_ds is not None else "loss"
    # the spec goes into every best.keras as it is written, so a killed run's model still carries it
    run = runner.fit(model, train_ds, out_dir=out_dir, epochs=epochs, validation_data=val_ds, monitor=monitor,
                     mode="max" if scans else "auto", callbacks=[scans] if scans else None,
                     backup_every=backup_every, preprocessing=spec, verbose=verbose)
    best_epoch = _best_epoch(run.checkpoint)
    scores = read_scan_scores(scans.csv_path, best_epoch) if scans and best_epoch is not None else None
    extra = {"best_epoch": best_epoch, "monitor": monitor, "scan_scores": scores}
    if not group.is_writer:
        return VolumeTrainResult(None, run.history, run.checkpoint, run.log, spec, split, **extra)
    with group.local_scope():
        best = load_model(run.checkpoint)
    return VolumeTrainResult(best, run.history, run.checkpoint, run.log, spec, split, **extra)


SCAN_CSV = "scan_validation.csv"
def default_workers():
    """`train_volumes`' default number of data-loading workers: 2 (1 on a one-core machine).

    Each worker is a process with one compute thread (`default_multiprocessing`), so the loading rate
    grows with the workers while the training process only receives the batches (0.5-0.6 ms of its CPU
    per 32^3 patch against 13-43 ms to make it; `benchmarks/volume_workers.py`, `docs/scans.md`). On a
    CPU-only machine the model trains on the same cores, so `fit` gains only what loading cost it.
    """
    return min(2, os.cpu_count() or 1)


#: Fewest training batches of a run for which `default_multiprocessing` starts worker processes.
PROCESS_MIN_BATCHES = 1000


def default_multiprocessing(batches=None):
    """Whether `train_volumes`' workers are processes (True) or threads (False) for a run of `batches`
    training batches (None: unknown): processes, on every backend, unless the run is shorter than
    `PROCESS_MIN_BATCHES` batches. Worker processes take seconds longer to start than one worker (in each
    process the backend's import, its first ops and the warp's compilation: a first 128-batch epoch took 8 s
    more on TensorFlow, 5 s on JAX, 2.5 s on torch in `benchmarks/volume_workers.py`) and save 4-9 ms per
    batch of two 32^3 patches on 2 cores, so they pay off after about 300-1,400 batches; a shorter run (a smoke
    test, a tutorial) is done sooner by threads.

    `VolumeDataset(use_multiprocessing=True)` starts its own pool of `workers` processes once (from a
    forkserver, never forked from the training process: a fork of a process whose TensorFlow or JAX
    runtime runs thread pools hung in our runs, which is what Keras' own worker processes do at every
    epoch), each limited to one compute thread before its backend runs an op; Keras' enqueuer threads
    hand them the batch indices. Processes make a patch with the CPU time one worker needs (no GIL, no
    thread pools competing), where 2 threads loaded slower than one (0.59-0.84x,
    `benchmarks/volume_workers.py`). A script that calls `train_volumes` must do so under
    `if __name__ == "__main__":` (each worker imports the script's module, Python's rule for processes
    started this way); `use_multiprocessing=False` gives threads. See `docs/scans.md` for the numbers.
    """
    return batches is None or batches >= PROCESS_MIN_BATCHES


def resolve_cache_dir(cache_dir, out_dir):
    """`train_volumes`' `cache_dir`: "auto" -> `<out_dir>/cache`, None or "none" -> None, else the folder.

    Raises:
        ValueError: not a str/path or None (named).
    """
    if cache_dir is None or isinstance(cache_dir, str) and cache_dir.lower() == "none":
        return None
    if isinstance(cache_dir, str) and cache_dir == "auto":
        return os.path.join(os.fspath(out_dir), "cache")
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise ValueError(f"`cache_dir` must be a folder, 'auto' or None. Received: cache_dir={cache_dir!r}")
    return os.fspath(cache_dir)


def _whole_scans(case, spatial_dims, resample_irregular):
    """Whether the validation scans can be predicted whole by a model of `spatial_dims` (not 2D slices of 3D)."""
    if spatial_dims == 3:
        return True
    from keras_medseg.data.scans.io import read_image

    if read_image(case["image"], resample_irregular=resample_irregular, channels=True).spatial_dims == 2:
        return True
    logger.info("2D model on slices of 3D volumes: the best checkpoint is chosen on the patch val_loss")
    return False


def _best_epoch(checkpoint):
    """The epoch `best.keras` was written at (its `.best.json`), or None."""
    try:
        with open(checkpoint + ".best.json") as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
