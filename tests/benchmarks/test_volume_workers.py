"""`benchmarks/volume_workers.py`'s README table from a measurement's result (the measurement itself trains a 3D
UNet per setting: tens of seconds, so it is not run here)."""

import volume_workers


def _result(backend, settings):
    rates = {name: {"min": 2.0 * (i + 1), "median": 2.5 * (i + 1), "all": []} for i, name in enumerate(settings)}
    # each setting's epochs: training process and workers' CPU seconds over the wall time give its cores used
    epochs = {name: [{"parent_cpu": 0.5 * (i + 1), "worker_cpu": 0.25 * i, "wall": 0.5}] for i, name in
              enumerate(settings)}
    return {"backend": backend, "threads": 1, "patch": 32, "steps_per_epoch": 8, "fit_steps_per_epoch": 4,
            "repeats": 3, "load_average": [1.5, 1.0, 1.0], "load_average_end": [1.75, 1.0, 1.0],
            "patches_per_s": rates, "speedup_vs_1_worker": {name: i + 1.0 for i, name in enumerate(settings)},
            "steady_speedup_vs_1_worker": {name: i + 1.5 for i, name in enumerate(settings)},
            "cpu_ms_per_patch": {name: {"parent": 10.0 * (i + 1), "workers": 5.0 * i} for i, name in
                                 enumerate(settings)},
            "epochs": epochs, "fit_patches_per_s": rates,
            "fit_speedup_vs_1_worker": {name: i + 1.0 for i, name in enumerate(settings)}}


def test_the_table_has_a_row_per_backend_and_setting_and_names_a_failed_backend():
    results = [_result("tensorflow", ["1 worker", "2 threads"]),
               _result("torch", ["1 worker", "2 threads", "2 processes"]),
               {"backend": "jax", "error": "Traceback\nRuntimeError: boom"}]
    table = volume_workers.markdown(results)
    assert "32^3 patches" in table and "3 interleaved epochs" in table and "4 per fit epoch" in table
    # 2 threads: 2x one worker in whole epochs, 2.5x steady; 20 + 5 ms of CPU per patch; (1.0 + 0.25) / 0.5 cores
    row = "| tensorflow | 2 threads | 4.0 / 5.0 | 2.00x | 2.50x | 20.0 + 5.0 | 2.50 | 4.00 / 5.00 | 2.00x | 1.5 / 1.8 |"
    assert row in table
    assert sum(line.startswith("| torch |") for line in table.splitlines()) == 3
    assert "| jax | failed: RuntimeError: boom" in table
