"""Slide annotations as polygons: ASAP / Camelyon XML and GeoJSON (QuPath), rasterised per patch.

Pathologists annotate whole slides with polygons in level-0 pixel
coordinates. `read_annotations(path)` reads

* ASAP XML (the CAMELYON16/17 format): `<Annotation PartOfGroup=...>` with
  `<Coordinate X= Y=>` vertices; groups named `_2` or `Exclusion` are holes
  cut out of the tumours (CAMELYON16 convention);
* GeoJSON (QuPath "Export as GeoJSON", a `FeatureCollection`, a list of
  features or one feature): `Polygon` (outer ring + holes) and
  `MultiPolygon` geometries; features classified `Exclusion` / `Ignore*`
  are holes too.

Every outer polygon is one tumour (lesion) with an id `1, 2, ...` in file
order. `Annotations.label_window(downsample, origin, size)` rasterises them
into a tumour-id map of one window of a pyramid level (a pixel belongs to a
polygon when its centre does), and `inner_square_tumor` applies the lecture's
rule: a patch is positive iff its inner square intersects the annotation; its
tumour is the one covering most of the inner square.

Rules for what is not a plain polygon (each refusal is one line naming the
file and the feature or annotation):

* **Self-intersecting rings** (a lasso drawn twice around a tumour, a loop
  that crosses itself) are filled by the *nonzero winding rule*: a pixel is
  inside when the ring winds around its centre at least once, in either
  direction (SVG/PostScript `fill-rule: nonzero`). A lasso drawn twice is
  then the whole region it encloses, the union of its loops (the even-odd
  rule of plain ray casting would leave its centre empty); for a simple
  polygon both rules agree.
* **Empty geometries** (a feature whose geometry is null, a `Polygon` or
  `MultiPolygon` without coordinates, an ASAP annotation without
  coordinates) are refused.
* **Points and lines** (`Point`, `MultiPoint`, `LineString`, ASAP `Dot` and
  `PointSet`) are not areas: they are skipped next to polygons, and a file
  whose features are all of them is refused, so a tumour slide is never read
  as normal because its only annotation was a point.
* **An empty file** (0 bytes or only whitespace), a `FeatureCollection` with
  no features or ASAP XML with no annotations marks a normal slide (no
  tumours), as the command line says.

Reference: the lecture "Convolutional networks - theory" ("WSI annotated by
pathologists, not pixel level precise!", "Patch positive iff the inner
square intersects the annotation"); ASAP (Computational Pathology Group,
Radboud UMC) XML as used by CAMELYON16/17; the GeoJSON specification
(RFC 7946) as exported by QuPath.
"""

import collections
import json
import os
import xml.etree.ElementTree as ET

import numpy as np

Polygon = collections.namedtuple("Polygon", ["vertices", "tumor_id", "group", "is_hole"])
Polygon.__doc__ = """One annotation ring: `vertices (n, 2)` float64 `(x, y)` level-0 pixels, its tumour id
(0 for a hole), the group / class name, and whether it is cut out (`is_hole`)."""

_HOLE_GROUPS = ("_2", "exclusion", "ignore", "ignore*")


def _is_hole_group(name):
    return str(name or "").strip().lower() in _HOLE_GROUPS


def _ring(points, path, what):
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.shape[0] < 3 or not np.all(np.isfinite(arr[:, :2])):
        raise ValueError(
            f"Annotation file {path!r}: {what} must have at least 3 finite (x, y) vertices. "
            f"Received: {arr.shape[0] if arr.ndim else 0} vertices"
        )
    return arr[:, :2]


class Annotations:
    """Tumour polygons of one slide, in level-0 pixel coordinates.

    Args:
        polygons: list of `Polygon`.
        path: the file they came from (used in messages).

    Attributes:
        polygons, path: the arguments; num_tumors: the number of distinct tumour ids.
    """

    def __init__(self, polygons, path="<annotations>"):
        self.polygons = list(polygons)
        self.path = os.fspath(path)
        self._tumors = [p for p in self.polygons if not p.is_hole]
        self._holes = [p for p in self.polygons if p.is_hole]
        self._bbox = {id(p): (p.vertices[:, 1].min(), p.vertices[:, 0].min(), p.vertices[:, 1].max(),
                              p.vertices[:, 0].max()) for p in self.polygons}

    @property
    def num_tumors(self):
        return len({p.tumor_id for p in self._tumors})

    def __len__(self):
        return len(self._tumors)

    def bounds(self):
        """`(row_min, col_min, row_max, col_max)` of all vertices, level-0 pixels (None when empty)."""
        if not self.polygons:
            return None
        b = np.asarray(list(self._bbox.values()))
        return (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())

    def tumor_boxes(self):
        """`(n, 4)` `(row_min, col_min, row_max, col_max)` of each tumour polygon (not the holes), level-0 pixels.

        A window that misses all of them is 0 everywhere in `label_window`.
        """
        return np.asarray([self._bbox[id(p)] for p in self._tumors], np.float64).reshape(-1, 4)

    def check_inside(self, level0_shape, slide_path="<slide>"):
        """Raise `ValueError` naming both files when a vertex lies outside the slide.

        Args:
            level0_shape: `(height, width)` of the slide's level 0.
        """
        b = self.bounds()
        if b is None:
            return
        h, w = level0_shape
        if b[0] < 0 or b[1] < 0 or b[2] > h or b[3] > w:
            raise ValueError(
                f"Annotation file {self.path!r} lies outside slide {os.fspath(slide_path)!r} "
                f"({h}x{w} px at level 0): vertices span rows {b[0]:g}..{b[2]:g}, cols {b[1]:g}..{b[3]:g}."
            )

    def label_window(self, downsample, origin, size):
        """Tumour-id map of one window of a pyramid level.

        Args:
            downsample: float or `(row, col)`, level-0 pixels per pixel of the level.
            origin: `(row, col)` of the window in pixels of the level.
            size: `(height, width)` of the window, or an int for a square.

        Returns:
            `(height, width)` int32 array: 0 outside every tumour, else the
            tumour id (where tumours overlap, the later one in the file).
            Pixel `(i, j)` of the level is inside when its centre, at level-0
            coordinates `(origin + (i, j) + 0.5) * downsample - 0.5` (level-0
            pixel centres at integer coordinates), is inside a polygon and
            outside every hole.
        """
        dr, dc = (float(downsample),) * 2 if np.ndim(downsample) == 0 else (float(v) for v in downsample)
        r0, c0 = (int(v) for v in origin)
        h, w = (int(size),) * 2 if np.ndim(size) == 0 else (int(v) for v in size)
        out = np.zeros((h, w), np.int32)
        win = (r0 * dr, c0 * dc, (r0 + h) * dr, (c0 + w) * dc)
        holes = None
        for group, value in ((self._tumors, None), (self._holes, 0)):
            for p in group:
                b = self._bbox[id(p)]
                if b[2] < win[0] - dr or b[0] > win[2] + dr or b[3] < win[1] - dc or b[1] > win[3] + dc:
                    continue
                inside = fill_nonzero((p.vertices[:, 1] + 0.5) / dr - 0.5 - r0,
                                      (p.vertices[:, 0] + 0.5) / dc - 0.5 - c0, (h, w))
                if value is None:
                    out[inside] = p.tumor_id
                else:
                    holes = inside if holes is None else holes | inside
        if holes is not None:
            out[holes] = 0
        return out

    def inner_square_tumor(self, downsample, origin, size, inner_size):
        """The lecture's rule for one patch: its tumour id, or -1 when its inner square misses every tumour.

        Args:
            downsample: level-0 pixels per pixel of the patch's level.
            origin: `(row, col)` of the patch's top-left corner in pixels of the level.
            size: patch side in pixels of the level.
            inner_size: side of the centred inner square.

        Returns:
            int, the tumour covering most of the inner square, or -1.
        """
        off = (int(size) - int(inner_size)) // 2
        r, c = (int(v) for v in origin)
        inner = self.label_window(downsample, (r + off, c + off), int(inner_size))
        hits = inner[inner > 0]
        return int(np.bincount(hits).argmax()) if hits.size else -1

    def mask(self, shape, downsample=1.0):
        """Tumour-id map of a whole level of `shape = (height, width)` (for thumbnails and small slides)."""
        return self.label_window(downsample, (0, 0), shape)


def fill_nonzero(rows, cols, shape):
    """Pixels of a `(height, width)` grid whose centre `(r, c)` a closed ring winds around (nonzero winding rule).

    Args:
        rows, cols: `(n,)` vertex coordinates of the ring in pixel units (pixel centres at integers); the ring
            closes from the last vertex back to the first.
        shape: `(height, width)`.

    Returns:
        bool array `shape`. For a simple polygon this is the even-odd (ray-casting) fill; where a ring
        overlaps itself (a lasso drawn twice) the overlap is inside too.

    Reference: the winding number of a closed curve around a point (D. Sunday's crossing and winding number
    algorithms); SVG's `fill-rule: nonzero`.
    """
    h, w = shape
    ya, xa = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
    yb, xb = np.roll(ya, -1), np.roll(xa, -1)
    out = np.zeros((h, w), bool)
    if ya.size < 3:
        return out
    r_lo, r_hi = max(0, int(np.ceil(ya.min()))), min(h - 1, int(np.floor(ya.max())))
    # all rows at once, in blocks of rows x edges bounded to ~4M: a crossing of row r at x adds its direction
    # (+1 up, -1 down) to the winding of every column c < x (a difference array summed along the row)
    block = max(1, (1 << 22) // ya.size)
    for start in range(r_lo, r_hi + 1, block):
        r = np.arange(start, min(r_hi + 1, start + block), dtype=np.float64)[:, None]
        rr, e = np.nonzero((ya > r) != (yb > r))  # edges crossing the row's centre line (half-open)
        if not rr.size:
            continue
        y0, x0, y1, x1 = ya[e], xa[e], yb[e], xb[e]
        xint = x0 + (r[rr, 0] - y0) * (x1 - x0) / (y1 - y0)
        direction = np.where(y1 > y0, 1.0, -1.0)
        k = np.clip(np.ceil(xint), 0, w).astype(np.int64)  # columns c < xint: 0 .. k - 1
        diff = np.bincount(np.concatenate([rr * (w + 1), rr * (w + 1) + k]),
                           np.concatenate([direction, -direction]), minlength=r.shape[0] * (w + 1))
        winding = np.cumsum(diff.reshape(r.shape[0], w + 1)[:, :w], axis=1)
        out[start:start + r.shape[0]] = np.round(winding) != 0
    return out


def _feature_name(k, feat, props):
    label = props.get("name") or (feat or {}).get("id") or props.get("id")
    return f"feature {k}" + (f" ({label!r})" if label else "")


def _read_asap(path, root):
    polygons, skipped = [], []
    tumor = 0
    for ann in root.iter("Annotation"):
        kind = (ann.get("Type") or "Polygon").lower()
        coords = ann.find("Coordinates")
        pts = [] if coords is None else list(coords.iter("Coordinate"))
        if not pts:
            raise ValueError(f"Annotation file {path!r}: annotation {ann.get('Name')!r} has no coordinates "
                             "(an empty geometry); delete it or redraw it.")
        pts = sorted(pts, key=lambda e: float(e.get("Order", 0)))
        try:
            xy = [(float(e.get("X").replace(",", ".")), float(e.get("Y").replace(",", "."))) for e in pts]
        except (AttributeError, ValueError):
            raise ValueError(
                f"Annotation file {path!r}: annotation {ann.get('Name')!r} has a coordinate without numeric X/Y."
            ) from None
        if kind in ("dot", "pointset"):
            skipped.append(f"annotation {ann.get('Name')!r} ({ann.get('Type')})")
            continue
        if kind == "rectangle" and len(xy) == 2:
            (x0, y0), (x1, y1) = xy
            xy = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        group = ann.get("PartOfGroup")
        verts = _ring(xy, path, f"annotation {ann.get('Name')!r}")
        hole = _is_hole_group(group)
        if not hole:
            tumor += 1
        polygons.append(Polygon(verts, 0 if hole else tumor, group, hole))
    _refuse_no_area(path, polygons, skipped)
    return polygons


def _refuse_no_area(path, polygons, skipped):
    """A file whose annotations are all points or lines would read as a normal slide: refuse it."""
    if skipped and not polygons:
        raise ValueError(f"Annotation file {path!r} has no area: its {len(skipped)} annotation(s) are points or "
                         f"lines ({skipped[0]}); draw tumours as polygons, or use an empty file for a normal slide.")


def _read_geojson(path, data):
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, dict) and "coordinates" in data:
        features = [{"type": "Feature", "geometry": data, "properties": {}}]
    elif isinstance(data, list):
        features = data
    else:
        raise ValueError(f"Annotation file {path!r} is JSON but not GeoJSON (no FeatureCollection / Feature).")
    polygons, skipped = [], []
    tumor = 0
    for k, feat in enumerate(features):
        geom = (feat or {}).get("geometry") or {}
        props = (feat or {}).get("properties") or {}
        cls = props.get("classification")
        name = cls.get("name") if isinstance(cls, dict) else cls
        hole_class = _is_hole_group(name)
        kind = geom.get("type")
        what = _feature_name(k, feat, props)
        coordinates = geom.get("coordinates")
        if kind in ("Polygon", "MultiPolygon"):
            parts = [coordinates or []] if kind == "Polygon" else (coordinates or [])
            if not parts or not any(rings for rings in parts):
                raise ValueError(f"Annotation file {path!r}: {what} is an empty {kind} (no coordinates); "
                                 "delete it or redraw it.")
        elif kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
            skipped.append(f"{what} is a {kind}")  # not areas
            continue
        else:
            raise ValueError(f"Annotation file {path!r}: {what} has "
                             + (f"an unsupported geometry {kind!r}" if kind else "no geometry")
                             + "; expected a Polygon or MultiPolygon.")
        for rings in parts:
            if not rings:
                continue
            outer = _ring(rings[0], path, what)
            if not hole_class:
                tumor += 1
            polygons.append(Polygon(outer, 0 if hole_class else tumor, name, hole_class))
            for ring in rings[1:]:
                polygons.append(Polygon(_ring(ring, path, f"a hole of {what}"), 0, name, True))
    _refuse_no_area(path, polygons, skipped)
    return polygons


def read_annotations(path):
    """Read tumour polygons from an ASAP/Camelyon XML or a GeoJSON (QuPath) file.

    Args:
        path: `.xml` (ASAP) or `.json` / `.geojson` file; vertices in level-0 pixels.

    Returns:
        `Annotations`; without tumours (a normal slide) for an empty file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not XML/GeoJSON, a polygon with fewer than 3 vertices, a
            non-numeric coordinate, an empty geometry, a file whose
            annotations are all points or lines (the message names the file
            and the feature; module docstring).

    Example:

    >>> ann = keras_medseg.data.slides.annotations.read_annotations("tumor_001.xml")
    >>> ann.num_tumors, ann.label_window(downsample=4, origin=(0, 0), size=512).max()

    Reference: CAMELYON16 ASAP XML; RFC 7946 GeoJSON as written by QuPath.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Annotation file not found: {path!r}")
    with open(path, "rb") as fh:
        raw = fh.read()
    text = raw.lstrip()
    if not text:  # an empty file marks a normal slide
        return Annotations([], path)
    if text[:1] in (b"{", b"["):
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"Annotation file {path!r} is not valid JSON: {exc}") from None
        return Annotations(_read_geojson(path, data), path)
    if text[:1] == b"<":
        try:
            root = ET.fromstring(raw)
        except ET.ParseError as exc:
            raise ValueError(f"Annotation file {path!r} is not valid XML: {exc}") from None
        return Annotations(_read_asap(path, root), path)
    raise ValueError(f"Annotation file {path!r} is neither ASAP XML nor GeoJSON.")


def write_geojson(path, annotations):
    """Write `Annotations` (or a list of `(n, 2)` (x, y) vertex arrays) as a GeoJSON FeatureCollection."""
    polys = annotations.polygons if isinstance(annotations, Annotations) else [
        Polygon(np.asarray(v, np.float64), k + 1, "Tumor", False) for k, v in enumerate(annotations)]
    features = []
    for p in polys:
        ring = p.vertices.tolist()
        ring.append(ring[0])
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"classification": {
                             "name": "Exclusion" if p.is_hole else (p.group or "Tumor")}}})
    with open(path, "w") as fh:
        json.dump({"type": "FeatureCollection", "features": features}, fh)


def write_asap_xml(path, annotations):
    """Write a list of `(n, 2)` (x, y) vertex arrays (or `Annotations`) as ASAP XML, group `_0` (holes `_2`)."""
    polys = annotations.polygons if isinstance(annotations, Annotations) else [
        Polygon(np.asarray(v, np.float64), k + 1, "_0", False) for k, v in enumerate(annotations)]
    root = ET.Element("ASAP_Annotations")
    anns = ET.SubElement(root, "Annotations")
    for k, p in enumerate(polys):
        a = ET.SubElement(anns, "Annotation", Name=f"Annotation {k}", Type="Polygon",
                          PartOfGroup="_2" if p.is_hole else (p.group or "_0"), Color="#F4FA58")
        coords = ET.SubElement(a, "Coordinates")
        for i, (x, y) in enumerate(p.vertices.tolist()):
            ET.SubElement(coords, "Coordinate", Order=str(i), X=repr(float(x)), Y=repr(float(y)))
    groups = ET.SubElement(root, "AnnotationGroups")
    for g in sorted({("_2" if p.is_hole else (p.group or "_0")) for p in polys}):
        ET.SubElement(groups, "Group", Name=g, PartOfGroup="None", Color="#64FE2E")
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
