"""What a strategy decides for each interaction round, and the protocol every strategy follows.

Core types: the agent reads a RoundPlan, the session asks a Strategy for one; strategies import only these.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import typed_line

if TYPE_CHECKING:
    from ..data.davis import SequenceInfo


@dataclass(frozen=True)
class RoundPlan:
    """The plan for one interaction round."""

    finetune_seconds: float = 0.0  # fine-tuning budget; 0 = pure label transfer
    use_crf: bool = False
    crf_scale: float | None = None  # run the CRF on frames downscaled by this factor (None: the config's)
    # Propagate only to every n-th frame (and the scribbled ones) this round; the others take their nearest
    # such frame's labels, moved along optical flow (after round 1 only where those changed). A later round
    # with stride 1 computes the rest. 1 = every frame.
    frame_stride: int = 1
    # Ask the evaluator to scribble next on one of this many least-confident frames (None: its own choice).
    frame_candidates: int | None = None
    # Seconds left for the sample when the round starts; the session fills it in, the agent keeps
    # fine-tuning short enough that propagation still fits, and lightens a round that would not fit.
    time_left: float | None = None

    def __post_init__(self) -> None:
        # A user's strategy builds these: a wrong value fails here, named, not deep inside a round.
        def number(value, finite: bool = True) -> bool:
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                return False
            try:  # an integer beyond a float's range (10**400) was math's OverflowError, naming no field
                value = float(value)
            except OverflowError:
                return False
            return math.isfinite(value) if finite else not math.isnan(value)

        if not (number(self.finetune_seconds) and self.finetune_seconds >= 0):
            raise ValueError(f"RoundPlan.finetune_seconds must be a number >= 0, got {self.finetune_seconds!r}")
        if not isinstance(self.use_crf, bool):
            raise ValueError(f"RoundPlan.use_crf must be True or False, got {self.use_crf!r}")
        if self.crf_scale is not None and not (number(self.crf_scale) and 0 < self.crf_scale <= 1):
            raise ValueError(f"RoundPlan.crf_scale must be None or in (0, 1], got {self.crf_scale!r}")
        for name in ("frame_stride", "frame_candidates"):
            value = getattr(self, name)
            if (value is not None or name == "frame_stride") and not (
                    isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"RoundPlan.{name} must be an integer >= 1, got {value!r}")
        if self.time_left is not None and not number(self.time_left, finite=False):
            raise ValueError(f"RoundPlan.time_left must be a number of seconds, got {self.time_left!r}")


@runtime_checkable
class Strategy(Protocol):
    """Interaction schedule: given the round, the time left and the sequence, return the round's plan."""

    name: str
    description: str  # one line, shown in --help (describe_strategies)

    def plan(self, interaction: int, time_left: float, info: SequenceInfo) -> RoundPlan:
        """`interaction` counts from 1; `time_left` is the sample's remaining seconds (max_time x objects)."""
        ...


class StrategyError(RuntimeError):
    """A strategy's plan() raised or returned something other than a RoundPlan; the message names it."""


def plan_round(strategy: Strategy, interaction: int, time_left: float, info: SequenceInfo) -> RoundPlan:
    """strategy.plan(...), checked: any failure becomes one StrategyError line naming the strategy."""
    name = getattr(strategy, "name", type(strategy).__name__)
    where = f"interaction {interaction} of {getattr(info, 'name', '?')}"
    try:
        plan = strategy.plan(interaction, time_left, info)
    # SystemExit too (a script's argparse or sys.exit() inside plan()): it ended the run without a word, exit code 0,
    # from the preflight or in the middle of the session.
    except (Exception, SystemExit) as error:  # noqa: BLE001  (any bug in a user's strategy)
        raise StrategyError(f"strategy '{name}': plan() failed at {where} ({typed_line(error)})") from error
    if not isinstance(plan, RoundPlan):
        raise StrategyError(f"strategy '{name}': plan() returned {type(plan).__name__} at {where}, expected a "
                            "RoundPlan (from agent.inference.plan import RoundPlan)")
    return plan
