"""Object identity by position: which object a foreground pixel belongs to, when there are several.

Label transfer compares appearance only, so two objects that look alike (two dancers, a herd) get similar
scores everywhere and the argmax mixes them. Position tells them apart: an object is near where it was in
the neighbouring frame. The keyframes are swept outward from the anchors: the scribbled frames that stroke every
object (anchor_frames). On an anchor the objects are where the transfer put them, except in a connected foreground
region holding strokes: strokes of one object only make it that object's, strokes of several lookalikes (touching)
give each pixel the object of its nearest stroke; on any other keyframe, where this sweep left them on the
neighbouring keyframe towards the nearest anchor (`gap` frames away). A pixel d_c grid cells from object c's
position, and d cells from the nearest object's, costs object c `weight` per cell that d_c - d exceeds the
reach: `radius`, plus `speed * gap` from a neighbouring keyframe, or none for an object with a lookalike (the
nearer object's place wins); at most `cap` in all, so that position breaks near-ties of appearance but does not
overrule a clear difference. An object has a lookalike when its score leads the best other object's by less
than `alike_margin` at its own stroke cells (the median): distinct objects lead by far more.

Only the choice between objects changes: the object scores are shifted back so that their maximum, and so
the decision foreground against background, stays what the transfer said. A lone object is left untouched.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt, label

from ..config import IdentityConfig


def sweep_order(keyframes: np.ndarray, anchors: set[int]) -> list[tuple[int, int | None]]:
    """(position, neighbour position) for every keyframe, in the order a sweep outward from the anchors (the
    keyframes in `anchors`) reaches them; an anchor's neighbour is None. Each keyframe's neighbour is the
    adjacent keyframe on the side of its nearest anchor (ties: the earlier)."""
    keyframes = np.asarray(keyframes, np.int64)
    anchor_positions = [i for i, f in enumerate(keyframes.tolist()) if f in anchors]
    if not anchor_positions:
        return [(i, None) for i in range(len(keyframes))]
    steps = []
    for i, frame in enumerate(keyframes.tolist()):
        nearest = min(anchor_positions, key=lambda a: (abs(int(keyframes[a]) - frame), a))
        neighbour = None if nearest == i else (i - 1 if nearest < i else i + 1)
        steps.append((abs(int(keyframes[nearest]) - frame), i, neighbour))
    return [(i, neighbour) for _, i, neighbour in sorted(steps)]


def penalties(positions: np.ndarray, num_classes: int, reach: float | np.ndarray, weight: float,
              cap: float = np.inf) -> np.ndarray:
    """(C, h, w) what each object class loses given where the objects are: `positions` (h, w) class ids on the
    grid (0 or negative: no object); reach: one for all, or (C,) one per class. Background (class 0) and objects
    absent from `positions` lose nothing."""
    reach = np.broadcast_to(np.asarray(reach, np.float64), (num_classes,))
    out = np.zeros((num_classes, *positions.shape), np.float32)
    present = [c for c in range(1, num_classes) if (positions == c).any()]
    if not present:
        return out
    distance = {c: distance_transform_edt(positions != c) for c in present}
    nearest = np.min([distance[c] for c in present], axis=0)
    for cls in present:
        out[cls] = np.minimum(weight * np.maximum(distance[cls] - nearest - reach[cls], 0.0), cap)
    return out


def stroked_regions(labels: np.ndarray, strokes: np.ndarray, nearest: set[int] = frozenset()) -> np.ndarray:
    """labels (h, w) with each connected foreground region (any object, 8-connected) that holds strokes of one
    object only (`strokes` (h, w): object ids > 0) given to that object; a region holding strokes of several
    objects, all in `nearest`, gives each pixel the object of its nearest stroke in it; other regions keep their
    labels."""
    out = labels.copy()
    regions, count = label(labels > 0, structure=np.ones((3, 3)))
    for region in range(1, count + 1):
        inside = regions == region
        stroked = np.unique(strokes[inside & (strokes > 0)])
        if len(stroked) == 1:
            out[inside] = stroked[0]
        elif len(stroked) > 1 and set(stroked.tolist()) <= set(nearest):
            drawn = inside & (strokes > 0)
            _, (rows, cols) = distance_transform_edt(~drawn, return_indices=True)
            out[inside] = strokes[rows[inside], cols[inside]]
    return out


def lookalikes(scores: torch.Tensor, keyframes: np.ndarray, strokes: dict[int, np.ndarray],
               margin: float) -> set[int]:
    """The objects whose own score leads the best other object's by less than `margin` (the median over their
    stroke cells on the scribbled keyframes): objects with a lookalike. An object without strokes is not one."""
    position = {int(f): i for i, f in enumerate(np.asarray(keyframes).tolist())}
    leads: dict[int, list[np.ndarray]] = {}
    for frame, grid in strokes.items():
        if int(frame) not in position:
            continue
        frame_scores, grid = scores[position[int(frame)], 1:].cpu().numpy(), np.asarray(grid)
        for cls in np.unique(grid[(grid > 0) & (grid <= len(frame_scores))]).tolist():
            others = np.delete(frame_scores, cls - 1, axis=0).max(0)
            leads.setdefault(cls, []).append((frame_scores[cls - 1] - others)[grid == cls])
    return {cls for cls, values in leads.items() if np.median(np.concatenate(values)) < margin}


def anchor_frames(strokes: dict[int, np.ndarray]) -> set[int]:
    """The scribbled frames the sweep starts from: those whose strokes hold every object stroked anywhere; without
    such a frame (objects stroked on frames of their own), those holding any object stroke. A correction that strokes
    the background alone, or some of the objects, places the others by appearance only: as an anchor, it carried that
    mix of lookalikes to its neighbours (a background stroke in a corner cost twins 0.1 J)."""
    stroked = {int(f): {int(v) for v in np.unique(np.asarray(g)) if v > 0} for f, g in strokes.items()}
    objects = set().union(*stroked.values())
    complete = {f for f, ids in stroked.items() if ids and ids >= objects}
    return complete or {f for f, ids in stroked.items() if ids}


def separate_objects(scores: torch.Tensor, keyframes: np.ndarray, strokes: dict[int, np.ndarray],
                     config: IdentityConfig) -> torch.Tensor:
    """scores (K, C, h, w) of the sorted `keyframes`, with the choice between objects moved by position (see
    the module docstring); strokes {scribbled frame: (h, w) its labels on the grid, object ids > 0}. Returns
    new scores; C <= 2 or weight 0 returns them as they are."""
    num_classes = scores.shape[1]
    if num_classes <= 2 or config.weight == 0 or config.cap == 0:
        return scores
    out = scores.clone()
    labels: dict[int, np.ndarray] = {}
    # Objects with a lookalike are held to their place (no reach) and split by their strokes where they touch;
    # distinct ones keep the reach, so that appearance decides where they meet.
    alike = lookalikes(scores, keyframes, strokes, config.alike_margin)
    reaching = np.array([0.0] + [0.0 if cls in alike else 1.0 for cls in range(1, num_classes)])
    anchors = anchor_frames(strokes)
    for position, neighbour in sweep_order(keyframes, anchors):
        if neighbour is None:  # an anchor (or, without any, every keyframe on its own)
            where = out[position].argmax(0).cpu().numpy()
            frame_strokes = strokes.get(int(keyframes[position])) if int(keyframes[position]) in anchors else None
            if frame_strokes is not None:
                where = stroked_regions(where, np.asarray(frame_strokes), alike)
            reach = reaching * config.radius
        else:
            gap = abs(int(keyframes[position]) - int(keyframes[neighbour]))
            where, reach = labels[neighbour], reaching * (config.radius + config.speed * gap)
        penalty = torch.from_numpy(penalties(where, num_classes, reach, config.weight, config.cap)).to(out)
        objects = out[position, 1:]
        moved = objects - penalty[1:]
        # shifted so that the best object's score is the transfer's: foreground stays foreground
        out[position, 1:] = moved + (objects.amax(0) - moved.amax(0))
        labels[position] = out[position].argmax(0).cpu().numpy()
    return out
