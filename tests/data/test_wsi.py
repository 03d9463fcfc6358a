"""WSI patches: inner-square rule, HDF5 store (crash safety, corrupt files), three-step sampler."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from keras_medseg.data import (
    PatchSequence,
    PatchStore,
    ThreeStepSampler,
    augment_patches,
    extract_patches,
    load_patch_dataset,
)


def _slide(h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- extraction


def test_inner_square_rule_against_brute_force(rng):
    image = _slide()
    mask = np.zeros(image.shape[:2], bool)
    mask[5:9, 70:73] = True  # tumour 1
    mask[40:50, 10:14] = True  # tumour 2
    size, inner, stride = 16, 6, 5
    p = extract_patches(image, mask, size=size, inner_size=inner, stride=stride)
    off = (size - inner) // 2
    rows = list(range(0, 64 - size + 1, stride))
    cols = list(range(0, 96 - size + 1, stride))
    assert len(p.labels) == len(rows) * len(cols)
    k = 0
    for r in rows:
        for c in cols:
            assert tuple(p.coords[k]) == (r, c)
            np.testing.assert_array_equal(p.patches[k], image[r:r + size, c:c + size])
            assert p.labels[k] == mask[r + off:r + off + inner, c + off:c + off + inner].any()
            k += 1
    assert set(np.unique(p.tumor_ids[p.labels == 1])) == {1, 2}
    assert np.all(p.tumor_ids[p.labels == 0] == -1)


def test_default_stride_tiles_inner_squares():
    image = _slide(64, 64)
    mask = np.zeros((64, 64), bool)
    mask[30, 33] = True  # a single pixel lies in exactly one inner square
    p = extract_patches(image, mask, size=32)  # inner 16, stride 16
    assert p.patches.shape == (9, 32, 32, 3)
    assert p.labels.sum() == 1
    assert tuple(p.coords[p.labels == 1][0]) == (16, 16)


def test_label_map_and_tissue_filter():
    image = np.full((64, 64, 3), 250, np.uint8)  # white glass
    image[:32, :32] = (180, 60, 140)  # stained tissue top-left
    labels = np.zeros((64, 64), np.int32)
    labels[40:44, 40:44] = 7  # annotated region on glass: kept despite no tissue
    p = extract_patches(image, labels, size=32, stride=32, inner_size=16, min_tissue=0.5)
    assert sorted(map(tuple, p.coords)) == [(0, 0), (32, 32)]
    assert p.tumor_ids[p.labels == 1].tolist() == [7]


def test_extract_bad_inputs():
    image = _slide(32, 32)
    with pytest.raises(ValueError, match="smaller than one patch"):
        extract_patches(image, None, size=64)
    with pytest.raises(ValueError, match="mask"):
        extract_patches(image, np.zeros((10, 10)), size=16)
    with pytest.raises(ValueError, match="inner_size"):
        extract_patches(image, None, size=16, inner_size=20)
    with pytest.raises(ValueError, match="mask"):
        extract_patches(image, np.full((32, 32), 0.5), size=16)
    with pytest.raises(ValueError, match="min_tissue"):
        extract_patches(image[..., 0], None, size=16, min_tissue=0.5)


# --------------------------------------------------------------------------- store


def _write_store(path, n_slides=3, size=8, seed=0):
    rng = np.random.default_rng(seed)
    with PatchStore(path, "w", patch_size=size) as s:
        for k in range(n_slides):
            n = 5 + 3 * k
            patches = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
            labels = (np.arange(n) < k + 1).astype(int) if k else np.zeros(n, int)
            tumors = np.where(labels == 1, np.arange(n) % 2, -1)
            s.append(patches, labels, f"slide_{k}", tumors, np.stack([np.arange(n), np.arange(n) * 2], 1))
    return path


def test_store_round_trip_and_append(tmp_path):
    path = str(tmp_path / "p.h5")
    with PatchStore(path, "w", patch_size=8, compression="lzf") as s:
        a = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
        assert s.append(a, [1, 0], "s1", [0, -1], [(0, 0), (8, 0)]) == 2
    with PatchStore(path, "a") as s:  # reopen and append to an existing slide and a new one
        s.append(a[::-1], [0, 0], "s2")
        s.append(a[:1], [1], "s1", [3])
    with PatchStore(path) as s:
        assert len(s) == 5
        assert s.slide_ids.tolist() == ["s1", "s1", "s2", "s2", "s1"]
        assert s.labels.tolist() == [1, 0, 0, 0, 1]
        assert s.tumor_ids.tolist() == [0, -1, -1, -1, 3]
        np.testing.assert_array_equal(s.read([4, 0, 2]), np.stack([a[0], a[0], a[1]]))
        assert s.coords[1].tolist() == [8, 0]
        info = s.info()
        assert info["num_patches"] == 5 and info["num_slides"] == 2
        assert info["slides"]["s1"] == {"patches": 3, "positive": 2, "tumors": 2}
        assert info["compression"] == "lzf"


def test_store_add_slide_chunks(tmp_path):
    image = _slide(64, 64)
    mask = np.zeros((64, 64), bool)
    mask[20:30, 20:30] = True
    ref = extract_patches(image, mask, size=16)
    with PatchStore(tmp_path / "p.h5", "w", patch_size=16) as s:
        assert s.add_slide(image, mask, "slide", batch_size=7) == len(ref.labels)
        np.testing.assert_array_equal(s.read(np.arange(len(s))), ref.patches)
        np.testing.assert_array_equal(s.labels, ref.labels)


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from keras_medseg.data.slides import PatchStore
    path = sys.argv[1]
    store = PatchStore(path, "a", patch_size=16)
    rng = np.random.default_rng(0)
    batch = 0
    while True:
        value = batch % 251
        patches = np.full((40, 16, 16, 3), value, np.uint8)
        store.append(patches, np.full(40, batch % 2), f"slide_{batch % 3}", coords=np.full((40, 2), batch))
        batch += 1
        if batch == 5:
            print("committed", flush=True)
    """
)


@pytest.mark.parametrize("delay", [0.0, pytest.param(0.3, marks=pytest.mark.slow)])
def test_sigkill_mid_append_keeps_committed_patches(tmp_path, delay):
    path = str(tmp_path / "store.h5")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="numpy")  # fast start-up
    proc = subprocess.Popen([sys.executable, str(script), path], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"committed"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    # 1. readers see every committed patch, intact.
    with PatchStore(path) as s:
        n = len(s)
        assert n >= 5 * 40 and n % 40 == 0
        batches = n // 40
        data = s.read(np.arange(n))
        for b in range(batches):
            assert np.all(data[b * 40:(b + 1) * 40] == b % 251)
        assert s.labels.tolist() == [b % 2 for b in range(batches) for _ in range(40)]
        assert np.all(s.coords[:, 0] == np.repeat(np.arange(batches), 40))
    # 2. a new writer recovers the file and appends after the committed rows.
    with pytest.warns(UserWarning, match="not closed cleanly"):
        store = PatchStore(path, "a")
    with store:
        assert len(store) == n
        store.append(np.zeros((1, 16, 16, 3), np.uint8), [1], "after")
    with PatchStore(path) as s:
        assert len(s) == n + 1 and s.slide_ids[-1] == "after"
        assert np.all(s.read(np.arange(40)) == 0)


def test_second_writer_is_refused(tmp_path):
    path = str(tmp_path / "p.h5")
    with PatchStore(path, "w", patch_size=4):
        with pytest.raises(RuntimeError, match="another process"):
            PatchStore(path, "a")


def test_corrupt_and_truncated_files(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(ValueError, match="junk.h5.*corrupt or truncated"):
        PatchStore(junk)
    path = _write_store(str(tmp_path / "trunc.h5"), size=32)
    size = os.path.getsize(path)
    with open(path, "rb+") as fh:
        fh.truncate(size // 2)
    with pytest.raises(ValueError, match="trunc.h5.*corrupt or truncated"):
        with PatchStore(path) as s:
            s.read(np.arange(len(s)))
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a keras-medseg patch store"):
        PatchStore(tmp_path / "other.h5")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        PatchStore(tmp_path / "missing.h5")


def test_store_bad_inputs(tmp_path):
    path = tmp_path / "p.h5"
    with pytest.raises(ValueError, match="patch_size"):
        PatchStore(path, "w")
    with PatchStore(path, "w", patch_size=4) as s:
        good = np.zeros((2, 4, 4, 3), np.uint8)
        with pytest.raises(ValueError, match="patches"):
            s.append(np.zeros((2, 5, 5, 3)), [0, 0], "a")
        with pytest.raises(ValueError, match="labels"):
            s.append(good, [0, 2], "a")
        with pytest.raises(ValueError, match="patches"):
            s.append(good + 300.0, [0, 0], "a")
        with pytest.raises(ValueError, match="slide_id"):
            s.append(good, [0, 0], "x" * 65)
        with pytest.raises(ValueError, match="coords"):
            s.append(good, [0, 0], "a", coords=np.zeros((3, 2)))
    with PatchStore(path) as s:
        with pytest.raises(ValueError, match="not open for writing"):
            s.append(good, [0, 0], "a")
        with pytest.raises(IndexError):
            s.read([5])
    with pytest.raises(ValueError, match="mode"):
        PatchStore(path, "x")
    with pytest.raises(ValueError, match="patch_size=8"):
        PatchStore(path, "a", patch_size=8)
    with PatchStore(path, "a", patch_size=4) as s:  # the lock was released by the failed open
        assert len(s) == 0
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        PatchStore(tmp_path / "no_such_dir" / "p.h5", "w", patch_size=4)
    with pytest.raises(ValueError, match="compression"):
        PatchStore(tmp_path / "q.h5", "w", patch_size=4, compression="zip")


# --------------------------------------------------------------------------- sampler


def test_three_step_sampler_balance(tmp_path):
    path = str(tmp_path / "p.h5")
    rng = np.random.default_rng(0)
    with PatchStore(path, "w", patch_size=4) as s:
        # very unequal slides: A has 500 negatives and 2 positives, B 5 negatives, C 1 positive
        s.append(rng.integers(0, 255, (502, 4, 4, 3)), [0] * 500 + [1, 1], "A", [-1] * 500 + [0, 0])
        s.append(rng.integers(0, 255, (5, 4, 4, 3)), [0] * 5, "B")
        s.append(rng.integers(0, 255, (1, 4, 4, 3)), [1], "C", [0])
    ds = ThreeStepSampler(path, batch_size=500, steps_per_epoch=8, augment=False, seed=1)
    idx, labs = ds.sample_indices(np.random.default_rng(0), 20000)
    labels, slides = ds.store.labels, ds.store.slide_index
    assert np.all(labels[idx] == labs)  # the patch has the drawn label
    assert abs(labs.mean() - 0.5) < 0.02  # step 1: labels balanced
    neg, pos = idx[labs == 0], idx[labs == 1]
    assert abs(np.mean(slides[neg] == 0) - 0.5) < 0.03  # step 2: A vs B equally likely for label 0
    assert abs(np.mean(slides[pos] == 2) - 0.5) < 0.03  # and A vs C for label 1
    counts = np.bincount(neg[slides[neg] == 0], minlength=500)[:500]
    assert counts.min() > 0  # step 3: uniform within the slide (~10 draws each)
    x, y = ds[0]
    assert x.shape == (500, 4, 4, 3) and x.dtype == np.float32 and y.shape == (500, 1)
    np.testing.assert_array_equal(ds[3][0], ds[3][0])  # deterministic per (seed, epoch, index)
    ds.on_epoch_end()
    assert not np.array_equal(ds[3][0], x)
    sub = ThreeStepSampler(path, batch_size=64, augment=False, seed=0, indices=np.arange(490, 508))
    sub_idx, _ = sub.sample_indices(np.random.default_rng(0), 200)
    assert sub_idx.min() >= 490 and set(sub_idx[labels[sub_idx] == 1]) == {500, 501, 507}
    seq = load_patch_dataset(path, batch_size=100, sampler="sequential")
    assert isinstance(seq, PatchSequence) and len(seq) == 6
    assert seq[5][0].shape == (8, 4, 4, 3)
    np.testing.assert_array_equal(seq[5][1][:, 0], [1, 1, 0, 0, 0, 0, 0, 1])


def test_sampler_errors(tmp_path):
    path = tmp_path / "empty.h5"
    PatchStore(path, "w", patch_size=4).close()
    with pytest.raises(ValueError, match="empty"):
        ThreeStepSampler(path)
    with pytest.raises(ValueError, match="indices"):
        ThreeStepSampler(path, indices=[])
    with pytest.raises(ValueError, match="sampler"):
        load_patch_dataset(path, sampler="random")


def test_augment_patches():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 8, 8, 3)).astype(np.float32)
    flipped = augment_patches(x, 0, hue=0, saturation=0, brightness=0, contrast=0)
    for a, b in zip(x, flipped):  # each output is one of the four flips of its input
        assert any(np.array_equal(np.flip(a, axes) if axes else a, b) for axes in [(), (0,), (1,), (0, 1)])
    assert not np.array_equal(flipped, x)
    col = augment_patches(x, 0, flip=False)
    assert col.min() >= 0 and col.max() <= 255 and not np.allclose(col, x)
    same = augment_patches(x, 0, flip=False, hue=0, saturation=0, brightness=0, contrast=0)
    np.testing.assert_allclose(same, x)
    identity = augment_patches(x, 0, flip=False, hue=1e-12, saturation=1e-12, brightness=0, contrast=0)
    np.testing.assert_allclose(identity, x, atol=1e-3)  # the YIQ round trip is exact
    # hue rotation and saturation keep the luma (Y) of every pixel; grey pixels stay grey
    grey = np.repeat(rng.uniform(0, 255, (8, 4, 4, 1)), 3, axis=-1).astype(np.float32)
    colour = augment_patches(grey, 1, flip=False, hue=0.5, saturation=0.5, brightness=0, contrast=0)
    np.testing.assert_allclose(colour, grey, atol=1e-3)
    tinted = augment_patches(np.full((64, 2, 2, 3), (120.0, 60.0, 90.0), np.float32), 2, flip=False,
                             hue=0.2, saturation=0.0, brightness=0, contrast=0)
    luma = tinted @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(luma, 120 * 0.299 + 60 * 0.587 + 90 * 0.114, rtol=1e-4)
    assert np.ptp(tinted[:, 0, 0, 0]) > 5  # the colour did change


# --------------------------------------------------------------------------- CLI


def test_cli_patches_extract_and_info(tmp_path, capsys):
    from skimage import io

    from keras_medseg.cli import main

    image = _slide(64, 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[30:34, 30:34] = 255
    io.imsave(tmp_path / "slide.png", image, check_contrast=False)
    io.imsave(tmp_path / "mask.png", mask, check_contrast=False)
    out = str(tmp_path / "p.h5")
    assert main(["patches", "extract", str(tmp_path / "slide.png"), str(tmp_path / "mask.png"),
                 "--out", out, "--size", "32", "--slide-id", "s01"]) == 0
    assert main(["patches", "extract", str(tmp_path / "slide.png"), "--out", out, "--size", "32",
                 "--min-tissue", "0", "--quiet"]) == 0  # streamed (no mask image); 0 keeps every patch
    assert "now holds 18 patches" in capsys.readouterr().out
    ref = extract_patches(image, mask > 0, size=32)
    with PatchStore(out) as s:
        np.testing.assert_array_equal(s.read(np.arange(9)), ref.patches)
        assert s.labels[:9].tolist() == ref.labels.tolist() and s.labels[9:].sum() == 0
        assert s.slide_names.tolist() == ["s01", "slide"]
    assert main(["patches", "info", out, "--json"]) == 0
    assert '"num_patches": 18' in capsys.readouterr().out
    assert main(["patches", "info", out]) == 0
    assert "18 patches (1 positive) from 2 slides" in capsys.readouterr().out
    # user mistakes: one clear line, exit code 2
    assert main(["patches", "info", str(tmp_path / "missing.h5")]) == 2
    assert "missing.h5" in capsys.readouterr().err
    assert main(["patches", "extract", str(tmp_path / "nope.png"), "--out", out]) == 2
    assert "nope.png" in capsys.readouterr().err
    assert main(["patches", "extract", str(tmp_path / "slide.png"), "--out", out, "--size", "16"]) == 2
    assert "32x32 patches" in capsys.readouterr().err

@pytest.mark.slow
def test_cli_train_and_evaluate_froc_on_a_patch_store(tmp_path, capsys, eager_tf_functions):
    from keras_medseg.cli import main

    rng = np.random.default_rng(0)
    path = str(tmp_path / "p.h5")
    with PatchStore(path, "w", patch_size=32) as s:
        for k in range(4):  # slides 0, 1 with one tumour each (bright patches), slides 2, 3 normal
            x = rng.integers(0, 100, (6, 32, 32, 3))
            labels = np.zeros(6, int)
            if k < 2:
                x[:2] += 150
                labels[:2] = 1
            s.append(x, labels, f"s{k}", np.where(labels == 1, 0, -1))
    out = str(tmp_path / "run")
    assert main(["train", "vgg16_classifier", "--data", path, "--epochs", "1", "--batch-size", "4",
                 "--n-train", "8", "--n-val", "6", "--out", out, "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "best validation ROC-AUC" in text and "/step" not in text  # --quiet: no Keras progress bar
    assert os.path.isfile(os.path.join(out, "best.keras"))
    plot = str(tmp_path / "froc.png")
    assert main(["evaluate", os.path.join(out, "best.keras"), "--data", path, "--froc", "--plot", plot]) == 0
    text = capsys.readouterr().out
    assert "24 patches, 4 slides (2 normal), 2 tumours" in text and "FROC score" in text
    assert os.path.isfile(plot)
    assert main(["evaluate", os.path.join(out, "best.keras"), "--data", "qtips", "--froc"]) == 2
    assert "patch store" in capsys.readouterr().err
