"""Cohort extraction on Dask: one task per slide, one shard store per slide, a manifest, one virtual store.

`extract_cohort(folder, "cohort.h5", workers=2)` cuts every slide of a cohort
into patches in parallel with `dask.distributed`:

* **Engine.** A `distributed.LocalCluster` started in this process (`workers`
  worker processes, one thread each) by default; `scheduler="tcp://host:8786"`
  runs the same tasks on a real cluster (the workers need the slides and the
  output folder on a shared file system), `client=` reuses a running client.
  Dask schedules, retries and moves the tasks; nothing here schedules work.
* **One task per slide.** Each task streams its slide into its own shard
  (`keras_medseg.data.slides.streaming.extract_slide`, one process, no
  shared writer) written under a temporary name and `os.replace`d into
  `cohort.shards/<slide>.h5` when complete (`keras_medseg.utils.atomic_io`),
  so a shard on disk is always whole. The client (this process) records every
  finished shard in `cohort.shards/manifest.json` (atomic write) as its task
  returns.
* **Resumable.** A rerun skips the slides the manifest lists with their shard
  on disk and does only the rest. The grid parameters are in the manifest; a
  rerun with other ones is refused instead of mixing grids.
* **Fault tolerant per slide.** A worker killed mid-slide loses that slide's
  temporary shard only: Dask reruns the task on a live worker (at most once
  more with the in-process cluster: `distributed.scheduler.allowed-failures`
  = 1) and the new attempt deletes the dead attempt's temporary file. A slide
  that cannot be read (corrupt, truncated, unsupported) is recorded in the
  manifest's `failed` with its one-line error; the other slides finish.
* **One store.** `cohort.h5` is rebuilt at the end of every run as an HDF5
  virtual dataset over the shards (h5py `VirtualLayout`; the small per-patch
  metadata is copied), so `PatchStore("cohort.h5")`, the three-step sampler,
  `keras-medseg train --data cohort.h5` and `evaluate` read the cohort as one
  store without copying a patch. Shards are referenced relative to the store,
  so the folder can move as a whole.

Why not more reader processes per slide: `extract_slide(workers=2)` sends
every patch through a pipe to ONE writer process that compresses and
appends all of them, so the writer, not the readers, sets the pace, and the
readers compete with it for the cores (measured: `benchmarks/wsi.py`,
docs/slides.md). Here every worker decodes, compresses and writes its own
slide, so workers add up until the disk or the scheduler saturates.

Reference: the lecture "Convolutional networks - theory" (cancer detection in
whole-slide images: 7,878,675 training patches from 698 slides); M. Rocklin,
"Dask: Parallel computation with blocked algorithms and task scheduling",
SciPy 2015; the HDF5 virtual dataset (The HDF Group, RFC "HDF5 Virtual Dataset", 2014).
"""

import contextlib
import json
import logging
import multiprocessing
import os
import re
import time

import h5py
import numpy as np

from keras_medseg.data.slides.store import FORMAT, FORMAT_VERSION, SLIDE_NAME_BYTES, PatchStore
from keras_medseg.data.slides.streaming import extract_slide
from keras_medseg.data.sources import find_slides
from keras_medseg.utils.atomic_io import atomic_path, atomic_write_text, remove_stale_temporaries, temporary_name

__all__ = ["MANIFEST_FORMAT", "build_cohort_store", "extract_cohort", "extract_shard", "read_manifest",
           "shard_folder", "start_client"]

MANIFEST_FORMAT = "keras-medseg-cohort"
_COMPARED = ("level", "mpp", "size", "inner_size", "stride", "min_tissue", "tissue_threshold", "thumbnail_size",
             "compression")


def shard_folder(out):
    """The folder of the per-slide shards of cohort store `out` (`cohort.h5` -> `cohort.shards/`)."""
    stem = os.path.splitext(os.path.abspath(os.fspath(out)))[0]
    return stem + ".shards"


def _manifest_path(folder):
    return os.path.join(folder, "manifest.json")


def read_manifest(out):
    """The manifest of cohort store `out` as a dict (`params`, `slides`, `failed`); empty when none exists.

    Raises:
        ValueError: a manifest that is not JSON or not a cohort manifest (named).
    """
    path = _manifest_path(shard_folder(out))
    if not os.path.exists(path):
        return {"format": MANIFEST_FORMAT, "version": 1, "params": None, "slides": {}, "failed": {}}
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"Cannot read the cohort manifest {path!r}: {exc}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path!r} is not a keras-medseg cohort manifest (format={manifest.get('format')!r}).")
    manifest.setdefault("failed", {})
    return manifest


def _write_manifest(folder, manifest):
    atomic_write_text(_manifest_path(folder), json.dumps(manifest, indent=1, sort_keys=True))


def _remove_sidecars(path):
    for extra in (path + ".lock", path + ".slides.json"):  # PatchStore's writer lock, extract_slide's record
        with contextlib.suppress(FileNotFoundError):
            os.remove(extra)


def _start_writeback(path):
    """Start writing the shard's committed bytes to disk now, without waiting (Linux: `posix_fadvise`), so that
    the fsync before the atomic rename does not wait for the whole shard at the end (measured: ~7% of a task)."""
    if not hasattr(os, "posix_fadvise"):  # pragma: no cover - macOS, Windows
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def extract_shard(slide, shard, params, slide_id, annotations=None):
    """Extract one slide into its own shard store, atomically (the task every Dask worker runs).

    The patches are written to a temporary file beside `shard` (named
    `.<slide>.<pid>.tmp.h5`) and moved onto `shard` only when complete;
    temporary files of an earlier attempt at the same slide (a killed worker)
    are deleted first.

    Args:
        slide: path of the slide.
        shard: path of the shard store to create.
        params: dict of grid parameters: `level` or `mpp`, `size`,
            `inner_size`, `stride`, `min_tissue`, `tissue_threshold`,
            `thumbnail_size`, `compression`, `chunk_size`, `cache_bytes`.
        slide_id: the slide's name in the store.
        annotations: XML / GeoJSON path or None (a normal slide).

    Returns:
        dict: `slide_id`, `status` ("done" or "failed"), and for a done
        slide `patches`, `positive`, `level`, `mpp` (of that level), `seconds`,
        `pid`, `bytes`, `recovered` (a dead attempt's temporary file was
        removed), `cpu_s` (CPU seconds: `extract_slide`'s `grid`, `read`,
        `append` and `task` in all, of the task's thread; `process`, of the
        worker process meanwhile, its other threads too); for a failed one
        `error` (one line).
    """
    from keras_medseg.utils.errors import one_line_message

    t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
    folder = os.path.dirname(os.path.abspath(shard))
    tmp = temporary_name(shard)
    stem = os.path.splitext(os.path.basename(shard))[0]
    mine = re.compile(re.escape("." + stem) + r"\.(\d+)\.tmp(\..*)?")
    recovered = False
    for entry in os.listdir(folder):
        match = mine.fullmatch(entry)
        if match and int(match.group(1)) != os.getpid():  # a dead attempt at this slide (killed worker)
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, entry))
            recovered = True
    try:
        with atomic_path(shard, estimate_bytes=0) as path:
            try:
                res = extract_slide(slide, path, annotations=annotations, level=params.get("level") or 0,
                                    mpp=params.get("mpp"), size=params["size"],
                                    inner_size=params.get("inner_size"), stride=params.get("stride"),
                                    slide_id=slide_id, min_tissue=params.get("min_tissue", 0.1),
                                    tissue_threshold=params.get("tissue_threshold", "otsu"), workers=1,
                                    chunk_size=params.get("chunk_size", 32),
                                    compression=params.get("compression", "gzip"), progress=False,
                                    cache_bytes=params.get("cache_bytes", 128 << 20),
                                    thumbnail_size=params.get("thumbnail_size", 1024),
                                    callback=lambda *_: _start_writeback(path))
            finally:
                _remove_sidecars(path)
    except Exception as exc:  # noqa: BLE001 - one slide's failure is reported, the cohort goes on
        for p in (tmp, tmp + ".lock", tmp + ".slides.json"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)
        return {"slide_id": slide_id, "status": "failed", "error": f"{type(exc).__name__}: {one_line_message(exc)}",
                "pid": os.getpid()}
    return {"slide_id": slide_id, "status": "done", "patches": int(res["total"]), "positive": int(res["positive"]),
            "level": int(res["level"]), "mpp": None if res["mpp"] is None else list(res["mpp"]),
            "seconds": time.perf_counter() - t0, "pid": os.getpid(), "bytes": os.path.getsize(shard),
            "recovered": recovered,
            "cpu_s": dict(res["cpu_s"], task=time.thread_time() - c0, process=time.process_time() - p0)}


def start_client(workers=None, scheduler=None):
    """A `distributed.Client`: to `scheduler` when given, else to a new in-process `LocalCluster`.

    The local cluster has `workers` worker processes (default: the CPU count)
    with one thread each (the work is per-slide Python and HDF5: processes,
    not threads, add up), no dashboard, and lets a task's worker die once
    before it marks the task failed (`allowed-failures` = 1).

    Args:
        workers: int >= 1, worker processes of the local cluster.
        scheduler: address of a running scheduler (`tcp://host:8786`), or None.

    Returns:
        `(client, cluster)`; `cluster` is None for a remote scheduler. Close both.

    Raises:
        ValueError: bad `workers`.
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"`workers` must be a positive integer. Received: workers={workers!r}")
    # the workers' statistical profiler samples the running task every 10 ms and nobody reads it; the nannies'
    # memory monitor (every 100 ms), the system monitors (500 ms) and the event loops' ticks (20 ms) run in the
    # processes that share the cores with the workers: slower here, still well under a task's seconds
    config = {"distributed.scheduler.allowed-failures": 1, "distributed.worker.profile.enabled": False,
              "distributed.worker.memory.monitor-interval": "1s", "distributed.admin.system-monitor.interval": "1s",
              "distributed.admin.tick.interval": "200ms",
              # Dask's default environment sets MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's mmap threshold
              # at 128 kB: every patch (768 kB), chunk and HDF5 buffer would be a fresh mmap, zeroed page by page
              # (+8% CPU per patch measured); the numerical libraries' one-thread settings stay
              "distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1,
                                                      "OPENBLAS_NUM_THREADS": 1}}
    if "forkserver" in multiprocessing.get_all_start_methods():
        config["distributed.worker.multiprocessing-method"] = "forkserver"
    with dask.config.set(config), _lazy_package_import():
        if config.get("distributed.worker.multiprocessing-method") == "forkserver":
            from distributed.utils import get_mp_context

            ctx = get_mp_context()  # distributed's own preload list first, then this module on top
            ctx.set_forkserver_preload(["distributed", __name__])
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR, env={"KERAS_MEDSEG_LAZY_IMPORT": "1"})
    return Client(cluster), cluster


@contextlib.contextmanager
def _lazy_package_import():
    """While the fork server starts: its import of this module must not import the model zoo (the package root
    imports it unless `KERAS_MEDSEG_LAZY_IMPORT=1`); the variable is put back afterwards."""
    old = os.environ.get("KERAS_MEDSEG_LAZY_IMPORT")
    os.environ["KERAS_MEDSEG_LAZY_IMPORT"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("KERAS_MEDSEG_LAZY_IMPORT", None)
        else:
            os.environ["KERAS_MEDSEG_LAZY_IMPORT"] = old


def _check_params(manifest, params, folder):
    old = manifest.get("params")
    if old is None:
        return
    diff = {k: (old.get(k), params.get(k)) for k in _COMPARED if old.get(k) != params.get(k)}
    if diff:
        raise ValueError(f"Cohort {folder!r} was extracted with other grid parameters (stored, requested): {diff}. "
                         "Extract into another store, or delete the folder to start again.")


def extract_cohort(cohort, out, annotations=None, level=0, mpp=None, size=512, inner_size=None, stride=None,
                   min_tissue=0.1, tissue_threshold="otsu", thumbnail_size=1024, compression="gzip", chunk_size=32,
                   workers=None, scheduler=None, client=None, progress=True, cache_bytes=128 << 20):
    """Extract the patches of every slide of a cohort in parallel on Dask, resumably, into one store.

    Args:
        cohort: a folder of whole-slide files, or a list of slide paths
            (`keras_medseg.data.sources.find_slides` pairs each slide with
            `<stem>.xml` / `.geojson` / `.json`).
        out: the cohort store `X.h5` (a virtual store over `X.shards/`).
        annotations: folder of the annotation files, default the slides' folder.
        level: pyramid level of the patches, default 0; ignored with `mpp`.
        mpp: target microns per pixel: each slide is cut at its level nearest
            to it (`keras_medseg.data.slides.slide.level_for_mpp`).
        size, inner_size, stride, min_tissue, tissue_threshold, thumbnail_size:
            the grid, see `keras_medseg.data.slides.streaming.patch_grid`.
        compression: `"gzip"` (default), `"lzf"` or None, of the shards.
        chunk_size: patches per commit inside a shard, default 32.
        workers: worker processes of the local cluster (default: CPU count).
        scheduler: address of a Dask scheduler to use instead of a local cluster.
        client: a `distributed.Client` to use (neither is started nor closed).
        progress: tqdm bar over slides, default True.
        cache_bytes: tile cache per worker, default 128 MB.

    Returns:
        dict: `store` (path of `out`), `shards` (folder), `done` (slide ids
        extracted by this run), `skipped` (already in the manifest), `failed`
        (`{slide_id: one-line error}`), `num_patches` (in the store),
        `num_slides`, `slides` (the manifest's record per finished slide).

    Raises:
        ValueError: bad arguments, a folder without slides, other grid
            parameters than the stored ones.
        RuntimeError: another run is writing this cohort.

    Example:

    >>> res = keras_medseg.data.slides.cohort.extract_cohort("cohort/", "cohort.h5", mpp=0.5, size=256, workers=2)
    >>> res["num_patches"], res["failed"]
    >>> sampler = keras_medseg.data.slides.ThreeStepSampler("cohort.h5", batch_size=32)

    Reference: the lecture "Convolutional networks - theory" (a cohort of slides cut into 512 px patches).
    """
    from distributed import as_completed

    cases = find_slides(cohort, annotations)
    if not os.fspath(out):
        raise ValueError(f"`out` must be a file path. Received: out={out!r}")
    if compression not in ("gzip", "lzf", None):
        raise ValueError(f"`compression` must be 'gzip', 'lzf' or None. Received: compression={compression!r}")
    for name, v in (("size", size), ("chunk_size", chunk_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={v!r}")
    params = {"level": None if mpp is not None else int(level), "mpp": None if mpp is None else float(mpp),
              "size": int(size), "inner_size": inner_size, "stride": stride, "min_tissue": min_tissue,
              "tissue_threshold": tissue_threshold, "thumbnail_size": int(thumbnail_size),
              "compression": compression}
    folder = shard_folder(out)
    os.makedirs(folder, exist_ok=True)
    with _run_lock(folder):
        manifest = read_manifest(out)
        _check_params(manifest, params, folder)
        manifest["params"] = params
        remove_stale_temporaries(folder, depth=0)  # left by a killed run; no task of ours runs yet
        shard = {c["name"]: os.path.join(folder, c["name"] + ".h5") for c in cases}
        done_before = [c["name"] for c in cases if c["name"] in manifest["slides"] and os.path.isfile(shard[c["name"]])]
        todo = [c for c in cases if c["name"] not in done_before]
        for c in todo:
            manifest["slides"].pop(c["name"], None)
        manifest["failed"] = {}
        task_params = dict(params, level=params["level"] or 0, chunk_size=int(chunk_size), cache_bytes=int(cache_bytes))
        result = {"store": os.fspath(out), "shards": folder, "done": [], "skipped": done_before, "failed": {}}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(cases), initial=len(done_before), unit="slide", desc="extract cohort")
        own_client, cluster = (client, None) if client is not None else start_client(workers, scheduler)
        try:
            run = f"{os.getpid()}-{time.time_ns()}"
            futures = {own_client.submit(extract_shard, c["slide"], shard[c["name"]], task_params, c["name"],
                                         c["annotations"], key=f"extract-shard-{c['name']}-{run}", pure=False): c
                       for c in todo}
            for future in as_completed(list(futures)):
                case = futures[future]
                try:
                    res = future.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker (died twice), a lost scheduler, ...
                    res = {"slide_id": case["name"], "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                if res["status"] == "done":
                    manifest["slides"][case["name"]] = dict(
                        res, shard=os.path.basename(shard[case["name"]]), slide=os.path.abspath(case["slide"]),
                        annotations=case["annotations"] and os.path.abspath(case["annotations"]))
                    result["done"].append(case["name"])
                else:
                    manifest["failed"][case["name"]] = res["error"]
                    result["failed"][case["name"]] = res["error"]
                _write_manifest(folder, manifest)
                if bar is not None:
                    bar.update(1)
                    if result["failed"]:
                        bar.set_postfix(failed=len(result["failed"]))
        finally:
            if bar is not None:
                bar.close()
            if client is None:
                own_client.close()
                if cluster is not None:
                    cluster.close()
        result["num_patches"] = build_cohort_store(out)
        result["slides"] = manifest["slides"]
        result["num_slides"] = len(manifest["slides"])
    return result


@contextlib.contextmanager
def _run_lock(folder):
    """One extraction run per cohort folder at a time (POSIX `flock`; nothing on systems without it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(os.path.join(folder, ".run.lock"), "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RuntimeError(f"Cohort {folder!r} is being extracted by another run.") from None
        yield


def build_cohort_store(out):
    """(Re)build the cohort store `out`: an HDF5 virtual dataset over the shards the manifest lists.

    `patches` is a virtual dataset mapping each shard's patches, in slide
    order; `label`, `slide`, `tumor_id`, `coords` and `slide_names` are copied
    (a few bytes per patch), so the file is a read-only `PatchStore`.
    Written to a temporary file and moved into place (readers never see a
    half-built store).

    Args:
        out: the cohort store path (`X.h5`, shards in `X.shards/`).

    Returns:
        The number of patches in the store.

    Raises:
        ValueError: shards with different patch sizes, channels or dtypes.
    """
    folder = shard_folder(out)
    manifest = read_manifest(out)
    names = sorted(manifest["slides"])
    rel = os.path.relpath(folder, os.path.dirname(os.path.abspath(out)))
    parts, shape, dtype = [], None, None
    for name in names:
        path = os.path.join(folder, manifest["slides"][name]["shard"])
        with PatchStore(path) as s:
            n = len(s)
            this = (s.patch_size, s.patch_size, s.channels)
            if shape is None:
                shape, dtype = this, s.dtype
            elif (this, s.dtype) != (shape, dtype):
                raise ValueError(f"Shard {path!r} holds {this} {s.dtype} patches, the others {shape} {dtype}.")
            parts.append((name, os.path.join(rel, manifest["slides"][name]["shard"]), n, s.labels, s.tumor_ids,
                          s.coords))
    total = sum(p[2] for p in parts)
    size = manifest["params"]["size"] if shape is None else shape[0]
    shape = shape or (size, size, 3)
    dtype = dtype or np.dtype("uint8")
    with atomic_path(out, estimate_bytes=total * 32) as tmp:
        with h5py.File(tmp, "w", libver="latest") as f:
            layout = h5py.VirtualLayout(shape=(total,) + shape, dtype=dtype)
            start = 0
            for _, source, n, *_ in parts:
                if n:
                    layout[start:start + n] = h5py.VirtualSource(source, "patches", shape=(n,) + shape)
                start += n
            f.create_virtual_dataset("patches", layout, fillvalue=0)
            for i, key, dt in ((3, "label", np.uint8), (4, "tumor_id", np.int32), (5, "coords", np.int32)):
                values = [np.asarray(p[i], dt).reshape((p[2],) + ((2,) if key == "coords" else ())) for p in parts]
                empty = np.zeros((0, 2) if key == "coords" else (0,), dt)
                f.create_dataset(key, data=np.concatenate(values) if values else empty)
            f.create_dataset("slide", data=np.repeat(np.arange(len(parts), dtype=np.int32), [p[2] for p in parts]))
            f.create_dataset("slide_names", data=np.asarray([n.encode("utf-8") for n in names],
                                                            dtype=f"S{SLIDE_NAME_BYTES}"))
            f.create_dataset("num_committed", data=np.asarray([total, len(parts)], np.int64))
            f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "patch_size": shape[0],
                            "channels": shape[2], "compression": str(manifest["params"].get("compression")),
                            "cohort_shards": rel})
    return total
