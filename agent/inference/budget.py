"""Keeping a round inside the sample's time: the cost model and the lighter plans tried in order.

davisinteractive discards masks submitted after the sample's time (max_time x objects) and every later
round with them (measured: goat, round 5 took 55 s on a busy machine and came after the 240 s, so rounds
5-8 were lost). A round that cannot fit is therefore lightened, never skipped: a coarser mask in time
scores, a fine one too late does not. The agent measures what each part of a round costs per frame in
the sample's earlier rounds (RoundCosts), estimates the planned round, and when
RESERVE_MARGIN x estimate + RESERVE_SLACK_SECONDS exceeds the time left, takes the first of (see
`lighter_plans`): the CRF at half the scale, down to MIN_CRF_SCALE; then keyframes only (every 2nd,
4th, ... frame plus the scribbled ones, the others filled from their nearest keyframe: propagate.py)
still with the quarter-scale CRF; the CRF is dropped last. Halving the CRF's scale costs least J
(docs/METHOD.md, "The cpu strategy": J 0.714 at quarter resolution vs 0.718 at half in round 1); dropping
it costs most (a replayed val round, goat 3 round 7 after J 0.841: no CRF 0.680 in 4.8 s, the quarter-scale
CRF on every 2nd frame 0.824 in 5.7-7.3 s), so fewer keyframes come before it.
Before anything was measured (round 1 of a sample) the plan is kept: there is nothing to estimate from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .plan import RoundPlan
from .propagate import select_keyframes

# Propagation time is reserved from the estimate times this margin, plus a fixed slack (the estimate comes
# from earlier rounds; the machine may be busier now).
RESERVE_MARGIN = 1.5
RESERVE_SLACK_SECONDS = 2.0
# A CRF round never measured costs this many plain rounds: on the safe side (docs/BENCHMARK.md, Lite2: the CRF at
# full scale on 2 workers about one round-1 transfer a frame; at the `cpu` plans' 0.25-0.5 scales far less).
CRF_COST_FACTOR = 4.0
MIN_CRF_SCALE = 0.25


@dataclass
class RoundCosts:
    """Seconds per frame measured in the sample's earlier rounds; None (or no entry): not measured yet."""

    backbone: float | None = None  # per frame whose backbone features were computed
    transfer: float | None = None  # per propagated frame: label transfer, upsampling, argmax (no CRF)
    crf: dict[float, float] = field(default_factory=dict)  # CRF scale -> per propagated frame
    fill: float | None = None  # per frame filled from a keyframe (optical flow: milliseconds)

    def crf_at(self, scale: float) -> float | None:
        """The CRF's cost at `scale`, from the nearest measured scale: linear going down (the full-size
        resizes stay), quadratic going up (the pixels): an overestimate either way (docs/BENCHMARK.md)."""
        if scale in self.crf:
            return self.crf[scale]
        if not self.crf:
            return None if self.transfer is None else (CRF_COST_FACTOR - 1) * self.transfer
        nearest = min(self.crf, key=lambda measured: abs(measured - scale))
        ratio = scale / nearest
        return self.crf[nearest] * (ratio if ratio < 1 else ratio**2)


def round_frames(plan: RoundPlan, num_frames: int, scribbled: list[int]) -> np.ndarray:
    """The frames the round propagates to (all, or the keyframes of plan.frame_stride)."""
    return select_keyframes(num_frames, plan.frame_stride, scribbled)


def estimate_seconds(
    plan: RoundPlan,
    costs: RoundCosts,
    num_frames: int,
    scribbled: list[int],
    have_features: np.ndarray,
    default_crf_scale: float = 1.0,
) -> float | None:
    """Seconds the round's propagation will take (backbone for frames without features, transfer, CRF);
    None when a part of it was never measured in this sample."""
    frames = round_frames(plan, num_frames, scribbled)
    missing = int((~have_features[frames]).sum())
    if costs.transfer is None or (missing and costs.backbone is None):
        return None
    seconds = len(frames) * costs.transfer + (missing * costs.backbone if missing else 0.0)
    seconds += (num_frames - len(frames)) * (costs.fill or 0.0)
    if plan.use_crf:
        seconds += len(frames) * costs.crf_at(plan.crf_scale or default_crf_scale)
    return seconds


def lighter_plans(plan: RoundPlan, num_frames: int, default_crf_scale: float = 1.0) -> Iterator[RoundPlan]:
    """`plan`, then ever lighter versions of it (see the module docstring)."""
    yield plan
    if plan.use_crf:
        scale = plan.crf_scale or default_crf_scale
        while scale / 2 >= MIN_CRF_SCALE:
            scale /= 2
            plan = dataclasses.replace(plan, crf_scale=scale)
            yield plan
    while plan.frame_stride < num_frames:
        plan = dataclasses.replace(plan, frame_stride=plan.frame_stride * 2)
        yield plan
    if plan.use_crf:
        yield dataclasses.replace(plan, use_crf=False, crf_scale=None)


def reserve_seconds(estimate: float | None) -> float:
    """What to keep free for a round's propagation estimated at `estimate` seconds."""
    return RESERVE_MARGIN * (estimate or 0.0) + RESERVE_SLACK_SECONDS


def fit_plan(
    plan: RoundPlan,
    costs: RoundCosts,
    available: float | None,
    num_frames: int,
    scribbled: list[int],
    have_features: np.ndarray,
    default_crf_scale: float = 1.0,
) -> tuple[RoundPlan, float | None]:
    """(the first of lighter_plans whose reserve fits in `available` seconds, its estimate); the lightest
    when none fits; `plan` itself when there is no limit or nothing to estimate from."""
    def estimate(candidate: RoundPlan) -> float | None:
        return estimate_seconds(candidate, costs, num_frames, scribbled, have_features, default_crf_scale)

    first = estimate(plan)
    if available is None or first is None or reserve_seconds(first) <= available:
        return plan, first
    chosen, seconds = plan, first
    for candidate in lighter_plans(plan, num_frames, default_crf_scale):
        chosen, seconds = candidate, estimate(candidate)
        if seconds is not None and reserve_seconds(seconds) <= available:
            break
    return chosen, seconds
