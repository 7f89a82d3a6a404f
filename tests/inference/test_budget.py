"""inference/budget.py: a round that cannot fit in the time left is lightened, from injected costs (no clock)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.inference.budget import (
    RESERVE_MARGIN,
    RESERVE_SLACK_SECONDS,
    RoundCosts,
    estimate_seconds,
    fit_plan,
    lighter_plans,
)
from agent.inference.plan import RoundPlan

FRAMES = 16
SCRIBBLED = [5]
ALL_FEATURES = np.ones(FRAMES, bool)
# 1 s per frame of transfer, CRF 2 s per frame at scale 0.5: a full CRF round costs 16 + 32 = 48 s.
COSTS = RoundCosts(backbone=3.0, transfer=1.0, crf={0.5: 2.0})
PLAN = RoundPlan(use_crf=True, crf_scale=0.5)


def _needs(seconds: float) -> float:
    """The time left at which a round estimated at `seconds` just fits."""
    return RESERVE_MARGIN * seconds + RESERVE_SLACK_SECONDS


def _fit(plan: RoundPlan, available: float | None, costs: RoundCosts = COSTS, features=ALL_FEATURES):
    return fit_plan(plan, costs, available, FRAMES, SCRIBBLED, features, default_crf_scale=1.0)


def test_estimate_counts_backbone_transfer_and_crf() -> None:
    assert estimate_seconds(PLAN, COSTS, FRAMES, SCRIBBLED, ALL_FEATURES) == pytest.approx(48.0)
    # Stride 4: frames 0, 4, 8, 12, the last and the scribbled one; two of them still need features.
    keyframes = RoundPlan(frame_stride=4)
    features = ALL_FEATURES.copy()
    features[[8, 15]] = False
    assert estimate_seconds(keyframes, COSTS, FRAMES, SCRIBBLED, features) == pytest.approx(6 * 1.0 + 2 * 3.0)
    # The 10 frames between keyframes are filled along the optical flow, at its measured cost.
    with_fill = RoundCosts(backbone=3.0, transfer=1.0, crf={0.5: 2.0}, fill=0.5)
    assert estimate_seconds(keyframes, with_fill, FRAMES, SCRIBBLED, features) == pytest.approx(12.0 + 10 * 0.5)


def test_crf_cost_at_other_scales_overestimates() -> None:
    assert COSTS.crf_at(0.25) == pytest.approx(1.0)  # linear going down
    assert COSTS.crf_at(1.0) == pytest.approx(8.0)  # quadratic going up
    assert RoundCosts(transfer=0.5).crf_at(0.5) == pytest.approx(1.5)  # never measured: 3 plain rounds
    assert RoundCosts().crf_at(0.5) is None


def test_plan_kept_when_it_fits_or_nothing_is_known() -> None:
    assert _fit(PLAN, _needs(48.0)) == (PLAN, pytest.approx(48.0))
    assert _fit(PLAN, None)[0] == PLAN  # the API without a time limit
    assert _fit(PLAN, 1.0, costs=RoundCosts())[0] == PLAN  # round 1 of a sample: nothing measured yet


def test_short_time_lowers_the_crf_scale_first() -> None:
    fitted, seconds = _fit(PLAN, _needs(32.0))
    assert fitted == RoundPlan(use_crf=True, crf_scale=0.25) and seconds == pytest.approx(32.0)


def test_shorter_time_keeps_the_quarter_crf_on_fewer_keyframes() -> None:
    # A replayed val round lost 0.16 J without the CRF, 0.02 with it on every 2nd frame (budget.py docstring).
    fitted, seconds = _fit(PLAN, _needs(20.0))
    # stride 2: frames 0, 2, ..., 14, the last and the scribbled one; 1 s transfer + 1 s CRF each
    assert fitted == RoundPlan(use_crf=True, crf_scale=0.25, frame_stride=2) and seconds == pytest.approx(20.0)
    fitted, seconds = _fit(PLAN, _needs(12.0))
    # stride 4: frames 0, 4, 5 (scribbled), 8, 12, 15
    assert fitted == RoundPlan(use_crf=True, crf_scale=0.25, frame_stride=4) and seconds == pytest.approx(12.0)


def test_shortest_time_drops_the_crf_last() -> None:
    # stride 16: frames 0, 5 (scribbled) and 15; with the CRF 6 s, without 3 s
    assert _fit(PLAN, _needs(6.0))[0] == RoundPlan(use_crf=True, crf_scale=0.25, frame_stride=16)
    fitted, seconds = _fit(PLAN, _needs(3.0))
    assert fitted == RoundPlan(use_crf=False, frame_stride=16) and seconds == pytest.approx(3.0)


def test_nothing_fits_gives_the_lightest_plan() -> None:
    fitted, _ = _fit(PLAN, 0.5)
    assert fitted == list(lighter_plans(PLAN, FRAMES))[-1]
    assert not fitted.use_crf and fitted.frame_stride >= FRAMES


def test_lighter_plans_keep_the_rest_of_the_plan() -> None:
    plan = RoundPlan(finetune_seconds=5.0, use_crf=True, frame_candidates=3)
    plans = list(lighter_plans(plan, 4, default_crf_scale=1.0))
    assert [(p.use_crf, p.crf_scale, p.frame_stride) for p in plans] == [
        (True, None, 1), (True, 0.5, 1), (True, 0.25, 1), (True, 0.25, 2), (True, 0.25, 4), (False, None, 4)]
    assert all(p.finetune_seconds == 5.0 and p.frame_candidates == 3 for p in plans)
    # without a CRF only the keyframes thin out
    assert [p.frame_stride for p in lighter_plans(RoundPlan(use_crf=False), 4)] == [1, 2, 4]
