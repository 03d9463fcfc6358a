"""Real images for `level_set_real.py`: images shipped with installed packages, references made without `lse`.

Every case is one 2D image in its own units (photograph grey levels, HU,
MRI/EPI units), a reference mask made independently of keras-medseg by a
classical, documented rule on the source's own data, and seeds placed on the
reference by one rule for all sources (`seeds_from_reference`). No download:
everything ships inside scikit-image, nilearn, pydicom and nibabel.

Sources (`SOURCES`), each cut into images by a fixed rule:

* `coins` (scikit-image `coins`, a photograph): the six 128 x 128 tiles of a
  2 x 3 grid; reference: scikit-image's own coin segmentation recipe (Sobel
  elevation map, markers below 30 / above 150, watershed, holes filled).
* `ihc_nuclei` (scikit-image `immunohistochemistry`, a bright-field slide):
  the hematoxylin channel (colour deconvolution, `skimage.color.rgb2hed`),
  four 128 x 128 tiles from the stroma, where nuclei lie apart; reference:
  Otsu's threshold of the whole slide's Gaussian-smoothed (sigma 1.5)
  channel, holes filled.
* `mni152` (nilearn's MNI152 2009 template, 2 mm, T1): axial slices padded
  with its zero background to 128 x 128; references: the template's own
  tissue maps: white matter (`load_mni152_wm_template` > 0.5) on three
  slices, the lateral ventricles (inside `load_mni152_brain_mask`, grey- and
  white-matter probabilities both < 0.2, components not touching the outside
  of the brain) on three.
* `pydicom_ct` (pydicom's test CTs, HU, 512-pixel slices resampled to 128):
  references by Hounsfield thresholds: the lungs of `CT_small.dcm` (air
  below -400 HU, excluding air outside the body), its contrast-filled aorta
  (100 to 300 HU, the component at the top right), and the brain of the two
  head CTs (`693_J2KI.dcm`, `J2K_pixelrep_mismatch.dcm`: -10 to 100 HU inside
  the skull, the skull being bone above 300 HU); added later, with the
  rule fixed before any result on them: the vertebra of `CT_small.dcm` (the
  largest component above 300 HU, holes filled) and the whole head of
  `693_J2KI.dcm` (above -400 HU, closed, holes filled, the largest
  component).
* `nibabel_epi` (nibabel's `example4d.nii.gz` functional MRI, mean of its
  two volumes): six axial slices (96 x 128);
  reference: nilearn's `compute_epi_mask` (histogram cut, morphology).

`split` sends every second image of each source (in the listed order) to the
tuning half and the others to the held-out half.
"""

import os

import numpy as np

SIZE = 128
MIN_AREA = 20  # reference components smaller than this get no seed and are dropped from the reference
SOURCES = ("coins", "ihc_nuclei", "mni152", "pydicom_ct", "nibabel_epi")


# -------------------------------------------------------------------------------------------- seeds
def clean_reference(mask, min_area=MIN_AREA):
    """`mask` without connected components (8-connectivity) smaller than `min_area` pixels."""
    from skimage.morphology import remove_small_objects

    return remove_small_objects(np.asarray(mask, bool), max_size=min_area - 1, connectivity=2)


def seeds_from_reference(reference):
    """One seed disk per connected component (8-connectivity) of `reference`: `[(y, x, r), ...]`.

    The rule, the same for every source (a user clicking inside each
    object): the centre is the component's deepest pixel (largest Euclidean
    distance to the background, first in raster order on ties), the radius
    `0.3 d` clipped to [1.5, 5] pixels, with `d` that depth; the disk lies
    inside the object, except in components under 3 pixels thick, where the
    smallest disk (radius 1.5) reaches up to a pixel beyond it.
    """
    from scipy import ndimage

    labels, n = ndimage.label(reference, structure=np.ones((3, 3)))
    seeds = []
    for k in range(1, n + 1):
        depth = ndimage.distance_transform_edt(np.pad(labels == k, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        seeds.append((int(y), int(x), float(np.clip(0.3 * depth[y, x], 1.5, 5.0))))
    return seeds


def seed_level_set(shape, seeds):
    """Signed distance (negative inside) to the union of the seed disks `[(y, x, r), ...]`, float32."""
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    dist = [np.sqrt((yy - y) ** 2 + (xx - x) ** 2) - r for y, x, r in seeds]
    return np.min(dist, axis=0).astype("float32")


def _case(source, name, image, reference):
    reference = clean_reference(reference)
    return {"source": source, "name": name, "image": np.asarray(image, "float32"), "reference": reference,
            "seeds": seeds_from_reference(reference)}


def _pad_to(image, size=SIZE):
    pads = [((size - s) // 2, size - s - (size - s) // 2) for s in image.shape]
    return np.pad(image, pads)


# ------------------------------------------------------------------------------------------ sources
def coins_cases():
    import skimage.data
    from scipy import ndimage
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    image = skimage.data.coins().astype("float32")
    markers = np.zeros(image.shape, "int32")
    markers[image < 30] = 1
    markers[image > 150] = 2
    reference = ndimage.binary_fill_holes(watershed(sobel(image), markers) == 2)
    cases = []
    for i, y in enumerate((20, 155)):
        for j, x in enumerate((0, 128, 256)):
            tile = (slice(y, y + SIZE), slice(x, x + SIZE))
            cases.append(_case("coins", f"coins_r{i}c{j}", image[tile], reference[tile]))
    return cases


#: top-left corners of the stroma tiles of `immunohistochemistry` (128 x 128)
IHC_TILES = ((200, 384), (330, 384), (384, 140), (230, 140))


def ihc_cases():
    import skimage.data
    from scipy import ndimage
    from skimage.color import rgb2hed
    from skimage.filters import gaussian, threshold_otsu

    hematoxylin = rgb2hed(skimage.data.immunohistochemistry())[..., 0].astype("float32")
    smooth = gaussian(hematoxylin, 1.5)
    nuclei = ndimage.binary_fill_holes(smooth > threshold_otsu(smooth))
    cases = []
    for y, x in IHC_TILES:
        tile = (slice(y, y + SIZE), slice(x, x + SIZE))
        cases.append(_case("ihc_nuclei", f"ihc_y{y}x{x}", hematoxylin[tile], nuclei[tile]))
    return cases


MNI_WM_SLICES = (42, 50, 58)
MNI_VENTRICLE_SLICES = (40, 44, 48)


def mni152_cases():
    from nilearn import datasets
    from scipy import ndimage

    def axial(img, z):
        return _pad_to(np.rot90(np.asarray(img.get_fdata(), "float32")[:, :, z]))

    t1, gm, wm = (datasets.load_mni152_template(resolution=2), datasets.load_mni152_gm_template(resolution=2),
                  datasets.load_mni152_wm_template(resolution=2))
    brain = datasets.load_mni152_brain_mask(resolution=2)
    cases = []
    for z in MNI_WM_SLICES:
        cases.append(_case("mni152", f"mni152_wm_z{z}", axial(t1, z), axial(wm, z) > 0.5))
    for z in MNI_VENTRICLE_SLICES:
        inside = axial(brain, z) > 0.5
        csf = inside & (axial(gm, z) < 0.2) & (axial(wm, z) < 0.2)
        labels, _ = ndimage.label(csf)
        outer = np.unique(labels[~ndimage.binary_erosion(inside, iterations=3)])
        cases.append(_case("mni152", f"mni152_ventricles_z{z}", axial(t1, z), csf & ~np.isin(labels, outer)))
    return cases


def _dicom_hu(name):
    import pydicom
    from pydicom.data import get_testdata_file
    from scipy import ndimage

    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"pydicom test file {name} not found in the installed pydicom package")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype("float32") * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    if hu.shape[0] != SIZE:
        hu = ndimage.zoom(hu, SIZE / hu.shape[0], order=1)
    return hu


def _largest(mask):
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    return labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, n + 1))))


def pydicom_cases():
    from scipy import ndimage

    cases = []
    hu = _dicom_hu("CT_small.dcm")
    body = ndimage.binary_fill_holes(ndimage.binary_closing(hu > -400, iterations=2))
    air = (hu < -400) & ~body
    outside = _largest(air)  # the room air (the bottom of this slice is the table side)
    lungs = (hu < -400) & ~outside
    cases.append(_case("pydicom_ct", "ct_small_lungs", hu, ndimage.binary_opening(lungs)))
    vessel = (hu > 100) & (hu < 300)
    labels, _ = ndimage.label(ndimage.binary_opening(vessel))
    cases.append(_case("pydicom_ct", "ct_small_aorta", hu, labels == labels[8, 95]))
    for name in ("693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"):
        hu = _dicom_hu(name)
        bone = hu > 300
        cranium = ndimage.binary_fill_holes(ndimage.binary_closing(bone, iterations=3)) & ~ndimage.binary_dilation(
            bone)
        brain = ndimage.binary_opening(cranium & (hu > -10) & (hu < 100), iterations=1)
        cases.append(_case("pydicom_ct", f"ct_head_{name.split('.')[0]}", hu, ndimage.binary_fill_holes(brain)))
    # appended after the first four (the halves of those stay as they were)
    hu = _dicom_hu("CT_small.dcm")
    cases.append(_case("pydicom_ct", "ct_small_vertebra", hu, ndimage.binary_fill_holes(_largest(hu > 300))))
    hu = _dicom_hu("693_J2KI.dcm")
    head = ndimage.binary_fill_holes(ndimage.binary_closing(hu > -400, iterations=2))
    cases.append(_case("pydicom_ct", "ct_head_693_J2KI_whole", hu, _largest(head)))
    return cases


EPI_SLICES = (6, 9, 12, 15, 18, 21)


def nibabel_cases():
    import nibabel
    from nilearn.masking import compute_epi_mask

    path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "example4d.nii.gz")
    img = nibabel.load(path)
    mean = np.asarray(img.get_fdata(), "float32").mean(axis=-1)
    mask = np.asarray(compute_epi_mask(img).get_fdata(), bool)
    cases = []
    for z in EPI_SLICES:
        cases.append(_case("nibabel_epi", f"epi_z{z}", np.rot90(mean[:, :, z]), np.rot90(mask[:, :, z])))
    return cases


LOADERS = {"coins": coins_cases, "ihc_nuclei": ihc_cases, "mni152": mni152_cases, "pydicom_ct": pydicom_cases,
           "nibabel_epi": nibabel_cases}


def load_cases(sources=SOURCES):
    """All cases of `sources` (see the module doc), each `{source, name, image, reference, seeds, half}`."""
    unknown = [s for s in sources if s not in LOADERS]
    if unknown:
        raise ValueError(f"`sources` must be among {SOURCES}. Received: sources={tuple(sources)!r}")
    cases = []
    for source in sources:
        for i, case in enumerate(LOADERS[source]()):
            if not case["seeds"]:
                raise RuntimeError(f"{case['name']}: the reference has no object of {MIN_AREA} pixels or more")
            case["half"] = "tuning" if i % 2 == 0 else "held-out"
            cases.append(case)
    return cases
