"""Training callbacks of the whole-slide-image recipe: LR halving and ROC-AUC early stopping.

Seed 001 trains its patch classifier with RMSprop and two rules: "if no
improvement in E on validation data for 3 consecutive epochs, half the
learning rate" and "if no improvement in ROC-AUC on validation data for 5
consecutive epochs, terminate". The first is a preset of
`keras.callbacks.ReduceLROnPlateau`; the second computes the *exact* ROC-AUC
over the whole validation set with scikit-learn (Keras' streaming `AUC`
metric approximates it with thresholds and averages over batches) and hands
it to `keras.callbacks.EarlyStopping`.
"""

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from keras_medseg.utils.validation import check_positive_int


def lr_halving_on_plateau(monitor="val_loss", patience=3, factor=0.5, **kwargs):
    """Halve the learning rate after `patience` epochs without improvement (seed 001 preset).

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
    ...           callbacks=[keras_medseg.callbacks.lr_halving_on_plateau()])

    Reference: seed 001 ("no improvement in E on validation data for 3
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

    >>> stop = keras_medseg.callbacks.ROCAUCEarlyStopping((x_val, y_val))
    >>> model.fit(x, y, epochs=100, callbacks=[stop, keras.callbacks.CSVLogger("log.csv")])

    Reference: seed 001 ("no improvement in ROCAUC on validation data for 5
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
