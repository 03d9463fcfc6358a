"""benchmarks/volume_cache.py: each setting's measurement and the table (in this process, tiny cases)."""

import os

import volume_cache


def test_measure_and_table(tmp_path):
    root = str(tmp_path / "data")
    volume_cache.write_cases(root, n=3, side=24, depth=12)
    runs = {s: volume_cache.measure(root, s, epochs=2, patch=8, cache_dir=str(tmp_path / "cache"), budget=0)
            for s in volume_cache.SETTINGS}
    # 2 batches of 2 per epoch: 4 case slots over 3 cases. Every setting reads each case in epoch 1; the disk
    # cache and the in-memory floor read none afterwards, a memory cache of 0 bytes reads every slot again
    assert [r["loads"] for r in runs.values()] == [[4, 4], [3, 0], [3, 0]]
    assert len(os.listdir(tmp_path / "cache")) == 3 and runs["disk cache"]["disk_cache_bytes"] > 0
    res = {"cases": 3, "shape": [24, 24, 12], "patch": 8, "case_mb": 0.01, "data_set_mb": 0.03,
           "memory_budget_mb": 0.0, "settings": runs, "disk_first_over_later": 7.0, "met_speed": True,
           "disk_peak_rss_mb": runs["disk cache"]["peak_rss_mb"], "goal_peak_rss_mb": 1024.0, "met_rss": True,
           "later_min": {s: min(r["seconds"][1:]) for s, r in runs.items()},
           "later_median": {s: r["seconds"][1] for s, r in runs.items()}, "load": "1.0 / 1.0"}
    text = volume_cache.markdown(res)
    assert "| disk cache |" in text and "3 / 0" in text and "**7.0x** (met)" in text
