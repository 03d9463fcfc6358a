"""`benchmarks/volume_workers.py`'s README table from a measurement's result (the measurement itself trains a 3D
UNet per setting: tens of seconds, so it is not run here)."""

import volume_workers


def _result(backend, settings):
    rates = {name: {"min": 2.0 * (i + 1), "median": 2.5 * (i + 1), "all": []} for i, name in enumerate(settings)}
    return {"backend": backend, "threads": 1, "patch": 32, "steps_per_epoch": 8, "repeats": 3,
            "load_average": [1.5, 1.0, 1.0], "load_average_end": [1.75, 1.0, 1.0], "patches_per_s": rates,
            "speedup_vs_1_worker": {name: i + 1.0 for i, name in enumerate(settings)}, "fit_patches_per_s": rates,
            "fit_speedup_vs_1_worker": {name: i + 1.0 for i, name in enumerate(settings)}}


def test_the_table_has_a_row_per_backend_and_setting_and_names_a_failed_backend():
    results = [_result("tensorflow", ["1 worker", "2 threads"]),
               _result("torch", ["1 worker", "2 threads", "2 processes"]),
               {"backend": "jax", "error": "Traceback\nRuntimeError: boom"}]
    table = volume_workers.markdown(results)
    assert "32^3 patches" in table and "3 interleaved epochs" in table
    assert "| tensorflow | 2 threads | 4.00 / 5.00 | 2.00x | 4.00 / 5.00 | 2.00x | 1.5 / 1.8 |" in table
    assert sum(line.startswith("| torch |") for line in table.splitlines()) == 3
    assert "| jax | failed: RuntimeError: boom" in table
