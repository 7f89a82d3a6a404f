"""The real agent (shipped checkpoint) in a full local session and on a multi-object sequence."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config import AgentConfig, SessionConfig
from agent.data.davis import DavisReader
from agent.data.registry import restore
from agent.evaluation.session import run_session
from agent.inference.agent import InteractiveAgent
from strategies.base import RoundPlan

INTERACTIONS = 3


class QuickStrategy:
    """Small budgets so the test stays fast; CRF from round 2 as in a real schedule."""

    name = "quick"
    description = "test: fine-tune 0.5 s per round, CRF from round 2"

    def plan(self, interaction, time_left, info):
        return RoundPlan(finetune_seconds=0.5, use_crf=interaction >= 2)


@pytest.fixture(scope="module")
def shipped_agent() -> InteractiveAgent:
    return InteractiveAgent.from_pretrained(config=AgentConfig(device="cpu"))


@pytest.fixture(autouse=True)
def _restore_registry():
    yield
    restore()


def _jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def test_real_agent_session_j_rises(shipped_agent, tiny_synthetic_root, tmp_path):
    config = SessionConfig(subset="val", davis_root=tiny_synthetic_root, max_interactions=INTERACTIONS,
                           max_time=600.0, output_dir=tmp_path / "out", strategy="quick")  # J, not speed: no round may time out on a busy machine
    result = run_session(config, shipped_agent, QuickStrategy())
    summary = result.summary
    per_round = summary["per_interaction"]["J"]
    assert summary["evaluated_fraction"] == 1.0
    assert len(per_round) == INTERACTIONS
    assert per_round[-1] > per_round[0], per_round
    assert per_round[0] > 0.3, per_round  # the first scribbles already give a usable mask
    assert summary["auc"] == pytest.approx(summary["framework"]["auc"], abs=1e-9)


def test_multi_object_sequence_gives_each_object_its_own_label(shipped_agent, tiny_synthetic_root):
    reader = DavisReader(tiny_synthetic_root)
    sequence = next(s for s in reader.sequences("val") if reader.info(s).num_objects == 3)
    frames, truth = reader.load_frames(sequence), reader.load_annotations(sequence)
    shipped_agent.start(frames, 3)
    masks = shipped_agent.step(reader.load_scribble(sequence, 1), RoundPlan(use_crf=True))
    assert masks.shape == truth.shape
    for obj in (1, 2, 3):
        visible = truth == obj
        assert (masks == obj).any(), f"object {obj} never predicted"
        assert _jaccard(masks == obj, visible) > 0.3, f"object {obj}: J {_jaccard(masks == obj, visible):.2f}"
