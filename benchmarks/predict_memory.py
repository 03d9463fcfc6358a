"""Whole-scan predict, time and peak memory: `keras_medseg.predict.scans.predict_files` against MONAI, 512x512x300 CT.

    python benchmarks/predict_memory.py                  # 512x512x300 int16 NIfTI, 96^3 window, 2 repeats
    python benchmarks/predict_memory.py --repeats 1      # one repeat (a loaded machine)
    python benchmarks/predict_memory.py --preset smoke   # 64x64x40, 32^3 window (seconds)

Goals: peak RSS < 4 GB (issue 13); whole-scan predict <= 1.0x MONAI's time and <= 1.0x its peak memory on the
same scan and model, both sides doing the same work (issue 34). The full path is measured, as
`keras-medseg predict` runs it: read the NIfTI, CT window (-160..240 HU to [0, 1]), sliding-window inference
(96^3 windows, overlap 0.25, batch 2, Gaussian blending, sigma 0.125 of the window) with a tiny 3D UNet (zoo
`unet`, depth 2, 4 filters, random weights), arg-max, and a `.nii.gz` label map with the input's geometry.

Each measurement is its own process (peak RSS: the process's `VmHWM`; time: the whole process from its first
import, and the inference part alone, timed inside it); runs are interleaved, `repeats` times:

* `keras_medseg (<backend>)`: `predict_files(model.keras, ct.nii.gz, out/)`, on TensorFlow and on torch;
  inference part = the sliding-window loop and the arg-max (`sliding_window_slabs` and its consumer);
* anchor, MONAI (torch): `LoadImage` (nibabel reader) -> `ScaleIntensityRange` (the same window, clipped) ->
  `sliding_window_inference` (same window, overlap, batch, Gaussian, sigma) running THE SAME Keras model (loaded
  on the torch backend, a `torch.nn.Module`; windows transposed to channels-last and back) under
  `torch.no_grad()` -> arg-max -> `SaveImage` (`.nii.gz`, uint8); inference part = `sliding_window_inference`
  and the arg-max;
* physical limit (per backend): memory = the runtime and model with one batch of windows (a process that loads
  the model, reads the header and predicts one batch) plus the float32 volume the model sees and the uint8 label
  map it returns; time = the model alone, the median time of one batch (compiled call, after a warm-up) times
  the number of batches.

Both sides run on the CPU with their libraries' default thread counts (all cores; torch's intra-op threads
equal for the two torch processes).
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import benchmark_main, markdown_table  # noqa: E402

NAME = "predict_memory"
PRESETS = {
    "smoke": {"shape": [64, 64, 40], "patch": 32, "overlap": 0.25, "batch_size": 2, "repeats": 1,
              "backends": ["tensorflow"]},
    "cpu": {"shape": [512, 512, 300], "patch": 96, "overlap": 0.25, "batch_size": 2, "repeats": 2,
            "backends": ["tensorflow", "torch"]},
}
TARGET_MB = 4096
DEPTH, FILTERS, CLASSES = 2, 4, 2
CT_WINDOW = (-160.0, 240.0)


def _peak_mb():
    # VmHWM, the high-water mark of this process's own memory map. Not ru_maxrss: Linux carries the
    # parent's peak across fork+exec into it, so every child would report at least the parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _n_batches(cfg):
    from keras_medseg.inference import window_starts

    n = 1
    for size in cfg["shape"]:
        n *= len(window_starts(size, cfg["patch"], cfg["overlap"]))
    return -(-n // cfg["batch_size"])


def _child(kind, cfg):
    """Run one measurement in this (fresh) process and print a JSON line."""
    start = time.perf_counter()
    inference = 0.0
    if kind == "keras_medseg":
        import keras_medseg.predict.scans as scans

        stream = scans.sliding_window_slabs

        def timed(*args, **kwargs):  # the window loop and the arg-max its consumer does between bands
            nonlocal inference
            t0 = time.perf_counter()
            yield from stream(*args, **kwargs)
            inference += time.perf_counter() - t0

        scans.sliding_window_slabs = timed
        scans.predict_files(cfg["model"], cfg["volume"], cfg["out"], overlap=cfg["overlap"],
                            batch_size=cfg["batch_size"], progress=False)
    elif kind == "baseline":
        import nibabel
        import numpy as np

        from keras_medseg.inference import _compiled_call
        from keras_medseg.utils.model_io import load_model

        nibabel.load(cfg["volume"])  # header only
        model = load_model(cfg["model"], compile=False)
        call = _compiled_call(model)
        p = cfg["patch"]
        x = np.zeros((cfg["batch_size"], p, p, p, 1), "float32")
        call(x)  # warm-up (tracing)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            call(x)
            times.append(time.perf_counter() - t0)
        inference = float(np.median(times)) * _n_batches(cfg)
    elif kind == "monai":
        import numpy as np
        import torch
        from monai.inferers import sliding_window_inference
        from monai.transforms import LoadImage, SaveImage, ScaleIntensityRange

        from keras_medseg.utils.model_io import load_model

        model = load_model(cfg["model"], compile=False)  # the same model, on the torch backend

        def predictor(t):  # MONAI windows (B, C, *S) -> the Keras model's channels-last layout and back
            t = t.as_tensor() if hasattr(t, "as_tensor") else t
            return model(t.permute(0, 2, 3, 4, 1), training=False).permute(0, 4, 1, 2, 3)

        img = LoadImage(reader="NibabelReader", image_only=True)(cfg["volume"])
        x = ScaleIntensityRange(a_min=CT_WINDOW[0], a_max=CT_WINDOW[1], b_min=0.0, b_max=1.0, clip=True)(img[None])
        t0 = time.perf_counter()
        with torch.no_grad():
            out = sliding_window_inference(x[None], (cfg["patch"],) * 3, cfg["batch_size"], predictor,
                                           overlap=cfg["overlap"], mode="gaussian", sigma_scale=0.125)
            labels = out[0].argmax(0, keepdim=True).to(torch.uint8)
        inference = time.perf_counter() - t0
        del out, x
        SaveImage(output_dir=cfg["out"], output_postfix="monai", output_ext=".nii.gz", output_dtype=np.uint8,
                  resample=False, separate_folder=False, print_log=False)(labels, meta_data=img.meta)
    else:
        raise ValueError(f"unknown child kind {kind!r}")
    print("RESULT " + json.dumps({"kind": kind, "peak_rss_mb": _peak_mb(), "seconds": time.perf_counter() - start,
                                  "inference_seconds": inference}))


def _spawn(kind, cfg, backend):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND=backend)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", kind, json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{kind} ({backend}) run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def _have_monai():
    try:
        import monai  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _rows_of(s):
    """`[(row name, child kind, backend)]` measured for a preset (MONAI only when it is installed)."""
    rows = []
    for backend in s["backends"]:
        rows += [(f"keras_medseg ({backend})", "keras_medseg", backend), (f"limit ({backend})", "baseline", backend)]
    if _have_monai():
        rows.append(("monai", "monai", "torch"))
    return rows


def run(preset="cpu", out_dir=None, progress=True, repeats=None):
    """Write the test volume and model, then measure the processes interleaved (`repeats` overrides the preset)."""
    import nibabel
    import numpy as np

    from keras_medseg import zoo
    from keras_medseg.data.scans.preprocess import save_preprocessing

    if preset not in PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(PRESETS)}. Received: preset={preset!r}")
    s = dict(PRESETS[preset])
    if repeats is not None:
        if not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"`repeats` must be a positive int. Received: repeats={repeats!r}")
        s["repeats"] = repeats
    with tempfile.TemporaryDirectory() as tmp:
        shape, patch = tuple(s["shape"]), s["patch"]
        rng = np.random.default_rng(0)
        ct = rng.integers(-1000, 1000, size=shape, dtype=np.int16)  # CT-like int16 HU, as scanners store it
        aff = np.diag([0.7, 0.7, 1.5, 1.0])
        volume = os.path.join(tmp, "ct.nii.gz")
        nibabel.save(nibabel.Nifti1Image(ct, aff), volume)
        del ct
        model = zoo.build("unet", spatial_dims=3, input_size=patch, depth=DEPTH, filters=FILTERS, num_classes=CLASSES)
        model_path = os.path.join(tmp, "tiny_unet.keras")
        model.save(model_path)
        save_preprocessing(
            model_path,
            {
                "spatial_dims": 3,
                "patch_size": [patch] * 3,
                "intensity": {"preset": "ct_window", "low": CT_WINDOW[0], "high": CT_WINDOW[1]},
            },
        )
        os.makedirs(os.path.join(tmp, "out"), exist_ok=True)
        cfg = {
            "model": model_path,
            "volume": volume,
            "out": os.path.join(tmp, "out"),
            "shape": list(shape),
            "patch": patch,
            "overlap": s["overlap"],
            "batch_size": s["batch_size"],
        }
        rows = _rows_of(s)
        runs = {name: [] for name, _, _ in rows}
        agree = []
        for r in range(s["repeats"]):
            for name, kind, backend in rows:  # interleaved: ours, limit, ..., anchor, ours, ...
                res = _spawn(kind, cfg, backend)
                runs[name].append(res)
                if progress:
                    print(f"repeat {r + 1}/{s['repeats']} {name}: peak RSS {res['peak_rss_mb']:.0f} MB, "
                          f"{res['seconds']:.1f} s (inference {res['inference_seconds']:.1f} s)", flush=True)
            ours = np.asarray(nibabel.load(os.path.join(tmp, "out", "ct.nii.gz")).dataobj)
            assert ours.shape == shape
            monai_path = os.path.join(tmp, "out", "ct_monai.nii.gz")
            if os.path.exists(monai_path):  # the two label maps (last backend's against MONAI's)
                theirs = np.asarray(nibabel.load(monai_path).dataobj)
                agree.append(float(np.mean(ours == theirs.reshape(ours.shape))))
    n = int(np.prod(shape))
    data_mb = (4 * n + n) / 2**20  # float32 model input + uint8 labels

    def stats(name, key="peak_rss_mb"):
        v = [x[key] for x in runs[name]]
        return {"min": float(np.min(v)), "median": float(np.median(v)), "all": v}

    table = {}
    for name, kind, backend in rows:
        table[name] = {"kind": kind, "backend": backend, "peak_rss_mb": stats(name), "seconds": stats(name, "seconds"),
                       "inference_seconds": stats(name, "inference_seconds")}
        if kind == "baseline":
            table[name]["physical_limit_mb"] = table[name]["peak_rss_mb"]["min"] + data_mb
    first = f"keras_medseg ({s['backends'][0]})"
    result = {
        "preset": preset,
        "settings": s,
        "unet_params": model.count_params(),
        "windows_batches": _n_batches(cfg),
        "runs": runs,
        "table": table,
        "keras_medseg": table[first]["peak_rss_mb"],
        "seconds": table[first]["seconds"],
        "baseline": table[f"limit ({s['backends'][0]})"]["peak_rss_mb"],
        "data_mb": data_mb,
        "target_peak_rss_mb": TARGET_MB,
        "labels_agree_with_monai": agree,
    }
    result["physical_limit_mb"] = result["baseline"]["min"] + data_mb
    result["ratio_to_limit"] = result["keras_medseg"]["min"] / result["physical_limit_mb"]
    result["meets_target"] = result["keras_medseg"]["min"] < TARGET_MB
    if "monai" in runs:
        result["monai"] = table["monai"]["peak_rss_mb"]
        result["monai_seconds"] = table["monai"]["seconds"]
        result["ratio_to_monai"] = result["keras_medseg"]["min"] / result["monai"]["min"]
    return result


def markdown(result, fig_prefix=""):
    s, table = result["settings"], result["table"]
    monai = table.get("monai")
    rows = []
    for name, row in table.items():
        limit = table[f"limit ({row['backend']})"]
        mem, sec, inf = row["peak_rss_mb"], row["seconds"], row["inference_seconds"]
        model_s = limit["inference_seconds"]["median"]
        cells = [
            "physical limit (" + row["backend"] + "): runtime + model + one batch, + float32 volume + uint8 labels; "
            "time: the model alone" if row["kind"] == "baseline" else
            ("anchor: MONAI LoadImage + ScaleIntensityRange + sliding_window_inference + SaveImage (torch, same "
             "model)" if row["kind"] == "monai" else f"keras_medseg predict_files ({row['backend']})"),
            f"{sec['min']:.1f} / {sec['median']:.1f}" if row["kind"] != "baseline" else "",
            f"{inf['min']:.1f} / {inf['median']:.1f}",
            f"{round(limit['physical_limit_mb'])}" if row["kind"] == "baseline" else
            f"{round(mem['min'])} / {round(mem['median'])}",
        ]
        if row["kind"] == "baseline" or monai is None:
            cells += ["", "", ""]
        else:
            cells += [
                f"{sec['median'] / monai['seconds']['median']:.2f} / "
                f"{inf['median'] / monai['inference_seconds']['median']:.2f}",
                f"{mem['min'] / monai['peak_rss_mb']['min']:.2f}",
                f"{inf['median'] / model_s:.2f}",
            ]
        own = limit["physical_limit_mb"] if row["kind"] == "baseline" else mem["min"]
        cells.append(f"{own / limit['physical_limit_mb']:.2f}")
        rows.append(cells)
    shape = "x".join(str(v) for v in s["shape"])
    text = markdown_table(
        ["process", "whole path min / median (s)", "inference part min / median (s)", "peak RSS min / median (MB)",
         "time vs MONAI (whole / inference, medians)", "memory vs MONAI", "inference vs model-alone time",
         "memory vs physical limit"], rows)
    verdict = "met" if result["meets_target"] else "missed"
    agree = result.get("labels_agree_with_monai")
    note = f" Label maps agree with MONAI's on {100 * min(agree):.4f} % of the voxels." if agree else ""
    return (
        f"### Whole-scan predict against MONAI ({shape} int16 NIfTI, {s['patch']}^3 window, overlap "
        f"{s['overlap']}, batch {s['batch_size']}, {result['windows_batches']} batches, tiny 3D UNet with "
        f"{result['unet_params']} random weights; {s['repeats']} interleaved repeats)\n\n{text}\n\n"
        f"Target peak RSS < {TARGET_MB} MB: **{verdict}** ({round(result['keras_medseg']['min'])} MB).{note} "
        "Goal (issue 34): <= 1.0x MONAI's time and peak memory on the same scan and model."
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], json.loads(sys.argv[3]))
        sys.exit(0)
    sys.exit(benchmark_main(sys.modules[__name__], extra_arguments=[
        (("--repeats",), {"type": int, "default": None, "help": "interleaved repeats (default: the preset's)"})]))
