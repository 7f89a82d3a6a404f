"""A schedule for a CPU, where the paper's fine-tuning budgets buy few steps and eat the session's time.

Why these choices (measured on the 5 DAVIS val videos; figures in the README):
- No fine-tuning: on 2 CPU cores a fine-tuning step costs about as much as propagating several frames,
  and the 240 s budget per object is shared by all 8 rounds; pure label transfer from the pretrained
  model is already most of the quality, so every second goes to propagation and the CRF instead.
- No CRF in round 1: the first mask arrives as early as possible (the AUC integrates J over time from
  0 s, and the round-1 latency is spent at J = 0).
- CRF from round 2 on frames downscaled by 2: the CRF's boundary gain at ~4x less cost than at 480p.
"""

from __future__ import annotations

from agent.data.davis import SequenceInfo

from .base import RoundPlan


class CPUStrategy:
    name = "cpu"
    description = "CPU-tuned: no fine-tuning (time goes to propagation), no CRF in round 1, CRF at half resolution from round 2"
    crf_scale = 0.5

    def plan(self, interaction: int, time_left: float, info: SequenceInfo) -> RoundPlan:
        return RoundPlan(finetune_seconds=0.0, use_crf=interaction >= 2, crf_scale=self.crf_scale)
