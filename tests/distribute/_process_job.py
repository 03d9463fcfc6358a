"""What each process of the two-process tests runs (`keras_medseg.training.distribute.launch` pickles `job`).

`job(folder, reports, epochs, kill_epoch=None, reference=False)` fits a
45-parameter conv net through the one fit runner on 32 arrays of 8x8 in run
folder `folder` (global batch 8, so 4 steps per epoch, 4 rows per process).
Every process writes a report `reports/rank<R>-<epochs>.json` with the rows
of each epoch it read (a spy on `ArrayBatches.__getitem__`), the paths it
created, renamed or removed under `folder` (a `sys.audit` hook) and its
final weights. Rank 0 also fits the same net from the same seed alone (the
engine's local scope, one process, same batches of 8) for `reference`
epochs, the 1-process run the processes must match. With `kill_epoch=k`,
rank 1 kills itself (SIGKILL) at the second batch of epoch `k` after noting
the time in `reports/killed.json`.
"""

import json
import os
import signal
import sys
import time

import keras
import numpy as np

from keras_medseg.data.batches import ArrayBatches
from keras_medseg.training import runner
from keras_medseg.training.distribute import current_group


def _data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((32, 8, 8, 1)).astype("float32")
    y = (x > 0.3).astype("float32")
    return x, y


def _model():
    # seeded initializers (the same weights on every rank and in the reference), not
    # `keras.utils.set_random_seed(0)`: that one imports TensorFlow to seed it too, 3.8 CPU s in every JAX and
    # torch process (measured on 2 AMD EPYC cores)
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="tanh",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=0))(inputs)
    output = keras.layers.Conv2D(1, 1, activation="sigmoid",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=1))(hidden)
    model = keras.Model(inputs, output)
    model.compile(keras.optimizers.SGD(0.5), "binary_crossentropy")
    return model


class _Kill(keras.callbacks.Callback):
    def __init__(self, epoch, reports):
        super().__init__()
        self.kill_epoch, self.reports, self.epoch = epoch, reports, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == self.kill_epoch and batch == 1:
            with open(os.path.join(self.reports, "killed.json"), "w") as f:
                json.dump({"time": time.time()}, f)
            os.kill(os.getpid(), signal.SIGKILL)


def _spy(folder):
    """Record rows read by training batches and every path this process writes under `folder`."""
    read, written = {}, []
    folder = os.path.realpath(folder)
    original = ArrayBatches.__getitem__

    def getitem(self, index):
        if self.shuffle:  # the training batches (validation keeps its order)
            read.setdefault(self.epoch, set()).update(int(r) for r in self.rows(index)[0])
        return original(self, index)

    ArrayBatches.__getitem__ = getitem
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if not (isinstance(mode, str) and set(mode) & set("wax+")) and not (flags or 0) & writes:
                return
            paths = [path]
        elif event in ("os.rename", "os.remove", "os.mkdir", "shutil.rmtree", "os.truncate"):
            paths = list(args[:2]) if event == "os.rename" else [args[0]]
        else:
            return
        for p in paths:
            if isinstance(p, (str, bytes, os.PathLike)) and \
                    os.path.realpath(os.fsdecode(p)).startswith(folder + os.sep):
                written.append(os.path.relpath(os.path.realpath(os.fsdecode(p)), folder))

    sys.addaudithook(hook)
    return read, written


def job(folder, reports, epochs, kill_epoch=None, reference=False):
    """Fit in `folder` to `epochs`; return this process's report."""
    report, _ = _fit(folder, reports, epochs, kill_epoch, reference)
    return report


def _fit(folder, reports, epochs, kill_epoch=None, reference=False, model=None):
    """`(report, model)`; a given `model` goes on from the backup with its compiled step."""
    group = current_group()
    os.makedirs(folder, exist_ok=True)
    read, written = _spy(folder)
    x, y = _data()
    if model is None:
        with group.model_scope():
            model = _model()
    callbacks = [_Kill(kill_epoch, reports)] if kill_epoch is not None and group.rank == 1 else []
    run = runner.fit(model, x, y, out_dir=folder, epochs=epochs, batch_size=8, validation_data=(x[:8], y[:8]),
                     verbose=0, callbacks=callbacks, seed=3)
    report = {"rank": group.rank, "size": group.size, "engine": group.engine.name, "loss": run.history.get("loss"),
              "initial_epoch": run.initial_epoch, "read": {str(e): sorted(r) for e, r in read.items()},
              "written": sorted(set(written)), "weights": [np.asarray(w).tolist() for w in model.get_weights()]}
    if reference and group.is_writer:
        with group.local_scope():
            alone = _model()
            batches = ArrayBatches(x, y, batch_size=8, seed=3)
            history = alone.fit(batches, epochs=reference, verbose=0, shuffle=False,
                                callbacks=[runner.SetEpoch(batches)])
            report["reference_loss"] = history.history["loss"]
            report["reference_weights"] = [np.asarray(w).tolist() for w in alone.get_weights()]
    with open(os.path.join(reports, f"rank{group.rank}-{epochs}.json"), "w") as f:
        json.dump(report, f)
    return report, model


def first_run(folder, reports):
    """Two epochs and the 1-process reference of three; then on to three epochs, rank 1 killed in the third."""
    _, model = _fit(folder, reports, 2, reference=3)
    return _fit(folder, reports, 3, kill_epoch=2, model=model)[0]
