"""CAMELYON16 lesion FROC against MONAI's LesionFROC on the same probability maps and masks."""

import os

import numpy as np
import pytest
import tifffile

from keras_medseg.evaluation import lesion_froc
from keras_medseg.evaluation.lesion_froc import lesion_mask, nms_candidates

MPP = 8.0  # microns per map pixel: ITCs are lesions under (200 + 75) / 8 = 34 px


def _disc(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _cohort(seed):
    """Two tumour slides (lesions, an isolated tumour cell) and two normal ones; maps with hits, misses, FPs."""
    rng = np.random.default_rng(seed)
    shape = (128, 128)
    masks = [np.zeros(shape, np.uint8) for _ in range(4)]
    masks[0][_disc(shape, 40, 40, 20, 12)] = 1  # a lesion
    masks[0][_disc(shape, 100, 100, 3, 3)] = 1  # an isolated tumour cell
    masks[1][_disc(shape, 60, 30, 10, 25)] = 1  # a lesion
    masks[1][_disc(shape, 100, 90, 18, 9)] = 1  # another, missed by the map
    maps = [rng.uniform(0, 0.45, shape) for _ in range(4)]
    for k, (cy, cx, p) in enumerate([(40, 41, 0.97), (100, 100, 0.9), (10, 110, 0.7)]):  # hit, on ITC, FP
        maps[0][cy - 2:cy + 3, cx - 2:cx + 3] = p - 0.01 * k * rng.random()
    maps[1][60, 30] = 0.8
    for m in maps[2:]:
        for _ in range(3):  # false positives on normal slides
            cy, cx = rng.integers(5, 123, 2)
            m[cy, cx] = rng.uniform(0.5, 1.0)
    return maps, masks


def _monai(tmp_path, maps, masks, box):
    from monai.apps.pathology.metrics import LesionFROC  # its import sets CUBLAS_WORKSPACE_CONFIG (restored)

    data = []
    for i, (m, mask) in enumerate(zip(maps, masks)):
        np.save(tmp_path / f"p{i}.npy", m)
        tifffile.imwrite(tmp_path / f"m{i}.tif", np.repeat(mask[..., None], 3, -1), tile=(64, 64),
                         photometric="rgb")
        data.append({"prob_map": str(tmp_path / f"p{i}.npy"), "tumor_mask": str(tmp_path / f"m{i}.tif"),
                     "level": 0, "pixel_spacing": MPP})
    froc = LesionFROC(data, nms_box_size=box, nms_prob_threshold=0.5, image_reader_name="tifffile")
    return froc.evaluate(), froc.compute_fp_tp()


def test_camelyon16_lesion_froc_equals_monai(tmp_path, monkeypatch):
    # MONAI's import sets CUBLAS_WORKSPACE_CONFIG: setenv records the value to put back (also "unset")
    old = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", old or "")
    if old is None:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    for seed, box in ((0, 16), (1, 8)):
        maps, masks = _cohort(seed)
        ours = lesion_froc(maps, [masks[0], masks[1], None, None], mpp=MPP, box_size=box)
        score, (fp, tp, n_targets, n_images) = _monai(tmp_path, maps, masks, box)
        assert ours["froc"] == pytest.approx(score, abs=1e-12)
        assert ours["num_lesions"] == n_targets == 3 and ours["num_itc"] == 1 and n_images == 4
        # same candidates: hits and false positives, FPs counted on the tumour slides too
        assert ours["num_candidates"] >= fp.size + (tp > 0).sum()
    # the isolated tumour cell neither hits nor counts as a false positive; the missed lesion lowers sensitivity
    assert ours["sensitivity"].max() == pytest.approx(2 / 3)
    labels, itc = lesion_mask(masks[0], MPP)
    assert labels.max() == 2 and itc == {int(labels[100, 100])}

    probs, rows, cols = nms_candidates(np.pad([[0.6, 0.9], [0.7, 0.2]], 3), prob_threshold=0.5, box_size=2)
    np.testing.assert_array_equal(probs, [0.9, 0.7])  # 0.9 suppresses its 2x2 box (0.6), 0.7 lies outside it
    assert (rows.tolist(), cols.tolist()) == ([3, 4], [4, 3])
    with pytest.raises(ValueError, match="protocol"):
        lesion_froc(maps, masks, MPP, protocol="lecture")
    with pytest.raises(ValueError, match="No lesion"):
        lesion_froc(maps[2:], [None, None], MPP)
    with pytest.raises(ValueError, match="shape"):
        lesion_froc(maps[:1], [masks[0][:10]], MPP)
