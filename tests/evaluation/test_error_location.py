"""Where J is lost: errors near the true boundary against errors farther from it."""

from __future__ import annotations

import numpy as np
import pytest

from agent.evaluation.error_location import boundary_distance, error_split, jaccard_if_right


def square(size: int = 40, top: int = 10, side: int = 20) -> np.ndarray:
    truth = np.zeros((1, size, size), np.int64)
    truth[0, top:top + side, top:top + side] = 1
    return truth


def test_boundary_distance_is_zero_on_the_boundary_and_grows_away_from_it():
    distance = boundary_distance(square())[0]
    assert distance[10, 20] == 0 and distance[9, 20] == 0  # both sides of the edge are boundary pixels
    assert distance[20, 20] == pytest.approx(9.0)  # the square's middle: 9 pixels from its inner edge
    assert distance[0, 0] == pytest.approx(np.hypot(9, 10), rel=1e-3)  # to (9, 10): just above the square's corner
    assert np.isinf(boundary_distance(np.zeros((1, 5, 5), np.int64))).all()  # one label: no boundary


def test_a_one_pixel_border_error_is_lost_in_the_band_and_a_far_blob_beyond_it():
    truth = square()
    labels = truth.copy()
    labels[0, 9, 10:30] = 1  # one row too many along the top edge: a boundary error
    labels[0, 35:38, 35:38] = 1  # a distractor 9 pixels beyond the square's corner
    split = error_split(truth, labels, num_objects=1, band=3)
    assert split["jaccard"] == pytest.approx(400 / (400 + 20 + 9))
    assert split["band_right"] == pytest.approx(400 / 409)  # the border row put right: the blob is left
    assert split["beyond_right"] == pytest.approx(400 / 420)  # the blob put right: the border row is left


def test_several_objects_are_averaged():
    truth = np.array([[[1, 1, 2, 2], [0, 0, 0, 0]]])
    labels = np.array([[[1, 2, 2, 2], [0, 0, 0, 1]]])
    everywhere = np.ones_like(truth, bool)
    assert jaccard_if_right(truth, labels, 2, everywhere).tolist() == [1.0]
    # nothing put right: object 1 has J 1/3 (1 of 3 pixels), object 2 J 2/3
    assert jaccard_if_right(truth, labels, 2, ~everywhere).tolist() == [pytest.approx((1 / 3 + 2 / 3) / 2)]
