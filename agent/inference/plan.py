"""What a strategy decides for each interaction round, and the protocol every strategy follows.

Core types: the agent reads a RoundPlan, the session asks a Strategy for one; strategies import only these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..data.davis import SequenceInfo


@dataclass(frozen=True)
class RoundPlan:
    """The plan for one interaction round."""

    finetune_seconds: float = 0.0  # fine-tuning budget; 0 = pure label transfer
    use_crf: bool = False
    crf_scale: float | None = None  # run the CRF on frames downscaled by this factor (None: the config's)
    # Propagate only to every n-th frame (and the scribbled ones) this round; the others copy their nearest
    # such frame's labels. A later round with stride 1 computes the rest. 1 = every frame.
    frame_stride: int = 1
    # Ask the evaluator to scribble next on one of this many least-confident frames (None: its own choice).
    frame_candidates: int | None = None
    # Seconds left for the sample when the round starts; the session fills it in, the agent keeps
    # fine-tuning short enough that propagation still fits.
    time_left: float | None = None


@runtime_checkable
class Strategy(Protocol):
    """Interaction schedule: given the round, the time left and the sequence, return the round's plan."""

    name: str
    description: str  # one line, shown in --help and the README

    def plan(self, interaction: int, time_left: float, info: SequenceInfo) -> RoundPlan:
        """`interaction` counts from 1; `time_left` is the sample's remaining seconds (max_time x objects)."""
        ...
