"""benchmarks/level_set_real.py: the real-image set (sources, halves, references, seed rule) and a smoke run."""

import json

import level_set_real
import level_set_real_data as data
import numpy as np
import pytest


def test_seed_rule_puts_one_disk_deep_inside_every_component():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True  # a 20 x 20 square: depth 10 at its centre -> radius 3
    mask[30:34, 30:38] = True  # a thin bar: depth 2 -> radius clipped to 1.5
    seeds = data.seeds_from_reference(mask)
    assert len(seeds) == 2
    (y0, x0, r0), (y1, x1, r1) = seeds
    assert (y0, x0) in [(14, 14), (14, 15), (15, 14), (15, 15)] and r0 == pytest.approx(3.0)
    assert 30 <= y1 < 34 and 30 <= x1 < 38 and r1 == 1.5
    inside = data.seed_level_set(mask.shape, seeds) < 0
    assert inside.any() and not (inside & ~mask).any()
    assert not data.clean_reference(np.pad(np.ones((3, 3), bool), 5)).any()  # 9 pixels: below MIN_AREA


def test_real_images_load_offline_with_independent_references():
    cases = data.load_cases()
    sources = {c["source"] for c in cases}
    assert len(cases) >= 20 and len(sources) >= 4
    for source in sources:
        halves = [c["half"] for c in cases if c["source"] == source]
        assert halves.count("tuning") >= 1 and halves.count("held-out") >= 1, source
    for c in cases:
        assert c["image"].ndim == 2 and c["image"].shape == c["reference"].shape and c["seeds"], c["name"]
        assert 0.002 < c["reference"].mean() < 0.6, c["name"]
        seed = data.seed_level_set(c["image"].shape, c["seeds"]) < 0
        assert all(c["reference"][y, x] for y, x, _ in c["seeds"]), c["name"]  # every centre inside its object
        # the disks too, but for components under 3 pixels thick (radius 1.5 reaches one pixel beyond)
        outside = seed & ~c["reference"]
        assert outside.sum() <= 4 * sum(r == 1.5 for _, _, r in c["seeds"]), c["name"]
    with pytest.raises(ValueError, match="sources"):
        data.load_cases(("coins", "hubble"))


@pytest.mark.slow
def test_smoke_run(tmp_path):
    result = level_set_real.run("smoke", out_dir=str(tmp_path), progress=False)
    assert result["preset"] == "smoke" and result["tuning"] is None
    assert {r["source"] for r in result["images"]} == set(level_set_real.PRESETS["smoke"]["sources"])
    for row in result["images"]:
        for solver in ("lse", "gac", "chan_vese"):
            assert 0.0 <= row[f"{solver}_dice"] <= 1.0 and row[f"{solver}_area_ratio"] >= 0.0
    assert (tmp_path / "held_out.png").stat().st_size < 300_000
    text = level_set_real.markdown(result, fig_prefix="results/level_set_real/")
    assert "| source | images | lse defaults | morphological GAC | Chan-Vese | lse - GAC |" in text
    assert "Goals on the held-out half" in text and "](results/level_set_real/held_out.png)" in text
    assert len(level_set_real.goals(result)) == 2
    json.dumps(result, default=float)


def test_pick_rule_breaks_near_ties_by_mean_dice():
    tried = [((True, 0.0250, 0.80), {"a": 1}), ((True, 0.0248, 0.88), {"a": 2}), ((True, 0.010, 0.95), {"a": 3}),
             ((False, 0.20, 0.99), {"a": 4})]
    assert level_set_real.pick_setting(tried) == {"a": 2}  # within TIE_MARGIN of the best margin, larger mean
    assert level_set_real.pick_setting(tried[3:]) == {"a": 4}  # nothing without a flood: the largest key
    same = level_set_real.same_setting
    assert same({"confidence_k": None, "confidence_floor": 0.1}) == same({"confidence_k": None})
    assert same({"tolerance": level_set_real.library_defaults()["tolerance"]}) == same({})


def test_reference_masks_are_cached_by_image_parameters_and_version(tmp_path):
    mask = np.zeros((24, 24), bool)
    mask[6:18, 6:18] = True
    case = {"name": "square", "image": mask.astype("float32"), "reference": mask,
            "seeds": data.seeds_from_reference(mask)}
    cache = str(tmp_path / "cache.json")
    first, stats = level_set_real.reference_masks([case], 20, cache)
    assert stats["computed"] == 2 and stats["hits"] == 0
    again, stats = level_set_real.reference_masks([case], 20, cache)
    assert stats["computed"] == 0 and stats["hits"] == 2
    for method in ("gac", "chan_vese"):
        np.testing.assert_array_equal(first[method][0], again[method][0])
        assert level_set_real.score([case], [first[method][0]])[0]["dice"] > 0.5
    changed = {**case, "image": case["image"] * 2.0}  # another image: recomputed
    _, stats = level_set_real.reference_masks([changed], 20, cache)
    assert stats["computed"] == 2
    assert level_set_real.cache_key(case, "gac", {"x": 1}, 20) != level_set_real.cache_key(case, "gac", {"x": 2}, 20)
