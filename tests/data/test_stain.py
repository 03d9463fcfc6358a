"""Stain normalisation: Macenko against Beer-Lambert images of known stains (scikit-image's Ruifrok H&E vectors),
Reinhard against its definition (Lab means and deviations of the reference), the sampler transform."""

import numpy as np
import pytest
from skimage.color import lab2rgb, rgb2lab, rgb_from_hed

from keras_medseg.data.slides import PatchStore, StainNormalizer, ThreeStepSampler
from keras_medseg.data.slides.stain import macenko_stains

IO = 240.0


def _render(stains, conc, shape):
    """Beer-Lambert: RGB = Io * exp(-stains @ conc) - 1 (the inverse of the optical density with the +1)."""
    return (IO * np.exp(-(stains @ conc)) - 1.0).T.reshape(shape)


def _concentrations(rng, n):
    """Pure haematoxylin, pure eosin and mixed pixels (every pixel stained)."""
    c = rng.uniform(0.3, 1.5, (2, n))
    c[1, : n // 5] = 0.0  # 20% haematoxylin only
    c[0, n // 5: 2 * n // 5] = 0.0  # 20% eosin only
    return c


def test_macenko_recovers_known_stains_and_maps_one_stain_onto_another():
    rng = np.random.default_rng(0)
    ruifrok = (rgb_from_hed[:2] / np.linalg.norm(rgb_from_hed[:2], axis=1, keepdims=True)).T  # (3, 2): H, E
    conc = _concentrations(rng, 64 * 64)
    image = _render(ruifrok, conc, (64, 64, 3))
    stains, max_conc = macenko_stains(image, io=IO, beta=0.01)
    np.testing.assert_allclose(stains, ruifrok, atol=1e-6)  # H first, E second, unit vectors
    np.testing.assert_allclose(max_conc, np.percentile(conc, 99, axis=1), rtol=1e-6)

    # another lab's stains (rotated vectors), the same tissue: normalised onto the reference == the reference
    other = ruifrok + np.array([[0.08, 0.06], [-0.05, 0.04], [0.1, -0.05]])  # every OD stays positive
    other /= np.linalg.norm(other, axis=0, keepdims=True)
    reference = _render(ruifrok, 1.3 * conc, (64, 64, 3))
    norm = StainNormalizer("macenko", io=IO, beta=0.01).fit(reference)
    out = norm(_render(other, conc, (64, 64, 3)))
    assert out.dtype == np.float32 and out.shape == (64, 64, 3)
    np.testing.assert_allclose(out, reference, atol=1e-3)
    batch = norm(np.stack([_render(other, conc, (64, 64, 3)), np.full((64, 64, 3), 239.0)]))
    np.testing.assert_allclose(batch[0], reference, atol=1e-3)
    np.testing.assert_array_equal(batch[1], 239.0)  # glass only: unchanged

    with pytest.raises(ValueError, match="tissue pixels"):
        macenko_stains(np.full((8, 8, 3), 239.0))
    with pytest.raises(ValueError, match="method"):
        StainNormalizer("vahadane")
    with pytest.raises(ValueError, match="fit"):
        StainNormalizer()(reference)
    with pytest.raises(ValueError, match="RGB"):
        norm(np.zeros((8, 8)))


def test_reinhard_matches_the_reference_lab_statistics_and_serves_as_sampler_transform(tmp_path):
    # H&E-like colours well inside the sRGB gamut (Lab boxes), so no clipping blurs the comparison
    rng = np.random.default_rng(1)
    src_lab = np.array([60.0, 25.0, -5.0]) + rng.uniform(-1, 1, (32, 32, 3)) * [15.0, 10.0, 8.0]
    ref_lab = np.array([70.0, 15.0, 0.0]) + rng.uniform(-1, 1, (32, 32, 3)) * [10.0, 8.0, 6.0]
    source, reference = lab2rgb(src_lab) * 255.0, lab2rgb(ref_lab) * 255.0
    out = StainNormalizer("reinhard").fit(reference)(source)
    lab_out = rgb2lab(out.astype(np.float64) / 255.0).reshape(-1, 3)
    np.testing.assert_allclose(lab_out.mean(0), ref_lab.reshape(-1, 3).mean(0), atol=2e-3)
    np.testing.assert_allclose(lab_out.std(0), ref_lab.reshape(-1, 3).std(0), atol=2e-3)
    # the formula itself: Lab of the output = (Lab of the input - its mean) / its std * reference std + mean
    z = (src_lab - src_lab.reshape(-1, 3).mean(0)) / src_lab.reshape(-1, 3).std(0)
    np.testing.assert_allclose(lab_out.reshape(src_lab.shape), z * ref_lab.reshape(-1, 3).std(0)
                               + ref_lab.reshape(-1, 3).mean(0), atol=5e-3)

    # the sampler applies the transform to every batch before augmentation
    store = tmp_path / "p.h5"
    patches = np.stack([source, reference]).round().astype(np.uint8)
    with PatchStore(store, "w", patch_size=32) as ps:
        ps.append(patches, np.array([0, 1], np.uint8), "s", None, np.zeros((2, 2), np.int32))
    norm = StainNormalizer("reinhard").fit(reference)
    x, y = ThreeStepSampler(store, batch_size=4, steps_per_epoch=1, augment=False, seed=0, transform=norm)[0]
    for xi, yi in zip(x, y[:, 0]):
        np.testing.assert_allclose(xi, norm(patches[int(yi)].astype(np.float32)), atol=1e-4)
    with pytest.raises(ValueError, match="transform"):
        ThreeStepSampler(store, transform="macenko")
