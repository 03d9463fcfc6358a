"""LR halving preset and ROC-AUC early stopping on tiny models."""

import csv

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from keras_medseg.training.callbacks import ROCAUCEarlyStopping, lr_halving_on_plateau

pytestmark = pytest.mark.backend_agnostic


def _linear_model(n_features, lr=0.0):
    inputs = keras.Input((n_features,))
    outputs = keras.layers.Dense(1, activation="sigmoid", use_bias=False)(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="binary_crossentropy")
    return model


def test_lr_halves_after_three_flat_epochs():
    cb = lr_halving_on_plateau()
    assert isinstance(cb, keras.callbacks.ReduceLROnPlateau)
    assert cb.factor == 0.5 and cb.patience == 3 and cb.monitor == "val_loss"
    # Zero inputs: the loss is exactly log(2) every epoch, so val_loss never improves.
    model = _linear_model(3, lr=0.1)
    x = np.zeros((8, 3), "float32")
    y = np.array([0, 1] * 4, "float32")
    lrs = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: lrs.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    )
    model.fit(x, y, validation_data=(x, y), epochs=8, verbose=0, callbacks=[cb, record])
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025], rtol=1e-6)


def _auc_schedule_data(rng):
    x = rng.normal(size=(60, 2)).astype("float32")
    y = (x[:, 0] + 0.5 * rng.normal(size=60) > 0).astype("float32")
    if y.min() == y.max():
        y[0] = 1 - y[0]
    # weight directions with clearly different AUCs: best at epoch 2
    angles = [2.0, 1.2, 0.0, 0.9, 1.4, 2.2, 2.6, 3.0, 0.05, 0.0, 0.0, 0.0]
    weights = [np.array([[np.cos(a)], [np.sin(a)]], "float32") for a in angles]
    return x, y, weights


@pytest.mark.parametrize("as_dataset", [False, True])
def test_roc_auc_early_stopping_stops_and_restores(rng, tmp_path, as_dataset):
    x, y, weights = _auc_schedule_data(rng)
    model = _linear_model(2, lr=0.0)  # lr 0: only the schedule below moves the weights

    def set_weights(epoch, logs):
        model.layers[-1].kernel.assign(weights[epoch])

    schedule = keras.callbacks.LambdaCallback(on_epoch_end=set_weights)
    if as_dataset:

        class Val(keras.utils.PyDataset):
            def __len__(self):
                return 4

            def __getitem__(self, i):
                return x[i * 15:(i + 1) * 15], y[i * 15:(i + 1) * 15]

        val = Val()
    else:
        val = (x, y)
    stop = ROCAUCEarlyStopping(val, batch_size=7)
    assert stop.patience == 5 and stop.restore_best_weights
    log = tmp_path / "log.csv"
    history = model.fit(
        x, y, epochs=12, verbose=0, callbacks=[schedule, stop, keras.callbacks.CSVLogger(str(log))]
    )
    expected = [roc_auc_score(y, x @ w[:, 0]) for w in weights]  # sigmoid is monotone
    best = int(np.argmax(expected[:8]))
    assert best == 2
    # exact AUC, logged for later callbacks and History
    np.testing.assert_allclose(stop.auc_history, expected[: len(stop.auc_history)], rtol=1e-12)
    np.testing.assert_allclose(history.history["val_roc_auc"], stop.auc_history)
    with open(log) as fh:
        rows = list(csv.DictReader(fh))
    np.testing.assert_allclose([float(r["val_roc_auc"]) for r in rows], stop.auc_history)
    # 5 epochs without improvement after epoch 2 -> stops at the end of epoch 7
    assert stop.stopped_epoch == best + 5 and len(stop.auc_history) == best + 6
    np.testing.assert_allclose(model.layers[-1].get_weights()[0], weights[best])


def test_roc_auc_early_stopping_errors(rng):
    with pytest.raises(ValueError, match="validation_data"):
        ROCAUCEarlyStopping(None)
    x = rng.normal(size=(10, 2)).astype("float32")
    with pytest.raises(ValueError, match="single class"):
        ROCAUCEarlyStopping((x, np.ones(10)))
    with pytest.raises(ValueError, match="labels"):
        ROCAUCEarlyStopping((x,))
    with pytest.raises(ValueError, match="patience"):
        ROCAUCEarlyStopping((x, np.arange(10) % 2), patience=-1)
    model = _linear_model(2)
    stop = ROCAUCEarlyStopping([(x, np.zeros(10))])  # an iterable of batches, single class
    with pytest.raises(ValueError, match="single class"):
        model.fit(x, np.zeros(10), epochs=1, verbose=0, callbacks=[stop])
