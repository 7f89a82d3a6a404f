"""Scribbles -> sparse grid labels: rasterisation, dilation, overlaps, derived background, memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.draw import line

from agent.config import ConfigError, ScribbleConfig, TransferConfig
from agent.data.davis import DatasetError
from agent.inference.scribbles import (
    UNLABELED,
    ScribbleMemory,
    far_background,
    grid_labels,
    labels_on_grid,
    least_similar_background,
    narrow_stroke_cells,
    objects_on_grid,
    rasterize_scribbles,
    scribble_labels,
)

SHAPE = (10, 20)  # rows 0..9, cols 0..19: x = col / 19, y = row / 9 lands exactly on a pixel


def stroke(points: list[tuple[int, int]], object_id: int) -> dict:
    """A stroke through (row, col) grid points of SHAPE, in DAVIS normalised [x, y]."""
    return {
        "path": [[col / (SHAPE[1] - 1), row / (SHAPE[0] - 1)] for row, col in points],
        "object_id": object_id,
    }


def on_pixels(path: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, 2) normalised [x, y] -> the integer [x, y] pixels of `shape` they fall in (point p / n is pixel p)."""
    return np.clip(np.floor(path * [shape[1], shape[0]] + 1e-6), 0, [shape[1] - 1, shape[0] - 1]).astype(int)


def scribbles(*frames: list[dict]) -> dict:
    return {"sequence": "toy", "scribbles": list(frames)}


def test_rasterize_horizontal_line_exact_pixels() -> None:
    out = rasterize_scribbles(scribbles([], [stroke([(3, 2), (3, 8)], 1)]), SHAPE)
    assert list(out) == [1]
    expected = np.full(SHAPE, UNLABELED, np.int64)
    expected[3, 2:9] = 1
    np.testing.assert_array_equal(out[1], expected)
    assert out[1].dtype == np.int64


def test_dilation_grows_a_square_around_the_line() -> None:
    labels = scribble_labels(scribbles([stroke([(3, 2), (3, 8)], 1)]), SHAPE, dilation=3)
    expected = np.full(SHAPE, UNLABELED, np.int64)
    expected[2:5, 1:10] = 1
    np.testing.assert_array_equal(labels[0], expected)


def test_dilation_one_is_the_raw_raster() -> None:
    data = scribbles([stroke([(0, 0), (9, 19)], 2)])
    np.testing.assert_array_equal(scribble_labels(data, SHAPE, 1)[0], rasterize_scribbles(data, SHAPE)[0])


def test_background_stroke_is_dilated_too() -> None:
    labels = scribble_labels(scribbles([stroke([(5, 10)], 0)]), SHAPE, dilation=3)[0]
    assert (labels == 0).sum() == 9
    assert (labels[4:7, 9:12] == 0).all()


def test_only_classes_with_fewer_stroke_cells_than_below_are_dilated() -> None:
    # Object 1 (row 3, 18 cells) and background (row 9, 20 cells) are long, object 2 (row 5, 3 cells) short.
    data = scribbles([stroke([(3, 1), (3, 18)], 1), stroke([(5, 3), (5, 5)], 2), stroke([(9, 0), (9, 19)], 0)])
    labels = scribble_labels(data, SHAPE, dilation=3, below=10)[0]
    raw = rasterize_scribbles(data, SHAPE)[0]
    long = np.isin(raw, [0, 1])
    np.testing.assert_array_equal(labels[long], raw[long])
    assert (labels[4:7, 2:7] == 2).all()  # object 2's halo, row 4 too although object 1's stroke touches it
    assert (labels[2] == UNLABELED).all() and (labels[8] == UNLABELED).all()  # no halo of the long strokes
    assert (labels[4, 7:] == UNLABELED).all()
    np.testing.assert_array_equal(scribble_labels(data, SHAPE, dilation=3, below=0)[0],
                                  scribble_labels(data, SHAPE, dilation=3)[0])  # 0: every class dilated


def test_memory_leaves_a_long_first_stroke_undilated() -> None:
    shape = (20, 240)  # cells: a stroke along a row holds as many as it spans
    def row_stroke(row: int, first: int, last: int, object_id: int) -> dict:
        return {"path": [[first / 239, row / 19], [last / 239, row / 19]], "object_id": object_id}
    data = scribbles([row_stroke(5, 10, 130, 1), row_stroke(15, 10, 40, 2)])  # 121 and 31 cells
    memory = ScribbleMemory(shape, ScribbleConfig(dilation=3, dilate_below=100))
    memory.add(data)
    labels = memory.raw_labels(0)
    assert (labels == 1).sum() == 121 and (labels[4] == UNLABELED).all() and (labels[6] == UNLABELED).all()
    assert (labels == 2).sum() == 3 * 33
    always = ScribbleMemory(shape, ScribbleConfig(dilation=3, dilate_below=0))
    always.add(data)
    assert (always.raw_labels(0) == 1).sum() == 3 * 123
    with pytest.raises(ConfigError, match=r"scribbles.dilate_below must be >= 0"):
        ScribbleConfig(dilate_below=-1)


def test_two_object_halos_split_by_nearest_stroke() -> None:
    data = scribbles([stroke([(2, 3), (2, 15)], 1), stroke([(5, 3), (5, 15)], 2)])
    labels = scribble_labels(data, SHAPE, dilation=5)[0]
    column = labels[:, 9]
    np.testing.assert_array_equal(column, [1, 1, 1, 1, 2, 2, 2, 2, UNLABELED, UNLABELED])


def test_object_halo_beats_background_halo_and_later_stroke_wins_on_its_pixels() -> None:
    # Object 1 vertical at col 5, then a background stroke across it along row 4.
    data = scribbles([stroke([(0, 5), (9, 5)], 1), stroke([(4, 0), (4, 19)], 0)])
    labels = scribble_labels(data, SHAPE, dilation=3)[0]
    assert labels[4, 5] == 0  # both strokes' pixel: the later (background) stroke drew last
    assert labels[3, 4] == 1 and labels[5, 6] == 1  # in both halos: the object wins
    assert labels[3, 10] == 0 and labels[5, 10] == 0  # background halo away from the object
    assert labels[2, 10] == UNLABELED
    assert labels[0, 4] == 1 and labels[9, 6] == 1


def test_far_background_on_known_layout() -> None:
    labels = np.full((100, 100), UNLABELED, np.int64)
    labels[0, 0] = 3
    far = far_background(labels, 0.5)
    rows, cols = np.mgrid[:100, :100]
    np.testing.assert_array_equal(far, np.hypot(rows, cols) > 0.5 * np.hypot(100, 100))
    assert not far[70, 0] and far[71, 0] and far[50, 51] and not far[0, 0]


def test_far_background_needs_an_object() -> None:
    labels = np.full((8, 8), UNLABELED, np.int64)
    labels[0, 0] = 0  # a background stroke alone says nothing about distance to objects
    assert not far_background(labels, 0.01).any()


def test_least_similar_background_picks_lowest_unlabeled() -> None:
    labels = np.full((4, 5), UNLABELED, np.int64)
    labels[0] = 1  # the five lowest similarities are labelled and must stay untouched
    similarity = np.arange(20, dtype=float).reshape(4, 5)
    mask = least_similar_background(similarity, labels, 0.2)  # 0.2 x 15 unlabeled = 3 pixels
    assert np.flatnonzero(mask).tolist() == [5, 6, 7]
    mask = least_similar_background(-similarity, labels, 0.2)
    assert np.flatnonzero(mask).tolist() == [17, 18, 19]
    assert not least_similar_background(similarity, labels, 0.0).any()
    with pytest.raises(ValueError):
        least_similar_background(similarity[:3], labels, 0.2)


def test_memory_accumulates_two_rounds() -> None:
    config = ScribbleConfig(dilation=3, correction_dilation=3, far_background_fraction=1.0,
                            least_similar_fraction=0.5)
    memory = ScribbleMemory(SHAPE, config, num_objects=2, num_frames=3)
    touched = memory.add(scribbles([stroke([(3, 2), (3, 8)], 1)], [], [stroke([(6, 6), (6, 12)], 2)]))
    assert touched == [0, 2] and memory.frames() == [0, 2]
    assert memory.object_ids() == {1, 2}
    assert not memory.has_background()  # far_background_fraction 1.0: nothing is that far

    similarity = np.tile(np.arange(SHAPE[1], dtype=float), (SHAPE[0], 1))  # low on the left
    first = memory.labels(0, similarity)
    unlabeled_before = (memory.raw_labels(0) == UNLABELED).sum()
    assert (first == 0).sum() == round(0.5 * unlabeled_before)
    assert (first[:, 0][first[:, 0] != 1] == 0).all()  # leftmost column is least similar
    assert (first[2:5, 1:10] == 1).all()  # object pixels never overridden
    assert (memory.labels(0) == 0).sum() == 0  # without similarity: no background invented

    # Round 2: object 2 crosses object 1's stroke, a background stroke, and a new frame.
    memory.add(
        scribbles([stroke([(0, 5), (9, 5)], 2), stroke([(8, 15), (8, 19)], 0)], [stroke([(1, 1)], 1)], [])
    )
    assert memory.frames() == [0, 1, 2]
    labels = memory.labels(0, similarity)
    assert labels[3, 5] == 2 and labels[3, 4] == 2  # the newer stroke and its halo override object 1
    assert labels[3, 8] == 1  # the rest of object 1 survives
    assert labels[8, 17] == 0
    assert memory.has_background()
    assert (labels == 0).sum() == (memory.raw_labels(0) == 0).sum()  # least-similar bg no longer added
    assert memory.rounds == 2 and len(memory) == 3


def test_correction_strokes_take_their_own_dilation() -> None:
    """Round 1 dilates with `dilation`, later rounds with `correction_dilation` (0: the same)."""
    memory = ScribbleMemory(SHAPE, ScribbleConfig(dilation=3, correction_dilation=1), num_frames=2)
    first = scribbles([stroke([(3, 2), (3, 8)], 1)], [])
    second = scribbles([], [stroke([(6, 2), (6, 8)], 0)])
    memory.add(first)
    memory.add(second)
    np.testing.assert_array_equal(memory.raw_labels(0), scribble_labels(first, SHAPE, 3)[0])
    np.testing.assert_array_equal(memory.raw_labels(1), rasterize_scribbles(second, SHAPE)[1])
    assert ScribbleConfig().correction_dilation == 1  # the default: corrections undilated
    same = ScribbleMemory(SHAPE, ScribbleConfig(dilation=3, correction_dilation=0), num_frames=2)  # 0: as round 1
    same.add(first)
    same.add(second)
    np.testing.assert_array_equal(same.raw_labels(1), scribble_labels(second, SHAPE, 3)[1])
    with pytest.raises(ValueError, match="correction_dilation"):
        ScribbleConfig(correction_dilation=-1)


def test_memory_far_background_applies_on_read() -> None:
    memory = ScribbleMemory(SHAPE, ScribbleConfig(dilation=1, far_background_fraction=0.25))
    memory.add(scribbles([stroke([(0, 0)], 1)]))
    labels = memory.labels(0)
    diagonal = np.hypot(*SHAPE)
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    np.testing.assert_array_equal(labels == 0, np.hypot(rows, cols) > 0.25 * diagonal)
    assert labels[0, 0] == 1 and memory.has_background()
    with pytest.raises(KeyError):
        memory.labels(5)


def test_derived_background_spares_the_predicted_objects() -> None:
    """A short object stroke on part of a large predicted object: far-away background must not cover the
    rest of it, but background strokes still apply there."""
    config = ScribbleConfig(dilation=1, far_background_fraction=0.25, spare_predicted_objects=True)
    memory = ScribbleMemory(SHAPE, config, num_frames=1)
    memory.add(scribbles([stroke([(0, 0)], 1), stroke([(9, 19)], 0)]))
    predicted = np.zeros(SHAPE, bool)
    predicted[:, 10:] = True  # the object as the previous round saw it, far from the stroke
    plain = memory.labels(0)
    spared = memory.labels(0, predicted_objects=predicted)
    assert (plain[:, 10:] == 0).sum() > 40
    assert spared[9, 19] == 0  # the background stroke stays
    assert ((spared[:, 10:] == 0).sum(), spared[0, 0]) == (1, 1)
    np.testing.assert_array_equal(spared[:, :10], plain[:, :10])  # elsewhere unchanged
    off = ScribbleMemory(SHAPE, ScribbleConfig(dilation=1, far_background_fraction=0.25,
                                               spare_predicted_objects=False), num_frames=1)
    off.add(scribbles([stroke([(0, 0)], 1), stroke([(9, 19)], 0)]))
    np.testing.assert_array_equal(off.labels(0, predicted_objects=predicted), plain)
    with pytest.raises(ValueError, match="label grid"):
        memory.labels(0, predicted_objects=predicted[:5])


def test_objects_on_grid_takes_the_majority_of_each_cell() -> None:
    labels = np.zeros((8, 8), np.int64)
    labels[:4, :4] = 2  # a whole cell of object 2
    labels[4:, 4:6] = 1  # half a cell: not a majority
    labels[4:, :3] = 1  # three quarters of a cell
    np.testing.assert_array_equal(objects_on_grid(labels, (2, 2)), [[True, False], [True, False]])


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([1, 2], "expected a dict"),
        ({"scribbles": [[{"path": [[0.5, 1.5]], "object_id": 1}]]}, "outside [0, 1]"),
        ({"scribbles": [[{"path": [0.5, 0.5], "object_id": 1}]]}, "not a list of [x, y] points"),
        ({"scribbles": [[{"object_id": 1}]]}, "without 'path'"),
        ({"scribbles": [[{"path": [[0.5, 0.5]], "object_id": 3}]]}, "object_id 3"),
        ({"scribbles": [[], []]}, "the video has 1"),
    ],
)
def test_malformed_scribbles_raise_dataset_error(data: object, fragment: str) -> None:
    memory = ScribbleMemory(SHAPE, num_objects=2, num_frames=1)
    with pytest.raises(DatasetError) as error:
        memory.add(data)  # type: ignore[arg-type]
    message = str(error.value)
    assert fragment in message and "\n" not in message
    assert memory.frames() == [] and memory.rounds == 0


def test_bad_round_leaves_memory_unchanged() -> None:
    memory = ScribbleMemory(SHAPE, num_objects=1)
    memory.add(scribbles([stroke([(3, 2), (3, 8)], 1)]))
    before = memory.raw_labels(0)
    with pytest.raises(DatasetError):
        memory.add(scribbles([stroke([(0, 0), (9, 19)], 1), stroke([(5, 5)], 2)]))
    np.testing.assert_array_equal(memory.raw_labels(0), before)
    with pytest.raises(ValueError):
        scribble_labels(scribbles([stroke([(0, 0)], 1)]), SHAPE, dilation=0)


def test_correction_cells_are_those_a_later_round_drew() -> None:
    memory = ScribbleMemory(SHAPE, ScribbleConfig(dilation=1), num_frames=2)
    memory.add(scribbles([stroke([(3, 2), (3, 8)], 1)], []))
    assert not memory.correction_cells(0).any()
    memory.add(scribbles([stroke([(3, 8), (6, 8)], 0)], [stroke([(1, 1)], 1)]))
    expected = np.zeros(SHAPE, bool)
    expected[3:7, 8] = True
    np.testing.assert_array_equal(memory.correction_cells(0), expected)
    assert memory.correction_cells(1)[1, 1] and memory.correction_cells(1).sum() == 1
    with pytest.raises(KeyError):
        memory.correction_cells(5)
    with pytest.raises(ValueError, match="correction_weight"):
        TransferConfig(correction_weight=0)


def test_dense_paths_draw_what_every_segment_draws():
    """A painted path repeats points and segments many times on the grid: each is drawn once, and the raster
    is the one of drawing every segment in turn."""
    rng = np.random.default_rng(0)
    steps = rng.normal(scale=0.002, size=(20000, 2)).cumsum(0)
    path = np.clip(0.5 + steps, 0, 1)
    path = np.concatenate([path, path[::-1], path[:50]])  # back over the same path: repeated segments
    shape = (24, 40)
    raster = rasterize_scribbles({"scribbles": [[{"path": path.tolist(), "object_id": 2}]]}, shape)[0]
    points = on_pixels(path, shape)
    expected = np.full(shape, UNLABELED)
    expected[points[0, 1], points[0, 0]] = 2
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        expected[line(y0, x0, y1, x1)] = 2
    np.testing.assert_array_equal(raster, expected)


def _drawn_segment_by_segment(strokes: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """The straightforward raster: skimage's line for every segment of every stroke, in turn."""
    expected = np.full(shape, UNLABELED)
    for item in strokes:
        points = on_pixels(np.asarray(item["path"], float).reshape(-1, 2), shape)
        expected[points[0, 1], points[0, 0]] = item["object_id"]
        for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
            expected[line(y0, x0, y1, x1)] = item["object_id"]
    return expected


def test_segments_in_every_direction_draw_skimages_pixels():
    """Every segment from the middle of a 31 x 31 grid, each in its own frame: OpenCV and skimage round a line
    that passes half-way between two pixels to different sides; the raster is skimage's either way round."""
    size = 31
    ends = [(x, y) for y in range(size) for x in range(size)]
    strokes = [{"path": [[0.5, 0.5], [x / (size - 1), y / (size - 1)]], "object_id": 1} for x, y in ends]
    reversed_ = [{"path": item["path"][::-1], "object_id": 1} for item in strokes]
    out = rasterize_scribbles({"scribbles": [[item] for item in strokes + reversed_]}, (size, size))
    for frame, item in enumerate(strokes + reversed_):
        np.testing.assert_array_equal(out[frame], _drawn_segment_by_segment([item], (size, size)),
                                      err_msg=str(item["path"]))


@pytest.mark.parametrize("shape", [(9, 14), (1, 7), (6, 1), (23, 23)])
def test_random_strokes_draw_what_every_segment_draws(shape):
    rng = np.random.default_rng(sum(shape))
    frames = []
    for _ in range(3):
        strokes = []
        for _ in range(rng.integers(0, 4)):
            count = rng.choice([1, 2, rng.integers(3, 60)])
            strokes.append({"path": rng.random((count, 2)).tolist(), "object_id": int(rng.integers(0, 4))})
        frames.append(strokes)
    out = rasterize_scribbles({"scribbles": frames}, shape)
    assert sorted(out) == [t for t, strokes in enumerate(frames) if strokes]
    for frame, strokes in enumerate(frames):
        if strokes:  # later strokes over earlier ones, as segment by segment
            np.testing.assert_array_equal(out[frame], _drawn_segment_by_segment(strokes, shape))


def test_scattered_paths_draw_what_every_segment_draws():
    """Points far apart one after another (not a painted path: hardly a segment repeats, a third of them pass
    half-way between pixels) are drawn in batches, not a call per segment (10^6 points took 17 s): the same
    raster, later strokes over earlier ones."""
    rng = np.random.default_rng(1)
    shape = (60, 107)
    strokes = [{"path": rng.random((30000, 2)).tolist(), "object_id": 1},
               {"path": rng.random((3000, 2)).tolist(), "object_id": 0},
               {"path": (0.3 + 0.4 * rng.random((2000, 2))).tolist(), "object_id": 2}]
    raster = rasterize_scribbles({"scribbles": [strokes]}, shape)[0]
    np.testing.assert_array_equal(raster, _drawn_segment_by_segment(strokes, shape))
    assert {0, 1, 2} <= set(np.unique(raster).tolist())


def test_points_outside_the_frame_are_refused():
    # Validated scribbles never have them; before, a negative index wrapped round to the other side.
    for point in ([-0.2, 0.5], [0.5, 1.2]):
        with pytest.raises(ValueError, match="outside the"):
            rasterize_scribbles({"scribbles": [[{"path": [[0.5, 0.5], point], "object_id": 1}]]}, (10, 20))


def test_labels_on_grid_keep_a_class_only_where_it_holds_most_of_a_cell() -> None:
    labels = np.zeros((4, 8), np.uint8)
    labels[:, 4:] = 2
    labels[0, 0:2] = 1  # half of the first 2x2 cell: no class holds more than half
    labels[2:4, 2:4] = 1  # a whole cell
    labels[0:2, 6] = 0  # half of the last top cell
    expected = np.array([[UNLABELED, 0, 2, UNLABELED], [0, 1, 2, 2]])
    np.testing.assert_array_equal(labels_on_grid(labels, (2, 4)), expected)


def _confirmed_memory(**config) -> ScribbleMemory:
    """A first round on frame 1, then a correction on frame 0: a background stroke at the top-left corner."""
    memory = ScribbleMemory(SHAPE, ScribbleConfig(dilation=1, far_background_fraction=10.0, **config), num_frames=2)
    memory.add(scribbles([], [stroke([(5, 10)], 1)]))
    memory.add(scribbles([stroke([(0, 0), (0, 2)], 0)], []))
    return memory


def test_a_corrected_frame_keeps_its_last_labels_away_from_the_strokes() -> None:
    """What the annotator left alone on the frame they corrected is theirs: the last round's labels, farther than
    confirmed_distance cells from the strokes, confirmed_erosion cells inside each region (the frame's edge
    bounds a region too), background only within confirmed_background_band cells of an object."""
    predicted = np.zeros(SHAPE, np.int64)
    predicted[2:9, 8:17] = 1  # the object the last round found on frame 0
    predicted[5, 0] = UNLABELED  # a cell no class held most of
    memory = _confirmed_memory(confirmed_distance=3, confirmed_erosion=1, confirmed_background_band=2)
    memory.confirm(0, predicted)

    def region(r: int, c: int) -> int:
        inside = 0 <= r < SHAPE[0] and 0 <= c < SHAPE[1]
        return predicted[r, c] if inside else -2

    expected = np.full(SHAPE, UNLABELED)
    objects = np.argwhere(predicted == 1)
    for r, c in np.ndindex(SHAPE):
        far = min(np.hypot(r - 0, c - k) for k in range(3)) > 3  # the stroke: row 0, columns 0-2
        kept = all(region(r + dr, c + dc) == predicted[r, c] for dr, dc in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)))
        near = np.hypot(*(objects - [r, c]).T).min() <= 2
        if far and kept and (predicted[r, c] == 1 or near):
            expected[r, c] = predicted[r, c]
    assert (expected == 1).sum() == 5 * 7 and (expected == 0).sum() > 10  # the test covers both classes
    np.testing.assert_array_equal(memory.confirmed(0), expected)
    # They fill what the strokes leave unlabelled.
    labels, raw = memory.labels(0), memory.raw_labels(0)
    assert (labels[0, 0:3] == 0).all()
    np.testing.assert_array_equal(labels[raw == UNLABELED], expected[raw == UNLABELED])
    assert memory.confirmed(1) is None  # never confirmed
    # A later correction of the frame confirms the labels then instead; no object: no background band.
    memory.confirm(0, np.zeros(SHAPE, np.int64))
    assert (memory.labels(0)[raw == UNLABELED] == UNLABELED).all()
    with pytest.raises(ValueError, match="label grid"):
        memory.confirm(0, np.zeros((3, 3), np.int64))
    with pytest.raises(KeyError):
        memory.confirm(5, predicted)
    with pytest.raises(ConfigError, match="confirmed_erosion"):
        ScribbleConfig(confirmed_erosion=-1)
    with pytest.raises(ConfigError, match="confirm_corrected_frames must be one of off, one-object, all, got 'yes'"):
        ScribbleConfig(confirm_corrected_frames="yes")  # a yes/no answer: named, not taken


def test_narrow_stroke_cells_are_those_whose_strokes_all_lie_near_their_class() -> None:
    """A cell is narrow when every stroke pixel in it lies within `reach` grid cells of a pixel the last round
    gave the stroke's class (checked against a brute-force distance); cells without a stroke pixel never are."""
    height, width, grid = 40, 80, (10, 20)  # 4 x 4 pixels per grid cell
    previous = np.zeros((2, height, width), np.int64)
    previous[0, 10:32, 20:60] = 1  # an object predicted 2 rows too low: a false-positive strip at rows 30-31
    previous[0, 10:32, 60:80] = 1  # and a wide false positive on its right
    previous[1, 5:15, 5:15] = 1

    def at(row: int, col: int) -> list[float]:
        return [col / (width - 1), row / (height - 1)]

    strokes = [
        {"path": [at(31, 22), at(31, 56)], "object_id": 0},  # along the strip, 1 px from the predicted background
        {"path": [at(18, 70), at(24, 70)], "object_id": 0},  # deep in the wide one: 8-12 px from it
        {"path": [at(36, 4), at(36, 16)], "object_id": 2},  # an object the last round gave nowhere
    ]
    drawn = {"sequence": "toy", "scribbles": [strokes, [{"path": [at(2, 2), at(2, 30)], "object_id": 1}]]}
    narrow = narrow_stroke_cells(drawn, previous, grid, reach=1.0)
    assert sorted(narrow) == [0, 1]
    for frame, raster in rasterize_scribbles(drawn, (height, width)).items():
        farthest = {}
        for y, x in np.argwhere(raster != UNLABELED):
            given = np.argwhere(previous[frame] == raster[y, x])
            far = np.hypot(*(given - [y, x]).T).min() if len(given) else np.inf
            # the cell a normalised point at this pixel lands in, as rasterize_scribbles draws it on the grid
            cell = tuple(on_pixels(np.array([[x / (width - 1), y / (height - 1)]]), grid)[0, ::-1])
            farthest[cell] = max(farthest.get(cell, 0.0), far)
        expected = np.zeros(grid, bool)
        for cell, far in farthest.items():
            expected[cell] = far <= 4
        np.testing.assert_array_equal(narrow[frame], expected)
        # the cells the memory paints for these strokes (at the grid's size) are the ones weighed
        on_grid = rasterize_scribbles(drawn, grid)[frame] != UNLABELED
        assert not (narrow[frame] & ~on_grid).any() and (narrow[frame] == (on_grid & expected)).all()
    assert narrow[0][7, 5:14].all() and not narrow[0][4:6, 17].any() and not narrow[0][9, 1:4].any()
    assert 0 < narrow[1].sum() < 8  # frame 1's stroke runs through the object and out of it
    assert not narrow_stroke_cells(drawn, previous, grid, reach=0.1)[0][4:6, 17].any()


def test_narrow_marks_last_until_a_later_stroke_paints_the_cell_again() -> None:
    memory = ScribbleMemory(SHAPE, ScribbleConfig(dilation=1), num_frames=2)
    memory.add(scribbles([stroke([(3, 2), (3, 8)], 1)], []))
    assert not memory.narrow_cells(0).any()
    memory.add(scribbles([stroke([(5, 2), (5, 8)], 0)], []))
    marks = np.ones(SHAPE, bool)
    memory.mark_narrow({0: marks})
    expected = np.zeros(SHAPE, bool)
    expected[5, 2:9] = True  # only the cells the latest round drew
    np.testing.assert_array_equal(memory.narrow_cells(0), expected)
    memory.add(scribbles([stroke([(5, 2), (5, 4)], 0)], [stroke([(1, 1)], 1)]))  # repainted: unmarked
    expected[5, 2:5] = False
    np.testing.assert_array_equal(memory.narrow_cells(0), expected)
    with pytest.raises(KeyError, match="latest round"):
        memory.mark_narrow({3: marks})
    with pytest.raises(ValueError, match="label grid"):
        memory.mark_narrow({0: np.zeros((2, 2), bool)})
    with pytest.raises(ConfigError, match="narrow_correction_reach"):
        TransferConfig(narrow_correction_reach=-1.0)


def test_halo_cells_are_the_dilations_until_settled() -> None:
    memory = ScribbleMemory(SHAPE, ScribbleConfig(dilation=3, correction_dilation=1), num_frames=2)
    first = scribbles([stroke([(3, 2), (3, 8)], 1)], [])
    memory.add(first)
    line_cells = rasterize_scribbles(first, SHAPE)[0] != UNLABELED
    dilated = scribble_labels(first, SHAPE, 3)[0] != UNLABELED
    np.testing.assert_array_equal(memory.halo(0), dilated & ~line_cells)
    # Without the halo: the stroke alone, and far-away background derived from it alone.
    undilated = ScribbleMemory(SHAPE, ScribbleConfig(dilation=1), num_frames=2)
    undilated.add(first)
    np.testing.assert_array_equal(memory.labels(0, halo=False), undilated.labels(0))
    assert (memory.labels(0)[memory.halo(0)] == 1).all()  # with it (the default): the dilated stroke
    # A correction repainting a halo cell takes it out of the halo; settling keeps only the cells marked.
    memory.add(scribbles([stroke([(4, 2), (4, 3)], 0)], []))
    halo = dilated & ~line_cells
    halo[4, 2:4] = False
    np.testing.assert_array_equal(memory.halo(0), halo)
    keep = np.zeros(SHAPE, bool)
    keep[2, :] = True
    memory.settle_halo(0, keep)
    assert not memory.halo(0).any()
    expected = scribble_labels(first, SHAPE, 3)[0]
    expected[halo & ~keep] = UNLABELED
    expected[4, 2:4] = 0  # the correction
    np.testing.assert_array_equal(memory.raw_labels(0), expected)
    assert not memory.correction_cells(0)[halo & ~keep].any()
    with pytest.raises(ValueError, match="label grid"):
        memory.settle_halo(0, np.zeros((2, 2), bool))
    with pytest.raises(KeyError):
        memory.settle_halo(1, keep)
    with pytest.raises(ConfigError, match="halo_margin"):
        ScribbleConfig(halo_margin=float("nan"))


def test_a_first_object_stroke_painted_over_by_background_says_so() -> None:
    # Both strokes land on the same cells: "no object stroke yet" named a stroke the user had drawn.
    memory = ScribbleMemory(SHAPE, ScribbleConfig(dilation=1), num_frames=1)
    path = [[0.2, 0.5], [0.4, 0.5]]
    covered = {"scribbles": [[{"path": path, "object_id": 1}, {"path": path, "object_id": 0}]]}
    with pytest.raises(DatasetError, match=r"every object stroke lies under a later background stroke on the "
                                           rf"{SHAPE[0]}x{SHAPE[1]} label grid"):
        memory.add(covered, require_object=True)
    assert memory.rounds == 0
    with pytest.raises(DatasetError, match="no object stroke yet"):  # background alone keeps its line
        memory.add({"scribbles": [[{"path": path, "object_id": 0}]]}, require_object=True)


def test_no_far_background_where_an_object_stroked_on_another_frame_may_be() -> None:
    """A first round stroking object 1 on frame 0 and object 2 (entering later) on frame 1, where both show: far
    from frame 1's stroke is object 1, unstroked; it was derived background, and object 1 lost on every frame."""
    memory = ScribbleMemory(SHAPE, ScribbleConfig(dilation=1, far_background_fraction=0.25), num_frames=3)
    memory.add(scribbles([stroke([(0, 0)], 1)], [stroke([(9, 19)], 2)], []))
    assert (memory.missing_objects(0), memory.missing_objects(1)) == ({2}, {1})
    for frame in (0, 1):
        np.testing.assert_array_equal(memory.labels(frame), memory.raw_labels(frame))
    assert memory.object_frames({1}) == [0] and not memory.has_background()
    both = ScribbleMemory(SHAPE, ScribbleConfig(dilation=1, far_background_fraction=0.25), num_frames=3)
    both.add(scribbles([stroke([(0, 0)], 1)], [stroke([(0, 0)], 1), stroke([(9, 19)], 2)], []))
    assert both.missing_objects(1) == set() and (both.labels(1) == 0).any()  # every object stroked there: as before
    both.add(scribbles([], [], [stroke([(5, 5)], 2)]))  # a later round's frame: no first-round objects to miss
    assert both.missing_objects(2) == set()


def test_an_object_added_in_a_later_round_lifts_the_first_rounds_far_background() -> None:
    """Object 1 stroked in round 1 on frame 0, object 2 first in round 2 on frame 1: object 2 may be on frame 0,
    unstroked, where far-away background held it (it never showed, even on the frame it was stroked on)."""
    memory = ScribbleMemory(SHAPE, ScribbleConfig(dilation=1, far_background_fraction=0.25), num_frames=3)
    memory.add(scribbles([stroke([(0, 0)], 1)], [], []))
    assert memory.new_objects == {1} and (memory.labels(0) == 0).any()
    memory.add(scribbles([], [stroke([(9, 19)], 2)], []))
    assert memory.new_objects == {2} and memory.missing_objects(0) == {2}
    np.testing.assert_array_equal(memory.labels(0), memory.raw_labels(0))
    memory.add(scribbles([stroke([(9, 19)], 2)], [], []))  # object 2 stroked on frame 0 too: nothing missing there
    assert memory.new_objects == set() and memory.missing_objects(0) == set() and (memory.labels(0) == 0).any()


def test_an_object_whose_every_stroke_a_later_round_paints_over_loses_its_halo_there() -> None:
    """Objects 1 and 2 stroked in round 1 (dilated), object 2's stroke painted over with background in round 2
    (undilated): its halo cells take the background too, as when the strokes are one round (chunks, longer videos).
    They kept object 2, which stayed where it was erased. Part of an object's strokes painted over keeps its halo."""
    config = ScribbleConfig(dilation=3, correction_dilation=1, far_background_fraction=0.25)
    first = [stroke([(2, 2), (2, 6)], 1), stroke([(6, 10), (6, 15)], 2)]
    erase = [stroke([(6, 10), (6, 15)], 0)]
    memory = ScribbleMemory(SHAPE, config, num_frames=2)
    memory.add(scribbles(first, [stroke([(6, 10), (6, 15)], 2)]))
    memory.add(scribbles(erase, []))
    labels = memory.raw_labels(0)
    assert not (labels == 2).any()
    replayed = scribble_labels(scribbles(first + erase, []), SHAPE, 3)[0]
    was_halo = scribble_labels(scribbles(first, []), SHAPE, 3)[0] == 2
    np.testing.assert_array_equal(labels[was_halo], replayed[was_halo])
    assert memory.object_ids() == {1, 2} and memory.drawn_ids == {1, 2}  # frame 1 still strokes object 2
    assert memory.missing_objects(0) == {2}  # object 2 may be on frame 0, unstroked now
    memory.add(scribbles([], [stroke([(6, 10), (6, 15)], 0)]))
    assert memory.object_ids() == {1} and memory.drawn_ids == {1, 2} and memory.missing_objects(0) == set()

    partly = ScribbleMemory(SHAPE, config, num_frames=1)
    partly.add(scribbles(first))
    before = partly.raw_labels(0)
    partly.add(scribbles([stroke([(6, 10), (6, 12)], 0)]))
    kept = (before == 2) & (rasterize_scribbles(scribbles([stroke([(6, 10), (6, 12)], 0)]), SHAPE)[0] == UNLABELED)
    assert (partly.raw_labels(0)[kept] == 2).all()


def test_grid_labels_stay_where_the_scores_upsampling_brings_them_back():
    """A mask put on the grid and brought back to full size as the agent brings scores back (bilinear,
    align_corners=False) keeps its place: each cell holds its centre pixel's label. The top-left pixel put every
    label half a cell up and left of its cell, and the masks came back that far down and right."""
    rng = np.random.default_rng(0)
    height, width, grid = 96, 160, (12, 20)  # 8 x 8 pixels per cell
    shifts = []
    for _ in range(20):
        top, left = rng.integers(4, 40), rng.integers(4, 80)
        mask = np.zeros((height, width), np.int64)
        mask[top:top + rng.integers(20, 50), left:left + rng.integers(20, 70)] = 1
        cells = grid_labels(mask, grid)
        scores = torch.nn.functional.one_hot(cells.clamp(min=0), 2).permute(2, 0, 1)[None].float()
        back = torch.nn.functional.interpolate(scores, size=(height, width), mode="bilinear",
                                               align_corners=False).argmax(1)[0].numpy()
        shifts.append(np.mean(np.nonzero(back), 1) - np.mean(np.nonzero(mask), 1))
    assert np.abs(np.mean(shifts, 0)).max() < 1.0  # pixels; top-left labels: +3.5 down and right
    edge = np.zeros((height, width), np.int64)
    edge[:, 4:12] = 1  # covers the centre (pixel 4) of column 0's cells, not that of column 1's (pixel 12)
    on_grid = grid_labels(edge, grid)
    assert (on_grid[:, 0] == 1).all() and (on_grid[:, 1] == 0).all()


def test_a_robot_point_lands_on_its_own_pixel_and_the_cell_holding_it():
    """The robot writes pixel p of a side of n as p / n: at full size the point is drawn on pixel p (scaling by
    n - 1 and rounding drew pixels right of or below the middle one pixel up or left), and on a coarser grid in
    the cell that holds the pixel (rounding moved points up to half a cell towards the frame's centre)."""
    height, width = 48, 64
    for row in range(0, height, 5):
        for col in range(width):
            point = scribbles([{"path": [[col / width, row / height]], "object_id": 1}])
            drawn = rasterize_scribbles(point, (height, width))[0]
            assert np.argwhere(drawn != UNLABELED).tolist() == [[row, col]]
            on_grid = rasterize_scribbles(point, (6, 8))[0]
            assert np.argwhere(on_grid != UNLABELED).tolist() == [[row // 8, col // 8]]
