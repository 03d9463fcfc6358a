"""Training and evaluation helpers behind `keras-medseg train/evaluate/demo`.

`train(model_or_name, data, epochs, out_dir)` fits a segmentation model through
the one fit runner (`keras_medseg.training.runner.fit`): Keras progress bar,
every epoch logged to `out_dir/log.csv`, the best model by validation loss kept
as `out_dir/best.keras` (written atomically), the training state backed up to
`out_dir/backup/`, so running the same command again after a crash resumes
where it stopped (see `keras_medseg.training.checkpointing`). It then reloads the best model with
`safe_mode=True`, scores it with `dice_iou_table` and draws a PNG of
predictions over the validation images. `distribute=` trains on several
devices of one process, `processes=` (with `coordinator=`, `process_id=` on
several hosts) on several processes, through `keras_medseg.training.distribute`.

Data are given as a typed source (`keras_medseg.data.sources`, what the
command line passes: the `--data` value is decided once, there) or as what
`keras_medseg.data.sources.resolve_source` decides on: `"qtips"` (the synthetic
Q-tips set), a folder path (`DIR/images` + `DIR/masks`) or arrays
`((x_train, y_train), (x_val, y_val))`; `keras_medseg.data.load_data` loads
the arrays.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from keras_medseg import zoo
from keras_medseg.data.arrays import SegmentationData, load_data, load_evaluation_data
from keras_medseg.data.sources import DataSource
from keras_medseg.metrics import dice_iou_table, to_labels
from keras_medseg.plotting import history_plot, prediction_grid
from keras_medseg.training import runner
from keras_medseg.training.distribute import current_group, distributable, distribution_scope
from keras_medseg.utils.model_io import load_model


def build_for_data(name, data, **model_kwargs):
    """Build zoo model `name` with `num_classes`, `in_channels`, `spatial_dims`, `input_size` from the data.

    Only arguments the builder has are filled in, and the user's
    `model_kwargs` win.
    """
    args = zoo.describe(name)["arguments"]
    auto = {"num_classes": data.num_classes, "in_channels": data.in_channels, "spatial_dims": data.spatial_dims,
            "input_size": tuple(int(s) for s in data.x_train.shape[1:-1])}
    if len(set(auto["input_size"])) == 1:
        auto["input_size"] = auto["input_size"][0]
    kwargs = {k: v for k, v in auto.items() if k in args}
    kwargs.update(model_kwargs)
    return zoo.build(name, **kwargs)


def class_balance_weights(y, num_classes, power=0.5):
    """Per-pixel sample weights `(total / (K * count_c)) ** power`, normalised to mean 1.

    Rare classes (thin Q-tips rods cover ~2% of the pixels) get larger
    weights; `power=0.5` damps the inverse frequency.

    Args:
        y: int labels `(N, *spatial)`.
        num_classes: number of classes K.
        power: exponent of the inverse frequency (default 0.5; 1 = fully balanced).

    Returns:
        float32 array shaped like `y`.
    """
    counts = np.bincount(np.asarray(y).ravel(), minlength=num_classes).astype(np.float64)
    freq_w = np.where(counts > 0, (counts.sum() / (num_classes * np.maximum(counts, 1))) ** power, 0.0)
    w = freq_w[np.asarray(y)]
    return (w / w.mean()).astype(np.float32)


def _fit_targets(model, y):
    """Labels in the form the model's loss expects (`(N, *S, 1)` floats for a one-channel sigmoid head).

    Ignored voxels (`IGNORE_INDEX`, -1) become class 0 here; `_ignore_weights` gives them weight 0.
    """
    y = np.maximum(y, 0) if np.any(y < 0) else y
    if model.outputs[0].shape[-1] == 1:
        return (y > 0).astype("float32")[..., None]
    return y


def _ignore_weights(y, sample_weight=None):
    """Per-voxel weights that are 0 on ignored voxels (`IGNORE_INDEX`), or `sample_weight` when none is ignored."""
    if not np.any(y < 0):
        return sample_weight
    valid = (np.asarray(y) >= 0).astype(np.float32)
    return valid if sample_weight is None else (sample_weight * valid).astype(np.float32)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the best model, the history dict, the validation Dice/IoU table and the file paths."""

    model: keras.Model
    history: dict
    table: dict
    checkpoint: str
    log: str
    plot: str
    predictions: np.ndarray
    class_names: list | None = None


def evaluate_model(model, x, y, num_classes=None, batch_size=16, verbose=0):
    """Predict `x` and return `(dice_iou_table, predicted class ids)`; `verbose=1`: Keras progress bar."""
    from keras_medseg.utils.input_layout import check_model_input

    check_model_input(x, model, "the evaluation images")
    scores = model.predict(x, batch_size=batch_size, verbose=verbose)
    pred = to_labels(scores)
    if np.any(y < 0):  # ignored voxels (IGNORE_INDEX) count as background in both maps
        pred = np.where(y < 0, 0, pred)
        y = np.maximum(y, 0)
    k = num_classes if model.outputs[0].shape[-1] != 1 else 2
    if k is None:
        k = max(int(y.max()), int(pred.max())) + 1
    y_eval = (y > 0).astype(np.int32) if model.outputs[0].shape[-1] == 1 else y
    return dice_iou_table(y_eval, pred, num_classes=k), pred


@distributable
def train(model_or_name: str | keras.Model, data: str | tuple | DataSource | SegmentationData = "qtips",
          epochs: int = 5, out_dir: str = "runs/train", batch_size: int = 16, model_kwargs: dict | None = None,
          verbose: int = 1, seed: int = 0, n_train: int = 1024, n_val: int = 64, size: int = 64,
          callbacks: list | None = None, class_balance: bool = False, distribute: str | None = None,
          backup_every: int | None = None, spatial_dims: int = 2, ignore_value: int | None = None,
          resample_irregular: bool = False) -> TrainResult:
    """Fit a segmentation model with progress bar, CSV log, best checkpoint and a PNG of predictions.

    Args:
        model_or_name: a compiled `keras.Model` or a zoo name (built with
            `build_for_data`, i.e. `num_classes`/`in_channels`/`spatial_dims`
            from the data).
        data: a data argument, a typed source (`keras_medseg.data.sources`) or
            loaded `SegmentationData`; see `keras_medseg.data.load_data`
            (default "qtips").
        epochs: training epochs (default 5).
        out_dir: output folder (created): `log.csv`, `best.keras`,
            `predictions.png`, `history.png` (default "runs/train").
        batch_size: batch size (default 16).
        model_kwargs: extra builder arguments for a zoo name (default None).
        verbose: Keras verbosity, 1 = progress bar (default 1).
        seed: seed of the weights, the data (Q-tips set, folder split) and
            the order of the training batches, which is the same with any
            number of processes (default 0).
        n_train, n_val, size: Q-tips sizes (see `keras_medseg.data.load_data`).
        callbacks: extra Keras callbacks (default None).
        class_balance: weight every training pixel by `class_balance_weights`
            (damped inverse class frequency) so thin structures are not
            drowned by the background (default False).
        distribute: None, "mirrored" or "jax-data-parallel": several devices
            of this process (see `keras_medseg.training.distribute`); the model
            is built inside that scope, so `model_or_name` must then be a zoo
            name. `batch_size` is the global batch.
        backup_every: also back the training state up every that many
            batches (default None: at the end of every epoch only).
        spatial_dims: how the arrays of a folder given as a path are read (default 2).
        ignore_value: mask value left out of the loss and the scores (e.g.
            255 for an unlabelled border; default None).
        resample_irregular: resample irregular DICOM series from their true
            slice positions instead of refusing them (default False).
        processes: int, train over this many processes (default None: this
            one): alone, it starts them on this host (one GPU each where
            there are enough); `model_or_name` must then be a zoo name and
            `batch_size` (the global batch) a multiple of `processes`. Each
            process trains on its part of every batch, rank 0 alone writes
            `out_dir`; see `keras_medseg.training.distribute`.
        coordinator: "HOST:PORT" of process 0 (TensorFlow: every process's
            "HOST:PORT", comma-separated) to join a run over several hosts,
            with `process_id` (default None).
        process_id: int, this process's rank in `[0, processes)` (default None).

    Masks follow the one mask rule (`keras_medseg.data.cases`); a model
    trained on a folder stores the mask value of each class (`label_values`)
    with its preprocessing, so `evaluate` and `predict` read and write the
    same values. `history.png` is drawn from the whole `log.csv`, so a resumed
    run's plot shows every epoch with its own number.

    Returns:
        `TrainResult` with the best model (reloaded with `safe_mode=True`),
        the history dict, the validation Dice/IoU table and the file paths.

    Raises:
        ValueError: bad `epochs`/`batch_size`, unknown model name or argument,
            bad data (see `keras_medseg.data.load_data`), a built model or
            `distribute` with `processes`.
        keras_medseg.training.distribute.DistributedError: a process of the
            run failed or was killed (rerun to resume), a port in use, an
            unreachable coordinator.

    Example:

    >>> result = keras_medseg.training.train("unet", "qtips", epochs=1, out_dir="runs/u",
    ...                                      n_train=64, model_kwargs={"filters": 8})  # doctest: +SKIP
    """
    from keras_medseg.utils.validation import check_positive_int

    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    group = current_group()
    if group.distributed and not isinstance(model_or_name, str):
        raise ValueError(f"Training over several processes needs a zoo model name (each process builds it in "
                         f"its engine's scope). Received: model_or_name={type(model_or_name).__name__}")
    if group.distributed and distribute not in (None, "none"):
        raise ValueError(f"`distribute` (several devices of one process) and `processes` do not go together: "
                         f"use one process per device. Received: distribute={distribute!r}")
    runner.set_random_seed(seed)  # the same weights on every process; no TensorFlow import in a JAX/torch one
    data = load_data(data, n_train=n_train, n_val=n_val, size=size, seed=seed, spatial_dims=spatial_dims,
                     ignore_value=ignore_value, resample_irregular=resample_irregular)
    if isinstance(model_or_name, str):
        with distribution_scope(distribute), group.model_scope():
            model = build_for_data(model_or_name, data, **(model_kwargs or {}))
    elif isinstance(model_or_name, keras.Model):
        if distribute not in (None, "none"):
            raise ValueError(
                "`distribute` needs a zoo model name (the model must be built inside the strategy scope). "
                f"Received: a keras.Model and distribute={distribute!r}"
            )
        model = model_or_name
    else:
        raise TypeError(f"`model_or_name` must be a keras.Model or a zoo name. Received: {model_or_name!r}")
    # Folder images were z-scored by load_folder: stored in best.keras so predict and explain repeat it.
    spec = None if data.source in ("qtips", "arrays") else {"intensity": {"preset": "zscore"},
                                                            "spatial_dims": data.spatial_dims,
                                                            "label_values": data.label_values}
    sample_weight = None
    if class_balance:
        k = 2 if model.outputs[0].shape[-1] == 1 else data.num_classes
        y_bal = np.maximum(data.y_train, 0)
        sample_weight = class_balance_weights((y_bal > 0) if k == 2 and data.num_classes > 2 else y_bal, k)
    sample_weight = _ignore_weights(data.y_train, sample_weight)
    val_weight = _ignore_weights(data.y_val)
    validation = (data.x_val, _fit_targets(model, data.y_val)) + ((val_weight,) if val_weight is not None else ())
    run = runner.fit(model, data.x_train, _fit_targets(model, data.y_train), out_dir=out_dir, epochs=epochs,
                     validation_data=validation, monitor="val_loss", backup_every=backup_every, preprocessing=spec,
                     callbacks=callbacks, verbose=verbose, batch_size=batch_size, shuffle=True,
                     sample_weight=sample_weight, seed=seed)
    history, checkpoint, log = run.history, run.checkpoint, run.log
    plot = os.path.join(out_dir, "predictions.png")
    if not group.is_writer:  # rank 0 scores and draws
        return TrainResult(None, history, {}, checkpoint, log, plot, None, data.class_names)
    with group.local_scope():
        best = load_model(checkpoint)
        table, pred = evaluate_model(best, data.x_val, data.y_val, data.num_classes, batch_size)
    shown = max(table["classes"]) + 1
    names = data.class_names if data.class_names is not None and len(data.class_names) == shown else None
    y_show = np.maximum(data.y_val, 0)  # ignored voxels (-1) drawn as background
    prediction_grid(data.x_val, y_show if best.outputs[0].shape[-1] != 1 else (y_show > 0),
                    {best.name: pred}, path=plot, num_classes=shown, class_names=names)
    logged = run.logged_history()  # every epoch of the run (resumed ones included), numbered as logged
    if logged:
        history_plot({best.name: logged}, path=os.path.join(out_dir, "history.png"),
                     metrics=[m for m in ("loss", "mean_iou") if m in logged])
    return TrainResult(best, history, table, checkpoint, log, plot, pred, data.class_names)


def evaluate(checkpoint: str, data: str | tuple | DataSource = "qtips", batch_size: int = 16, n: int = 64,
             size: int = 64, seed: int = 1, spatial_dims: int = 2, plot: str | None = None,
             verbose: int = 0, ignore_value: int | None = None,
             resample_irregular: bool = False) -> tuple[dict, list | None]:
    """Load a `.keras` checkpoint (`safe_mode=True`) and score it: per-class Dice/IoU.

    Args:
        checkpoint: path to a `.keras` file.
        data: a data argument or typed source (see
            `keras_medseg.data.load_evaluation_data`): "qtips" (a fresh set of
            `n` images with `seed`), a folder (every case is evaluated) or
            arrays `(x, y)`.
        batch_size: prediction batch size (default 16).
        n, size, seed: Q-tips evaluation set (default 64 images, 64 px, seed 1).
        spatial_dims: for folders of volumes (default 2).
        plot: optional PNG path for a prediction grid.
        verbose: Keras verbosity of the prediction (0 silent, default; 1 a
            progress bar over the batches).
        ignore_value: mask value left out of the scores (default None).
        resample_irregular: resample irregular DICOM series (default False).

    Masks are read by the one mask rule with the `label_values` saved with
    the model when it has them (the classes it learnt), so masks with ids
    `{0, 1, 4}` are scored as the model's classes 0, 1, 2.

    Returns:
        `(table, class_names)`: the `dice_iou_table` result and row names.

    Raises:
        FileNotFoundError: missing checkpoint or data folder (named).
        ValueError: a file that is not a loadable `.keras` model (named).
    """
    from keras_medseg.data.scans.preprocess import load_preprocessing

    model = load_model(checkpoint)
    spec = load_preprocessing(checkpoint) or {}
    ev = load_evaluation_data(data, n=n, size=size, seed=seed, spatial_dims=spatial_dims, ignore_value=ignore_value,
                              label_values=spec.get("label_values"), resample_irregular=resample_irregular)
    x, y, num_classes, class_names = ev.x, ev.y, ev.num_classes, ev.class_names
    _warn_class_mismatch(model, num_classes if num_classes is not None else max(int(np.max(y)) + 1, 2), len(x), data)
    if model.outputs[0].shape[-1] not in (1, num_classes) and num_classes is not None:
        num_classes = max(num_classes, model.outputs[0].shape[-1])
    table, pred = evaluate_model(model, x, y, num_classes, batch_size, verbose=verbose)
    if class_names is not None and len(class_names) != len(table["classes"]):
        class_names = None
    if plot:
        prediction_grid(x, y if model.outputs[0].shape[-1] != 1 else (y > 0), {model.name: pred}, path=plot,
                        num_classes=len(table["classes"]), class_names=class_names)
    return table, class_names


def _warn_class_mismatch(model, num_classes, num_cases, data):
    """Warn (once, in words) when the model's classes and the data's differ, saying what gets scored."""
    import warnings

    channels = model.outputs[0].shape[-1]
    k_model = 2 if channels == 1 else channels
    if num_classes is None or k_model == num_classes:
        return
    source = getattr(data, "path", data) if isinstance(data, (str, os.PathLike)) or hasattr(data, "path") \
        else "the arrays"
    what = ("label > 0 as foreground against background" if channels == 1
            else f"classes 0..{max(k_model, num_classes) - 1}")
    warnings.warn(f"The model predicts {k_model} classes{' (one sigmoid channel)' if channels == 1 else ''} and "
                  f"the data {source!s} has {num_classes}: scoring {what} in all {num_cases} cases.", stacklevel=3)


__all__ = [
    "TrainResult",
    "build_for_data",
    "class_balance_weights",
    "evaluate",
    "evaluate_model",
    "train",
]
