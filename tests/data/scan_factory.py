"""Test scans written on the fly: NIfTI with an oblique affine, DICOM series with pydicom.

Shared by the IO, preprocessing and `predict` tests. Nothing is downloaded.
"""

import os

import numpy as np


def oblique_affine(spacing=(0.7, 0.9, 2.5), angle=0.3, origin=(-40.0, 25.0, 10.0), flip_x=True):
    """A 4x4 voxel->RAS affine with a rotation about z and y, anisotropic spacing and (default) an x flip (LAS-like)."""
    c, s = np.cos(angle), np.sin(angle)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    c2, s2 = np.cos(angle / 2), np.sin(angle / 2)
    ry = np.array([[c2, 0, s2], [0, 1, 0], [-s2, 0, c2]])
    rot = rz @ ry
    if flip_x:
        rot = rot @ np.diag([-1.0, 1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def write_nifti(path, array, affine):
    import nibabel

    img = nibabel.Nifti1Image(np.asarray(array), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nibabel.save(img, os.fspath(path))
    return os.fspath(path)


def ball(shape, centre, radius_mm, spacing):
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(shape, centre, spacing)], indexing="ij")
    return (sum(g ** 2 for g in grids) <= radius_mm ** 2)


def write_dicom_series(folder, hu, spacing=(0.8, 0.6, 2.5), origin_lps=(-100.0, -120.0, 30.0),
                       row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0), slope=1.0, intercept=-1024.0,
                       series_uid=None, seed=0, prefix="slice"):
    """Write `hu` (voxel order (i, j, k): i along the rows' direction) as a CT series, files shuffled.

    Returns the expected RAS+ affine of the volume.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    os.makedirs(folder, exist_ok=True)
    row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)
    stored = np.round((np.asarray(hu, float) - intercept) / slope).astype(np.uint16)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    nk = hu.shape[2]
    order = np.random.default_rng(seed).permutation(nk)
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = os.path.join(folder, f"{prefix}{n:03d}.dcm")
        ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Test^Phantom", "0001"
        ds.InstanceNumber = n + 1  # deliberately not the slice order
        pos = np.asarray(origin_lps) + k * spacing[2] * normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([row_dir, col_dir])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # [between rows, between columns]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # (row j, column i)
        ds.save_as(path, enforce_file_format=True)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = lps_to_ras @ np.stack([row_dir, col_dir, normal], axis=1) @ np.diag(spacing)
    aff[:3, 3] = lps_to_ras @ np.asarray(origin_lps)
    del pydicom
    return aff


def _dataset(path, rows, cols, series_uid, study_uid, frame_uid, modality="CT"):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.Modality, ds.PatientName, ds.PatientID = modality, "Test^Phantom", "0001"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def write_dicom_slices(folder, slices, hu_of, rows=12, cols=10, intercept=-1024.0):
    """Write one CT series whose slices each have their own geometry; pixel values are `hu_of(points)`.

    Args:
        folder: output folder.
        slices: list of dicts with `position` (LPS mm of the first pixel's centre), and optionally `row_dir`,
            `col_dir` (unit LPS vectors: along a row, along a column; default x and y) and `pixel_spacing`
            (`(step along a row, step along a column)` mm, default (0.8, 0.6)).
        hu_of: function of `(n, 3)` LPS points -> `(n,)` HU (e.g. a linear ramp, exact under linear interpolation).
        rows, cols: matrix size of every slice.

    Returns:
        the list of file paths written, in slice order (files are named in a shuffled order).
    """
    from pydicom.uid import generate_uid

    os.makedirs(folder, exist_ok=True)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    names = np.random.default_rng(1).permutation(len(slices))
    paths = []
    for k, sl in enumerate(slices):
        row_dir = np.asarray(sl.get("row_dir", (1.0, 0.0, 0.0)), float)
        col_dir = np.asarray(sl.get("col_dir", (0.0, 1.0, 0.0)), float)
        sx, sy = sl.get("pixel_spacing", (0.8, 0.6))
        pos = np.asarray(sl["position"], float)
        jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")  # (row j, column i)
        points = pos + ii[..., None] * sx * row_dir + jj[..., None] * sy * col_dir
        hu = np.asarray(hu_of(points.reshape(-1, 3)), float).reshape(rows, cols)
        path = os.path.join(folder, f"s{names[k]:03d}.dcm")
        ds = _dataset(path, rows, cols, series_uid, study_uid, frame_uid)
        ds.InstanceNumber = int(names[k]) + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([row_dir, col_dir])]
        ds.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]  # [between rows, between columns]
        ds.SliceThickness = "1.0"
        ds.RescaleSlope, ds.RescaleIntercept = "1", f"{intercept:g}"
        ds.PixelData = np.round(hu - intercept).astype(np.uint16).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_dicom_radiograph(path, pixels, imager_pixel_spacing=(0.15, 0.143), modality="DX"):
    """Write a projection radiograph (no position/orientation): `pixels` `(rows, cols)`, spacing in
    `ImagerPixelSpacing` only (`(between rows, between columns)` mm), as X-ray and mammography files carry it."""
    from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

    rows, cols = pixels.shape
    ds = _dataset(os.fspath(path), rows, cols, generate_uid(), generate_uid(), generate_uid(), modality=modality)
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.ImagerPixelSpacing = [f"{v:.6f}" for v in imager_pixel_spacing]
    ds.PixelData = np.asarray(pixels, np.uint16).tobytes()
    ds.save_as(os.fspath(path), enforce_file_format=True)
    return os.fspath(path)
