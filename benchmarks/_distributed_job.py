"""What `benchmarks/distributed_training.py` times in each process: `steps` fit steps of a small 2D UNet.

A module of its own (the launched processes import it by name; `distributed`
would hide Dask's package of that name).
"""

import time

import keras
import numpy as np


class _StepClock(keras.callbacks.Callback):
    """Wall time of every training batch end."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def timed_fit(settings):
    """Steps per second (after `warmup` steps) of the zoo UNet on this process's part of every global batch.

    Runs alone or as one rank of a launched run (`current_group()`); returns a dict (rank 0's is reported).
    """
    from keras_medseg import zoo
    from keras_medseg.data.batches import ArrayBatches
    from keras_medseg.training.distribute import current_group

    group = current_group()
    s = settings
    rng = np.random.default_rng(0)
    n = s["batch"] * (s["steps"] + s["warmup"])
    x = rng.standard_normal((n, s["size"], s["size"], 1)).astype("float32")
    y = (x > 0.5).astype("int32")[..., 0]
    keras.utils.set_random_seed(0)
    with group.model_scope():
        model = zoo.build("unet", num_classes=2, depth=2, filters=s["filters"], input_size=s["size"])
    data = ArrayBatches(x, y, batch_size=s["batch"], num_shards=group.size, shard_index=group.rank)
    data, extra = group.wrap_dataset(data)
    clock = _StepClock()
    with group.fit_scope():
        model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=group.fit_callbacks() + extra + [clock])
    group.barrier("benchmark end")
    ends = clock.ends[s["warmup"] - 1:]
    seconds = ends[-1] - ends[0]
    grads = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {"processes": group.size, "steps_per_s": (len(ends) - 1) / seconds,
            "seconds_per_step": seconds / (len(ends) - 1), "gradient_floats": grads}
