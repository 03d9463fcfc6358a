"""Cohort extraction on Dask (a LocalCluster of 2 worker processes started here): shards, manifest, faults."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from keras_medseg.data.slides import PatchStore, ThreeStepSampler
from keras_medseg.data.slides.cohort import extract_cohort, read_manifest, shard_folder, start_client
from keras_medseg.data.slides.streaming import extract_slide
from tests.data.slide_factory import write_cohort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRID = {"size": 128, "min_tissue": 0.1, "thumbnail_size": 512}


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each (the in-process cluster `extract_cohort` starts by default)."""
    c, cluster = start_client(workers=2)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """3 slides of 1024^2 px (two with a tumour polygon, one normal), a corrupt one, and each slide's patches
    extracted alone (the reference)."""
    folder = tmp_path_factory.mktemp("cohort")
    paths = write_cohort(folder, n=3, side=1024, corrupt=True)
    ref = {}
    for p in paths[:3]:
        ann = p.with_suffix(".geojson")
        store = folder.parent / f"alone_{p.stem}.h5"
        extract_slide(p, store, annotations=ann if ann.exists() else None, progress=False, **GRID)
        ref[p.stem] = _patch_set(store, p.stem)
    return folder, ref


def _patch_set(store, slide_id):
    """{(row, col): (label, tumour id, pixel checksum)} of one slide in a store, and its count."""
    with PatchStore(store) as s:
        sel = np.flatnonzero(s.slide_ids == slide_id)
        patches = s.read(sel)
        rows = [(tuple(c), (int(lab), int(t), int(p.astype(np.int64).sum()), p[::17, ::13].tobytes()))
                for c, lab, t, p in zip(s.coords[sel].tolist(), s.labels[sel], s.tumor_ids[sel], patches)]
    out = dict(rows)
    assert len(out) == len(rows), f"duplicate coordinates for {slide_id}"
    return out


def _assert_same_as_alone(store, ref):
    with PatchStore(store) as s:
        assert sorted(s.slide_names) == sorted(ref)
        assert len(s) == sum(len(v) for v in ref.values())
    for sid, expected in ref.items():
        got = _patch_set(store, sid)
        assert got.keys() == expected.keys(), sid
        assert got == expected, sid


def _kill_first_writer(shards, killed):
    """SIGKILL the worker process as soon as it has a slide's temporary shard open (`.slide_<k>.<pid>.tmp.h5`)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not killed:
        for entry in os.listdir(shards) if os.path.isdir(shards) else ():
            parts = entry.split(".")
            if entry.startswith(".slide_") and len(parts) >= 4 and parts[-2] == "tmp":
                os.kill(int(parts[-3]), signal.SIGKILL)
                killed[parts[1]] = int(parts[-3])
                return
        time.sleep(0.002)


def test_cohort_equals_each_slide_alone_despite_a_killed_worker_and_a_corrupt_slide(tmp_path, cohort, client):
    folder, ref = cohort
    out = tmp_path / "cohort.h5"
    shards = shard_folder(out)
    killed = {}
    thread = threading.Thread(target=_kill_first_writer, args=(shards, killed), daemon=True)
    thread.start()
    res = extract_cohort(folder, out, client=client, progress=False, **GRID)
    thread.join()
    # the whole result in the message: a slide missing from `done` says whether it failed and why
    assert sorted(res["done"]) == sorted(ref) and res["skipped"] == [], {k: res[k] for k in ("done", "failed")}
    assert list(res["failed"]) == ["broken"] and "broken.svs" in res["failed"]["broken"]
    # the worker killed mid-slide lost only that slide's partial shard: redone once by another process
    assert killed, "no worker was caught mid-slide"
    (sid, pid), = killed.items()
    record = read_manifest(out)["slides"][sid]
    assert record["recovered"] and record["pid"] != pid
    # each task reports where its CPU went (the benchmark's per-stage columns)
    cpu = record["cpu_s"]
    assert set(cpu) == {"grid", "read", "append", "task", "process"} and min(cpu.values()) >= 0
    assert cpu["grid"] + cpu["read"] + cpu["append"] <= cpu["task"] + 1e-3
    _assert_same_as_alone(out, ref)
    manifest = read_manifest(out)
    assert sorted(manifest["slides"]) == sorted(ref) and list(manifest["failed"]) == ["broken"]
    assert sorted(os.listdir(shards)) == sorted([f"{k}.h5" for k in ref] + ["manifest.json", ".run.lock"])
    # the virtual store is a read-only PatchStore: the three-step sampler and training read it as one store
    x, y = ThreeStepSampler(out, batch_size=6, steps_per_epoch=1, seed=0)[0]
    assert x.shape == (6, 128, 128, 3) and set(np.unique(y)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="read-only cohort store"):
        PatchStore(out, "a")
    # a rerun does only the unfinished slides (here: retries the corrupt one); other grid parameters are refused
    again = extract_cohort(folder, out, client=client, progress=False, **GRID)
    assert again["done"] == [] and sorted(again["skipped"]) == sorted(ref) and list(again["failed"]) == ["broken"]
    with pytest.raises(ValueError, match="grid parameters"):
        extract_cohort(folder, out, client=client, progress=False, **dict(GRID, size=64))


def test_whole_run_killed_then_rerun_gives_the_same_store(tmp_path, cohort, client, capsys):
    """`keras-medseg patches extract FOLDER --workers 2` killed as a whole (client, scheduler, workers), rerun on
    another cluster; then the command again on that cluster (`--scheduler`): nothing left but the corrupt slide."""
    from keras_medseg.cli import main

    folder, ref = cohort
    out = tmp_path / "cohort.h5"
    cli = ["patches", "extract", str(folder), "--out", str(out), "--size", str(GRID["size"]),
           "--min-tissue", str(GRID["min_tissue"]), "--thumbnail-size", str(GRID["thumbnail_size"])]
    # extraction is NumPy/h5py only; the JAX backend just makes the run's (and its workers') import of the
    # package 3x cheaper than TensorFlow's
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), KERAS_BACKEND="jax")
    proc = subprocess.Popen([sys.executable, "-m", "keras_medseg", *cli, "--workers", "2", "--quiet"], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(shard_folder(out)) and read_manifest(out)["slides"]:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the client, its scheduler and both workers at once
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first = read_manifest(out)["slides"]
    assert 1 <= len(first) < len(ref) + 1
    res = extract_cohort(folder, out, client=client, progress=False, **GRID)
    assert sorted(res["skipped"]) == sorted(first) and not set(res["done"]) & set(first)
    _assert_same_as_alone(out, ref)
    capsys.readouterr()
    assert main([*cli, "--scheduler", client.scheduler_info()["address"], "--quiet"]) == 1  # the corrupt slide
    text = capsys.readouterr().out
    assert f"{sum(len(v) for v in ref.values())} patches from 3 slides (0 extracted now, 3 already done" in text
    assert "1 slide(s) FAILED" in text and "broken: ValueError: Cannot read slide" in text


def test_cohort_inference_on_dask_equals_in_process(tmp_path, cohort, client):
    """`predict_cohort` with the slides as Dask tasks (each worker loads the model file) writes the same heatmaps,
    scores and masks as in this process, and names the corrupt slide."""
    import json

    import keras

    from keras_medseg.predict.cohort import predict_cohort

    folder, ref = cohort
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.array([[0.05], [-0.05], [0.0]], np.float32), np.array([-2.0], np.float32)])
    model.save(tmp_path / "m.keras")
    kw = {"level": 2, "batch_size": 16, "thumbnail_size": 256, "progress": False}
    here = predict_cohort(tmp_path / "m.keras", folder, tmp_path / "here", **kw)
    there = predict_cohort(tmp_path / "m.keras", folder, tmp_path / "dask", client=client, **kw)
    assert list(here["failed"]) == list(there["failed"]) == ["broken"]
    assert sorted(there["slides"]) == sorted(ref)
    for name in ref:
        for f in ("heatmap.npy", "tumor_mask.npy") if there["slides"][name]["num_tumors"] else ("heatmap.npy",):
            np.testing.assert_array_equal(np.load(tmp_path / "dask" / name / f), np.load(tmp_path / "here" / name / f))
        a, b = (json.loads((tmp_path / d / name / "summary.json").read_text()) for d in ("here", "dask"))
        assert a["slide_score"] == b["slide_score"] and a["num_patches"] == b["num_patches"] > 0
    assert (tmp_path / "dask" / "scores.csv").read_text() == (tmp_path / "here" / "scores.csv").read_text()
