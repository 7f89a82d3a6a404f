"""Scribbles -> sparse labels: rasterise DAVIS strokes onto a label grid, dilate them, add background.

Label maps use UNLABELED (-1) for unknown pixels, 0 for background and 1..N for objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..config import ScribbleConfig
from ..data.davis import VOID_LABEL, DatasetError, validate_scribbles

UNLABELED = -1
BACKGROUND = 0

log = logging.getLogger(__name__)


def rasterize_scribbles(scribbles: dict, shape: tuple[int, int]) -> dict[int, np.ndarray]:
    """Draw every stroke (normalised [x, y] points, joined by straight segments) of every frame.

    Returns {frame: (H, W) int64 array} for frames that have strokes: the stroke's object_id on the
    stroke (0 for background strokes), UNLABELED elsewhere. Later strokes draw over earlier ones.
    Each segment covers the pixels skimage.draw.line gives it (Bresenham, from the earlier point to the later).
    """
    height, width = shape
    out: dict[int, np.ndarray] = {}
    for frame, strokes in enumerate(scribbles["scribbles"]):
        for stroke in strokes:
            path = np.asarray(stroke["path"], dtype=float).reshape(-1, 2)
            if len(path) == 0:
                continue
            if not ((path >= 0) & (path <= 1)).all():
                raise ValueError(f"frame {frame}: a stroke has a point outside the [0, 1] x [0, 1] frame")
            points = np.stack([_to_cells(path[:, 0], width), _to_cells(path[:, 1], height)], 1)
            canvas = out.setdefault(frame, np.full(shape, UNLABELED, dtype=np.int64))
            canvas[_stroke_pixels(points, (height, width))] = int(stroke["object_id"])
    return out


def _stroke_pixels(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels of the polyline through `points` ((N, 2) integer x, y inside `shape`), each
    segment those of skimage.draw.line from its first point to its second, drawn by OpenCV a batch of segments
    per call (a skimage call per segment took 17 s for 10^6 points scattered at random, under 1 s so).

    Both are Bresenham's line and give the same pixels but where a segment's exact line passes half-way between
    two pixels: skimage takes the one towards the segment's end, OpenCV the one towards its left end point (it
    draws every line left to right). A segment has such a tie iff its major extent over gcd(major, minor) is
    even. So the segments with a tie whose end lies to the right of their start are drawn on a mirrored canvas,
    where their end is on the left, and mirrored back; all the others as they are."""
    height, width = shape
    moved = np.ones(len(points), bool)  # repeated points add nothing (a dense path repeats many)
    moved[1:] = (points[1:] != points[:-1]).any(1)
    points = points[moved]
    drawn = np.zeros(shape, np.uint8)
    drawn[points[0, 1], points[0, 0]] = 1
    if len(points) == 1:
        return drawn.astype(bool)
    start, end = points[:-1], points[1:]
    extent = np.abs(end - start)
    major, minor = extent.max(1), extent.min(1)  # major >= 1: consecutive points differ
    tie = (major // np.gcd(major, minor)) % 2 == 0
    mirror = tie & (end[:, 0] > start[:, 0])
    _draw_runs(drawn, points, ~mirror)
    if mirror.any():
        mirrored = np.zeros(shape, np.uint8)
        _draw_runs(mirrored, np.stack([width - 1 - points[:, 0], points[:, 1]], 1), mirror)
        drawn |= mirrored[:, ::-1]
    return drawn.astype(bool)


def _draw_runs(canvas: np.ndarray, points: np.ndarray, selected: np.ndarray) -> None:
    """Draw with OpenCV (8-connected, 1 pixel) segment i (points[i] to points[i + 1]) for every i `selected`:
    each run of consecutive selected segments as one polyline, runs padded to a power of two of points by
    repeating their last point (a segment of length 0 draws that point again) and drawn in one call per length."""
    if not selected.any():
        return
    edges = np.diff(np.concatenate([[False], selected, [False]]).astype(np.int8))
    first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # run: segments first..last-1
    counts = last - first + 1  # points of each run
    sizes = 1 << np.ceil(np.log2(counts)).astype(np.int64)
    for size in np.unique(sizes):
        runs = sizes == size
        index = first[runs, None] + np.minimum(np.arange(size), counts[runs, None] - 1)
        cv2.polylines(canvas, points[index].astype(np.int32), False, 1, thickness=1, lineType=cv2.LINE_8)


def check_scribbles(
    scribbles: object,
    num_objects: int | None = None,
    num_frames: int | None = None,
    source: str = "scribbles",
) -> None:
    """Raise DatasetError (one line) for malformed scribbles or object ids above num_objects."""
    validate_scribbles(scribbles, source=source, num_frames=num_frames, num_objects=num_objects)


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(v) for v in shape)
    if height < 1 or width < 1:
        raise ValueError(f"label grid shape must be positive, got {shape}")
    return height, width


def dilate_labels(raster: np.ndarray, dilation: int, below: int = 0) -> np.ndarray:
    """Grow a rasterised stroke map with a `dilation x dilation` square.

    Overlaps are resolved so that no evidence is lost and objects are never eaten by background:
      1. stroke pixels keep their rasterised label (where strokes cross, the later stroke won already);
      2. a halo pixel within reach of any object stroke takes the label of the nearest object stroke
         pixel (Euclidean), so two objects' halos split down the middle;
      3. remaining halo pixels within reach of a background stroke become background.
    Use an odd `dilation` to keep halos centred on the stroke (1 = no dilation). `below` > 0: only the classes
    whose strokes hold fewer than `below` pixels of the map are dilated (the others are left as drawn).
    """
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    if below < 0:
        raise ValueError(f"below must be >= 0, got {below}")
    out = raster.copy()
    if dilation == 1:
        return out
    grown = raster != UNLABELED
    if below:
        classes, counts = np.unique(raster[grown], return_counts=True)
        grown &= np.isin(raster, classes[counts < below])
    structure = np.ones((dilation, dilation), dtype=bool)
    objects = grown & (raster > BACKGROUND)
    if objects.any():
        halo = ndimage.binary_dilation(objects, structure) & (raster == UNLABELED)
        # Indices of the nearest object pixel for every pixel: halo pixels copy its label.
        _, (rows, cols) = ndimage.distance_transform_edt(~objects, return_indices=True)
        out[halo] = raster[rows[halo], cols[halo]]
    background = grown & (raster == BACKGROUND)
    if background.any():
        halo = ndimage.binary_dilation(background, structure) & (out == UNLABELED)
        out[halo] = BACKGROUND
    return out


def scribble_labels(
    scribbles: dict,
    shape: tuple[int, int],
    dilation: int,
    num_objects: int | None = None,
    num_frames: int | None = None,
    below: int = 0,
) -> dict[int, np.ndarray]:
    """Validated, rasterised at `shape` and dilated (see dilate_labels): {frame: (h, w) int64}."""
    return {frame: dilated for frame, (dilated, _) in
            _scribble_rasters(scribbles, shape, dilation, num_objects, num_frames, below).items()}


def _scribble_rasters(scribbles: dict, shape: tuple[int, int], dilation: int, num_objects: int | None,
                      num_frames: int | None, below: int = 0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """scribble_labels, with each frame's undilated raster beside its dilated one."""
    check_scribbles(scribbles, num_objects=num_objects, num_frames=num_frames)
    shape = _check_shape(shape)
    return {frame: (dilate_labels(raster, dilation, below), raster)
            for frame, raster in rasterize_scribbles(scribbles, shape).items()}


def narrow_stroke_cells(scribbles: dict, previous: np.ndarray, grid: tuple[int, int],
                        reach: float) -> dict[int, np.ndarray]:
    """{frame: (h, w) bool} for each stroked frame: the grid cells whose stroke pixels all lie within `reach` grid
    cells of where `previous` ((T, H, W) the last round's labels) already gave the stroke's class. Such a stroke
    runs along an error strip narrower than a cell, so its cells also hold what lies beyond the strip (the
    tyres beside a car's shadow): weighted like the rest of a correction, they win the neighbours' top-k.
    Cells without a stroke pixel at full size are False. `scribbles` must be valid (check_scribbles)."""
    previous = np.asarray(previous)
    shape = previous.shape[1:]
    limit = reach * shape[0] / grid[0]
    out = {}
    for frame, strokes in rasterize_scribbles(scribbles, shape).items():
        distance = np.zeros(shape, np.float32)
        for cls in np.unique(strokes[strokes != UNLABELED]).tolist():
            drawn, given = strokes == cls, previous[frame] == cls
            # A class the last round gave nowhere on this frame: no strip, never narrow.
            distance[drawn] = ndimage.distance_transform_edt(~given)[drawn] if given.any() else np.inf
        # Each cell's farthest stroke pixel, a pixel going to the cell rasterize_scribbles draws its point in.
        rows, cols = np.nonzero(strokes != UNLABELED)
        farthest = np.full(grid, -1.0, np.float32)  # -1: no stroke pixel
        np.maximum.at(farthest, (_to_grid(rows, shape[0], grid[0]), _to_grid(cols, shape[1], grid[1])),
                      distance[rows, cols])
        out[frame] = (farthest >= 0) & (farthest <= limit)
    return out


def _to_cells(coordinate: np.ndarray, cells: int) -> np.ndarray:
    """Normalised [0, 1] coordinates -> the cells (pixels) of a side of `cells` they fall in. The robot writes
    pixel p of a side of n as p / n: this gives back p at full size, and on a coarser grid the cell holding
    that pixel, the cell whose centre the scores' bilinear upsampling puts nearest it. (Scaling by the side
    minus one and rounding moved points half a cell towards the frame's centre near its edges, and pixels
    right of or below the middle one pixel up or left.) The nudge absorbs p / n * n falling just below p."""
    return np.clip(np.floor(coordinate * cells + 1e-6), 0, cells - 1).astype(np.int64)


def _to_grid(index: np.ndarray, size: int, cells: int) -> np.ndarray:
    """Pixel rows (or columns) of a `size`-pixel frame -> the cells of a `cells`-cell grid that a normalised point
    there lands in (rasterize_scribbles, a pixel p being the point p / size)."""
    return _to_cells(index / size, cells)


def far_background(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Pixels farther than `fraction` x image diagonal from every object pixel (all False without objects)."""
    if fraction < 0:
        raise ValueError(f"far-background fraction must be >= 0, got {fraction}")
    objects = labels > BACKGROUND
    if not objects.any():
        return np.zeros(labels.shape, dtype=bool)
    height, width = labels.shape
    distance = ndimage.distance_transform_edt(~objects)
    return distance > fraction * float(np.hypot(height, width))


def least_similar_background(
    object_similarity: np.ndarray, labels: np.ndarray, fraction: float
) -> np.ndarray:
    """The `fraction` of the unlabeled pixels with the lowest object similarity (labelled pixels never)."""
    if object_similarity.shape != labels.shape:
        raise ValueError(f"similarity shape {object_similarity.shape} != label shape {labels.shape}")
    if not 0 <= fraction <= 1:
        raise ValueError(f"least-similar fraction must be in [0, 1], got {fraction}")
    candidates = np.flatnonzero(labels.ravel() == UNLABELED)
    count = int(round(fraction * candidates.size))
    mask = np.zeros(labels.size, dtype=bool)
    if count:
        # Stable sort: ties resolve by pixel order, so the result is deterministic; NaN sorts last.
        order = np.argsort(object_similarity.ravel()[candidates], kind="stable")
        mask[candidates[order[:count]]] = True
    return mask.reshape(labels.shape)


class ScribbleMemory:
    """Every round's scribbles of one sample as sparse label maps on the embedding grid.

    A newer stroke (with its dilation halo) overrides older labels where it lands; elsewhere old labels
    stay. Far-away background is derived on read, so it always reflects all object strokes so far.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        config: ScribbleConfig | None = None,
        num_objects: int | None = None,
        num_frames: int | None = None,
    ) -> None:
        self.shape = _check_shape(shape)
        self.config = config or ScribbleConfig()
        self.num_objects = num_objects
        self.num_frames = num_frames
        self.rounds = 0
        self._labels: dict[int, np.ndarray] = {}
        self._first_round: dict[int, int] = {}  # frame -> the round that first scribbled it
        self._stroked: dict[int, set[int]] = {}  # frame -> the object ids stroked there, any round (not painted over)
        self._strokes: dict[int, np.ndarray] = {}  # frame -> (h, w) int64: the strokes undilated, the latest on top
        self.drawn_ids: set[int] = set()  # every object id any round drew, painted over since or not
        self.new_objects: set[int] = set()  # the object ids the latest round stroked first
        self._corrected: dict[int, np.ndarray] = {}  # frame -> (h, w) bool: labelled by a round after the first
        self._confirmed: dict[int, np.ndarray] = {}  # frame -> (h, w) int64: see confirm()
        self._painted: dict[int, np.ndarray] = {}  # frame -> (h, w) bool: the cells the latest round drew
        self._narrow: dict[int, np.ndarray] = {}  # frame -> (h, w) bool: see mark_narrow()
        self._halo: dict[int, np.ndarray] = {}  # frame -> (h, w) bool: dilation cells not yet settled (settle_halo)

    def add(self, scribbles: dict, require_object: bool = False,
            check_ids: Callable[[set[int]], None] | None = None) -> list[int]:
        """Merge one interaction's scribbles; returns the frames it touched (sorted). require_object: refuse
        them while no object stroke exists, here or before (a first round of background alone). check_ids: called
        with the object ids the memory would hold, before it changes (it may raise to refuse the round)."""
        # Validates everything before touching memory, so a bad round leaves it unchanged.
        rasters = _scribble_rasters(scribbles, self.shape, self.dilation(), self.num_objects, self.num_frames,
                                    self.config.dilate_below)
        new = {frame: dilated for frame, (dilated, _) in rasters.items()}
        if require_object and not self.object_ids() and not any((labels > BACKGROUND).any() for labels in new.values()):
            if any(stroke["object_id"] > BACKGROUND and len(stroke["path"]) for strokes in scribbles["scribbles"]
                   for stroke in strokes):  # drawn, then painted over: "no object stroke" named none of that
                raise DatasetError(f"scribbles: every object stroke lies under a later background stroke on the "
                                   f"{self.shape[0]}x{self.shape[1]} label grid; the first round needs an object "
                                   "stroke apart from the background ones (or drawn after them)")
            raise DatasetError("scribbles: no object stroke yet: the first round needs at least one stroke with "
                               "object_id >= 1")
        if check_ids is not None:
            check_ids(self.object_ids() | {int(v) for labels in new.values() for v in np.unique(labels) if v > BACKGROUND})
        self._painted = {}
        known = self.object_ids()
        for frame, fresh in new.items():
            self._stroked.setdefault(frame, set()).update(int(v) for v in np.unique(fresh) if v > BACKGROUND)
        self.new_objects = set().union(*self._stroked.values()) - known
        self.drawn_ids |= set().union(*self._stroked.values())
        for frame, fresh in new.items():
            painted = fresh != UNLABELED
            self._painted[frame] = painted
            self._narrow.setdefault(frame, np.zeros(self.shape, bool))[painted] = False
            merged = self._labels.get(frame)
            if merged is None:
                self._labels[frame] = fresh
                self._first_round[frame] = self.rounds + 1
            else:
                merged[painted] = fresh[painted]
            corrected = self._corrected.setdefault(frame, np.zeros(self.shape, bool))
            corrected[painted] = self.rounds > 0  # a round-1 stroke repainting a cell is not a correction
            halo = self._halo.setdefault(frame, np.zeros(self.shape, bool))
            halo[painted] = rasters[frame][1][painted] == UNLABELED
            self._drop_orphaned_halo(frame, rasters[frame][1])
        self.rounds += 1
        log.debug("scribble round %d: frames %s", self.rounds, sorted(new))
        return sorted(new)

    def _drop_orphaned_halo(self, frame: int, raster: np.ndarray) -> None:
        """Merge a round's undilated `raster` of `frame` into its strokes. An object whose every stroke pixel on the
        frame a later round painted over loses its dilation cells there too: each takes what now lies on the nearest
        of the object's former stroke pixels (what the strokes played as one round give them). They kept the object,
        which then stayed where a correction erased it (3 objects, object 3's strokes painted over with background in
        round 2: 4,397 pixels of it left, none when the same strokes were one round, as in chunks)."""
        before = self._strokes.get(frame)
        if before is None:
            self._strokes[frame] = raster.copy()
            return
        after = before.copy()
        drawn = raster != UNLABELED
        after[drawn] = raster[drawn]
        self._strokes[frame] = after
        labels = self._labels[frame]
        for cls in sorted(set(np.unique(before[before > BACKGROUND]).tolist())
                          - set(np.unique(after[after > BACKGROUND]).tolist())):
            cells = labels == cls
            if cells.any():
                _, (rows, cols) = ndimage.distance_transform_edt(before != cls, return_indices=True)
                labels[cells] = after[rows[cells], cols[cells]]
            self._stroked[frame].discard(cls)

    def confirm(self, frame: int, predicted: np.ndarray) -> None:
        """Take the last round's labels of a frame just corrected (`predicted`: (h, w) class ids on the grid, -1
        where no class holds most of a cell; labels_on_grid) as the annotator's wherever they drew nothing near:
        farther than config.confirmed_distance cells from every stroke on the frame, config.confirmed_erosion cells
        inside the label's region, background only within config.confirmed_background_band cells of an object.
        In labels() they take every cell no stroke holds, derived background's too; a later correction of the
        frame confirms its newer labels instead. Without it, a stroke drawn along the object's lower edge could
        turn the rest of the object, never marked, into background on that very frame (car-shadow, docs/METHOD.md)."""
        self._require_frame(frame)
        predicted = np.asarray(predicted)
        if predicted.shape != self.shape:
            raise ValueError(f"predicted labels {predicted.shape} != label grid {self.shape}")
        config = self.config
        far = ndimage.distance_transform_edt(self._labels[frame] == UNLABELED) > config.confirmed_distance
        objects = predicted > BACKGROUND
        near_object = np.zeros(self.shape, bool)
        if config.confirmed_background_band and objects.any():
            near_object = ndimage.distance_transform_edt(~objects) <= config.confirmed_background_band
        out = np.full(self.shape, UNLABELED, np.int64)
        for cls in np.unique(predicted[predicted >= 0]).tolist():
            region = predicted == cls
            if config.confirmed_erosion:
                region = ndimage.binary_erosion(region, iterations=config.confirmed_erosion)
            if cls == BACKGROUND:
                region &= near_object
            out[region & far] = cls
        self._confirmed[frame] = out

    def halo(self, frame: int) -> np.ndarray:
        """(h, w) bool: the cells of `frame` that only a stroke's dilation labelled, not yet settled (a copy)."""
        self._require_frame(frame)
        return self._halo[frame].copy()

    def settle_halo(self, frame: int, keep: np.ndarray) -> None:
        """Of the frame's unsettled halo cells, keep the label of those `keep` ((h, w) bool) marks; the rest are
        unlabelled again. Every halo cell of the frame is settled then."""
        self._require_frame(frame)
        halo = self._halo[frame]
        keep = np.asarray(keep, bool)
        if keep.shape != self.shape:
            raise ValueError(f"kept halo cells {keep.shape} != label grid {self.shape}")
        drop = halo & ~keep
        self._labels[frame][drop] = UNLABELED
        self._corrected[frame][drop] = False
        if frame in self._painted:
            self._painted[frame][drop] = False
        halo[:] = False

    def mark_narrow(self, narrow: dict[int, np.ndarray]) -> None:
        """Of the cells the latest round drew, those `narrow` ({frame: (h, w) bool}, narrow_stroke_cells) marks
        run along an error strip narrower than a cell; until a later stroke paints them again."""
        for frame, cells in narrow.items():
            painted = self._painted.get(frame)
            if painted is None:
                raise KeyError(f"frame {frame} was not stroked in the latest round (stroked: {sorted(self._painted)})")
            cells = np.asarray(cells, bool)
            if cells.shape != self.shape:
                raise ValueError(f"narrow cells {cells.shape} != label grid {self.shape}")
            self._narrow[frame][painted] = cells[painted]

    def narrow_cells(self, frame: int) -> np.ndarray:
        """(h, w) bool: the frame's stroke cells mark_narrow marked, as their latest stroke left them (a copy)."""
        self._require_frame(frame)
        return self._narrow[frame].copy()

    def confirmed(self, frame: int) -> np.ndarray | None:
        """(h, w) int64 the frame's confirmed labels (see confirm; a copy), None if it has none."""
        self._require_frame(frame)
        found = self._confirmed.get(frame)
        return None if found is None else found.copy()

    def dilation(self) -> int:
        """The kernel side for the next round's strokes: `dilation` in the first round, then
        `correction_dilation` (0: the same)."""
        if self.rounds and self.config.correction_dilation:
            return self.config.correction_dilation
        return self.config.dilation

    def frames(self) -> list[int]:
        return sorted(self._labels)

    def _require_frame(self, frame: int) -> None:
        if frame not in self._labels:
            raise KeyError(f"frame {frame} has no scribbles (scribbled frames: {self.frames()})")

    def correction_cells(self, frame: int) -> np.ndarray:
        """(h, w) bool: the cells of `frame` whose label a round after the first drew (a copy)."""
        self._require_frame(frame)
        return self._corrected[frame].copy()

    def raw_labels(self, frame: int) -> np.ndarray:
        """The dilated strokes alone, without derived background (a copy)."""
        self._require_frame(frame)
        return self._labels[frame].copy()

    def labels(
        self, frame: int, object_similarity: np.ndarray | None = None, predicted_objects: np.ndarray | None = None,
        halo: bool = True,
    ) -> np.ndarray:
        """(h, w) int64 labels of a scribbled frame, with far-away background on unlabeled pixels.

        With `object_similarity` (h, w) and no background label yet (first human round), the least
        object-similar unlabeled pixels become background too. "No background label" means no background
        stroke when `config.least_similar_until_stroke`, else no background of any kind (far-away included).
        With `predicted_objects` (h, w) bool, the previous round's object pixels on this frame, and
        `config.spare_predicted_objects`, none of them becomes derived background (strokes still apply).
        Confirmed labels (confirm()) then take every cell no stroke holds. `halo` False: the unsettled halo cells
        (settle_halo) are unlabelled, as if the strokes had not been dilated.
        """
        self._require_frame(frame)
        raw = self._labels[frame]  # read only: the strokes, to tell them from derived background
        if not halo:
            raw = np.where(self._halo[frame], UNLABELED, raw)
        out = raw.copy()
        # Far from this frame's strokes is no background where an object stroked on another frame may be.
        if self.derives_background(frame) and not self.missing_objects(frame):
            out[far_background(out, self.config.far_background_fraction) & (out == UNLABELED)] = BACKGROUND
        if object_similarity is not None and self.needs_least_similar() and self.derives_background(frame):
            out[least_similar_background(object_similarity, out, self.config.least_similar_fraction)] = (
                BACKGROUND
            )
        if predicted_objects is not None and self.config.spare_predicted_objects:
            if predicted_objects.shape != out.shape:
                raise ValueError(f"predicted objects {predicted_objects.shape} != label grid {out.shape}")
            out[(out == BACKGROUND) & (raw != BACKGROUND) & predicted_objects] = UNLABELED
        confirmed = self._confirmed.get(frame)
        if confirmed is not None:  # over derived background: the annotator saw these labels and left them
            fill = (raw == UNLABELED) & (confirmed != UNLABELED)
            out[fill] = confirmed[fill]
        return out

    def derives_background(self, frame: int) -> bool:
        """Whether `frame` gets derived background (far-away, least-similar): every scribbled frame, or
        (config.derived_background_frames "first-round") only frames scribbled in the first round, where the
        strokes mark whole objects; a later correction stroke marks only the part of an object a mask missed,
        and the rest of the object may lie far from it, or look unlike it."""
        return self.config.derived_background_frames == "all" or self._first_round.get(frame) == 1

    def missing_objects(self, frame: int) -> set[int]:
        """The objects stroked on other frames but never on `frame`, one that derives background (an object that
        enters the video later, stroked on its own frame, or one added in a later round): they may be anywhere on
        `frame`, unstroked. Far-away background is not derived there, and the least-similar background is
        measured against their strokes too (it took the unstroked object for background: an object stroked on
        frame 0, another on frame 2 where both show, and the first was background on frame 2 and lost on every
        frame, J 0; a second object added in round 2 never showed, even on the frame it was stroked on)."""
        if frame not in self._stroked or not self.derives_background(frame):
            return set()
        return set().union(*self._stroked.values()) - self._stroked[frame]

    def object_frames(self, objects: set[int]) -> list[int]:
        """The frames whose strokes hold any of `objects`."""
        return [frame for frame, raw in sorted(self._labels.items()) if np.isin(raw, list(objects)).any()]

    def needs_least_similar(self) -> bool:
        """Whether the least-similar background applies (see `labels`)."""
        if self.config.least_similar_until_stroke:
            return not self.has_background_strokes()
        return not self.has_background()

    def has_background_strokes(self) -> bool:
        return any((raw == BACKGROUND).any() for raw in self._labels.values())

    def has_background(self) -> bool:
        """Whether any frame has a background label (strokes or far-away background)."""
        fraction = self.config.far_background_fraction
        return any(
            (raw == BACKGROUND).any() or (self.derives_background(frame) and not self.missing_objects(frame)
                                          and far_background(raw, fraction).any())
            for frame, raw in self._labels.items()
        )

    def object_ids(self) -> set[int]:
        ids: set[int] = set()
        for raw in self._labels.values():
            ids.update(int(v) for v in np.unique(raw) if v > BACKGROUND)
        return ids

    def __len__(self) -> int:
        return len(self._labels)


def objects_on_grid(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) predicted labels -> (h, w) bool: grid cells whose area is more than half object (any id > 0)."""
    objects = torch.from_numpy(np.asarray(labels) > BACKGROUND)[None, None].float()
    return (F.interpolate(objects, size=size, mode="area")[0, 0] > 0.5).numpy()


def labels_on_grid(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) predicted class ids -> (h, w) int64: each grid cell's class where it holds more than half the cell's
    area, UNLABELED where none does."""
    ids = torch.from_numpy(np.asarray(labels).astype(np.int64))
    share = F.interpolate(F.one_hot(ids, int(ids.max()) + 1).permute(2, 0, 1)[None].float(), size=size,
                          mode="area")[0]
    best, cls = share.max(0)
    return torch.where(best > 0.5, cls, UNLABELED).numpy()


def grid_labels(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """A full-size (H, W) mask -> (h, w) int64 labels on the embedding grid, each cell's centre pixel; void -> -1.

    The centre, as the bilinear upsampling of scores back to full size assumes (align_corners=False): the cell's
    top-left pixel ("nearest") put every reference label half a cell up and left of its embedding, and the
    transferred masks as far down and right."""
    labels = torch.from_numpy(mask.astype(np.int64))[None, None].float()
    small = F.interpolate(labels, size=size, mode="nearest-exact")[0, 0].long()
    small[small == VOID_LABEL] = UNLABELED
    return small
