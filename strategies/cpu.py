"""A schedule for a CPU, where the paper's fine-tuning budgets buy few steps and eat the session's time.

- No fine-tuning: the time goes to more rounds of propagation and to the dense CRF instead.
- A dense CRF every round (the largest single gain we saw): at quarter resolution in round 1, half later.
- Round 1 propagates to every 4th frame only (the others take their nearest keyframe's labels, moved along
  optical flow), round 2 computes the rest: the benchmark's curve rises linearly from J = 0 at 0 s to J@1, so round 1's seconds weigh
  more than its J.
- Later rounds compare the frames only with the new scribbles' pixels (inference/reference_pool.py).
The measurements behind each choice: docs/METHOD.md ("The cpu strategy").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.inference.plan import RoundPlan

if TYPE_CHECKING:
    from agent.data.davis import SequenceInfo


class CPUStrategy:
    name = "cpu"
    description = ("CPU-tuned: no fine-tuning (time goes to propagation); round 1 on every 4th frame with a quarter-"
                   "resolution CRF, then every frame with a half-resolution CRF")
    first_crf_scale = 0.25
    crf_scale = 0.5
    first_frame_stride = 4

    def plan(self, interaction: int, time_left: float, info: SequenceInfo) -> RoundPlan:
        if interaction == 1:
            return RoundPlan(finetune_seconds=0.0, use_crf=True, crf_scale=self.first_crf_scale,
                             frame_stride=self.first_frame_stride)
        return RoundPlan(finetune_seconds=0.0, use_crf=True, crf_scale=self.crf_scale)
