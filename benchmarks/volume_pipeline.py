"""Patches per second of a 3D training pipeline: keras-medseg vs MONAI, side by side.

    python benchmarks/volume_pipeline.py                  # cpu preset
    python benchmarks/volume_pipeline.py --preset smoke   # seconds, no README update

Both pipelines start from the same NIfTI volumes (different shapes, written by
the script) and do the same work per patch: cached, z-scored volume ->
positive/negative crop (1:1, a positive centred on a foreground voxel) ->
random affine (rotation, scaling; linear image, nearest labels) -> elastic
deformation -> intensity scale and shift. keras-medseg: `VolumeDataset` with
`augment.Compose([RandomAffine, RandomElastic, RandomIntensityScaleShift])`
(keras.ops on the active Keras backend). MONAI (the anchor, CPU torch):
`CacheDataset` + `RandCropByPosNegLabeld` + `RandAffined` + `Rand3DElasticd`
+ `RandScaleIntensityd` + `RandShiftIntensityd`. The physical limit is the
crop alone (cached volume -> patch copy, no augmentation): no augmenting
pipeline can beat it. Repeats are interleaved (ours, MONAI, limit) and the
min and median time per repeat are reported. Both run with the same number of torch threads (`--threads`, default 1:
one core per data-loading worker, as in a multi-worker loader). The elastic warps differ in
construction (ours: linear interpolation of random control-point offsets;
MONAI: Gaussian-smoothed dense noise on a coarse grid), so the comparison is
of pipelines that do the same job, not of identical arithmetic.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import benchmark_main, markdown_table

NAME = "volume_pipeline"
PRESETS = {
    "smoke": {"shapes": [(40, 44, 36), (48, 40, 32)], "patch": 24, "patches": 4, "repeats": 1},
    "cpu": {"shapes": [(128, 128, 80), (144, 112, 72), (112, 136, 96), (128, 120, 64)], "patch": 64,
            "patches": 16, "repeats": 5},
}
ROTATION = 0.26  # radians (15 degrees) about every axis
SCALING = 0.1
ELASTIC_SPACING = 16  # voxels between control points (ours); MONAI's magnitude/sigma below
SCALE, SHIFT = 0.1, 0.1


def write_volumes(root, shapes, seed=0):
    """NIfTI image/label pairs: noise plus two bright ellipsoids labelled 1 and 2 (2 x 1 x 1 mm voxels)."""
    import nibabel as nib
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "labels"))
    pairs = []
    for i, shape in enumerate(shapes):
        grid = np.indices(shape, dtype=np.float32)
        labels = np.zeros(shape, np.uint8)
        for cls in (1, 2):
            centre = [rng.uniform(0.3, 0.7) * s for s in shape]
            radii = [rng.uniform(0.08, 0.15) * s for s in shape]
            labels[sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1] = cls
        image = rng.normal(0, 20, shape).astype(np.float32) + 60 * labels
        affine = np.diag([2.0, 1.0, 1.0, 1.0])
        paths = (os.path.join(root, "images", f"case{i}.nii.gz"), os.path.join(root, "labels", f"case{i}.nii.gz"))
        nib.save(nib.Nifti1Image(image, affine), paths[0])
        nib.save(nib.Nifti1Image(labels, affine), paths[1])
        pairs.append(paths)
    return pairs


def ours(root, patch, patches):
    from keras_medseg.data import VolumeDataset
    from keras_medseg.data import augment as A
    pipeline = A.Compose([
        A.RandomAffine(rotation=ROTATION, scaling=SCALING, seed=1),
        A.RandomElastic(magnitude=(2.0, 4.0), spacing=ELASTIC_SPACING, seed=2),
        A.RandomIntensityScaleShift(SCALE, SHIFT, seed=3),
    ])
    ds = VolumeDataset(root, patch_size=patch, batch_size=1, pos_fraction=0.5, augment=pipeline,
                       steps_per_epoch=patches, intensity={"preset": "zscore"})
    plain = VolumeDataset(root, patch_size=patch, batch_size=1, pos_fraction=0.5, steps_per_epoch=patches)
    for i in range(len(ds.cases)):  # fill both caches (as CacheDataset does at construction)
        ds.load_case(i)
        plain.load_case(i)
    ds[0]  # trace/warm the augmentation once

    def run_ours():
        for i in range(patches):
            x, y = ds[i]
        ds.on_epoch_end()
        return x.shape

    def run_limit():
        for i in range(patches):
            x, y = plain[i]
        plain.on_epoch_end()
        return x.shape
    return run_ours, run_limit


def monai_pipeline(pairs, patch, patches):
    import monai.transforms as T
    import torch
    from monai.data import CacheDataset
    keys = ("image", "label")
    deterministic = [T.LoadImaged(keys), T.EnsureChannelFirstd(keys), T.NormalizeIntensityd("image")]
    random = [
        T.RandCropByPosNegLabeld(keys, "label", spatial_size=(patch,) * 3, pos=1, neg=1, num_samples=1),
        T.RandAffined(keys, prob=1.0, rotate_range=(ROTATION,) * 3, scale_range=(SCALING,) * 3,
                      mode=("bilinear", "nearest"), padding_mode="zeros"),
        T.Rand3DElasticd(keys, sigma_range=(5, 7), magnitude_range=(50, 100), prob=1.0,
                         mode=("bilinear", "nearest"), padding_mode="border"),
        T.RandScaleIntensityd("image", factors=SCALE, prob=1.0),
        T.RandShiftIntensityd("image", offsets=SHIFT, prob=1.0),
    ]
    data = [{"image": i, "label": lab} for i, lab in pairs]
    transform = T.Compose(deterministic + random)
    transform.set_random_state(seed=0)
    ds = CacheDataset(data, transform=transform, cache_rate=1.0, num_workers=0, progress=False)
    torch.manual_seed(0)
    ds[0]

    def run_monai():
        for i in range(patches):
            out = ds[i % len(ds)]
        return tuple(out[0]["image"].shape)
    return run_monai


def run(preset, out_dir=None, progress=True, threads=1):
    import keras
    import torch
    s = PRESETS[preset]
    torch.set_num_threads(threads)  # the same for both pipelines (MONAI's transforms and keras-medseg on torch)
    with tempfile.TemporaryDirectory() as root:
        pairs = write_volumes(root, s["shapes"])
        run_ours, run_limit = ours(root, s["patch"], s["patches"])
        run_monai = monai_pipeline(pairs, s["patch"], s["patches"])
        times = {"keras_medseg": [], "monai": [], "crop_only": []}
        for r in range(s["repeats"]):
            for name, fn in (("keras_medseg", run_ours), ("monai", run_monai), ("crop_only", run_limit)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
            if progress:
                print(f"repeat {r + 1}/{s['repeats']}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                      file=sys.stderr)
    rates = {k: {"min_s": min(v), "median_s": float(np.median(v)),
                 "patches_per_s_best": s["patches"] / min(v),
                 "patches_per_s_median": s["patches"] / float(np.median(v))}
             for k, v in times.items()}
    return {"preset": preset, "settings": {k: v for k, v in s.items()}, "backend": keras.backend.backend(),
            "torch_threads": torch.get_num_threads(), "times_s": times, "rates": rates,
            "ratio_vs_monai_median": (rates["keras_medseg"]["patches_per_s_median"]
                                      / rates["monai"]["patches_per_s_median"]),
            "ratio_vs_monai_best": rates["keras_medseg"]["patches_per_s_best"] / rates["monai"]["patches_per_s_best"],
            "fraction_of_limit_median": rates["keras_medseg"]["patches_per_s_median"]
            / rates["crop_only"]["patches_per_s_median"]}


def markdown(result, fig_prefix=""):
    s, r = result["settings"], result["rates"]
    rows = [[name, f"{r[name]['patches_per_s_median']:.2f}", f"{r[name]['patches_per_s_best']:.2f}"]
            for name in ("keras_medseg", "monai", "crop_only")]
    table = markdown_table(["pipeline", "patches/s (median)", "patches/s (best)"], rows)
    return (f"### Volume pipeline: load + pos/neg crop + affine + elastic + intensity ({s['patch']}^3 patches, "
            f"{len(s['shapes'])} cached volumes, Keras backend {result['backend']}, MONAI on CPU torch)\n\n"
            f"{table}\n\nkeras-medseg / MONAI: **{result['ratio_vs_monai_median']:.2f}x** (median), "
            f"{result['ratio_vs_monai_best']:.2f}x (best); keras-medseg reaches "
            f"{100 * result['fraction_of_limit_median']:.1f}% of the crop-only limit.")


if __name__ == "__main__":
    sys.exit(benchmark_main(sys.modules[__name__], extra_arguments=[
        (("--threads",), {"type": int, "default": 1,
                          "help": "torch intra-op threads for both pipelines (default 1)"})]))
