"""Where a prediction loses J: near the true boundary (the transfer's resolution, the CRF) or farther from it
(distractors, missed parts). J is recomputed with the error pixels of one kind put right."""

from __future__ import annotations

import cv2
import numpy as np

from .robot_play import frame_jaccard

# One cell of the 60x107 transfer grid on a 480p frame: errors within it are the grid's and the CRF's to fix.
BAND_PIXELS = 8.0


def boundary_distance(truth: np.ndarray) -> np.ndarray:
    """(T, H, W) labels -> (T, H, W) float32: each pixel's distance in pixels to the nearest pixel whose label
    differs from a 4-neighbour's (inf on a frame with one label only)."""
    out = np.empty(truth.shape, np.float32)
    for t, frame in enumerate(truth):
        edge = np.zeros(frame.shape, bool)
        vertical, horizontal = frame[1:] != frame[:-1], frame[:, 1:] != frame[:, :-1]
        edge[1:] |= vertical
        edge[:-1] |= vertical
        edge[:, 1:] |= horizontal
        edge[:, :-1] |= horizontal
        if not edge.any():
            out[t] = np.inf
            continue
        # distanceTransform measures to the nearest zero pixel: the boundary is the zero set.
        out[t] = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return out


def jaccard_if_right(truth: np.ndarray, labels: np.ndarray, num_objects: int, where: np.ndarray) -> np.ndarray:
    """(T,) J per frame (the framework's, averaged over objects) with `labels` replaced by the truth where
    `where`."""
    fixed = np.where(where, truth, labels)
    return frame_jaccard(truth, fixed, num_objects)


def error_split(truth: np.ndarray, labels: np.ndarray, num_objects: int, distance: np.ndarray | None = None,
                band: float = BAND_PIXELS) -> dict[str, float]:
    """Mean J, and mean J with the errors within `band` pixels of the true boundary put right ("band_right")
    or with those farther put right ("beyond_right"). distance: boundary_distance(truth), when already known."""
    distance = boundary_distance(truth) if distance is None else distance
    near = distance <= band
    return {
        "jaccard": float(frame_jaccard(truth, labels, num_objects).mean()),
        "band_right": float(jaccard_if_right(truth, labels, num_objects, near).mean()),
        "beyond_right": float(jaccard_if_right(truth, labels, num_objects, ~near).mean()),
    }
