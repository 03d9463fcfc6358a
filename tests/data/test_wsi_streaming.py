"""Tissue grids and streaming, resumable extraction of slides into a PatchStore."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile

from keras_medseg.data.slides import PatchStore
from keras_medseg.data.slides.annotations import read_annotations, write_geojson
from keras_medseg.data.slides.slide import open_slide
from keras_medseg.data.slides.streaming import (
    extract_slide,
    merge_stores,
    patch_grid,
    tissue_mask_from_thumbnail,
)
from keras_medseg.data.slides.tiff_slide import TiffSlide

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_slide(tmp_path, name="s", h=512, w=768, levels=3, tile=32, seed=0):
    """White glass with two pink tissue rectangles, a tumour polygon inside the first one."""
    rng = np.random.default_rng(seed)
    image = rng.integers(236, 256, (h, w, 3)).astype(np.uint8)  # glass: bright, unsaturated
    tissue = np.zeros((h, w), bool)
    tissue[64:320, 96:416] = True
    tissue[352:480, 512:704] = True
    pink = np.stack([rng.integers(180, 230, (h, w)), rng.integers(60, 120, (h, w)), rng.integers(150, 200, (h, w))],
                    -1).astype(np.uint8)
    image[tissue] = pink[tissue]
    path = tmp_path / f"{name}.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(image, tile=(tile, tile), compression="zlib", photometric="rgb", subifds=levels - 1)
        for k in range(1, levels):
            tw.write(image[::2 ** k, ::2 ** k], tile=(tile, tile), compression="zlib", photometric="rgb",
                     subfiletype=1)
    polys = [np.array([[150.3, 120.2], [300.7, 110.4], [330.1, 250.6], [170.2, 280.9]]),
             np.array([[560.5, 380.3], [600.2, 390.1], [580.4, 430.7]])]
    write_geojson(tmp_path / f"{name}.geojson", polys)
    return path, tmp_path / f"{name}.geojson", image, tissue


def _rows(store, slide_id):
    with PatchStore(store) as s:
        sel = np.flatnonzero(s.slide_ids == slide_id)
        coords = s.coords[sel]
        order = np.lexsort((coords[:, 1], coords[:, 0]))
        sel = sel[order]
        return s.coords[sel], s.read(sel), s.labels[sel], s.tumor_ids[sel]


def test_tissue_mask_otsu_matches_skimage():
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(0)
    thumb = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    sat = rgb2hsv(thumb)[..., 1]
    np.testing.assert_array_equal(tissue_mask_from_thumbnail(thumb), sat > threshold_otsu(sat))
    np.testing.assert_array_equal(tissue_mask_from_thumbnail(thumb, 0.07), sat > 0.07)
    unit = thumb / 255.0  # float thumbnails in [0, 1]: the same saturation
    np.testing.assert_array_equal(tissue_mask_from_thumbnail(unit), sat > threshold_otsu(sat))
    assert not tissue_mask_from_thumbnail(np.full((8, 8, 3), 255, np.uint8)).any()
    with pytest.raises(ValueError, match="threshold"):
        tissue_mask_from_thumbnail(thumb, "mean")


@pytest.mark.parametrize("level", [0, 1])
def test_grid_keeps_tissue_and_tumours_and_labels_by_inner_square(tmp_path, level):
    path, ann_path, image, tissue = make_slide(tmp_path)
    ann = read_annotations(ann_path)
    size, inner = 64 // 2 ** level, 32 // 2 ** level
    grid = patch_grid(path, level=level, size=size, inner_size=inner, annotations=ann_path, min_tissue=0.25,
                      thumbnail_size=192)
    d = 2 ** level
    lev_tissue = tissue[::d, ::d]
    rows = np.arange(0, lev_tissue.shape[0] - size + 1, inner)
    cols = np.arange(0, lev_tissue.shape[1] - size + 1, inner)
    kept = {tuple(c) for c in grid.coords.tolist()}
    for r in rows:
        for c in cols:
            frac = lev_tissue[r:r + size, c:c + size].mean()
            tumor = ann.inner_square_tumor(d, (r, c), size, inner)
            if tumor >= 0 or frac >= 0.5:  # clear tissue (thumbnail is coarser: margin)
                assert (r, c) in kept
            if frac == 0 and tumor < 0:
                assert (r, c) not in kept
    for (r, c), t in zip(grid.coords.tolist(), grid.tumor_ids.tolist()):
        assert t == ann.inner_square_tumor(d, (r, c), size, inner)
    assert set(grid.tumor_ids.tolist()) == {-1, 1, 2}
    assert grid.grid_shape == (rows.size, cols.size)
    np.testing.assert_array_equal(grid.coords, np.stack([rows[grid.grid_index[:, 0]], cols[grid.grid_index[:, 1]]], 1))


def test_background_tiles_are_never_decoded(tmp_path, monkeypatch):
    path, ann_path, image, tissue = make_slide(tmp_path)
    seen = []
    original = TiffSlide._segment

    def spy(self, level, index):
        seen.append((level, index))
        return original(self, level, index)

    monkeypatch.setattr(TiffSlide, "_segment", spy)
    extract_slide(path, tmp_path / "p.h5", annotations=ann_path, level=0, size=64, inner_size=32, min_tissue=0.25,
                  thumbnail_size=192, progress=False)
    level0 = {i for lev, i in seen if lev == 0}
    # level-0 tiles (32 px) that hold no tissue and are farther than one patch from any tissue
    ty, tx = np.divmod(np.asarray(sorted(level0)), 768 // 32)
    near = np.zeros_like(tissue)
    near[64 - 64:320 + 64, 96 - 64:416 + 64] = True
    near[352 - 64:480 + 64, 512 - 64:704 + 64] = True
    assert near[ty * 32, tx * 32].all()
    assert len(level0) < 0.75 * (512 // 32) * (768 // 32)


@pytest.mark.parametrize("level", [0, 1])
def test_store_holds_the_slide_pixels(tmp_path, level):
    path, ann_path, image, _ = make_slide(tmp_path)
    size = 64 // 2 ** level
    res = extract_slide(path, tmp_path / "p.h5", annotations=ann_path, level=level, size=size, min_tissue=0.25,
                        thumbnail_size=192, progress=False, chunk_size=7)
    grid = patch_grid(path, level=level, size=size, annotations=ann_path, min_tissue=0.25, thumbnail_size=192)
    coords, patches, labels, tumors = _rows(tmp_path / "p.h5", "s")
    assert res["added"] == res["total"] == len(coords) == len(grid.coords)
    lev = image[::2 ** level, ::2 ** level]
    for (r, c), p in zip(coords.tolist(), patches):
        np.testing.assert_array_equal(p, lev[r:r + size, c:c + size])
    order = np.lexsort((grid.coords[:, 1], grid.coords[:, 0]))
    np.testing.assert_array_equal(tumors, grid.tumor_ids[order])
    np.testing.assert_array_equal(labels, grid.tumor_ids[order] >= 0)


def test_two_workers_equal_one(tmp_path):
    path, ann_path, _, _ = make_slide(tmp_path)
    kw = dict(annotations=ann_path, level=0, size=64, min_tissue=0.25, thumbnail_size=192, progress=False,
              chunk_size=5)
    extract_slide(path, tmp_path / "one.h5", workers=1, **kw)
    extract_slide(path, tmp_path / "two.h5", workers=2, **kw)
    for a, b in zip(_rows(tmp_path / "one.h5", "s"), _rows(tmp_path / "two.h5", "s")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigkill_half_way_then_rerun_equals_one_run(tmp_path):
    path, ann_path, _, _ = make_slide(tmp_path)
    kw = dict(annotations=str(ann_path), level=0, size=64, min_tissue=0.25, thumbnail_size=192, progress=False,
              chunk_size=4)
    extract_slide(path, tmp_path / "whole.h5", **kw)
    script = textwrap.dedent(f"""
        import os, signal
        from keras_medseg.data.slides.streaming import extract_slide
        def kill(done, total):
            if done >= 12:  # three commits, then die without any clean-up
                os.kill(os.getpid(), signal.SIGKILL)
        extract_slide({str(path)!r}, {str(tmp_path / 'part.h5')!r}, callback=kill, **{kw!r})
    """)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    with PatchStore(tmp_path / "part.h5") as s:
        assert 12 <= len(s) < len(PatchStore(tmp_path / "whole.h5"))
    with pytest.warns(UserWarning, match="not closed cleanly"):
        res = extract_slide(path, tmp_path / "part.h5", **kw)
    assert res["skipped"] >= 12 and res["added"] + res["skipped"] == res["total"]
    for a, b in zip(_rows(tmp_path / "whole.h5", "s"), _rows(tmp_path / "part.h5", "s")):
        np.testing.assert_array_equal(a, b)
    again = extract_slide(path, tmp_path / "part.h5", **kw)  # complete: nothing added, nothing duplicated
    assert again["added"] == 0 and len(PatchStore(tmp_path / "part.h5")) == res["total"]


def test_merge_stores_and_bad_input(tmp_path):
    p1, a1, _, _ = make_slide(tmp_path, "a", seed=1)
    p2, _, _, _ = make_slide(tmp_path, "b", seed=2)
    kw = dict(level=1, size=32, min_tissue=0.25, thumbnail_size=192, progress=False)
    extract_slide(p1, tmp_path / "a.h5", annotations=a1, **kw)
    extract_slide(p2, tmp_path / "b.h5", **kw)
    n = merge_stores([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "all.h5", progress=False)
    with PatchStore(tmp_path / "all.h5") as s:
        assert n == len(s) and list(s.slide_names) == ["a", "b"]
    for name, src in (("a", "a.h5"), ("b", "b.h5")):
        for x, y in zip(_rows(tmp_path / src, name), _rows(tmp_path / "all.h5", name)):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="Slide 'a' is in both"):
        merge_stores([tmp_path / "a.h5", tmp_path / "all.h5"], tmp_path / "x.h5", progress=False)
    with pytest.raises(ValueError, match="other grid parameters"):
        extract_slide(p1, tmp_path / "a.h5", annotations=a1, **dict(kw, min_tissue=0.5))
    with pytest.raises(ValueError, match=r"a.tif' has levels 0..2.*level=5"):
        extract_slide(p1, tmp_path / "c.h5", level=5, size=32, progress=False)
    with pytest.raises(ValueError, match=r"Patch size 256 is larger than level 2 \(128x192\) of slide .*a.tif"):
        extract_slide(p1, tmp_path / "c.h5", level=2, size=256, progress=False)
    write_geojson(tmp_path / "far.geojson", [np.array([[10.0, 10.0], [900.0, 10.0], [500.0, 60.0]])])
    with pytest.raises(ValueError, match=r"far.geojson' lies outside slide .*a.tif"):
        extract_slide(p1, tmp_path / "c.h5", annotations=tmp_path / "far.geojson", size=64, progress=False)
    (tmp_path / "bad.svs").write_bytes(b"II*\x00" + b"\xff" * 64)
    with pytest.raises(ValueError, match="bad.svs"):
        extract_slide(tmp_path / "bad.svs", tmp_path / "c.h5", size=64, progress=False)
    with open_slide(p1) as s:
        assert s.level_count == 3


def test_append_precompressed_patches(tmp_path):
    from keras_medseg.data.slides.store import compress_patch

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 16, 16, 3)).astype(np.uint8)
    with PatchStore(tmp_path / "g.h5", "w", patch_size=16) as s:
        assert s.accepts_compressed()
        s.append(None, [0, 1, 0, 0, 1], "a", None, None, compressed=[s.compress_patch(p) for p in x])
        s.append(x[:2], [0, 0], "a")  # the ordinary path after it
    with PatchStore(tmp_path / "g.h5") as s:
        np.testing.assert_array_equal(s.read(np.arange(7)), np.concatenate([x, x[:2]]))
        assert s.labels.tolist() == [0, 1, 0, 0, 1, 0, 0]
    with PatchStore(tmp_path / "l.h5", "w", patch_size=16, compression="lzf") as s:
        assert not s.accepts_compressed()
        with pytest.raises(ValueError, match="not a gzip store"):
            s.append(None, [0], "a", compressed=[compress_patch(x[0])])
