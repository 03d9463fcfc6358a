"""Peak memory of whole-scan prediction: `keras_medseg.predict.scans.predict_files` on a 512 x 512 x 300 CT.

    python benchmarks/predict_memory.py                  # 512x512x300 int16 NIfTI, 96^3 window, 2 repeats
    python benchmarks/predict_memory.py --preset smoke   # 64x64x40, 32^3 window (seconds)

Goal (issue 13): peak RSS < 4 GB for `predict` on a 512 x 512 x 300 volume
with a 96-cube window. The full path is measured, as `keras-medseg predict`
runs it: read the NIfTI with nibabel, CT window, sliding-window inference
with a tiny 3D UNet (random weights, zoo `unet`, depth 2, 4 filters), arg-max
and write the label map with the input's geometry.

Each measurement is its own process (peak RSS: the process's `VmHWM`);
runs are interleaved, `repeats` times:

* `keras_medseg`: `predict_files(model.keras, ct.nii.gz, out/)`;
* anchor, MONAI `sliding_window_inference` (the torch reference the issue
  names) with a MONAI `UNet` of the same depth and width, on the same float32
  volume, window, overlap, batch and Gaussian blending (it keeps a float32
  K-channel output and a count map, like most sliding-window code);
* physical limit: what cannot be avoided, the runtime and model with one
  batch of windows (measured: a process that loads the model, reads the
  header and predicts one batch) plus the float32 volume the model sees and
  the uint8 label map it returns.
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
    "smoke": {"shape": [64, 64, 40], "patch": 32, "overlap": 0.25, "batch_size": 2, "repeats": 1},
    "cpu": {"shape": [512, 512, 300], "patch": 96, "overlap": 0.25, "batch_size": 2, "repeats": 2},
}
TARGET_MB = 4096
DEPTH, FILTERS, CLASSES = 2, 4, 2


def _peak_mb():
    # VmHWM, the high-water mark of this process's own memory map. Not ru_maxrss: Linux carries the
    # parent's peak across fork+exec into it, so every child would report at least the parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(kind, cfg):
    """Run one measurement in this (fresh) process and print a JSON line."""
    start = time.perf_counter()
    if kind == "keras_medseg":
        from keras_medseg.predict.scans import predict_files

        predict_files(
            cfg["model"],
            cfg["volume"],
            cfg["out"],
            overlap=cfg["overlap"],
            batch_size=cfg["batch_size"],
            progress=False,
        )
    elif kind == "baseline":
        import nibabel
        import numpy as np

        from keras_medseg.utils.model_io import load_model

        nibabel.load(cfg["volume"])  # header only
        model = load_model(cfg["model"], compile=False)
        p = cfg["patch"]
        model.predict_on_batch(np.zeros((cfg["batch_size"], p, p, p, 1), "float32"))
    elif kind == "monai":
        import nibabel
        import numpy as np
        import torch
        from monai.inferers import sliding_window_inference
        from monai.networks.nets import UNet

        torch.manual_seed(0)
        net = UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=CLASSES,
            channels=[FILTERS * 2**i for i in range(DEPTH + 1)],
            strides=[2] * DEPTH,
        ).eval()
        x = np.asarray(nibabel.load(cfg["volume"]).dataobj, dtype=np.float32)
        x = (np.clip(x, -160, 240) + 160) / 400
        with torch.no_grad():
            out = sliding_window_inference(
                torch.from_numpy(x)[None, None],
                (cfg["patch"],) * 3,
                cfg["batch_size"],
                lambda t: torch.softmax(net(t), 1),
                overlap=cfg["overlap"],
                mode="gaussian",
            )
            labels = out[0].argmax(0).to(torch.uint8).numpy()
        nibabel.save(
            nibabel.Nifti1Image(labels, nibabel.load(cfg["volume"]).affine), os.path.join(cfg["out"], "monai.nii.gz")
        )
    else:
        raise ValueError(f"unknown child kind {kind!r}")
    print("RESULT " + json.dumps({"kind": kind, "peak_rss_mb": _peak_mb(), "seconds": time.perf_counter() - start}))


def _spawn(kind, cfg):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
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
    raise RuntimeError(f"{kind} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def _have_monai():
    try:
        import monai  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run(preset="cpu", out_dir=None, progress=True):
    """Write the test volume and model, then measure the three processes interleaved."""
    import nibabel
    import numpy as np

    from keras_medseg import zoo
    from keras_medseg.data.scans.preprocess import save_preprocessing

    if preset not in PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(PRESETS)}. Received: preset={preset!r}")
    s = PRESETS[preset]
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
                "intensity": {"preset": "ct_window", "low": -160, "high": 240},
            },
        )
        os.makedirs(os.path.join(tmp, "out"), exist_ok=True)
        cfg = {
            "model": model_path,
            "volume": volume,
            "out": os.path.join(tmp, "out"),
            "patch": patch,
            "overlap": s["overlap"],
            "batch_size": s["batch_size"],
        }
        kinds = ["keras_medseg", "baseline"] + (["monai"] if _have_monai() else [])
        runs = {k: [] for k in kinds}
        for r in range(s["repeats"]):
            for kind in kinds:  # interleaved: ours, limit, anchor, ours, ...
                res = _spawn(kind, cfg)
                runs[kind].append(res)
                if progress:
                    print(
                        f"repeat {r + 1}/{s['repeats']} {kind}: peak RSS {res['peak_rss_mb']:.0f} MB, "
                        f"{res['seconds']:.1f} s",
                        flush=True,
                    )
        out_shape = nibabel.load(os.path.join(tmp, "out", "ct.nii.gz")).shape
        assert tuple(out_shape) == shape
    n = int(np.prod(shape))
    data_mb = (4 * n + n) / 2**20  # float32 model input + uint8 labels

    def stats(kind, key="peak_rss_mb"):
        v = [x[key] for x in runs[kind]]
        return {"min": float(np.min(v)), "median": float(np.median(v)), "all": v}

    result = {
        "preset": preset,
        "settings": s,
        "unet_params": model.count_params(),
        "runs": runs,
        "keras_medseg": stats("keras_medseg"),
        "seconds": stats("keras_medseg", "seconds"),
        "baseline": stats("baseline"),
        "data_mb": data_mb,
        "target_peak_rss_mb": TARGET_MB,
    }
    result["physical_limit_mb"] = result["baseline"]["min"] + data_mb
    result["ratio_to_limit"] = result["keras_medseg"]["min"] / result["physical_limit_mb"]
    result["meets_target"] = result["keras_medseg"]["min"] < TARGET_MB
    if "monai" in runs:
        result["monai"] = stats("monai")
        result["monai_seconds"] = stats("monai", "seconds")
        result["ratio_to_monai"] = result["keras_medseg"]["min"] / result["monai"]["min"]
    return result


def markdown(result, fig_prefix=""):
    s = result["settings"]
    rows = [
        [
            "keras_medseg predict_files",
            round(result["keras_medseg"]["min"]),
            round(result["keras_medseg"]["median"]),
            round(result["seconds"]["median"], 1),
            1.0,
            round(result["ratio_to_limit"], 2),
        ]
    ]
    if "monai" in result:
        rows.append(
            [
                "anchor: MONAI sliding_window_inference",
                round(result["monai"]["min"]),
                round(result["monai"]["median"]),
                round(result["monai_seconds"]["median"], 1),
                round(result["monai"]["min"] / result["keras_medseg"]["min"], 2),
                round(result["monai"]["min"] / result["physical_limit_mb"], 2),
            ]
        )
    rows.append(
        [
            "physical limit: runtime + model + one batch, + float32 volume + uint8 labels",
            round(result["physical_limit_mb"]),
            "",
            "",
            round(result["physical_limit_mb"] / result["keras_medseg"]["min"], 2),
            1.0,
        ]
    )
    shape = "x".join(str(v) for v in s["shape"])
    table = markdown_table(
        ["process", "peak RSS min (MB)", "median (MB)", "time median (s)", "vs keras_medseg", "vs physical limit"], rows
    )
    verdict = "met" if result["meets_target"] else "missed"
    return (
        f"### Whole-scan predict: peak memory ({shape} int16 NIfTI, {s['patch']}^3 window, overlap "
        f"{s['overlap']}, batch {s['batch_size']}, tiny 3D UNet with {result['unet_params']} random weights; "
        f"{s['repeats']} interleaved repeats)\n\n{table}\n\nTarget peak RSS < {TARGET_MB} MB: **{verdict}** "
        f"({round(result['keras_medseg']['min'])} MB)."
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], json.loads(sys.argv[3]))
        sys.exit(0)
    sys.exit(benchmark_main(sys.modules[__name__]))
