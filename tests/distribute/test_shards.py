"""Each process its own data: arrays, volumes and patch stores split by rank (disjoint, none skipped), the
per-rank seeds, and the one-line refusals of a run that cannot start (in this process, no engine started)."""

import socket

import numpy as np
import pytest

from keras_medseg.data import ArrayBatches, VolumeDataset
from keras_medseg.data.slides import ThreeStepSampler
from keras_medseg.training.distribute import DistributedError, process_group
from tests.data.test_volume_dataset import write_cases
from tests.data.test_wsi import _write_store


def test_array_batches_split_every_epoch_into_disjoint_parts_that_weigh_like_one_batch():
    n, batch = 37, 8  # the last global batch holds 5 rows: 2 processes get 3 each, one a weight-0 repeat
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    one = ArrayBatches(x, x, batch_size=batch, seed=4)
    parts = [ArrayBatches(x, x, batch_size=batch, seed=4, num_shards=2, shard_index=k) for k in (0, 1)]
    assert len(one) == len(parts[0]) == 5
    for epoch in (0, 1):
        for p in parts:
            p.set_epoch(epoch)
        one.set_epoch(epoch)
        seen = []
        for i in range(len(one)):
            rows = [p.rows(i) for p in parts]
            real = np.concatenate([r[f > 0] for r, f in rows])
            assert sorted(real.tolist()) == sorted(one.rows(i)[0].tolist())  # the parts of a step: its batch
            seen += real.tolist()
            # the mean over the processes of each one's weighted batch mean is the mean over the global batch
            means = [np.mean(x[r, 0] * f) for r, f in rows]
            assert np.mean(means) == pytest.approx(np.mean(x[one.rows(i)[0], 0]))
            xb, yb, wb = parts[1][i]
            assert xb.shape == (len(rows[1][0]), 1) and wb.dtype == np.float32
        assert sorted(seen) == list(range(n))  # every row once per epoch
    assert not np.array_equal(parts[0].order(0), parts[0].order(1))
    with pytest.raises(ValueError, match=r"multiple of the number of processes \(3\).*batch_size=8"):
        ArrayBatches(x, x, batch_size=8, num_shards=3, shard_index=0)
    with pytest.raises(ValueError, match=r"`shard_index` must be an int in \[0, num_shards=2\).*shard_index=2"):
        ArrayBatches(x, x, batch_size=8, num_shards=2, shard_index=2)


def test_volumes_and_patch_stores_split_by_rank(tmp_path):
    folder = write_cases(str(tmp_path / "vols"), shapes=((12, 12, 12),) * 6)
    parts = [VolumeDataset(folder, patch_size=6, batch_size=1, num_shards=2, shard_index=k, seed=5,
                           intensity={"preset": "none"}) for k in (0, 1)]
    assert len(parts[0]) == 3  # 6 cases, 2 processes of batch 1
    for epoch in (0, 1):
        cases = [[c for i in range(3) for c in p.case_slots(i, epoch)] for p in parts]
        assert not set(cases[0]) & set(cases[1]) and sorted(cases[0] + cases[1]) == list(range(6))
    xa, _ = parts[0][0]
    xb, _ = parts[1][0]
    assert xa.shape == (1, 6, 6, 6, 1) and not np.array_equal(xa, xb)

    store = _write_store(str(tmp_path / "p.h5"))  # 3 slides, 5 + 8 + 11 patches, labels 0 and 1
    samplers = [ThreeStepSampler(store, batch_size=4, steps_per_epoch=2, augment=False, seed=1, num_shards=2,
                                 shard_index=k) for k in (0, 1)]
    owned = [np.concatenate([g for groups in s.index.values() for g in groups]) for s in samplers]
    assert not set(owned[0]) & set(owned[1]) and sorted(np.concatenate(owned).tolist()) == list(range(24))
    for s, own in zip(samplers, owned):
        assert s.labels_present.tolist() == [0, 1]
        assert set(s.sample_indices(np.random.default_rng(0), 32)[0].tolist()) <= set(own.tolist())
    with pytest.raises(ValueError, match=r"Part 0 of 4 .* no patch with label \[1\].*num_shards=4"):
        ThreeStepSampler(store, num_shards=4, shard_index=0, indices=np.arange(6))  # one patch of label 1


def test_a_run_that_cannot_start_ends_in_one_line(monkeypatch):
    with socket.socket() as taken, socket.socket() as other:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        other.bind(("127.0.0.1", 0))
        port, free = taken.getsockname()[1], other.getsockname()[1]
        both = f"127.0.0.1:{port},127.0.0.1:{free}"  # TensorFlow needs every process's address
        with pytest.raises(DistributedError, match=rf"^Port {port} on 127.0.0.1 is in use: choose another port"):
            process_group(2, both, 0)
    monkeypatch.setenv("KERAS_MEDSEG_TIMEOUT", "0.5")  # nobody serves `port` now
    with pytest.raises(DistributedError, match=rf"^Could not reach the coordinator 127.0.0.1:{port} within 0.5 s"):
        process_group(2, both, 1)
    with pytest.raises(ValueError, match=r"`coordinator` must look like HOST:PORT.*coordinator='nohost'"):
        process_group(2, "nohost", 1)
    with pytest.raises(ValueError, match=r"go together.*process_id=None"):
        process_group(2, "127.0.0.1:1234")
    with pytest.raises(ValueError, match=r"`process_id` must be an int in \[0, processes=2\).*process_id=2"):
        process_group(2, "127.0.0.1:1234", 2)
    assert process_group(None).rank == 0 and process_group(2) is None  # None: the caller launches
