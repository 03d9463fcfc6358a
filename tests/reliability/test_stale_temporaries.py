"""A resumed run removes the temporaries a killed writer left behind, and nothing else."""

import os

from keras_medseg.training.checkpointing import RunFolderLock
from keras_medseg.utils.atomic_io import remove_stale_temporaries, temporary_name


def test_lock_removes_dead_writers_temporaries_only(tmp_path):
    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    dead = [run / ".best.999999999.tmp.keras", run / "backup" / ".latest.999999999.tmp.weights.h5"]
    keep = [run / "best.keras", run / "log.csv", run / ".hidden.tmp", run / "backup" / "latest.weights.h5"]
    for f in dead + keep:
        f.write_bytes(b"x")
    own = temporary_name(run / "history.png")  # this process's own temporary is never touched
    open(own, "wb").close()
    lock = RunFolderLock(str(run))
    lock.on_train_begin()
    try:
        assert not any(f.exists() for f in dead)
        assert all(f.exists() for f in keep) and os.path.exists(own)
    finally:
        lock.on_train_end()


def test_remove_stale_temporaries_on_a_missing_folder_is_a_no_op(tmp_path):
    assert remove_stale_temporaries(str(tmp_path / "missing")) == []
