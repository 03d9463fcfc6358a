"""Benchmark keras_medseg.explain against tf-keras-vis, the `lime` package and the occlusion limits.

Side by side in one process, interleaved (the order of the compared runs
rotates every round), after one untimed warm-up call of each (the warm-up
traces and compiles keras-medseg's cached functions and builds tf-keras-vis'
sub-models); min and median over the repeats:

* saliency, Grad-CAM and SmoothGrad vs tf-keras-vis (`Saliency`, `Gradcam`,
  `Saliency(smooth_samples=...)`) on a small CNN (64x64x3) and on VGG16
  (weights=None, 224x224x3), batch 8;
* LIME vs the `lime` package (`LimeImageExplainer`, the model's `predict` as
  classifier, the same SLIC superpixels and sample count);
* batched occlusion vs a loop of one compiled forward pass per patch (the
  limit for a compute-bound model: the same arithmetic, nothing batched) and
  vs the eager loop keras-medseg used before the explainers were compiled
  (a copy is kept below as the baseline);
* spectral identification of every 3x3 kernel of VGG16 (`keras_medseg.kernels`).

    python benchmarks/explain.py --preset cpu            # about 15 min on 2 busy CPU cores
    python benchmarks/explain.py --preset cpu --jax      # + the small-CNN rows on JAX (a child process)
    python benchmarks/explain.py --preset smoke          # seconds, nothing written

Peers are optional (`pip install "keras-medseg[bench]"`); a peer that is not
installed or fails on Keras 3 is reported as such in the table.
"""

import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

NAME = "explain"
PRESETS = {
    "smoke": {"batch": 2, "smooth": 2, "lime": 8, "segments": 10, "repeats": 1, "vgg": False, "kernels": False,
              "vgg_smooth": 1, "vgg_repeats": 1, "lime_repeats": 1,
              "small_size": 32, "occlusion_patch": 8, "occlusion_stride": 8},
    "cpu": {"batch": 8, "smooth": 8, "lime": 128, "segments": 50, "repeats": 5, "vgg": True, "kernels": True,
            "vgg_smooth": 2, "vgg_lime": 32, "vgg_repeats": 3,
            "lime_repeats": 6, "small_size": 64, "occlusion_patch": 8,
            "occlusion_stride": 4},
}

#: Goals of the issue ("Done when"): (model, method, comparison) -> (kind, bound). "speed-up" means
#: peer time / keras-medseg time >= bound; "time ratio" means keras-medseg time / limit time <= bound.
GOALS = {
    ("small_cnn", "saliency", "tf-keras-vis"): ("speed-up", 2.0),
    ("small_cnn", "gradcam", "tf-keras-vis"): ("speed-up", 2.0),
    ("small_cnn", "lime", "lime"): ("speed-up", 1.0),
    ("small_cnn", "occlusion", "limit"): ("time ratio", 1.3),
    ("small_cnn", "occlusion", "old eager loop"): ("speed-up", 10.0),
    ("tiny_cnn", "occlusion", "limit"): ("time ratio", 1.3),
    ("tiny_cnn", "occlusion", "old eager loop"): ("speed-up", 10.0),
    ("vgg16_224", "saliency", "tf-keras-vis"): ("speed-up", 1.5),
    ("vgg16_224", "gradcam", "tf-keras-vis"): ("speed-up", 2.0),
    ("vgg16_224", "lime", "lime"): ("speed-up", 1.0),
}


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def interleaved(cases, repeats):
    """Time `cases` (a list of `(name, fn)`) interleaved: one untimed warm-up each, then `repeats` rounds.

    Returns `{name: {"times": [...], "min": s, "median": s, "first_call": s}}`, or
    `{name: {"error": "..."}}` for a case that raised (a peer failing on Keras 3
    is a result, not a crash).
    """
    out = {}
    live = []
    for name, fn in cases:
        start = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - reported in the table
            out[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"}
            continue
        out[name] = {"first_call": time.perf_counter() - start, "times": []}
        live.append((name, fn))
    for r in range(repeats):
        k = r % max(len(live), 1)
        for name, fn in live[k:] + live[:k]:
            start = time.perf_counter()
            fn()
            out[name]["times"].append(time.perf_counter() - start)
    for name, _ in live:
        t = out[name]["times"]
        out[name].update(min=min(t), median=statistics.median(t))
    return out


# ---------------------------------------------------------------------------
# The baseline: keras-medseg's eager scoring before the explainers were compiled
# (kept verbatim in spirit: one eager `model(x)` per chunk / per patch).
# ---------------------------------------------------------------------------

def old_eager_scores(model, x, score_fn, batch_size=32):
    """BASELINE (old keras-medseg): scores of a stack of inputs with an eager `model(x)` per chunk."""
    from keras import ops

    out = []
    for start in range(0, len(x), batch_size):
        y = model(ops.convert_to_tensor(x[start:start + batch_size]), training=False)
        out.append(ops.convert_to_numpy(ops.cast(score_fn(y), "float32")))
    return np.concatenate(out, axis=0)


def old_eager_occlusion_loop(model, x, class_index, patch, stride):
    """BASELINE (old keras-medseg): occlusion with one eager forward pass per patch."""
    from keras_medseg.explain._scores import make_score_fn
    from keras_medseg.explain.occlusion import occlusion_patches

    score_fn = make_score_fn(class_index)
    spatial = x.shape[1:-1]
    patch, stride = (patch,) * len(spatial), (stride,) * len(spatial)
    maps = np.zeros((len(x),) + spatial, "float32")
    count = np.zeros(spatial, "float32")
    corners = occlusion_patches(spatial, patch, stride)
    for c in corners:
        count[tuple(slice(a, a + p) for a, p in zip(c, patch))] += 1
    for n in range(len(x)):
        base = old_eager_scores(model, x[n:n + 1], score_fn)[0]
        for c in corners:
            idx = tuple(slice(a, a + p) for a, p in zip(c, patch))
            copy_ = x[n:n + 1].copy()
            copy_[(0,) + idx] = 0.0
            maps[(n,) + idx] += base - old_eager_scores(model, copy_, score_fn)[0]
    return maps / np.maximum(count, 1.0)


# ---------------------------------------------------------------------------
# Models and the cases of one model
# ---------------------------------------------------------------------------

def small_cnn(size=64):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv")(h)
    out = keras.layers.Dense(2, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inp, out, name="small_cnn")


def vgg16_model():
    import keras

    keras.utils.set_random_seed(0)
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3), pooling="max")
    out = keras.layers.Dense(2, activation="softmax", name="head")(base.output)
    return keras.Model(base.input, out, name="vgg16_bench")


def bench_model(model, layer, s, smooth, lime_samples, repeats, occlusion=None, progress=True, lime_repeats=None):
    """All comparisons on one model; returns `{method: {case: timing}}`."""
    import keras

    from keras_medseg import explain

    tf_backend = keras.backend.backend() == "tensorflow"
    size = int(model.inputs[0].shape[1])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (s["batch"], size, size, 3)).astype("float32")
    cls = 1

    def tkv_saliency(smooth_samples=0):
        from tf_keras_vis.saliency import Saliency
        from tf_keras_vis.utils.scores import CategoricalScore

        return Saliency(model, clone=False)(CategoricalScore([cls] * len(x)), x, smooth_samples=smooth_samples,
                                            smooth_noise=0.15)

    def tkv_gradcam():
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.scores import CategoricalScore

        return Gradcam(model, clone=False)(CategoricalScore([cls] * len(x)), x, penultimate_layer=layer)

    peer = (lambda name, fn: [(name, fn)]) if tf_backend else (lambda name, fn: [])  # tf-keras-vis: TF only
    gb = len(x)  # one gradient batch = the whole batch, for keras-medseg and tf-keras-vis alike
    res = {}
    steps = [
        ("saliency", [("keras-medseg", lambda: explain.saliency(model, x, cls, batch_size=gb))]
         + peer("tf-keras-vis", tkv_saliency)),
        ("gradcam", [("keras-medseg", lambda: explain.gradcam(model, x, cls, layer=layer, batch_size=gb))]
         + peer("tf-keras-vis", tkv_gradcam)),
        ("smoothgrad", [("keras-medseg", lambda: explain.smoothgrad(model, x, cls, samples=smooth, noise=0.15,
                                                                    batch_size=gb))]
         + peer("tf-keras-vis", lambda: tkv_saliency(smooth))),
    ]
    segment = lambda img: explain.superpixels(img, n_segments=s["segments"])  # noqa: E731

    def lime_pkg():
        from lime import lime_image

        explainer = lime_image.LimeImageExplainer(random_state=0)
        explainer.explain_instance(x[0].astype("float64"), lambda b: model.predict(b, batch_size=32, verbose=0),
                                   labels=(cls,), top_labels=None, hide_color=0, num_samples=lime_samples,
                                   batch_size=32, segmentation_fn=segment)

    steps.append(("lime", [("keras-medseg", lambda: explain.lime(model, x[:1], cls, samples=lime_samples,
                                                                 n_segments=s["segments"], batch_size=32)),
                           ("lime", lime_pkg)]))
    if occlusion is not None:
        steps.append(("occlusion", occlusion_cases(model, x[:1], cls, *occlusion)))
    for method, cases in steps:
        start = time.perf_counter()
        res[method] = interleaved(cases, lime_repeats if method == "lime" and lime_repeats else repeats)
        if progress:
            print(f"  [{model.name}] {method}: {time.perf_counter() - start:.1f} s", flush=True)
    return res


def occlusion_cases(model, x, cls, patch, stride):
    """Batched occlusion, the compiled one-forward-per-patch loop (limit) and the old eager loop."""
    from keras_medseg import explain
    from keras_medseg.explain.occlusion import occlusion_loop

    return [
        ("keras-medseg", lambda: explain.occlusion(model, x, cls, patch=patch, stride=stride, batch_size=512)),
        ("limit", lambda: occlusion_loop(model, x, cls, patch=patch, stride=stride)),
        ("old eager loop", lambda: old_eager_occlusion_loop(model, x, cls, patch, stride)),
    ]


def tiny_cnn(size=64):
    """The occlusion model of the earlier version of this benchmark: two 8-channel convolutions, 64x64x1."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(h)
    return keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)), name="tiny_cnn")


def bench_kernels():
    import keras

    from keras_medseg import kernels

    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    start = time.perf_counter()
    records = kernels.identify_model(model)
    sec = time.perf_counter() - start
    total = sum(r["n_kernels"] for r in records)
    indet = sum(r["indeterminate"] for r in records)
    keras.backend.clear_session()
    return {"seconds": sec, "kernels": total, "layers": len(records), "indeterminate_fraction": indet / total}


def run(preset="cpu", out_dir=None, progress=True, jax=False, child=False):
    """Run the benchmark; returns the results dict (see `markdown`)."""
    import keras

    from keras_medseg.explain.occlusion import occlusion_patches

    if preset not in PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(PRESETS)}. Received: preset={preset!r}")
    s = copy.deepcopy(PRESETS[preset])
    backend = keras.backend.backend()
    results = {"settings": s, "backend": backend, "models": {}}
    size = s["small_size"]
    occ = (s["occlusion_patch"], s["occlusion_stride"])
    results["occlusion_patches"] = len(occlusion_patches((size, size), occ[:1] * 2, occ[1:] * 2))
    t0 = time.perf_counter()
    results["models"]["small_cnn"] = bench_model(small_cnn(size), "last_conv", s, s["smooth"], s["lime"],
                                                 s["repeats"], occlusion=occ, progress=progress)
    keras.backend.clear_session()
    start = time.perf_counter()
    size_t = s["small_size"]
    x_t = np.random.default_rng(0).uniform(0, 1, (1, size_t, size_t, 1)).astype("float32")
    results["models"]["tiny_cnn"] = {"occlusion": interleaved(occlusion_cases(tiny_cnn(size_t), x_t, 0, *occ),
                                                              s["repeats"])}
    if progress:
        print(f"  [tiny_cnn] occlusion: {time.perf_counter() - start:.1f} s", flush=True)
    keras.backend.clear_session()
    if s["vgg"] and not child:
        results["models"]["vgg16_224"] = bench_model(vgg16_model(), "block5_conv3", s, s["vgg_smooth"],
                                                     s["vgg_lime"], s["vgg_repeats"], progress=progress,
                                                     lime_repeats=s["lime_repeats"])
        keras.backend.clear_session()
    if s["kernels"] and not child:
        results["vgg16_kernel_identification"] = bench_kernels()
    results["seconds"] = time.perf_counter() - t0
    if jax and not child:
        results["jax"] = _run_child("jax", preset)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    results["load_average_at_end"] = list(load) if load else None
    return results


def _run_child(backend, preset):
    """The small-CNN rows on another backend, in a child process (one backend per process)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "child.json")
        env = dict(os.environ, KERAS_BACKEND=backend)
        code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
                f"import explain; r = explain.run({preset!r}, child=True); json.dump(r, open({path!r}, 'w'))")
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
        with open(path) as f:
            return json.load(f)


# ---------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------

def _fmt(d):
    if "error" in d:
        return f"fails: {d['error']}"
    return f"{d['min']:.3g} / {d['median']:.3g}"


def rows_of(results, backend):
    rows = []
    for model_name, methods in results.get("models", {}).items():
        for method, cases in methods.items():
            ours = cases["keras-medseg"]
            if len(cases) == 1:
                rows.append([backend, model_name, method, _fmt(ours), "- (tf-keras-vis needs TensorFlow)", "-",
                             "-", "-", "-"])
            for other_name, other in cases.items():
                if other_name == "keras-medseg":
                    continue
                kind, bound = GOALS.get((model_name, method, other_name), (None, None))
                if kind is None:
                    kind = "time ratio" if other_name == "limit" else "speed-up"
                if "error" in ours or "error" in other:
                    ratio, met = "-", "-"
                else:
                    if kind == "time ratio":
                        rmin, rmed = ours["min"] / other["min"], ours["median"] / other["median"]
                        ok = rmed <= bound if bound else None
                        ratio = f"{rmin:.2f} / {rmed:.2f} (time / limit)"
                    else:
                        rmin, rmed = other["min"] / ours["min"], other["median"] / ours["median"]
                        ok = rmed >= bound if bound else None
                        ratio = f"{rmin:.2f}x / {rmed:.2f}x"
                    met = "-" if ok is None else ("yes" if ok else "**no**")
                goal = "-" if bound is None else (f"<= {bound}" if kind == "time ratio" else f">= {bound}x")
                rows.append([backend, model_name, method, _fmt(ours), other_name, _fmt(other), ratio, goal, met])
    return rows


def markdown(result, fig_prefix=""):
    from _common import markdown_table

    s = result["settings"]
    rows = rows_of(result, result["backend"])
    child = result.get("jax")
    if child and "error" not in child:
        rows += rows_of(child, child["backend"])
    header = ["backend", "model", "method", "keras-medseg s (min / median)", "compared with",
              "its s (min / median)", "ratio (min / median)", "goal", "met"]
    text = markdown_table(header, rows)
    if child and "error" in child:
        text += f"\n\nJAX rows: the child process failed ({child['error']})."
    k = result.get("vgg16_kernel_identification")
    if k:
        text += (f"\n\nSpectral identification of all {k['kernels']:,} 3x3 kernels of VGG16 (weights=None, "
                 f"{k['layers']} layers, 8x8 grid): {k['seconds']:.1f} s (target < 60 s); "
                 f"{k['indeterminate_fraction']:.1%} indeterminate (random init).")
    load = result.get("load_average_at_end")
    text += (
        f"\n\nModels: small_cnn = {s['small_size']}x{s['small_size']}x3, conv 16-16, max-pool, conv 32-32, global "
        "average pooling, dense 2 (softmax); VGG16 = `keras.applications.VGG16(weights=None)` at 224x224x3 with a "
        "dense 2 head; tiny_cnn = the occlusion model of this benchmark's earlier table "
        f"({s['small_size']}x{s['small_size']}x1, conv 8, conv 8 stride 2, global average pooling, dense 2). "
        f"Batch {s['batch']}; SmoothGrad {s['smooth']} noisy copies per image on small_cnn, {s['vgg_smooth']} on "
        f"VGG16; LIME {s['lime']} samples (small_cnn) / {s.get('vgg_lime', '-')} (VGG16) on one image, "
        f"{s['segments']} SLIC superpixels; occlusion on one image, patch {s['occlusion_patch']}, stride "
        f"{s['occlusion_stride']} ({result['occlusion_patches']} patches), all copies in one batch. Times are "
        f"seconds per call; {s['repeats']} interleaved repeats ({s['vgg_repeats']} on VGG16, "
        f"{s['lime_repeats']} for LIME on VGG16) after one untimed warm-up call each (the warm-up traces "
        "keras-medseg's cached compiled functions); the goal is judged on the median ratio. 'limit' is a loop "
        "of one compiled forward pass per patch (`keras_medseg.explain.occlusion.occlusion_loop`), 'old eager "
        "loop' the eager one-forward-per-patch loop keras-medseg used before (copy in this script)."
    )
    limits = []
    for res in (result, child if child and "error" not in child else None):
        for model_name, methods in (res or {}).get("models", {}).items():
            occ = methods.get("occlusion", {})
            if "error" not in occ.get("limit", {"error": 1}) and "error" not in occ.get("old eager loop", {"error": 1}):
                ratio = occ["old eager loop"]["median"] / occ["limit"]["median"]
                limits.append(f"{res['backend']} {model_name} {ratio:.1f}x")
    if limits:
        text += (" How much faster than the old eager loop the limit itself is (median): " + ", ".join(limits)
                 + ". Batching beats the per-patch loop only by the per-call overhead it saves; where the model is "
                 "compute-bound (batched time close to the limit's) the speed-up over the eager loop stays near "
                 "the limit's own ratio, and 10x is out of reach when that is well below 10x.")
    text += (
        " Absolute times depend on what else runs on the machine"
        + (f" (1/5/15-minute load average at the end: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f})" if load else "")
        + "; ratios of interleaved runs in one process are the stable numbers."
    )
    return text


def main(argv=None):
    from _common import benchmark_main

    return benchmark_main(sys.modules[__name__], argv, extra_arguments=[
        (("--jax",), {"action": "store_true", "help": "add the small-CNN rows on JAX (child process)"})])


if __name__ == "__main__":
    sys.exit(main())
