"""`VolumeDiskCache`: memory-mapped entries keyed by files and spec; invalidation, kills, full disks, sharing."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_medseg.data.scans import disk_cache
from keras_medseg.data.scans.disk_cache import VolumeDiskCache
from keras_medseg.utils.errors import DiskFullError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = {"spacing": [1.5, 1.5, 3.0], "orientation": "RAS", "intensity": {"preset": "zscore"}}


def _sources(tmp_path, n=1):
    files = []
    for k in range(n):
        f = tmp_path / f"case{k}.nii.gz"
        f.write_bytes(os.urandom(64))
        files.append(str(f))
    return files


def _arrays(seed=0, shape=(12, 10, 8)):
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal(shape + (2,)).astype("float32"),
            "labels": rng.integers(0, 3, shape).astype("int32"), "foreground": np.arange(5, dtype="int64")}


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def test_put_then_get_gives_the_same_arrays_memory_mapped(tmp_path):
    cache = VolumeDiskCache(tmp_path / "cache")
    files, arrays = _sources(tmp_path), _arrays()
    assert cache.get(files, SPEC) is None and cache.misses == 1
    out = cache.put(files, SPEC, arrays, extra={"fill": -1.5})
    got = VolumeDiskCache(tmp_path / "cache").get(files, SPEC)  # another process's view: the same folder
    for a in (out, got):
        assert a["meta"] == {"fill": -1.5}
        for name, v in arrays.items():
            assert isinstance(a[name], np.memmap) and not a[name].flags.writeable
            np.testing.assert_array_equal(a[name], v)
            assert a[name].dtype == v.dtype
    assert cache.nbytes == sum(v.nbytes for v in arrays.values())
    assert _leftovers(tmp_path / "cache") == []


def test_a_changed_spec_or_source_file_is_a_miss_and_the_stale_entry_goes(tmp_path):
    cache = VolumeDiskCache(tmp_path / "cache")
    files = _sources(tmp_path)
    cache.put(files, SPEC, _arrays(0))
    assert cache.get(files, dict(SPEC, spacing=[1.0, 1.0, 1.0])) is None  # another spec: another entry
    assert cache.get(files, SPEC) is not None
    st = os.stat(files[0])
    with open(files[0], "ab") as fh:  # the scan is rewritten (here: one byte more, a later time)
        fh.write(b"x")
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.get(files, SPEC) is None
    assert len(cache.entries()) == 0  # the stale entry was deleted
    cache.put(files, SPEC, _arrays(1))
    np.testing.assert_array_equal(cache.get(files, SPEC)["labels"], _arrays(1)["labels"])


def test_the_budget_deletes_the_least_recently_used_entries(tmp_path):
    one = sum(v.nbytes for v in _arrays().values())
    cache = VolumeDiskCache(tmp_path / "cache", budget_bytes=2 * one)
    files = _sources(tmp_path, 3)
    for k, f in enumerate(files[:2]):
        cache.put([f], SPEC, _arrays(k))
        os.utime(os.path.join(cache.folder, cache.key([f], SPEC)), (1000 + k, 1000 + k))
    assert cache.get([files[0]], SPEC) is not None  # case 0 used again: case 1 is now the least recent
    cache.put([files[2]], SPEC, _arrays(2))
    assert cache.nbytes == 2 * one
    assert cache.get([files[1]], SPEC) is None
    assert cache.get([files[0]], SPEC) is not None and cache.get([files[2]], SPEC) is not None
    with pytest.raises(ValueError, match=r"`budget_bytes` must be None or >= 0 bytes. Received: budget_bytes=-1"):
        VolumeDiskCache(tmp_path / "other", budget_bytes=-1)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"`cache_dir` must be a folder.*a_file"):
        VolumeDiskCache(tmp_path / "a_file")


# The subprocesses load the module from its file: `keras_medseg.data` imports Keras and its backend (seconds of
# CPU per process), the cache itself needs only NumPy and `keras_medseg.utils`.
_LOAD = """
import importlib.util, os
_spec = importlib.util.spec_from_file_location("disk_cache", os.path.join(os.environ["KERAS_MEDSEG_ROOT"],
                                               "keras_medseg", "data", "scans", "disk_cache.py"))
disk_cache = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(disk_cache)
"""

_KILLED_WRITER = _LOAD + textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    saved = []
    def save(fh, a, allow_pickle=False):
        if saved:  # the second array: the process dies half-way through the entry
            os.kill(os.getpid(), signal.SIGKILL)
        saved.append(a.shape)
        np.lib.format.write_array(fh, a, allow_pickle=False)
    disk_cache.np.save = save
    cache = disk_cache.VolumeDiskCache(sys.argv[1])
    cache.put([sys.argv[2]], {"spacing": None}, {"image": np.zeros((4, 4, 4), "float32"),
                                                  "labels": np.zeros((4, 4, 4), "int32")})
""")


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                KERAS_MEDSEG_LAZY_IMPORT="1", KERAS_MEDSEG_ROOT=ROOT)


def test_a_killed_writer_leaves_no_entry_and_its_leftovers_are_cleaned(tmp_path):
    folder, files = str(tmp_path / "cache"), _sources(tmp_path)
    r = subprocess.run([sys.executable, "-c", _KILLED_WRITER, folder, files[0]], env=_env(), capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == -9, r.stderr[-2000:]  # SIGKILL, half-way: one array of two written
    assert len(_leftovers(folder)) == 1 and os.listdir(folder) == _leftovers(folder)
    cache = VolumeDiskCache(folder)  # opening the cache deletes the dead writer's temporary folder
    assert os.listdir(folder) == []
    assert cache.get(files, {"spacing": None}) is None
    cache.put(files, {"spacing": None}, {"image": np.ones((4, 4, 4), "float32")})
    assert cache.get(files, {"spacing": None})["image"].sum() == 64


def _mount_tmpfs(path, size):
    if sys.platform != "linux" or shutil.which("mount") is None:
        return False
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True,
                       check=False)
    return r.returncode == 0


@pytest.mark.parametrize("when", ["before", "half-way"])
def test_a_full_disk_is_one_clear_error_and_leaves_nothing(when, tmp_path, monkeypatch):
    """A 512 KiB tmpfs: an entry of 1 MiB is refused before writing (free-space check), or, with the check
    switched off, fails half-way on ENOSPC; either way one DiskFullError naming the entry, nothing left."""
    folder = str(tmp_path / "small")
    if not _mount_tmpfs(folder, "512k"):
        pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
    try:
        if when == "half-way":
            monkeypatch.setattr(disk_cache, "check_free_space", lambda path, estimate: None)
        cache = VolumeDiskCache(folder)
        files = _sources(tmp_path)
        big = {"image": np.zeros((64, 64, 64), "float32")}
        with pytest.raises(DiskFullError, match=r"No space left on device while writing .*small/[0-9a-f]{32}; "
                                                r"nothing half-written stays in the cache"):
            cache.put(files, SPEC, big)
        assert os.listdir(folder) == []
        small = {"image": np.ones((8, 8, 8), "float32")}  # a smaller entry still fits afterwards
        assert cache.put(files, SPEC, small)["image"].sum() == 512
    finally:
        subprocess.run(["umount", folder], capture_output=True, check=False)


_SHARER = _LOAD + textwrap.dedent("""
    import json, sys
    import numpy as np
    cache = disk_cache.VolumeDiskCache(sys.argv[1])
    sums = {}
    for rep in range(20):
        for f in sys.argv[2:]:
            seed = int(f[-8])  # caseK.nii.gz: the same arrays for a file in both processes
            got = cache.get([f], {"s": 1})
            if got is None:
                rng = np.random.default_rng(seed)
                got = cache.put([f], {"s": 1}, {"image": rng.standard_normal((24, 24, 24)).astype("float32")})
            sums[f] = float(np.asarray(got["image"], "float64").sum())
    print(json.dumps(sums))
""")


def test_two_processes_share_one_cache_folder(tmp_path):
    import json

    folder, files = str(tmp_path / "cache"), _sources(tmp_path, 4)
    procs = [subprocess.Popen([sys.executable, "-c", _SHARER, folder, *files], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    a, b = (json.loads(o[0]) for o in outs)
    expected = {f: float(np.random.default_rng(int(f[-8])).standard_normal((24, 24, 24)).astype("float32")
                         .astype("float64").sum()) for f in files}
    assert a == b == pytest.approx(expected)
    assert len(os.listdir(folder)) == 4 and _leftovers(folder) == []


def test_volume_dataset_with_a_disk_cache_gives_the_same_batches_and_reads_each_case_once(tmp_path):
    """Memory cache of 0 bytes: without the disk cache every batch reads its cases again; with it, the first
    pass reads each case once, a second dataset on the same folder reads none, and the batches are equal; another
    intensity preset is another entry."""
    from keras_medseg.data import VolumeDataset
    from tests.data.test_volume_dataset import write_cases

    folder = write_cases(str(tmp_path / "vols"))
    kw = {"patch_size": 8, "batch_size": 3, "steps_per_epoch": 2, "spacing": (1.5, 1.5, 2.0), "cache_bytes": 0,
          "pos_fraction": 0.5, "foreground_samples": 20}
    plain = VolumeDataset(folder, **kw)
    reference = [plain[k] for k in range(2)]
    assert plain.loads == 6
    cache_dir = str(tmp_path / "cache")
    for run in range(2):
        ds = VolumeDataset(folder, cache_dir=cache_dir, **kw)
        for k in range(2):
            x, y = ds[k]
            np.testing.assert_array_equal(x, reference[k][0])
            np.testing.assert_array_equal(y, reference[k][1])
        assert ds.loads == (3 if run == 0 else 0)
    assert len(os.listdir(cache_dir)) == 3
    other = VolumeDataset(folder, cache_dir=cache_dir, intensity="none", **kw)
    other[0]
    assert other.loads == 3 and len(os.listdir(cache_dir)) == 6
