"""Whole slides at their real size: streaming patch extraction and slide inference, speed and peak memory.

    python benchmarks/wsi.py                    # 50,000 x 50,000 px slide (about 10 min on 2 cores)
    python benchmarks/wsi.py --preset smoke     # 4,096 px slide, seconds; numbers meaningless (CI)

The benchmark writes its own slide with tifffile: a tiled (256 px),
zlib-compressed RGB pyramid, every level generated tile by tile from a
generator (so the slide never sits in memory), white glass with a few
elliptic tissue regions of textured pink (so it compresses), and GeoJSON
tumour polygons inside the tissue. Then, each measurement in a fresh child
process whose whole process tree is sampled for memory (PSS: shared pages
counted once, proportionally), interleaved over `repeats` rounds:

* `extract` with 1 and with 2 workers: `extract_slide(level 0, size 512,
  inner 128, min_tissue 0.1)` into a fresh store (lzf): patches/s, peak PSS
  (goal < 2 GB);
* physical limit of extraction: decoding the tiles under the kept patches
  once each, nothing else (one process), as patches/s;
* physical limit of the single store writer: appending the same number
  of real tissue patches (lzf) with nothing else to do; extraction is
  compared with the slower of the two limits;
* anchor: the in-memory path that existed before (read a region whole,
  `PatchStore.add_slide` on the array), on the largest crop that holds one
  tissue region, as patches/s (it cannot open the whole slide: 7.5 GB);
* `predict`: `predict_slide` of a small CNN (3 strided convolutions) over the
  same grid, patches/s and peak PSS; its limit: the model alone on the same
  number of random batches.

Reference: the lecture "Convolutional networks - theory" (slides of
105,185 x 221,772 px cut into 512 px patches, inner-square labels).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import benchmark_main, markdown_table

NAME = "wsi"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = {
    "smoke": {"side": 4096, "levels": 3, "tile": 256, "size": 256, "inner": 64, "repeats": 1,
              "regions": [(1500, 1300, 500, 380), (2900, 2800, 300, 420)], "batch": 8, "thumb": 512},
    "cpu": {"side": 50000, "levels": 6, "tile": 256, "size": 512, "inner": 128, "repeats": 2,
            "regions": [(12000, 14000, 1700, 1200), (31000, 36000, 1100, 1500), (40000, 9000, 900, 800)],
            "batch": 16, "thumb": 1024},
}


# --------------------------------------------------------------------------- synthetic slide


def _tile_pixels(y0, x0, th, tw, step, regions):
    """RGB of the tile whose top-left level-0 pixel is (y0, x0), sampled every `step` level-0 pixels."""
    white = np.full((th, tw, 3), 245, np.uint8)
    ys = y0 + step * np.arange(th)
    xs = x0 + step * np.arange(tw)
    hit = [(cy, cx, ry, rx) for cy, cx, ry, rx in regions
           if ys[0] <= cy + ry and ys[-1] >= cy - ry and xs[0] <= cx + rx and xs[-1] >= cx - rx]
    if not hit:
        return white
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    inside = np.zeros((th, tw), bool)
    for cy, cx, ry, rx in hit:
        inside |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    texture = ((yy // 7 * 31 + xx // 5 * 17) % 23).astype(np.int16)  # cheap deterministic stain texture
    pink = np.stack([200 - texture, 90 + 2 * texture, 170 - texture], -1).astype(np.uint8)
    white[inside] = pink[inside]
    return white


def write_slide(path, side, levels, tile, regions, compression="zlib"):
    """A tiled pyramid (zlib level 1, or `"jpeg"` quality 90 as scanners write) written tile by tile (never in
    memory); returns the level shapes."""
    import tifffile

    shapes = []
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for k in range(levels):
            step = 2 ** k
            h = w = side // step
            shapes.append((h, w))

            def tiles(h=h, w=w, step=step):
                for ty in range(0, h, tile):
                    for tx in range(0, w, tile):
                        yield _tile_pixels(ty * step, tx * step, tile, tile, step, regions)

            kw = {"subifds": levels - 1} if k == 0 else {"subfiletype": 1}
            tw.write(tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), compression=compression,
                     compressionargs={"level": 1 if compression == "zlib" else 90}, photometric="rgb", **kw)
    return shapes


def write_annotations(path, regions):
    """One tumour polygon (an ellipse a third of the region's size, 48 vertices) inside each tissue region."""
    from keras_medseg.data.slides.annotations import write_geojson

    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    polys = [np.stack([cx + rx / 3 * np.cos(t) + 0.37, cy + ry / 3 * np.sin(t) + 0.21], 1)
             for cy, cx, ry, rx in regions]
    write_geojson(path, polys)


# --------------------------------------------------------------------------- child measurements


def _child(mode, cfg, slide, ann, work, workers):
    """One measurement in this (fresh) process; prints a JSON line."""
    from keras_medseg.data.slides.slide import open_slide
    from keras_medseg.data.slides.streaming import extract_slide, patch_grid

    size, inner = cfg["size"], cfg["inner"]
    out = {}
    if mode == "extract":
        store = os.path.join(work, f"store_w{workers}.h5")
        t0 = time.perf_counter()
        res = extract_slide(slide, store, annotations=ann, level=0, size=size, inner_size=inner, min_tissue=0.1,
                            workers=workers, compression="lzf", progress=False, thumbnail_size=cfg["thumb"])
        out = {"seconds": time.perf_counter() - t0, "patches": res["added"], "positive": res["positive"],
               "store_mb": os.path.getsize(store) / 1e6}
        os.remove(store)
        for extra in (store + ".slides.json", store + ".lock"):
            if os.path.exists(extra):
                os.remove(extra)
    elif mode == "decode":
        with open_slide(slide, cache_bytes=1 << 20) as sl:
            grid = patch_grid(sl, 0, size, inner, annotations=ann, min_tissue=0.1, thumbnail_size=cfg["thumb"])
            t0, c0 = time.perf_counter(), time.process_time()
            lv = sl._levels[0]
            need = set()
            for r, c in grid.coords.tolist():
                for ty in range(r // lv.seg_h, (r + size - 1) // lv.seg_h + 1):
                    for tx in range(c // lv.seg_w, (c + size - 1) // lv.seg_w + 1):
                        need.add(ty * lv.n_cols + tx)
            for index in sorted(need):
                sl._segment(0, index)
            out = {"seconds": time.perf_counter() - t0, "patches": int(grid.coords.shape[0]), "tiles": len(need),
                   "cpu_s": time.process_time() - c0}
    elif mode == "write":
        from keras_medseg.data.slides import PatchStore

        with open_slide(slide) as sl:
            grid = patch_grid(sl, 0, size, inner, annotations=ann, min_tissue=0.1, thumbnail_size=cfg["thumb"])
            idx = np.arange(min(32, grid.coords.shape[0]))
            chunk = np.stack([sl.read_region(0, tuple(grid.coords[i]), (size, size)) for i in idx])
        store = os.path.join(work, "write.h5")
        n = int(grid.coords.shape[0])
        t0, c0 = time.perf_counter(), time.process_time()
        with PatchStore(store, "w", patch_size=size, compression="lzf") as ps:
            for start in range(0, n, idx.size):  # real tissue patches, the same chunk again and again
                k = min(idx.size, n - start)
                ps.append(chunk[:k], np.zeros(k, np.uint8), "s", None, grid.coords[start:start + k])
        out = {"seconds": time.perf_counter() - t0, "patches": n, "cpu_s": time.process_time() - c0}
        os.remove(store)
    elif mode == "anchor":
        from keras_medseg.data.slides import PatchStore
        from keras_medseg.data.slides.annotations import read_annotations

        cy, cx, ry, rx = cfg["regions"][0]
        r0 = max(0, (cy - ry - size) // inner * inner)
        c0 = max(0, (cx - rx - size) // inner * inner)
        h = min(cfg["side"] - r0, 2 * ry + 2 * size)
        w = min(cfg["side"] - c0, 2 * rx + 2 * size)
        t0 = time.perf_counter()
        with open_slide(slide) as sl:
            image = sl.read_region(0, (r0, c0), (h, w))  # the old path: the whole image in memory
        mask = read_annotations(ann).label_window(1.0, (r0, c0), (h, w)) > 0
        store = os.path.join(work, "anchor.h5")
        with PatchStore(store, "w", patch_size=size, compression="lzf") as ps:
            n = ps.add_slide(image, mask, "crop", size=size, inner_size=inner, min_tissue=0.1)
        out = {"seconds": time.perf_counter() - t0, "patches": n, "crop": [h, w]}
        os.remove(store)
    elif mode in ("predict", "model_only"):
        import keras

        from keras_medseg.predict.slides import predict_slide

        model = keras.saving.load_model(os.path.join(work, "cnn.keras"))
        model.predict_on_batch(np.zeros((cfg["batch"], size, size, 3), np.float32))  # trace once
        if mode == "predict":
            t0 = time.perf_counter()
            res = predict_slide(model, slide, level=0, size=size, inner_size=inner, min_tissue=0.1,
                                batch_size=cfg["batch"], rescale=1 / 255, progress=False, thumbnail_size=cfg["thumb"])
            out = {"seconds": time.perf_counter() - t0, "patches": int(res.scores.size),
                   "slide_score": res.slide_score, "heatmap": list(res.heatmap.shape)}
        else:
            n = int(sys.argv[sys.argv.index("--patches") + 1])
            x = np.random.default_rng(0).random((cfg["batch"], size, size, 3), np.float32)
            t0 = time.perf_counter()
            for _ in range(-(-n // cfg["batch"])):
                model.predict_on_batch(x)
            out = {"seconds": time.perf_counter() - t0, "patches": n}
    print("RESULT " + json.dumps(out), flush=True)


def _measure(args, env, script=None, interval=0.2):
    """Run a child (this script, or `script`); sample the PSS of its process tree every `interval` s; return (result
    dict, peak MB). Each sample reads every process's smaps (milliseconds of CPU per process)."""
    import psutil

    proc = subprocess.Popen([sys.executable, script or os.path.abspath(__file__)] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    peak = [0.0]
    done = threading.Event()

    def sample():
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            total = 0
            try:
                for p in [root] + root.children(recursive=True):
                    try:
                        total += p.memory_full_info().pss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                break
            peak[0] = max(peak[0], total / 2**20)
            done.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, stderr = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {args[:2]} failed:\n{stderr[-3000:]}")
    line = [s for s in stdout.splitlines() if s.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):]), peak[0]


def _stats(values):
    return {"min": min(values), "median": statistics.median(values), "all": values}


def run(preset="cpu", out_dir=None, progress=True):
    """Write the synthetic slide, run the interleaved measurements, return the result dict."""
    import keras

    cfg = PRESETS[preset]
    work = out_dir or tempfile.mkdtemp(prefix="wsi_bench_")
    os.makedirs(work, exist_ok=True)
    slide, ann = os.path.join(work, "slide.tif"), os.path.join(work, "slide.geojson")
    t0 = time.perf_counter()
    shapes = write_slide(slide, cfg["side"], cfg["levels"], cfg["tile"], cfg["regions"])
    write_seconds = time.perf_counter() - t0
    write_annotations(ann, cfg["regions"])
    size = cfg["size"]
    inputs = keras.Input((size, size, 3))
    x = inputs
    for filters in (8, 16, 32):
        x = keras.layers.Conv2D(filters, 3, strides=4, padding="same", activation="relu")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs, name="small_cnn")
    model.save(os.path.join(work, "cnn.keras"))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    base = ["--child-config", json.dumps(cfg), "--slide", slide, "--ann", ann, "--work", work]
    runs = {k: [] for k in ("anchor", "decode", "write", "extract_w1", "extract_w2", "predict", "model_only")}
    peaks = {k: [] for k in runs}
    info = {}
    for rep in range(cfg["repeats"]):
        for key, args in (("anchor", ["--child", "anchor"]), ("decode", ["--child", "decode"]),
                          ("write", ["--child", "write"]),
                          ("extract_w1", ["--child", "extract", "--workers", "1"]),
                          ("extract_w2", ["--child", "extract", "--workers", "2"]),
                          ("predict", ["--child", "predict"]),
                          ("model_only", ["--child", "model_only", "--patches",
                                          str(info.get("predict", {}).get("patches", 64))])):
            if progress:
                print(f"[wsi] round {rep + 1}/{cfg['repeats']}: {key}", flush=True)
            res, peak = _measure(args + base, env)
            runs[key].append(res["patches"] / res["seconds"])
            peaks[key].append(peak)
            info[key] = res
    result = {"preset": preset, "settings": cfg, "slide_mb": os.path.getsize(slide) / 1e6,
              "level_shapes": shapes, "write_seconds": write_seconds,
              "patches_per_s": {k: _stats(v) for k, v in runs.items()},
              "peak_pss_mb": {k: _stats(v) for k, v in peaks.items()}, "details": info}
    ex = result["patches_per_s"]
    limit = min(ex["decode"]["median"], ex["write"]["median"])  # one writer: the slower of the two bounds
    result["extract_vs_limit"] = {w: ex[f"extract_w{w}"]["median"] / limit for w in (1, 2)}
    result["extract_vs_anchor"] = {w: ex[f"extract_w{w}"]["median"] / ex["anchor"]["median"] for w in (1, 2)}
    result["meets_2gb_goal"] = max(max(peaks["extract_w1"]), max(peaks["extract_w2"])) < 2048
    if out_dir is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return result


def markdown(result, fig_prefix=""):
    cfg = result["settings"]
    ex, pk = result["patches_per_s"], result["peak_pss_mb"]
    labels = {"anchor": "anchor: old in-memory path on one tissue crop",
              "decode": "limit: decode the needed tiles once",
              "write": "limit: append patches to the store (one writer)",
              "extract_w1": "extract, 1 worker", "extract_w2": "extract, 2 workers",
              "predict": "slide inference (small CNN)", "model_only": "limit: model alone, same batches"}
    rows = []
    for key, label in labels.items():
        ratio = ""
        if key.startswith("extract"):
            w = int(key[-1])
            ratio = (f"{result['extract_vs_anchor'][w]:.2f} x anchor, "
                     f"{result['extract_vs_limit'][w]:.2f} x limit")
        elif key == "predict":
            ratio = f"{ex['predict']['median'] / ex['model_only']['median']:.2f} x limit"
        rows.append([label, f"{ex[key]['min']:.1f}", f"{ex[key]['median']:.1f}", ratio,
                     f"{max(pk[key]['all']):.0f}"])
    d = result["details"]
    table = markdown_table(["measurement", "patches/s min", "patches/s median", "ratio (median)", "peak PSS MB"],
                           rows)
    return (
        f"### Whole slides at real size ({cfg['side']:,} x {cfg['side']:,} px)\n\n{table}\n\n"
        f"Synthetic slide: {len(result['level_shapes'])} levels, {cfg['tile']} px zlib tiles, "
        f"{result['slide_mb']:.0f} MB on disk, written tile by tile in {result['write_seconds']:.0f} s. "
        f"Grid: level 0, patches {cfg['size']} px, inner square {cfg['inner']} px, stride {cfg['inner']}, "
        f"min_tissue 0.1: {d['extract_w1']['patches']} patches ({d['extract_w1']['positive']} positive). "
        f"Anchor crop {d['anchor']['crop'][0]} x {d['anchor']['crop'][1]} px ({d['anchor']['patches']} patches). "
        f"Each measurement in a fresh process (Python + Keras import included in the memory), "
        f"{cfg['repeats']} interleaved rounds; peak PSS of the process tree (goal < 2048 MB for extraction: "
        f"{'met' if result['meets_2gb_goal'] else 'NOT met'})."
    )


def _child_main(argv):
    def arg(name, default=None):
        return argv[argv.index(name) + 1] if name in argv else default

    cfg = json.loads(arg("--child-config"))
    _child(arg("--child"), cfg, arg("--slide"), arg("--ann"), arg("--work"), int(arg("--workers", 1)))


if __name__ == "__main__":
    if "--child" in sys.argv:
        _child_main(sys.argv)
    else:
        sys.exit(benchmark_main(sys.modules[__name__]))
