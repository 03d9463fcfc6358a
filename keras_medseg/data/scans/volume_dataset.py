"""A lazy dataset of 2D/3D patches from folders of volumes, with positive/negative sampling.

`VolumeDataset` is a `keras.utils.PyDataset`: it reads a case only when a
batch needs it (`keras_medseg.data.read_image`), brings it to the model's
frame and voxel size (`keras_medseg.data.scans.geometry.to_model_space`) and
intensity preset, keeps preprocessed cases in an LRU cache within a memory
budget, and samples fixed-size patches: a positive patch is centred on a
foreground voxel, a negative one anywhere. Cases may all have different
shapes. Draws depend only on `(seed, epoch, batch index)`, so a run is
reproducible with any number of workers. An augmentation layer (e.g.
`keras_medseg.data.augment.Compose`) can be applied to every batch.

Sources: whatever `keras_medseg.data.cases.find_cases` lists cases of: a
folder with `images/` and `masks/` or `labels/` (files matched by name, any
extension `read_image` knows), a Medical Segmentation Decathlon
`dataset.json` (its `training` list of `imagesTr`/`labelsTr` pairs) or a
folder that holds one, or a list of `(image_path, label_path)` pairs.
"""

import collections
import math
import threading

import keras
import numpy as np

from keras_medseg.data.augment.window import crop_box as _crop
from keras_medseg.data.augment.window import supports_windows, warp_patches
from keras_medseg.data.batches import check_shard
from keras_medseg.data.cases import dataset_label_values, find_cases, mask_ids, standardize_labels, warn_compacted
from keras_medseg.data.regions import regions_from_labels
from keras_medseg.data.scans.disk_cache import VolumeDiskCache
from keras_medseg.data.scans.geometry import check_same_grid, to_model_space
from keras_medseg.data.scans.io import read_image
from keras_medseg.data.scans.preprocess import check_regions
from keras_medseg.data.scans.preprocess import intensity as apply_intensity
from keras_medseg.data.scans.workers import LayerCopies, WorkerPoolMixin

__all__ = ["VolumeDataset"]


def _reseed(layer, key):
    """Set every seed generator in `layer` from `key` (`[seed, epoch, index]`, plus the shard), so a batch's
    augmentation does not depend on the order in which batches are made."""
    base = np.random.default_rng(key).integers(0, 2**31 - 1, size=64)
    generators = [x.seed_generator for x in layer._flatten_layers(include_self=True)
                  if hasattr(x, "seed_generator")]
    for k, gen in enumerate(generators):
        gen.state.assign(np.array([base[k % 64], k], dtype=keras.backend.standardize_dtype(gen.state.dtype)))


class VolumeDataset(WorkerPoolMixin, keras.utils.PyDataset):
    """Batches of fixed-size patches sampled lazily from 2D/3D volumes of any shapes.

    Each batch draws `batch_size` patches: case `i` of a per-epoch
    permutation of the cases, then a positive patch (centred on a random
    foreground voxel, label > 0) with chance `pos_fraction` when the case has
    foreground, else a negative one (centred on a uniformly random voxel).
    Patches that leave the volume are padded (image: the case's minimum,
    labels: 0).

    Args:
        source: folder (`images/` + `masks/` or `labels/`), `dataset.json` (its
            `training` cases; a `validation` list is left out), or a list of
            `(image_path, label_path)` pairs (see `find_cases`).
        patch_size: int or tuple, voxels per spatial axis of a patch.
        batch_size: patches per batch (default 2).
        spatial_dims: 3 (default) for 3D patches, or 2 for 2D patches; with
            3D volumes and `spatial_dims=2`, patches are slices along
            `slice_axis`.
        slice_axis: axis of the (model-space) volume sliced for 2D patches
            (default 2, the third voxel axis: axial for most CT/MR files).
        pos_fraction: chance of a positive patch, in [0, 1] (default 0.5,
            i.e. a 1:1 positive/negative ratio).
        spacing: target voxel size in mm (e.g. `(1.5, 1.5, 3.0)`) or None to
            keep each case's grid (default None).
        orientation: target axis code such as "RAS" (3D), or None (default).
        intensity: preset for `keras_medseg.data.scans.preprocess.intensity`, e.g.
            `{"preset": "zscore"}` (default), `{"preset": "ct_window",
            "low": -160, "high": 240}`, or None.
        label_values: voxel value of each class (`standardize_labels`); None
            (default) surveys every label map once at construction
            (`keras_medseg.data.cases.dataset_label_values`: the one mask rule
            over the whole data set: 0/255 masks are 0/1, ids `{0, 1, 4}`
            classes 0, 1, 2, a 255 border next to other ids, fractional or
            negative values refused, naming the file).
        ignore_value: voxel value mapped to `IGNORE_INDEX` (-1) (default
            None); batches then come as `(x, y, w)` with `y` 0 and `w` 0 on
            those voxels, so every loss and metric skips them.
        resample_irregular: bool (default False): DICOM series with missing
            slices or uneven gaps are resampled from their true slice
            positions instead of refused (`keras_medseg.data.scans.dicom`).
        cache_bytes: memory budget of the preprocessed-case cache in bytes
            (default 1 GiB); least recently used cases are dropped first.
        cache_dir: folder of a disk cache of preprocessed cases (default
            None: none), the tier below the memory cache for data sets larger
            than RAM: each case is read and preprocessed once, then memory-mapped
            (`keras_medseg.data.scans.disk_cache.VolumeDiskCache`; entries keyed
            by the case's files and the preprocessing, so a changed spec or a
            rewritten file is read again). Worker processes, the ranks of a
            distributed run and later runs may share the folder.
        cache_dir_bytes: size budget of `cache_dir` in bytes (default None: no
            limit); least recently used entries are deleted first.
        augment: optional layer applied to `{"image", "labels"}` batches
            (default None); its seed generators are reset from `(seed, epoch,
            batch index)` before each batch, so batches are reproducible with
            any number of workers (worker threads each augment with their own
            copy of the layer, `keras.layers.serialize` round trip; a layer
            that cannot be copied is used by one thread at a time). A layer with a `margin(patch_size)`
            method (`augment.Compose`, a warp) reads the scan around the patch, not padding: a 3D
            `Compose` that starts with a warp draws it first and crops only the box its points reach
            (`augment.window`), any other gets patches cropped `margin` wider.
        steps_per_epoch: batches per epoch (default: enough for every case
            once, `ceil(cases / batch_size)`).
        seed: int seed of all draws (default 0); the same on every process of a run.
        num_shards: processes sharing the epoch (default 1). Slot `s` of an
            epoch (batch `s // batch_size` of one process) reads case
            `order[s % cases]`; process `k` of `W` takes the slots of global
            batch `i` from `(i * W + k) * batch_size` on, so the processes
            read disjoint slots of one case order (every case once per epoch
            when `cases <= W * batch_size * steps_per_epoch`), and draw their
            patch centres and augmentation from `(seed, epoch, index, k)`.
            `batch_size` is then the per-process batch.
        shard_index: this process's rank in `[0, num_shards)` (default 0).
        foreground_samples: foreground voxels kept per case to centre
            positive patches (default 10000).
        regions: None (default: `y` holds class ids) or the regions of a
            multi-label (sigmoid) model, `{name: mask values}` or
            `[{"name", "values"}]` (`preprocess.check_regions`); `y` is then
            `(batch_size, *patch_size, R)` float32 0/1 masks, channel `r` set
            where the mask value is one of region `r`'s (regions may overlap:
            whole tumour `{1, 2, 3}` holds tumour core `{2, 3}`), made after
            augmentation from the augmented label patch.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`,
            `use_multiprocessing`, `max_queue_size`). Worker threads
            (`workers=N`, the default `use_multiprocessing=False`) share the
            memory cache (guarded by a lock). With `use_multiprocessing=True`
            and `workers >= 2` (`worker_processes`), `workers` processes of
            this dataset's own make the batches, on every backend: started
            once by a forkserver, one compute thread each, fed by Keras'
            enqueuer threads (Keras sees `use_multiprocessing=False`);
            `close()` stops them (`keras_medseg.data.scans.workers`: give them
            a `cache_dir`, and iterate under `if __name__ == "__main__":`).

    Output: `(x, y)` with `x` `(batch_size, *patch_size, C)` float32 and `y`
    `(batch_size, *patch_size)` int32 class ids, or region masks with
    `regions` (plus `w` `(batch_size, *patch_size)` float32 with an
    `ignore_value`). `C` is the number of channels of the cases: a 4D NIfTI
    `(i, j, k, C)` or one file per modality (`find_cases`), each channel
    normalised with its own statistics (`preprocess.intensity`); every case
    must have the same `C`.

    Raises:
        ValueError: bad `patch_size`, `pos_fraction`, `spatial_dims`,
            `cache_bytes` or source (named); a label map the mask rule refuses;
            a label map that does not lie on its image's grid (shape, or an
            affine more than 1 % of a voxel away: shifted, resampled, swapped
            axes; `keras_medseg.data.scans.geometry.check_same_grid`), naming
            both files; a modality file off its case's first modality's grid,
            or a case with another number of channels (named).

    Example:

    >>> ds = keras_medseg.data.VolumeDataset("Task09_Spleen", patch_size=96, batch_size=2,
    ...                                      spacing=(1.5, 1.5, 2.0), intensity={"preset": "ct_window",
    ...                                      "low": -160, "high": 240})  # doctest: +SKIP
    >>> model.fit(ds, epochs=10)  # doctest: +SKIP

    Reference: positive/negative patch sampling as in nnU-Net (Isensee et al.,
    Nature Methods 2021) and MONAI's `RandCropByPosNegLabeld`.
    """

    def __init__(self, source, patch_size, batch_size=2, spatial_dims=3, slice_axis=2, pos_fraction=0.5,
                 spacing=None, orientation=None, intensity=None, label_values=None, ignore_value=None,
                 cache_bytes=2**30, augment=None, steps_per_epoch=None, seed=0, foreground_samples=10000,
                 resample_irregular=False, num_shards=1, shard_index=0, regions=None, cache_dir=None,
                 cache_dir_bytes=None, **kwargs):
        processes = bool(kwargs.pop("use_multiprocessing", False))
        super().__init__(**kwargs)  # Keras' enqueuer gets threads; with `use_multiprocessing` they wait on our pool
        self.worker_processes = processes and self._workers > 1
        self.num_shards, self.shard_index = check_shard(num_shards, shard_index)
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` must be 2 or 3. Received: spatial_dims={spatial_dims!r}")
        size = (patch_size,) * spatial_dims if isinstance(patch_size, int) else tuple(patch_size)
        if len(size) != spatial_dims or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
            raise ValueError(f"`patch_size` must be a positive int or {spatial_dims} positive ints. "
                             f"Received: patch_size={patch_size!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
        if not 0.0 <= float(pos_fraction) <= 1.0:
            raise ValueError(f"`pos_fraction` must be in [0, 1]. Received: pos_fraction={pos_fraction!r}")
        if not isinstance(cache_bytes, (int, float)) or cache_bytes < 0:
            raise ValueError(f"`cache_bytes` must be >= 0 bytes. Received: cache_bytes={cache_bytes!r}")
        # a dataset.json's `validation` list (a fixed split) is not trained on
        self.cases = [c for c in find_cases(source) if c.get("split") != "validation"]
        self.patch_size = tuple(int(s) for s in size)
        self.batch_size = batch_size
        self.spatial_dims = spatial_dims
        self.slice_axis = int(slice_axis)
        self.pos_fraction = float(pos_fraction)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.orientation = orientation
        self.intensity = {"preset": "zscore"} if intensity is None else (
            {"preset": intensity} if isinstance(intensity, str) else dict(intensity))
        self.ignore_value = ignore_value
        self.resample_irregular = bool(resample_irregular)
        if label_values is None:  # the one mask rule over the whole data set, decided once
            label_values = dataset_label_values([c["label"] for c in self.cases], ignore_value=ignore_value,
                                                spatial_dims=self._volume_dims())
            warn_compacted(label_values, repr(getattr(source, "path", source)))
        self.label_values = [int(v) for v in label_values]
        self.regions = None if regions is None else check_regions(regions)
        self._region_ids = None if regions is None else [self._class_ids(r) for r in self.regions]
        self._channels = None
        self.cache_bytes = int(cache_bytes)
        self.disk_cache = None if cache_dir is None else VolumeDiskCache(cache_dir, cache_dir_bytes)
        self.augment = augment
        self.steps_per_epoch = steps_per_epoch or math.ceil(len(self.cases) / (batch_size * self.num_shards))
        self.seed = int(seed)
        self.foreground_samples = int(foreground_samples)
        self.epoch = 0
        self._cache = collections.OrderedDict()
        self._cached_bytes = 0
        self.loads = 0  # how many times a case was read from disk (cache misses)
        self._init_locks()

    def _init_locks(self):
        self._lock = threading.Lock()  # the memory cache, shared by worker threads
        self._case_locks = {}  # case index -> lock held while one thread reads that case
        self._layers = LayerCopies(self.augment)  # the worker threads' copies of the augmentation

    def __getstate__(self):  # pickled (a worker process's copy): no locks, no layer copies, no pool
        state = self.__dict__.copy()
        for key in ("_lock", "_case_locks", "_layers", "_processes"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_locks()

    def _augmentation(self):
        """The augmentation layer for this batch: one no other thread is using (`workers.LayerCopies`)."""
        with self._lock:
            if self._layers.layer is not self.augment:  # a layer set after construction: its own copies
                self._layers = LayerCopies(self.augment)
            return self._layers.take()

    def _class_ids(self, region):
        missing = [v for v in region["values"] if v not in self.label_values]
        if missing:
            raise ValueError(f"Region {region['name']!r} lists mask values {missing} that no label map holds "
                             f"(found {self.label_values}). Received: regions={self.regions!r}")
        return [self.label_values.index(v) for v in region["values"]]

    # -- cases ---------------------------------------------------------------
    def spec(self, class_names=None):
        """The preprocessing spec to save with a model trained on this dataset (`save_preprocessing`)."""
        return {"spacing": None if self.spacing is None else list(self.spacing), "orientation": self.orientation,
                "intensity": dict(self.intensity), "class_names": class_names, "spatial_dims": self.spatial_dims,
                "patch_size": list(self.patch_size), "label_values": list(self.label_values),
                "regions": self.regions}

    def _volume_dims(self):
        return 3 if self.spatial_dims == 3 or self.orientation is not None else None

    def _read(self, i):
        """Read and preprocess case `i`: `(image (*S, C) float32, labels (*S) int32)` in model space."""
        case = self.cases[i]
        volume_dims = self._volume_dims()
        image = read_image(case["image"], spatial_dims=volume_dims, resample_irregular=self.resample_irregular,
                           channels=True)
        labels = read_image(case["label"], spatial_dims=volume_dims, resample_irregular=self.resample_irregular)
        d = image.spatial_dims
        check_same_grid(image, labels)  # the rule `evaluate` applies: no label map off its image's grid
        lab, _ = standardize_labels(mask_ids(labels.array, d, name=repr(case["label"])),
                                    ignore_value=self.ignore_value, label_values=self.label_values,
                                    names=repr(case["label"]))
        img, _ = to_model_space(image.array, image.affine, self.spacing, self.orientation, order=1, spatial_dims=d)
        lab, _ = to_model_space(lab, labels.affine, self.spacing, self.orientation, order=0, spatial_dims=d)
        img = apply_intensity(img, self.intensity, name=image.path, spatial_dims=d)  # per channel
        if img.ndim == d:
            img = img[..., None]
        if d == 2 and self.spatial_dims == 3:
            raise ValueError(f"Case {case['name']!r} is 2D but spatial_dims=3. Received: {case['image']!r}")
        return img.astype(np.float32), lab.astype(np.int32)

    def load_case(self, i):
        """`(image, labels, foreground_flat_indices, fill)` of case `i`, from the cache when there.

        Thread-safe: worker threads share the memory cache, and one case is read by one thread at a time
        (a second thread waits and takes the first one's result, or its disk-cache entry).
        """
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
            case_lock = self._case_locks.setdefault(i, threading.Lock())
        with case_lock:
            with self._lock:
                if i in self._cache:  # another thread read it while this one waited
                    self._cache.move_to_end(i)
                    return self._cache[i]
            return self._load_entry(i)

    def _load_entry(self, i):
        image, labels, fg, fill = self._load(i)
        self._check_channels(i, image)
        if fg.size > self.foreground_samples:
            rng = np.random.default_rng([self.seed, i])
            fg = np.sort(rng.choice(fg, self.foreground_samples, replace=False))
        entry = (image, labels, fg, fill)
        nbytes = image.nbytes + labels.nbytes + fg.nbytes
        with self._lock:
            if nbytes <= self.cache_bytes:
                while self._cache and self._cached_bytes + nbytes > self.cache_bytes:
                    _, old = self._cache.popitem(last=False)
                    self._cached_bytes -= old[0].nbytes + old[1].nbytes + old[2].nbytes
                self._cache[i] = entry
                self._cached_bytes += nbytes
        return entry

    def _check_channels(self, i, image):
        if self._channels is None:
            self._channels = (image.shape[-1], self.cases[i]["image"])
        elif image.shape[-1] != self._channels[0]:
            raise ValueError(f"Case {self.cases[i]['name']!r} ({self.cases[i]['image']!r}) has {image.shape[-1]} "
                             f"channels but {self._channels[1]!r} has {self._channels[0]}; every case needs the same "
                             "modalities.")

    def _load(self, i):
        """`(image, labels, every foreground flat index, fill)` of case `i`: from the disk cache (memory maps) when
        there, else read and preprocessed (and put in the disk cache)."""
        files = None
        if self.disk_cache is not None:
            case = self.cases[i]
            images = case["image"] if isinstance(case["image"], (list, tuple)) else [case["image"]]
            files = [*images, case["label"]]
            hit = self.disk_cache.get(files, self._disk_key())
            if hit is not None:
                return hit["image"], hit["labels"], hit["foreground"], float(hit["meta"]["fill"])
        image, labels = self._read(i)
        # NIfTI arrays come column-major: C order once here, so that a patch's box is a plain slice and not a
        # transposing copy (about 2 ms of CPU per 64^3 patch, benchmarks/volume_pipeline.py); the disk cache
        # stores C order too
        image, labels = np.ascontiguousarray(image), np.ascontiguousarray(labels)
        with self._lock:
            self.loads += 1
        fg, fill = np.flatnonzero(labels > 0), float(image.min())
        if files is not None:
            out = self.disk_cache.put(files, self._disk_key(), {"image": image, "labels": labels, "foreground": fg},
                                      extra={"fill": fill})
            image, labels, fg = out["image"], out["labels"], out["foreground"]
        return image, labels, fg, fill

    def _disk_key(self):
        """What the preprocessed arrays depend on besides the files (the disk cache's key)."""
        return {"version": 1, "spacing": self.spacing, "orientation": self.orientation, "intensity": self.intensity,
                "label_values": self.label_values, "ignore_value": self.ignore_value,
                "resample_irregular": self.resample_irregular, "volume_dims": self._volume_dims()}

    def fill_cache(self, progress=False, workers=None):
        """Read and preprocess every case once now (into the disk cache, and the memory cache within its budget).

        With a `cache_dir`, the first epoch then reads memory maps instead of scans, and the one-time
        cost shows up front with a progress bar instead of as a slow first epoch. Cases already in the
        disk cache are only opened.

        Args:
            progress: bool, a Keras progress bar over the cases (default False).
            workers: threads reading cases at once (default None: the dataset's `workers`).

        Returns:
            int, the number of cases read from their files (not found in the disk cache).
        """
        from multiprocessing.pool import ThreadPool

        workers = max(1, int(workers or self._workers or 1))
        bar = keras.utils.Progbar(len(self.cases), unit_name="case") if progress else None
        before = self.loads
        if workers == 1:
            for i in range(len(self.cases)):
                self.load_case(i)
                if bar is not None:
                    bar.add(1)
        else:
            with ThreadPool(workers) as pool:
                for _ in pool.imap_unordered(self.load_case, range(len(self.cases))):
                    if bar is not None:
                        bar.add(1)
        return self.loads - before

    @property
    def cached_bytes(self):
        """Bytes held by the case cache now (always <= `cache_bytes`)."""
        return self._cached_bytes

    # -- sampling ------------------------------------------------------------
    def draw_centre(self, labels, fg, rng):
        """`(centre voxel, positive)` of one patch of a case drawn with `rng` (see `sample_patch`)."""
        shape = labels.shape
        positive = fg.size > 0 and rng.random() < self.pos_fraction
        centre = np.unravel_index(int(fg[rng.integers(fg.size)]), shape) if positive else tuple(
            int(rng.integers(s)) for s in shape)
        return tuple(int(c) for c in centre), positive

    def sample_patch(self, image, labels, fg, fill, rng, margin=None):
        """One `(image_patch, label_patch, positive)` drawn with `rng`, `margin` voxels wider on each side."""
        shape = labels.shape
        centre, positive = self.draw_centre(labels, fg, rng)
        if self.spatial_dims == 2 and len(shape) == 3:
            axis = self.slice_axis
            image = np.take(image, centre[axis], axis=axis)
            labels = np.take(labels, centre[axis], axis=axis)
            centre = tuple(c for k, c in enumerate(centre) if k != axis)
        margin = margin or (0,) * len(self.patch_size)
        start = [c - p // 2 - m for c, p, m in zip(centre, self.patch_size, margin)]
        size = [p + 2 * m for p, m in zip(self.patch_size, margin)]
        return _crop(image, start, size, fill), _crop(labels, start, size, 0), positive

    def __len__(self):
        return int(self.steps_per_epoch)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch index out of range [0, {len(self)}). Received: index={index}")
        if self.worker_processes and self._pool() is not None:  # made by a worker process, as here
            return self._processes.batch(self.epoch, index)
        key = [self.seed, self.epoch, index] + ([self.shard_index] if self.num_shards > 1 else [])
        rng = np.random.default_rng(key)
        # A warping augmentation reads around the patch: crop the margin it needs, warp only the patch's voxels.
        margin = self.augment.margin(self.patch_size) if hasattr(self.augment, "margin") else None
        if margin and any(margin) and self.spatial_dims == 3 and supports_windows(self.augment):
            x, y = self._warped_batch(index, key, rng, margin)
            return self._finish(x, y)
        xs, ys = [], []
        for case in self.case_slots(index):
            image, labels, fg, fill = self.load_case(case)
            x, y, _ = self.sample_patch(image, labels, fg, fill, rng, margin)
            xs.append(x)
            ys.append(y)
        x, y = np.stack(xs), np.stack(ys)
        if self.augment is not None:
            sized = {"output_size": self.patch_size} if margin and any(margin) else {}
            with self._augmentation() as layer:
                _reseed(layer, key)
                out = layer({"image": x, "labels": y}, training=True, **sized)
                x = np.asarray(keras.ops.convert_to_numpy(out["image"]), np.float32)
                y = np.asarray(keras.ops.convert_to_numpy(out["labels"]), np.int32)
        return self._finish(x, y)

    def _warped_batch(self, index, key, rng, margin):
        """`(x, y)` of batch `index` by `augment.window.warp_patches` (the margin path's patches and draws)."""
        corners = []  # per sample: (image, labels, fill, first voxel of its worst-case crop)
        for case in self.case_slots(index):
            image, labels, fg, fill = self.load_case(case)
            centre, _ = self.draw_centre(labels, fg, rng)
            corners.append((image, labels, fill, [c - p // 2 - m for c, p, m in zip(centre, self.patch_size, margin)]))

        def read(n, start, size):
            image, labels, fill, corner = corners[n]
            first = [c + s for c, s in zip(corner, start)]
            small = np.int8 if len(self.label_values) < 128 else np.int32  # a quarter of the bytes to move
            return _crop(image, first, size, fill, view=True), _crop(labels, first, size, 0, view=True).astype(small)

        with self._augmentation() as layer:
            _reseed(layer, key)
            x, y = warp_patches(layer, read, len(corners), self.patch_size)
            return np.asarray(keras.ops.convert_to_numpy(x), np.float32), keras.ops.convert_to_numpy(y).astype(np.int32)

    def _finish(self, x, y):
        """The batch as the model takes it: region masks, ignored voxels as weights."""
        w = (y >= 0).astype(np.float32) if self.ignore_value is not None else None
        if self._region_ids is not None:  # one 0/1 channel per region (ignored voxels: in none, weight 0)
            y = regions_from_labels(y, self._region_ids, dtype="float32")
        if w is not None:  # ignored voxels: class 0 with weight 0 (the losses take voxel weights)
            return x, np.maximum(y, 0), w
        return x, y

    def case_slots(self, index, epoch=None):
        """The case indices this process reads for batch `index` of `epoch` (default: the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.cases))
        first = (index * self.num_shards + self.shard_index) * self.batch_size
        return [int(order[(first + b) % len(self.cases)]) for b in range(self.batch_size)]

    def set_epoch(self, epoch):
        """Draw the batches of `epoch` next (a resumed run starts at its epoch, as the uninterrupted one did)."""
        self.epoch = int(epoch)

    def on_epoch_end(self):
        self.epoch += 1
