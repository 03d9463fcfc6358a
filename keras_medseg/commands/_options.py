"""What several commands share: `--data` and its Q-tips/folder settings, `--arg NAME=VALUE` parsing, and the
exit status and listing of a cohort run whose slides partly failed.

Commands import from here, never from each other.
"""

import ast

__all__ = ["add_data_options", "add_resample_option", "add_scan_options", "parse_model_args", "parse_regions",
           "report_failed_slides"]


def parse_model_args(items):
    """`["filters=8", "name=seg"]` -> `{"filters": 8, "name": "seg"}` (literals, else strings)."""
    kwargs = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"`--arg` must look like name=value. Received: --arg {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key.isidentifier():
            raise ValueError(f"`--arg` name must be an identifier. Received: --arg {item!r}")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


def parse_regions(text):
    """`"whole=1,2,3; core=2,3; enhancing=3"` -> `[("whole", [1, 2, 3]), ("core", [2, 3]), ("enhancing", [3])]`.

    Regions are separated by `;`, each `NAME=V,V,...` (mask values) or just `V,V,...` (named `region_<i>`).

    Raises:
        ValueError: a region without integer values (named, quoting the option).
    """
    if text is None:
        return None
    out = []
    for i, part in enumerate(p.strip() for p in text.split(";")):
        if not part:
            continue
        name, _, values = part.rpartition("=")
        try:
            out.append((name.strip() or f"region_{i}", [int(v) for v in values.split(",") if v.strip()]))
        except ValueError:
            raise ValueError(f"`--regions` must look like 'whole=1,2,3;core=2,3;enhancing=3' (mask values). "
                             f"Received: --regions {text!r}") from None
    if not out or not all(v for _, v in out):
        raise ValueError(f"`--regions` must give each region at least one mask value. Received: --regions {text!r}")
    return out


def report_failed_slides(failed, note="rerun to retry only these"):
    """Print the slides of a cohort run that failed (`{slide: one-line error}`); return the command's exit code
    (1 when any failed, else 0): the others' results are kept, so a rerun redoes only these."""
    if not failed:
        return 0
    print(f"{len(failed)} slide(s) FAILED ({note}):")
    for name, err in sorted(failed.items()):
        print(f"  {name}: {err}")
    return 1


def add_data_options(p, n_default=1024):
    p.add_argument("--data", default="qtips", help="'qtips' (synthetic, default), a folder DIR with "
                   "DIR/images/<name>.<ext> and DIR/masks/<name>.<ext> or DIR/labels/ (PNG, TIFF, .npy, NIfTI, "
                   "DICOM series), a dataset.json, or an HDF5 patch store FILE.h5 (`keras-medseg patches extract`) "
                   "for patch classifiers (decided by keras_medseg.data.sources.resolve_source)")
    p.add_argument("--size", type=int, default=64, help="Q-tips image size (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--spatial-dims", type=int, default=2, choices=(2, 3),
                   help="2 for images, 3 for volumes in a data folder (default 2)")
    p.add_argument("--ignore-value", type=int, default=None, metavar="V",
                   help="mask value to leave out of the loss and the scores, e.g. 255 for an unlabelled border "
                        "(default: none; 255 next to other class ids is refused without it)")


def add_resample_option(p):
    """`--resample-irregular`: DICOM series with missing slices, uneven gaps, mixed pixel spacing or a tilt."""
    p.add_argument("--resample-irregular", action="store_true",
                   help="resample DICOM series with missing slices, uneven gaps, mixed pixel spacing or a tilted "
                        "stack onto a regular grid from their true slice positions (default: refuse them)")


def add_scan_options(p):
    """Sliding-window options shared by `predict` and `evaluate` on whole scans."""
    p.add_argument("--overlap", type=float, default=0.5, help="window overlap in [0, 1) (default 0.5)")
    p.add_argument("--window-batch", type=int, default=2,
                   help="windows per forward pass on whole scans; sets peak memory (default 2)")
    p.add_argument("--pad", dest="pad", action="store_true", default=True,
                   help="pad scans smaller than the model's window (the default; kept for scripts)")
    p.add_argument("--no-pad", dest="pad", action="store_false",
                   help="refuse scans smaller than the model's window instead of padding them")
    add_resample_option(p)
