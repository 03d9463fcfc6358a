"""What each process of the two-process patch-classifier test runs (`launch` pickles `job`).

`job(store, folder, reports)` trains a zoo patch classifier with
`keras_medseg.training.train_patch_classifier` in this process's rank
(2 epochs, global batch 8: 4 patches per process and step, 4 steps per
epoch, 8 validation patches). The classifier is a 2-filter conv net
registered in the zoo of the worker process alone (`TINY`; the pytest
process's zoo is left as it is): VGG16 itself would cost a minute of CPU.
Every process writes `reports/rank<R>.json` with the patch indices its
sampler drew in each epoch and the ones it owns (a spy on
`ThreeStepSampler.sample_indices`), the paths it wrote under `folder`
(`_process_job`'s audit hook) and its history. Rank 0 also
trains the same classifier from the same seed alone (one process, the
engine's local scope) on the global batches, i.e. step `i` of each epoch
the patches of both processes' step `i` together, with the single-process
recipe's callbacks: the run the two processes must match.
"""

import json
import os

import keras
import numpy as np

from keras_medseg import zoo
from keras_medseg.data.slides import ThreeStepSampler
from keras_medseg.training import runner
from keras_medseg.training.distribute import current_group
from keras_medseg.training.patch_classifier import _split, train_patch_classifier
from keras_medseg.training.recipes import vgg16_recipe
from tests.distribute._process_job import _spy

TINY = "tiny_patch_classifier_for_tests"
SETTINGS = {"epochs": 2, "batch_size": 8, "n_train": 32, "n_val": 8, "seed": 0}


def _register():
    from keras_medseg.zoo.registry import _REGISTRY, register_model

    if TINY in _REGISTRY:
        return

    @register_model(TINY, task="classification", description="2-filter conv net, sigmoid unit (tests only).")
    def tiny(input_shape=(8, 8, 3)):
        inputs = keras.Input(input_shape)
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(2, 3, padding="same", activation="tanh")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x), name=TINY)
        model.compile(keras.optimizers.SGD(0.5), "binary_crossentropy")
        return model


class _GlobalBatches(keras.utils.PyDataset):
    """Step `i`: the batches of step `i` of every process's sampler, concatenated (the global batch)."""

    def __init__(self, parts):
        super().__init__()
        self.parts = parts

    def __len__(self):
        return len(self.parts[0])

    def __getitem__(self, i):
        batches = [p[i] for p in self.parts]
        return tuple(np.concatenate(b) for b in zip(*batches))

    def set_epoch(self, epoch):
        for p in self.parts:
            p.set_epoch(epoch)


def _reference(store, size):
    """One process, the same global batches and seed: the history the processes must match."""
    runner.set_random_seed(SETTINGS["seed"])
    model = zoo.build(TINY, input_shape=(8, 8, 3))
    s = {k: SETTINGS[k] for k in ("batch_size", "n_train", "n_val", "seed")}
    parts, validation = [], None
    for k in range(size):
        sampler, validation = _split(store, **s, num_shards=size, shard_index=k)
        parts.append(sampler)
    batches = _GlobalBatches(parts)
    _, _, callbacks = vgg16_recipe(validation, batch_size=SETTINGS["batch_size"])
    history = model.fit(batches, validation_data=validation, epochs=SETTINGS["epochs"], shuffle=False, verbose=0,
                        callbacks=[runner.SetEpoch(batches)] + callbacks)
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}


def job(store, folder, reports):
    """Train in this rank; write this process's report; return it."""
    _register()
    group = current_group()
    _, written = _spy(folder)
    drawn, owned = {}, set()
    original = ThreeStepSampler.sample_indices

    def sample_indices(self, rng, n):
        idx, labels = original(self, rng, n)
        drawn.setdefault(str(self.epoch), set()).update(int(i) for i in idx)
        owned.update(int(i) for groups in self.index.values() for g in groups for i in g)
        return idx, labels

    ThreeStepSampler.sample_indices = sample_indices
    try:
        result = train_patch_classifier(TINY, store, out_dir=folder, verbose=0, **SETTINGS)
    finally:
        ThreeStepSampler.sample_indices = original
    report = {"rank": group.rank, "size": group.size, "engine": group.engine.name,
              "history": {k: [float(v) for v in vs] for k, vs in result.history.items()},
              "best_roc_auc": result.best_roc_auc, "num_val": result.num_val,
              "drawn": {e: sorted(s) for e, s in drawn.items()}, "owned": sorted(owned),
              "written": sorted(set(written))}
    if group.is_writer:
        with group.local_scope():
            report["reference"] = _reference(store, group.size)
    with open(os.path.join(reports, f"rank{group.rank}.json"), "w") as f:
        json.dump(report, f)
    return report
