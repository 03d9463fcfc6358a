"""H&E stain normalisation of patches: Macenko (stain vectors by optical density) and Reinhard (Lab statistics).

Slides from different labs and scanners differ in colour; a patch classifier
trained on one centre's slides sees another centre's as a domain shift.
`StainNormalizer("macenko").fit(reference)` learns a reference patch's
stains and maps every patch onto them; use it as the `transform` of
`keras_medseg.data.slides.ThreeStepSampler` (applied before the colour
augmentation) or on patches directly. NumPy only (patches are uint8 RGB on
the host, before they become tensors).

* **Macenko**: RGB -> optical density `OD = -log((I + 1) / Io)`; pixels with
  `OD < beta` in some channel are background; the plane of the two largest
  principal directions of the tissue's OD holds the two stains; the stain
  vectors are the directions at the `alpha` and `100 - alpha` percentiles of
  the angle in that plane (haematoxylin = the one with the larger red OD);
  concentrations by least squares, scaled so that their 99th percentile
  matches the reference's, and recomposed with the reference's vectors.
* **Reinhard**: per-channel mean and standard deviation in CIELAB (scikit-image
  `rgb2lab` / `lab2rgb`) matched to the reference's.

Reference: M. Macenko et al., "A method for normalizing histology slides for
quantitative analysis", ISBI 2009; E. Reinhard, M. Ashikhmin, B. Gooch,
P. Shirley, "Color transfer between images", IEEE CG&A 2001; A. C. Ruifrok,
D. A. Johnston, "Quantification of histochemical staining by color
deconvolution", 2001 (the H&E vectors of scikit-image's `rgb2hed`, used in the
tests as the known stains).
"""

import numpy as np

__all__ = ["METHODS", "StainNormalizer", "macenko_stains", "reinhard_stats"]

#: Values of `StainNormalizer(method=)`.
METHODS = ("macenko", "reinhard")


def _rgb(x, name):
    x = np.asarray(x)
    if x.ndim < 3 or x.shape[-1] != 3 or x.size == 0:
        raise ValueError(f"`{name}` must be RGB: (H, W, 3) or (N, H, W, 3). Received: {name}.shape={x.shape}")
    return x.astype(np.float64)


def _od(rgb, io):
    return -np.log((rgb.reshape(-1, 3) + 1.0) / io)


def macenko_stains(image, io=240.0, alpha=1.0, beta=0.15):
    """The two stain vectors (haematoxylin, eosin) of an H&E image and their 99th-percentile concentrations.

    Args:
        image: `(H, W, 3)` or `(N, H, W, 3)` RGB, 0-255.
        io: float, transmitted light intensity (the brightest glass), default 240.
        alpha: float, percentile (in %) of the extreme angles, default 1.
        beta: float, optical-density threshold below which a pixel is background, default 0.15.

    Returns:
        `(stains, max_conc)`: `(3, 2)` unit optical-density vectors (columns H, E)
        and `(2,)` 99th percentiles of the concentrations.

    Raises:
        ValueError: not RGB, or fewer than 10 tissue pixels (all background).

    Example:

    >>> stains, conc = keras_medseg.data.slides.stain.macenko_stains(patch)

    Reference: M. Macenko et al., "A method for normalizing histology slides for quantitative analysis", ISBI 2009.
    """
    od = _od(_rgb(image, "image"), io)
    tissue = od[(od >= beta).all(axis=1)]
    if tissue.shape[0] < 10:
        raise ValueError(f"`image` has {tissue.shape[0]} tissue pixels (optical density >= beta={beta} in every "
                         f"channel); Macenko needs stained tissue. Received: image of {np.asarray(image).shape}")
    _, vecs = np.linalg.eigh(np.cov(tissue, rowvar=False))
    plane = vecs[:, [2, 1]]  # the two largest principal directions
    plane *= np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # pointing into positive optical density
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    stains = np.stack([v1, v2], 1) if v1[0] > v2[0] else np.stack([v2, v1], 1)  # H absorbs red more than E
    stains /= np.linalg.norm(stains, axis=0, keepdims=True)
    conc = np.linalg.lstsq(stains, tissue.T, rcond=None)[0]
    return stains, np.percentile(conc, 99, axis=1)


def reinhard_stats(image):
    """Per-channel mean and standard deviation of an RGB image in CIELAB: `(means (3,), stds (3,))`.

    Example:

    >>> means, stds = keras_medseg.data.slides.stain.reinhard_stats(patch)  # (H, W, 3) RGB 0-255

    Reference: E. Reinhard et al., "Color transfer between images", IEEE CG&A 2001.
    """
    from skimage.color import rgb2lab

    lab = rgb2lab(_rgb(image, "image") / 255.0).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)


class StainNormalizer:
    """Map H&E patches onto the stain of a reference patch (Macenko or Reinhard); a patch transform.

    Args:
        method: `"macenko"` (default) or `"reinhard"`.
        io, alpha, beta: Macenko's light intensity, angle percentile and
            background threshold (see `macenko_stains`).

    Call `fit(reference)` once, then `normalizer(patches)`: `(H, W, 3)` or
    `(N, H, W, 3)` RGB 0-255 in, float32 of the same shape, 0-255, out. Patches
    without tissue (all glass) come back unchanged under Macenko.

    Raises:
        ValueError: an unknown `method`; a call before `fit`; not RGB.

    Example:

    >>> norm = keras_medseg.data.slides.stain.StainNormalizer("macenko").fit(reference_patch)
    >>> sampler = keras_medseg.data.slides.ThreeStepSampler("cohort.h5", transform=norm)

    Reference: Macenko et al., ISBI 2009; Reinhard et al., IEEE CG&A 2001.
    """

    def __init__(self, method="macenko", io=240.0, alpha=1.0, beta=0.15):
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
        self.method, self.io, self.alpha, self.beta = method, float(io), float(alpha), float(beta)
        self.target = None

    def fit(self, reference):
        """Learn the reference's stain (`(H, W, 3)` RGB 0-255); returns self."""
        if self.method == "macenko":
            self.target = macenko_stains(reference, self.io, self.alpha, self.beta)
        else:
            self.target = reinhard_stats(reference)
        return self

    def __call__(self, patches):
        if self.target is None:
            raise ValueError("StainNormalizer: call `fit(reference)` before normalising patches.")
        x = _rgb(patches, "patches")
        single = x.ndim == 3
        x = x[None] if single else x
        out = np.stack([self._one(p) for p in x]).astype(np.float32)
        return out[0] if single else out

    def _one(self, patch):
        if self.method == "reinhard":
            from skimage.color import lab2rgb, rgb2lab

            lab = rgb2lab(patch / 255.0)
            mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
            t_mean, t_std = self.target
            lab = (lab - mean) / np.maximum(std, 1e-6) * t_std + t_mean
            return np.clip(lab2rgb(lab) * 255.0, 0, 255)
        try:
            stains, max_conc = macenko_stains(patch, self.io, self.alpha, self.beta)
        except ValueError:  # glass only: nothing to normalise
            return patch
        t_stains, t_max = self.target
        conc = np.linalg.lstsq(stains, _od(patch, self.io).T, rcond=None)[0]
        conc *= (t_max / np.maximum(max_conc, 1e-6))[:, None]
        rgb = self.io * np.exp(-(t_stains @ conc)) - 1.0
        return np.clip(rgb.T.reshape(patch.shape), 0, 255)
