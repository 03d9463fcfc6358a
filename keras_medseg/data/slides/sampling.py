"""Keras datasets over a patch store: `ThreeStepSampler`, `PatchSequence`, `load_patch_dataset`."""

import os

import keras
import numpy as np

from keras_medseg.data.batches import check_shard
from keras_medseg.data.slides.patch_augment import augment_patches
from keras_medseg.data.slides.store import PatchStore
from keras_medseg.utils.validation import check_choice, check_positive_int


class _StoreDataset(keras.utils.PyDataset):
    """Opens the store lazily once per process (h5py handles do not survive fork/pickle)."""

    def __init__(self, store, **kwargs):
        super().__init__(**kwargs)
        self.path = store.path if isinstance(store, PatchStore) else os.fspath(store)
        self._store = None
        self._pid = None

    @property
    def store(self):
        if self._store is None or self._pid != os.getpid():
            self._store = PatchStore(self.path, "r")
            self._pid = os.getpid()
        return self._store

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None
        return state


class ThreeStepSampler(_StoreDataset):
    """Training batches drawn by the three-step sampling of the WSI lecture, with augmentation.

    Every patch of a batch is drawn as: (1) a label uniformly among the labels
    present, (2) a slide uniformly among the slides holding at least one patch
    of that label, (3) a patch uniformly among that slide's patches of that
    label. Classes are thus balanced and no slide dominates, however unequal
    the patch counts are.

    Args:
        store: a `PatchStore` or the path of its file.
        batch_size: patches per batch, default 32.
        steps_per_epoch: batches per epoch (the sampler is infinite), default 100.
        augment: apply `augment_patches` (flips + colour), default True.
        augment_kwargs: dict passed to `augment_patches`.
        transform: optional callable on each batch `(N, S, S, C)` float32 0-255
            before augmentation, e.g. a fitted
            `keras_medseg.data.slides.stain.StainNormalizer`.
        rescale: multiply pixel values by this, default 1 (0..255 for uint8;
            the `vgg16_classifier` preprocesses 0..255 RGB itself).
        seed: seed; batch `i` of epoch `e` is a function of `(seed, e, i)`.
        indices: optional subset of patch indices to sample from (e.g. the
            training slides, or all but a validation split); default all.
        num_shards: processes of a run sharing the store (default 1): the
            patches of every (label, slide) group are dealt out to the
            processes in turn, so each process samples from its own disjoint
            part (together: all of them) by the same three steps, with its
            own draws from `(seed, epoch, i, shard_index)`. `batch_size` is
            then the per-process batch.
        shard_index: this process's rank in `[0, num_shards)` (default 0).
        **kwargs: `keras.utils.PyDataset` arguments (`workers`,
            `use_multiprocessing`, `max_queue_size`).

    Yields:
        `(x, y)`: `x (batch, S, S, C)` float32, `y (batch, 1)` float32 labels.

    Raises:
        ValueError: an empty store; a part (`num_shards > 1`) without a patch
            of a label the store holds.

    Example:

    >>> ds = keras_medseg.data.ThreeStepSampler("patches.h5", batch_size=16, steps_per_epoch=50)
    >>> model.fit(ds, epochs=10)

    Reference: the lecture "Convolutional networks - theory" ("Training data three step sampling").
    """

    def __init__(self, store, batch_size=32, steps_per_epoch=100, augment=True, augment_kwargs=None, rescale=1.0,
                 seed=None, indices=None, transform=None, num_shards=1, shard_index=0, **kwargs):
        super().__init__(store, **kwargs)
        self.num_shards, self.shard_index = check_shard(num_shards, shard_index)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.augment = bool(augment)
        self.augment_kwargs = dict(augment_kwargs or {})
        if transform is not None and not callable(transform):
            raise ValueError(f"`transform` must be callable on a batch of patches. Received: transform={transform!r}")
        self.transform = transform
        self.rescale = float(rescale)
        self.seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
        self.epoch = 0
        labels, slides = self.store.labels, self.store.slide_index
        subset = np.arange(labels.size) if indices is None else np.unique(np.asarray(indices, np.int64).reshape(-1))
        if subset.size and (subset.min() < 0 or subset.max() >= labels.size):
            raise ValueError(f"`indices` must lie in [0, {labels.size}). Received: {subset.min()}..{subset.max()}")
        if subset.size == 0:
            raise ValueError(f"Patch store {self.path!r} is empty (or `indices` selects nothing): nothing to sample.")
        if self.num_shards > 1:
            subset = self._shard(subset, labels, slides)
        # index[label] = list of patch-index arrays, one per slide holding that label
        self.labels_present = np.unique(labels[subset])
        self.index = {}
        for lab in self.labels_present.tolist():
            rows = subset[labels[subset] == lab]
            order = np.argsort(slides[rows], kind="stable")
            rows = rows[order]
            cuts = np.flatnonzero(np.diff(slides[rows])) + 1
            self.index[lab] = np.split(rows, cuts)

    def _shard(self, subset, labels, slides):
        """This process's part of `subset`: every (label, slide) group's patches dealt out in turn."""
        order = np.lexsort((subset, slides[subset], labels[subset]))
        rows = subset[order]
        keys = np.stack([labels[rows], slides[rows]], axis=1)
        new_group = np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)]
        group = np.cumsum(new_group) - 1
        position = np.arange(rows.size) - np.flatnonzero(new_group)[group]
        part = rows[(position + group) % self.num_shards == self.shard_index]  # the deal starts one further per group
        missing = sorted(set(np.unique(labels[subset]).tolist()) - set(np.unique(labels[part]).tolist()))
        if missing:
            raise ValueError(f"Part {self.shard_index} of {self.num_shards} of patch store {self.path!r} has no patch "
                             f"with label {missing}: every label needs at least {self.num_shards} patches (one per "
                             f"process). Received: num_shards={self.num_shards}")
        return np.sort(part)

    def __len__(self):
        return self.steps_per_epoch

    def sample_indices(self, rng, n):
        """`n` patch indices drawn by the three steps (returns indices and labels)."""
        labs = rng.choice(self.labels_present, size=n)
        out = np.empty(n, np.int64)
        for k, lab in enumerate(labs.tolist()):
            groups = self.index[lab]
            group = groups[rng.integers(len(groups))]  # step 2: a slide with that label
            out[k] = group[rng.integers(group.size)]  # step 3: a patch of that label on it
        return out, labs

    def __getitem__(self, i):
        if not 0 <= i < self.steps_per_epoch:
            raise IndexError(f"Batch index {i} out of range for {self.steps_per_epoch} steps.")
        key = [self.seed, self.epoch, int(i)] + ([self.shard_index] if self.num_shards > 1 else [])
        rng = np.random.default_rng(key)
        idx, labs = self.sample_indices(rng, self.batch_size)
        x = self.store.read(idx).astype(np.float32)
        if self.transform is not None:
            x = np.asarray(self.transform(x), np.float32)
        if self.augment:
            x = augment_patches(x, rng, **self.augment_kwargs)
        if self.rescale != 1.0:
            x = x * np.float32(self.rescale)
        return x, labs.astype(np.float32).reshape(-1, 1)

    def set_epoch(self, epoch):
        """Draw the batches of `epoch` next (a resumed run starts at its epoch, as the uninterrupted one did)."""
        self.epoch = int(epoch)

    def on_epoch_end(self):
        self.epoch += 1


class PatchSequence(_StoreDataset):
    """Every patch of a store once, in order (evaluation / prediction).

    Args:
        store: a `PatchStore` or path.
        batch_size: default 64.
        rescale: multiply pixel values by this, default 1.
        indices: optional subset of patch indices.
        **kwargs: `keras.utils.PyDataset` arguments.

    Yields:
        `(x, y)` with `y (batch, 1)` float32 labels.
    """

    def __init__(self, store, batch_size=64, rescale=1.0, indices=None, **kwargs):
        super().__init__(store, **kwargs)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.rescale = float(rescale)
        self.indices = np.arange(len(self.store)) if indices is None else np.asarray(indices, np.int64).reshape(-1)
        self._labels = self.store.labels

    def __len__(self):
        return int(np.ceil(self.indices.size / self.batch_size))

    def __getitem__(self, i):
        idx = self.indices[i * self.batch_size:(i + 1) * self.batch_size]
        if idx.size == 0:
            raise IndexError(f"Batch index {i} out of range for {len(self)} batches.")
        x = self.store.read(idx).astype(np.float32)
        if self.rescale != 1.0:
            x = x * np.float32(self.rescale)
        return x, self._labels[idx].astype(np.float32).reshape(-1, 1)


def load_patch_dataset(path, batch_size=32, sampler="three_step", **kwargs):
    """A `keras.utils.PyDataset` over an HDF5 patch store (used by `keras-medseg train --data x.h5`).

    Args:
        path: the `.h5` patch store.
        batch_size: default 32.
        sampler: `"three_step"` (training: `ThreeStepSampler`) or
            `"sequential"` (every patch once: `PatchSequence`).
        **kwargs: passed to the dataset class.

    Raises:
        FileNotFoundError / ValueError: see `PatchStore`.
    """
    check_choice(sampler, "sampler", ("three_step", "sequential"))
    if sampler == "three_step":
        return ThreeStepSampler(path, batch_size=batch_size, **kwargs)
    return PatchSequence(path, batch_size=batch_size, **kwargs)
