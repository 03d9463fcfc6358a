"""Tiny synthetic whole slides for tests: tiled pyramidal TIFFs with tissue, a tumour polygon, and a corrupt one."""

import numpy as np
import tifffile

from keras_medseg.data.slides.annotations import write_geojson


def slide_image(side=2048, seed=0):
    """`(side, side, 3)` uint8: bright glass with two pink textured tissue ellipses."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[0:side, 0:side]
    yy, xx = yy.astype(np.float32) / side, xx.astype(np.float32) / side
    tissue = (((yy - 0.35) / 0.22) ** 2 + ((xx - 0.4) / 0.3) ** 2 <= 1) | \
             (((yy - 0.75) / 0.12) ** 2 + ((xx - 0.7) / 0.18) ** 2 <= 1)
    # texture: one random 128 px tile of glass and one of stain, repeated (cheap to make, still varied per patch)
    reps = (-(-side // 128), -(-side // 128), 1)
    glass = np.tile(rng.integers(236, 256, (128, 128, 3), dtype=np.uint8), reps)[:side, :side]
    pink = np.tile(np.stack([rng.integers(170, 230, (128, 128)), rng.integers(60, 130, (128, 128)),
                             rng.integers(140, 200, (128, 128))], -1).astype(np.uint8), reps)[:side, :side]
    pink = (pink.astype(np.int16) + (xx * 40).astype(np.int16)[..., None]).clip(0, 255).astype(np.uint8)
    return np.where(tissue[..., None], pink, glass)


def write_slide(path, image, levels=3, tile=256, compression="zlib", mpp=0.25, subifds=False):
    """A tiled pyramid (levels halve the size) with its resolution in microns per pixel."""
    kw = {"tile": (tile, tile), "compression": compression, "photometric": "rgb",
          "resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path) as tw:
        tw.write(image, subifds=levels - 1 if subifds else None, **kw)
        for k in range(1, levels):
            tw.write(image[::2 ** k, ::2 ** k], subfiletype=1, **kw)
    return path


def write_cohort(folder, n=3, side=2048, normal=(2,), corrupt=False, compression=None, mpp=0.25):
    """`n` slides `slide_<k>.tif` (tumour polygons in GeoJSON except the `normal` ones) and optionally a corrupt
    `broken.svs`. Returns the slide paths."""
    paths = []
    for k in range(n):
        path = folder / f"slide_{k}.tif"
        write_slide(path, slide_image(side, seed=k), compression=compression, mpp=mpp)
        paths.append(path)
        if k not in normal:
            cx, cy, r = side * (0.35 + 0.05 * k), side * 0.33, side * 0.08
            t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            write_geojson(folder / f"slide_{k}.geojson", [np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)])
    if corrupt:
        good = paths[0].read_bytes()
        (folder / "broken.svs").write_bytes(good[:4096] + b"\0" * 1024)  # a header, then nothing
        paths.append(folder / "broken.svs")
    return paths
