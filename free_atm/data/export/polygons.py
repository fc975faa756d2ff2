"""Binary masks as polygons, for the formats that store outlines (YOLO-seg, COCO with ``--polygons``).

The outline is scikit-image's marching squares at level 0.5 (``find_contours``), which runs along the
pixel edges and cuts each corner pixel's diagonal, simplified by Douglas-Peucker within a tolerance in
pixels (shapely's ``simplify``, GEOS's C implementation: scikit-image's Python one was 75 times slower and
the larger part of a YOLO export). Coordinates are in pixel-edge units, pixel ``(row, col)`` covering
``[col, col + 1] x [row, row + 1]``, the convention of COCO's polygons and of normalised YOLO coordinates.

Pitfall: contours of a mask touching the image border stay open unless the mask is padded first, and a
mask's holes are contours too; only the outer ones (told apart by their winding) are kept.
"""

from __future__ import annotations

import numpy as np


def mask_polygons(mask: np.ndarray, tolerance: float = 0.5) -> list[np.ndarray]:
    """The outer outlines of ``mask`` (bool ``(H, W)``): a list of ``(K, 2)`` float arrays of ``(x, y)`` in
    pixel-edge units, each closed implicitly (the last point differs from the first) with at least 3
    points; an empty mask has none."""
    import shapely
    from skimage.measure import find_contours

    if tolerance < 0:
        raise ValueError(f"tolerance must be 0 or more pixels, got {tolerance}")
    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    polygons = []
    for contour in find_contours(padded, 0.5, positive_orientation="high"):
        rows, cols = contour[:, 0] - 0.5, contour[:, 1] - 0.5  # padding off, then centres to edges (+0.5 - 1)
        xy = np.stack([cols, rows], 1)
        if len(xy) < 4 or _signed_area(xy) >= 0:  # too small to enclose a pixel centre, or a hole
            continue
        if tolerance:
            ring = shapely.simplify(shapely.LinearRing(xy), tolerance, preserve_topology=False)
            xy = shapely.get_coordinates(ring)
        if len(xy) > 1 and np.allclose(xy[0], xy[-1]):
            xy = xy[:-1]
        if len(xy) >= 3:
            polygons.append(xy)
    return polygons


def _signed_area(xy: np.ndarray) -> float:
    """Shoelace area in ``(x, y)`` image axes: negative for the outlines ``find_contours`` draws around an
    object with ``positive_orientation="high"``, positive for those around a hole."""
    x, y = xy[:, 0], xy[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2
