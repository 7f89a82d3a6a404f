"""The paper's schedule: fine-tune 5 s, then 20 s, then 60 s per round; dense CRF from the 3rd round."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.inference.plan import RoundPlan

if TYPE_CHECKING:
    from agent.data.davis import SequenceInfo


class PaperStrategy:
    name = "paper"
    description = "the paper's schedule: fine-tune 5 s, 20 s, then 60 s (early stop: FinetuneConfig); CRF from round 3"
    budgets = (5.0, 20.0, 60.0)

    def plan(self, interaction: int, time_left: float, info: SequenceInfo) -> RoundPlan:
        seconds = self.budgets[min(interaction, len(self.budgets)) - 1]
        return RoundPlan(finetune_seconds=seconds, use_crf=interaction >= 3)
