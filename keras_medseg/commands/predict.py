"""`keras-medseg predict MODEL --input FILE|DIR --output DIR`: label maps in each scan's own geometry."""

from keras_medseg.commands._options import add_scan_options


def add_parser(subparsers):
    p = subparsers.add_parser(
        "predict", help="Segment whole scans (NIfTI, DICOM series, NRRD, MHA); write NIfTI label maps.",
        description="Sliding-window inference on whole scans. Each scan is resampled to the spacing and "
                    "orientation the model was trained with (saved in the .keras file), normalised with the "
                    "saved intensity preset, predicted window by window and brought back to its own voxel grid; "
                    "the label map is written as OUTPUT/<name>.nii.gz (2D images: <name>.png) with the scan's "
                    "header geometry, atomically (a killed run leaves no truncated file). A label map is never "
                    "written over an input scan, and scans whose names would give one label map are refused.")
    p.add_argument("model", help="a .keras model file (loaded with safe_mode=True)")
    p.add_argument("--input", required=True,
                   help="a scan file, a DICOM series folder, a single DICOM file (X-ray, one slice), or a folder of "
                        "scans / series folders")
    p.add_argument("--output", required=True,
                   help="folder for the label maps (created); refused when a label map would replace an input")
    add_scan_options(p)
    p.add_argument("--region-output", choices=("merged", "regions", "both"), default="merged",
                   help="multi-label models (trained with --regions): one merged label map OUTPUT/<name>.nii.gz "
                        "(default; where regions overlap the last region listed wins, e.g. the innermost of nested "
                        "regions), one 0/1 map per region OUTPUT/<name>_<region>.nii.gz, or both")
    p.add_argument("--flips", type=int, nargs="*", metavar="AXIS", default=None,
                   help="mirroring test-time augmentation: also predict every window mirrored along every subset of "
                        "these spatial axes of the model grid (e.g. --flips 0 1 2: 8 passes; --flips alone: every "
                        "spatial axis) and average the probabilities")
    p.add_argument("--probabilities", action="store_true",
                   help="also write the class probabilities on the scan's grid, float32 (*S, K), as "
                        "OUTPUT/<name>_probabilities.nii.gz")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args):
    from keras_medseg.predict.scans import predict_files

    written = predict_files(args.model, args.input, args.output, overlap=args.overlap, batch_size=args.window_batch,
                            progress=not args.quiet, allow_padding=args.pad,
                            resample_irregular=args.resample_irregular, region_output=args.region_output,
                            flips="all" if args.flips == [] else args.flips,
                            probabilities=args.probabilities)
    for name, src, out in written:  # a multi-modal scan: its first modality file and how many more
        src = src if isinstance(src, str) else src[0] if len(src) == 1 else f"{src[0]} (+{len(src) - 1} modalities)"
        print(f"{name}: {src} -> {out}")
    return 0
