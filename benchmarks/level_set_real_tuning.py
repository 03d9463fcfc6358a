"""The tuning half of `level_set_real.py`: scoring, the staged grid and its pick rule (see that module's doc).

`SplitLse` runs `zoo.build("lse", **settings)` split into its gate (eager) and its evolution (compiled once per
image shape and tolerance), so a grid of gate settings costs one compilation per shape.
"""

import time

import numpy as np
from _common import dice
from level_set_real_data import seed_level_set

#: a flood: more than this many times the reference area inside
FLOOD_RATIO = 3.0
#: the defaults before the seed-interval test (issue 32's first round): the start of the staged grid
START = {"threshold_k": 6.0, "region_margin": 0.15}
#: stage 1: the seed-interval test (confidence_k None: none) at START; stage 2: edge threshold x Otsu margin;
#: stage 3: the tolerance
GRID_INTERVAL = {"confidence_k": (None, 2.0, 3.0, 4.0, 6.0), "confidence_floor": (0.02, 0.05, 0.1)}
GRID_EDGE = {"threshold_k": (3.0, 4.0, 6.0, 9.0), "region_margin": (0.0, 0.15, 0.3)}
GRID_TOLERANCE = {"tolerance": (5e-4, 1e-3, 2e-3)}
#: worst-case margins over the GAC closer than this count as a tie (a few pixels of 2 to 3 images), broken by
#: the mean Dice (added after the first run with this grid picked between two settings by 1e-4 of margin)
TIE_MARGIN = 0.005
TUNED = ("threshold_k", "region_margin", "confidence_k", "confidence_floor", "tolerance")


def score(cases, masks):
    """Per-case Dice and area ratio against the reference."""
    return [{"dice": dice(c["reference"], m), "area_ratio": float(m.sum() / max(1, c["reference"].sum()))}
            for c, m in zip(cases, masks)]


def per_source(cases, scores, half=None):
    """Mean Dice and largest area ratio per source (over `half` when given)."""
    out = {}
    for c, s in zip(cases, scores):
        if half is None or c["half"] == half:
            entry = out.setdefault(c["source"], {"dice": [], "area_ratio": []})
            entry["dice"].append(s["dice"])
            entry["area_ratio"].append(s["area_ratio"])
    return {k: {"mean_dice": float(np.mean(v["dice"])), "max_area_ratio": float(max(v["area_ratio"])),
                "images": len(v["dice"])} for k, v in out.items()}


def _criterion(lse_sources, gac_sources, scores):
    flood = max(s["area_ratio"] for s in scores) > FLOOD_RATIO
    worst = min(lse_sources[k]["mean_dice"] - gac_sources[k]["mean_dice"] for k in lse_sources)
    mean = float(np.mean([v["mean_dice"] for v in lse_sources.values()]))
    return (not flood, worst, mean)


class SplitLse:
    """`zoo.build("lse", **settings)` on a list of cases, split into its gate and its evolution.

    The edge indicator and region gate of the model built with `settings`
    run eagerly (no compilation); the evolution layer of a model with the
    same `steps` and `tolerance` is compiled once per image shape and
    tolerance and reused for every other setting. Same layers, same
    arithmetic as `run_lse` (inside = `u < 0` = probability > 0.5).
    """

    def __init__(self, cases, steps):
        self.cases, self.steps, self._evolution = cases, steps, {}
        self.groups = {shape: [i for i, c in enumerate(cases) if c["image"].shape == shape]
                       for shape in sorted({c["image"].shape for c in cases})}

    def _evolve(self, shape, tolerance):
        import keras

        from keras_medseg import zoo

        if (shape, tolerance) not in self._evolution:
            layer = zoo.build("lse", input_size=shape, steps=self.steps, tolerance=tolerance).get_layer(
                "lse_evolution")
            u, g = keras.Input(shape + (1,)), keras.Input(shape + (2,))
            self._evolution[(shape, tolerance)] = keras.Model([u, g], layer([u, g]))
        return self._evolution[(shape, tolerance)]

    def __call__(self, settings):
        import keras

        from keras_medseg import zoo

        settings = dict(settings)
        tolerance = settings.pop("tolerance", library_defaults()["tolerance"])
        masks = [None] * len(self.cases)
        for shape, index in self.groups.items():
            model = zoo.build("lse", input_size=shape, steps=self.steps, tolerance=tolerance, **settings)
            gate = "lse_region" if settings.get("region_margin", START["region_margin"]) is not None else "lse_edge"
            gated = keras.Model(model.inputs, model.get_layer(gate).output)
            x = np.stack([self.cases[i]["image"] for i in index])[..., None]
            u0 = np.stack([seed_level_set(shape, self.cases[i]["seeds"]) for i in index])[..., None]
            g = np.asarray(keras.ops.convert_to_numpy(gated([x, u0])))
            u = np.asarray(self._evolve(shape, tolerance).predict_on_batch([u0, g]))
            for k, i in enumerate(index):
                masks[i] = u[k, ..., 0] < 0
        return masks


def pick_setting(tried):
    """The pick among `[((no_flood, worst_margin, mean_dice), settings), ...]`: of the settings without a
    flood, those within `TIE_MARGIN` of the best worst-case margin over the GAC tie; of them the largest mean
    Dice (no setting without a flood: the largest key)."""
    safe = [t for t in tried if t[0][0]]
    if not safe:
        return max(tried, key=lambda t: t[0])[1]
    best = max(t[0][1] for t in safe)
    return max((t for t in safe if t[0][1] >= best - TIE_MARGIN), key=lambda t: t[0][2])[1]


def same_setting(settings):
    """A hashable form of `settings` in which equal models compare equal (tolerance default filled in, no
    `confidence_floor` without a `confidence_k`)."""
    full = {"tolerance": library_defaults()["tolerance"], **settings}
    if full.get("confidence_k", 1.0) is None:
        full.pop("confidence_floor", None)
    return tuple(sorted(full.items()))


def tune(cases, gac_sources, steps, progress):
    """The staged grid on the tuning half (see the module doc); returns `{"trials", "pick"}`."""
    tuning = [c for c in cases if c["half"] == "tuning"]
    runner = SplitLse(tuning, steps)
    rows, seen = [], {}

    def trial(settings):
        key_settings = same_setting(settings)
        if key_settings in seen:
            return seen[key_settings]
        start = time.perf_counter()
        masks = runner(settings)
        seconds = time.perf_counter() - start
        scores = score(tuning, masks)
        sources = per_source(tuning, scores)
        key = _criterion(sources, gac_sources, scores)
        rows.append({"settings": settings, "sources": sources, "no_flood": key[0], "worst_margin": key[1],
                     "mean_dice": key[2], "max_area_ratio": max(s["area_ratio"] for s in scores),
                     "seconds": seconds})
        seen[key_settings] = key
        if progress:
            print(f"  tune {settings}: worst margin {key[1]:+.3f}, mean {key[2]:.3f}, no flood {key[0]} "
                  f"({seconds:.1f} s)", flush=True)
        return key

    def stage(base, grid, skip=lambda settings: False):
        tried = []
        names = list(grid)
        for values in np.array(np.meshgrid(*[np.array(grid[n], dtype=object) for n in names],
                                           indexing="ij")).reshape(len(names), -1).T:
            settings = {**base, **{n: (None if v is None else float(v)) for n, v in zip(names, values)}}
            if not skip(settings):
                tried.append((trial(settings), settings))
        return pick_setting(tried)

    # confidence_k None: the floor does not matter, one trial
    pick = stage(START, GRID_INTERVAL, skip=lambda s: s["confidence_k"] is None and s["confidence_floor"]
                 != GRID_INTERVAL["confidence_floor"][0])
    pick = stage(pick, GRID_EDGE)
    pick = stage(pick, GRID_TOLERANCE)
    return {"trials": rows, "pick": pick, "compiled_evolutions": len(runner._evolution)}


def library_defaults():
    import inspect

    from keras_medseg.zoo.level_set import lse

    params = inspect.signature(lse).parameters
    return {name: params[name].default for name in TUNED}
