"""Training callbacks: LR halving and ROC-AUC early stopping (whole-slide-image recipe), GAN sample grids.

The lecture "Convolutional networks - theory" trains its patch classifier with RMSprop and two rules: "if no
improvement in E on validation data for 3 consecutive epochs, half the
learning rate" and "if no improvement in ROC-AUC on validation data for 5
consecutive epochs, terminate". The first is a preset of
`keras.callbacks.ReduceLROnPlateau`; the second computes the *exact* ROC-AUC
over the whole validation set with scikit-learn (Keras' streaming `AUC`
metric approximates it with thresholds and averages over batches) and hands
it to `keras.callbacks.EarlyStopping`.
"""

import os

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from keras_medseg.utils.validation import check_positive_int


def lr_halving_on_plateau(monitor="val_loss", patience=3, factor=0.5, **kwargs):
    """Halve the learning rate after `patience` epochs without improvement (the WSI lecture's preset).

    Args:
        monitor: quantity to watch, default `"val_loss"`.
        patience: epochs without improvement before halving, default 3.
        factor: multiplier of the learning rate, default 0.5.
        **kwargs: other `keras.callbacks.ReduceLROnPlateau` arguments
            (`min_lr`, `min_delta`, `cooldown`, `mode`, `verbose`).

    Returns:
        A `keras.callbacks.ReduceLROnPlateau`.

    Example:

    >>> model.fit(x, y, validation_data=(xv, yv),
    ...           callbacks=[keras_medseg.training.callbacks.lr_halving_on_plateau()])

    Reference: the lecture "Convolutional networks - theory" ("no improvement in E on validation data for 3
    consecutive epochs => half the learning rate").
    """
    check_positive_int(patience, "patience", minimum=0)
    return keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=factor, patience=patience, **kwargs)


def _split_xy(batch):
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(
        "`validation_data` must yield (x, y) pairs with labels. "
        f"Received a batch of type {type(batch).__name__}"
    )


class ROCAUCEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping on the exact validation ROC-AUC (scikit-learn), logged as `val_roc_auc`.

    At the end of every epoch the model predicts the whole validation set,
    `sklearn.metrics.roc_auc_score` is computed on all predictions at once and
    written into `logs["val_roc_auc"]` (the name is `log_name`). Training
    stops after `patience` epochs without improvement, and with
    `restore_best_weights=True` the weights of the best epoch are restored at
    the end of training (the stopping and restoring logic is
    `keras.callbacks.EarlyStopping`'s, monitoring that value in `"max"` mode).

    Ordering: callbacks run in list order and share the `logs` dict, so put
    this callback BEFORE any callback that should see `val_roc_auc`
    (`CSVLogger`, `TensorBoard`, `ModelCheckpoint(monitor="val_roc_auc")`,
    `ReduceLROnPlateau(monitor="val_roc_auc")`). Keras' own `History` always
    runs last and records it.

    Args:
        validation_data: an `(x, y)` tuple of arrays, or an iterable of `(x, y)` batches
            (`keras.utils.PyDataset`, `tf.data.Dataset`); labels are 0/1.
            For multi-output predictions column `output_index` is used.
        patience: epochs without improvement before stopping, default 5.
        restore_best_weights: restore the best epoch's weights, default True.
        batch_size: prediction batch size for array data, default 64.
        min_delta: minimum increase that counts as improvement, default 0.
        output_index: which output column holds the positive-class score.
        log_name: the key written into `logs`, default `"val_roc_auc"`.
        verbose: 1 prints when stopping / restoring.
        **kwargs: other `keras.callbacks.EarlyStopping` arguments
            (`baseline`, `start_from_epoch`).

    Raises:
        ValueError: `validation_data` missing or without labels, or labels of
            a single class (ROC-AUC is undefined).

    Example:

    >>> stop = keras_medseg.training.callbacks.ROCAUCEarlyStopping((x_val, y_val))
    >>> model.fit(x, y, epochs=100, callbacks=[stop, keras.callbacks.CSVLogger("log.csv")])

    Reference: the lecture "Convolutional networks - theory" ("no improvement in ROCAUC on validation data for 5
    consecutive epochs => terminate").
    """

    def __init__(self, validation_data, patience=5, restore_best_weights=True, batch_size=64, min_delta=0.0,
                 output_index=0, log_name="val_roc_auc", verbose=0, **kwargs):
        if validation_data is None:
            raise ValueError(
                "ROCAUCEarlyStopping needs `validation_data` ((x, y) arrays or a dataset of (x, y) batches). "
                "Received: validation_data=None"
            )
        check_positive_int(patience, "patience", minimum=0)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        super().__init__(
            monitor=log_name, mode="max", patience=patience, restore_best_weights=restore_best_weights,
            min_delta=min_delta, verbose=verbose, **kwargs,
        )
        self.validation_data = validation_data
        self.output_index = int(output_index)
        self.log_name = log_name
        self.auc_history = []
        if isinstance(validation_data, tuple):
            _, y = _split_xy(validation_data)
            self._check_labels(np.asarray(y))

    @staticmethod
    def _check_labels(y):
        classes = np.unique(np.asarray(y).reshape(-1))
        if classes.size < 2:
            raise ValueError(
                "ROC-AUC needs both classes in the validation labels. "
                f"Received: labels with the single class {classes.tolist()}"
            )

    def _column(self, pred):
        pred = np.asarray(pred, np.float64)
        if pred.ndim > 1 and pred.shape[-1] > 1:
            pred = pred[..., self.output_index]
        return pred.reshape(-1)

    def predict_validation(self):
        """`(labels, scores)` over the whole validation set with the current weights."""
        data = self.validation_data
        if isinstance(data, tuple):
            x, y = _split_xy(data)
            scores = self._column(self.model.predict(x, batch_size=self.batch_size, verbose=0))
            return np.asarray(y, np.float64).reshape(-1), scores
        batches = (data[i] for i in range(len(data))) if isinstance(data, keras.utils.PyDataset) else data
        ys, ps = [], []
        for batch in batches:
            x, y = _split_xy(batch)
            ys.append(np.asarray(y, np.float64).reshape(-1))
            ps.append(self._column(self.model.predict_on_batch(x)))
        if not ys:
            raise ValueError("`validation_data` yielded no batches.")
        return np.concatenate(ys), np.concatenate(ps)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        y, scores = self.predict_validation()
        if y.shape != scores.shape:
            raise ValueError(
                f"Validation labels ({y.shape}) and predictions ({scores.shape}) do not match: "
                "pass one 0/1 label per sample."
            )
        self._check_labels(y)
        auc = float(roc_auc_score(y, scores))
        logs[self.log_name] = auc
        self.auc_history.append(auc)
        super().on_epoch_end(epoch, logs)


# --------------------------------------------------------------------------- GAN sample grids
# Callback that writes a PNG grid of GAN samples every N epochs, and the grid helper.
#
# `GANSampleGrid` works with the three zoo GANs (`keras_medseg.zoo.gan`):
#
# * `ConditionalGAN`: one row per class label, `num_samples` columns drawn
#   from fixed latent vectors (the same `z` in every row and every epoch, so the
#   grids show how training changes the samples).
# * `Pix2Pix`: rows `source`, `G(source)` (and `target` if given).
# * `CycleGAN`: rows `a`, `G_AB(a)`, `G_BA(G_AB(a))` (and `b`, `G_BA(b)`,
#   `G_AB(G_BA(b))` if domain-B images are given).
#
# 3D volumes are shown by their middle slice along the first spatial axis.
#
# Reference: J. Wolterink, "Deep Learning II: Interpretability & Adversarial
# Methods" (sample grids to judge GAN training, which has no clear stopping
# criterion).


def _to_rgb(images):
    """`(n, *spatial, C)` in [-1, 1] -> `(n, H, W, 3)` in [0, 1] (middle slice for 3D)."""
    images = np.asarray(images, dtype="float32")
    if images.ndim == 5:
        images = images[:, images.shape[1] // 2]
    if images.ndim != 4:
        raise ValueError(
            f"Sample rows must be batches of 2D or 3D channels-last images. Received: shape={images.shape}"
        )
    images = np.clip((images + 1.0) / 2.0, 0.0, 1.0)
    channels = images.shape[-1]
    if channels == 3:
        return images
    return np.repeat(images[..., :1], 3, axis=-1)


def make_grid(rows, padding=1):
    """Tile rows of images into one RGB grid image.

    Args:
        rows: list of arrays `(n, H, W, C)` or `(n, D, H, W, C)` in [-1, 1],
            all with the same spatial size (rows may have different `n`).
        padding: white pixels between tiles. Default 1.

    Returns:
        float32 array `(rows * (H + p) + p, max_n * (W + p) + p, 3)` in [0, 1].

    Raises:
        ValueError: empty `rows` or images of different spatial size.

    Example:
    ```python
    grid = keras_medseg.training.callbacks.make_grid([np.zeros((4, 8, 8, 1))])
    ```
    """
    if not rows:
        raise ValueError("`rows` must contain at least one batch of images. Received: rows=[]")
    rows = [_to_rgb(r) for r in rows]
    h, w = rows[0].shape[1:3]
    if any(r.shape[1:3] != (h, w) for r in rows):
        raise ValueError(f"All rows need the same image size. Received: sizes={[r.shape[1:3] for r in rows]}")
    ncols = max(r.shape[0] for r in rows)
    grid = np.ones((len(rows) * (h + padding) + padding, ncols * (w + padding) + padding, 3), "float32")
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = padding + i * (h + padding), padding + j * (w + padding)
            grid[y:y + h, x:x + w] = img
    return grid


def sample_rows(model, inputs=None, num_samples=8, seed=0):
    """The rows of images `GANSampleGrid` shows for `model` (see module docstring).

    Args:
        model: a `ConditionalGAN`, `Pix2Pix` or `CycleGAN`.
        inputs: `None` for the cGAN (or a list of labels); source images or
            `(source, target)` for pix2pix; `a` or `(a, b)` for CycleGAN.
        num_samples: images per row. Default 8.
        seed: latent seed for the cGAN. Default 0.

    Returns:
        list of NumPy arrays in [-1, 1].

    Raises:
        TypeError: not one of the zoo GANs.
        ValueError: translation model without `inputs`.
    """
    from keras_medseg.zoo.gan import ConditionalGAN, CycleGAN, Pix2Pix

    if isinstance(model, ConditionalGAN):
        labels = range(model.num_classes) if inputs is None else list(inputs)
        z = np.random.default_rng(seed).standard_normal((num_samples, model.latent_dim)).astype("float32")
        return [model.generate([label] * num_samples, z=z) for label in labels]
    if not isinstance(model, (Pix2Pix, CycleGAN)):
        raise TypeError(
            "GANSampleGrid needs a keras_medseg ConditionalGAN, Pix2Pix or CycleGAN. "
            f"Received: model of type {type(model).__name__}"
        )
    if inputs is None:
        raise ValueError(
            f"{type(model).__name__} samples are translations: pass `inputs` (source images or a "
            "(source, target) pair). Received: inputs=None"
        )
    first, second = (inputs if isinstance(inputs, (tuple, list)) else (inputs, None))
    first = np.asarray(first, "float32")[:num_samples]
    second = None if second is None else np.asarray(second, "float32")[:num_samples]
    if isinstance(model, Pix2Pix):
        rows = [first, model.translate(first)]
        return rows if second is None else rows + [second]
    fake_b = model.translate(first, "a2b")
    rows = [first, fake_b, model.translate(fake_b, "b2a")]
    if second is not None:
        fake_a = model.translate(second, "b2a")
        rows += [second, fake_a, model.translate(fake_a, "a2b")]
    return rows


class GANSampleGrid(keras.callbacks.Callback):
    """Write a PNG grid of GAN samples every `every` epochs.

    Args:
        directory: output folder (created if missing).
        every: write after every `every`-th epoch (>= 1). Default 1.
        inputs: what to show (see `sample_rows`): None for the cGAN (all
            labels), translation inputs for pix2pix / CycleGAN.
        num_samples: images per row. Default 8.
        seed: latent seed of the cGAN rows. Default 0.
        filename: format string with `{epoch}` (1-based). Default
            `"samples_epoch{epoch:03d}.png"`.

    Attributes:
        paths: the files written so far.

    Raises:
        ValueError: `every`/`num_samples` < 1.

    Example:
    ```python
    cb = keras_medseg.training.callbacks.GANSampleGrid("samples", every=5)
    model.fit(x, y, epochs=20, callbacks=[cb])
    ```
    """

    def __init__(self, directory, every=1, inputs=None, num_samples=8, seed=0,
                 filename="samples_epoch{epoch:03d}.png"):
        super().__init__()
        self.directory = os.fspath(directory)
        self.every = check_positive_int(every, "every")
        self.inputs = inputs
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.seed = seed
        self.filename = filename
        self.paths = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        self.write(epoch + 1)

    def write(self, epoch):
        """Render the grid for the current model state and save it; returns the path."""
        import matplotlib.pyplot as plt

        grid = make_grid(sample_rows(self.model, self.inputs, self.num_samples, self.seed))
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, self.filename.format(epoch=epoch))
        plt.imsave(path, grid)
        self.paths.append(path)
        return path




__all__ = ["GANSampleGrid", "ROCAUCEarlyStopping", "lr_halving_on_plateau", "make_grid", "sample_rows"]
