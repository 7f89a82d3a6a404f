"""Ablation: pure label transfer from the pretrained model, no fine-tuning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.inference.plan import RoundPlan

if TYPE_CHECKING:
    from agent.data.davis import SequenceInfo


class NoFinetuneStrategy:
    name = "no-finetune"
    description = "ablation: pure label transfer from the pretrained model, never fine-tunes; CRF from round 3"

    def plan(self, interaction: int, time_left: float, info: SequenceInfo) -> RoundPlan:
        return RoundPlan(finetune_seconds=0.0, use_crf=interaction >= 3)
