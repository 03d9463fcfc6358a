"""Seeded batches of in-memory arrays, split by rank for training over several processes.

`ArrayBatches` is a `keras.utils.PyDataset` over `(x, y, sample_weight)`
arrays (folder data and Q-tips are loaded as arrays by
`keras_medseg.data.load_data`). The order of an epoch is a permutation drawn
from `(seed, epoch)` alone, so every process of a run draws the same one; the
global batch `i` is rows `order[i*B:(i+1)*B]` and process `k` of `W` takes
the `k`-th of its `W` equal parts. Over the processes an epoch therefore
reads every row exactly once (no row skipped, none read twice), and the
union of the parts of a step is the batch one process would train on: with
the gradient averaged over the processes, `W` processes train like one with
the same global batch (the torch `DistributedSampler` and `tf.data`
`shard` contract, with the split done per batch).

A last global batch of `R < B` rows is spread as `ceil(R / W)` rows per
process: the few rows needed to fill the parts are repeated with sample
weight 0, and the real rows are weighted `W * ceil(R / W) / R`, so the mean
loss over the processes (Keras divides a weighted loss by the number of
rows) equals the mean over the `R` rows. Batches then carry sample weights
(all of them, so every batch has the same structure).
"""

import math

import keras
import numpy as np

from keras_medseg.utils.validation import check_positive_int

__all__ = ["ArrayBatches", "check_shard"]


def check_shard(num_shards, shard_index, batch_size=None):
    """Validate a `(num_shards, shard_index)` pair (and that `batch_size` splits into `num_shards` parts).

    Args:
        num_shards: int >= 1, the number of processes that share the data.
        shard_index: int in `[0, num_shards)`, this process's part.
        batch_size: optional global batch size that must be a multiple of `num_shards`.

    Returns:
        `(num_shards, shard_index)` as ints.

    Raises:
        ValueError: a bad value (named).
    """
    num_shards = check_positive_int(num_shards, "num_shards")
    if isinstance(shard_index, bool) or not isinstance(shard_index, (int, np.integer)) or \
            not 0 <= shard_index < num_shards:
        raise ValueError(f"`shard_index` must be an int in [0, num_shards={num_shards}). "
                         f"Received: shard_index={shard_index!r}")
    if batch_size is not None and batch_size % num_shards:
        raise ValueError(f"The global `batch_size` must be a multiple of the number of processes ({num_shards}), "
                         f"each process training on batch_size / {num_shards} rows. Received: batch_size={batch_size}")
    return int(num_shards), int(shard_index)


class ArrayBatches(keras.utils.PyDataset):
    """Batches of arrays in a seeded per-epoch order; with `num_shards > 1`, one process's part of each batch.

    Args:
        x: array `(N, ...)`, e.g. images `(N, H, W, C)` or volumes `(N, D, H, W, C)`.
        y: optional array `(N, ...)` of targets (default None).
        sample_weight: optional array `(N,)` or `(N, ...)` (per pixel) of weights (default None).
        batch_size: int, the global batch: rows per step over all processes (default 32); a multiple of
            `num_shards`.
        shuffle: bool, draw a new order every epoch from `(seed, epoch)` (default True); False keeps the
            rows' order.
        seed: int, seed of the order (default 0); the same on every process of a run.
        num_shards: int, processes sharing the data (default 1).
        shard_index: int, this process's rank in `[0, num_shards)` (default 0).
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, `use_multiprocessing`, `max_queue_size`).

    Output: `(x, y)` or `(x, y, sample_weight)` batches of `batch_size // num_shards` rows (the last one may
    be smaller); with `y=None`, `x` alone.

    Raises:
        ValueError: arrays of different lengths, an empty `x`, a bad `batch_size`, `num_shards` or
            `shard_index` (named).

    Example:

    >>> part = keras_medseg.data.batches.ArrayBatches(x, y, batch_size=16, num_shards=2, shard_index=1)
    >>> model.fit(part, epochs=5)  # doctest: +SKIP

    Reference: the per-epoch seeded permutation split by rank of PyTorch's `DistributedSampler` (Li et al.,
    "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020).
    """

    def __init__(self, x, y=None, sample_weight=None, batch_size=32, shuffle=True, seed=0, num_shards=1,
                 shard_index=0, **kwargs):
        super().__init__(**kwargs)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.num_shards, self.shard_index = check_shard(num_shards, shard_index, self.batch_size)
        self.x = x
        n = len(x)
        if n == 0:
            raise ValueError("`x` holds no rows: nothing to train on. Received: x with shape "
                             f"{getattr(x, 'shape', n)}")
        for name, arr in (("y", y), ("sample_weight", sample_weight)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"`{name}` must have as many rows as `x` ({n}). Received: {len(arr)} rows")
        self.y = y
        self.sample_weight = None if sample_weight is None else np.asarray(sample_weight, np.float32)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.weighted = self.sample_weight is not None or (self.num_shards > 1 and n % self.batch_size != 0)

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def order(self, epoch=None):
        """The row order of `epoch` (default: the current one), the same on every process."""
        n = len(self.x)
        epoch = self.epoch if epoch is None else int(epoch)
        return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

    def rows(self, index, epoch=None):
        """`(row indices, weight factors)` this process reads for batch `index` of `epoch`.

        The factors are 1 except in a last global batch that does not split evenly: there the real rows
        get `W * ceil(R / W) / R` and the repeated filler rows 0 (see the module docstring).
        """
        if not 0 <= index < len(self):
            raise IndexError(f"Batch index out of range [0, {len(self)}). Received: index={index}")
        rows = self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        real = rows.size
        local = math.ceil(real / self.num_shards)
        factors = np.ones(local * self.num_shards, np.float32)
        if real < local * self.num_shards:  # fill with weight-0 repeats, scale the real rows
            rows = np.resize(rows, local * self.num_shards)
            factors[:real] = local * self.num_shards / real
            factors[real:] = 0.0
        part = slice(self.shard_index * local, (self.shard_index + 1) * local)
        return rows[part], factors[part]

    def __getitem__(self, index):
        rows, factors = self.rows(index)
        x = self.x[rows]
        if self.y is None:
            return x
        y = self.y[rows]
        if not self.weighted:
            return x, y
        w = np.ones(rows.size, np.float32) if self.sample_weight is None else self.sample_weight[rows]
        return x, y, (w * factors.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)

    def set_epoch(self, epoch):
        """Draw the order of `epoch` next (a resumed run starts at its epoch, as the uninterrupted one did)."""
        self.epoch = int(epoch)

    def on_epoch_end(self):
        self.epoch += 1
