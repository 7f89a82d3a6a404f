"""Measure fine-tuning without the clock (`finetune_study.py` at the repository root is the command).

In a session fine-tuning's effect is tangled with time: on a CPU the paper's seconds buy few steps and delay
every round. Here a step cap (FinetuneConfig.max_steps) stands in for the clock, so a CPU measures what a
faster machine does in the paper's seconds. Each video's first scribble is played for rounds 1..R-1 without
fine-tuning (the strategy's plans; the CRF off unless asked), the framework's robot drawing each later stroke
on the worst frame not scribbled before; round R is then played once per variant after the same strokes:
without fine-tuning, with the configured fine-tuning, and with each variant's FinetuneConfig fields. The
agent plays as in a session (its incremental reference pool, rebuilt after a fine-tuning step).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..config import ConfigError, FinetuneConfig, load_config
from ..data.davis import SequenceInfo
from ..inference.agent import InteractiveAgent
from ..inference.plan import Strategy, plan_round
from .robot_play import frame_jaccard, next_scribble, stroke_frames
from .study_inputs import variant_assignments

from davisinteractive.robot import InteractiveScribblesRobot  # isort: skip  (after robot_play's compat)

log = logging.getLogger(__name__)

NONE = "no fine-tuning"
DEFAULT = "default"  # the agent's FinetuneConfig


def parse_variant(spec: str, base: FinetuneConfig) -> FinetuneConfig:
    """`field=value,field=value` of FinetuneConfig over `base` -> config; one ConfigError line if wrong."""
    assignments = variant_assignments(spec, "FinetuneConfig")
    try:
        return load_config(FinetuneConfig, assignments=assignments, base=base)
    except ConfigError as error:  # its message speaks of --set
        raise ConfigError(f"--variant {spec!r}: {str(error).removeprefix('--set ')}") from None


def variants_from_specs(specs: Iterable[str], base: FinetuneConfig) -> dict[str, FinetuneConfig | None]:
    """No fine-tuning (None), the agent's own and each spec over it, by name."""
    variants: dict[str, FinetuneConfig | None] = {NONE: None, DEFAULT: base}
    for spec in specs:
        variants[spec] = parse_variant(spec, base)
    return variants


def study_sample(
    agent: InteractiveAgent,
    strategy: Strategy,
    info: SequenceInfo,
    frames: np.ndarray,
    truth: np.ndarray,
    scribble: dict,
    scribble_index: int,
    variants: dict[str, FinetuneConfig | None],
    study_round: int = 2,
    seconds: float = 3600.0,
    use_crf: bool = False,
) -> list[dict]:
    """Round `study_round` of one sample under every variant, after the same earlier rounds: one row each.

    seconds: each variant's fine-tuning budget in round `study_round` (its max_steps should end it first)."""
    robot = InteractiveScribblesRobot()
    base_config = agent.config
    strokes = [scribble]  # the scribbles of rounds 1..study_round, drawn once, replayed for every variant
    rows: list[dict] = []
    first_before = None
    try:
        for name, finetune_config in variants.items():
            if finetune_config is not None:
                agent.config = dataclasses.replace(base_config, finetune=finetune_config)
            agent.start(frames, info.num_objects, sequence=info.name)  # its scribbles checked as a session's
            used = stroke_frames(strokes[0])
            before = None
            for interaction in range(1, study_round + 1):
                plan = plan_round(strategy, interaction, math.inf, info)
                studied = interaction == study_round
                budget = seconds if studied and finetune_config is not None else 0.0
                plan = dataclasses.replace(plan, finetune_seconds=budget, use_crf=plan.use_crf and use_crf,
                                           time_left=None)
                labels = agent.step(strokes[interaction - 1], plan)
                jaccard = frame_jaccard(truth, labels, info.num_objects)
                if not studied:
                    before = jaccard
                    if len(strokes) == interaction:  # the first variant draws the next stroke
                        strokes.append(next_scribble(robot, info.name, labels, truth, info.num_objects, jaccard, used))
            if before is not None and first_before is not None and not np.allclose(before, first_before, atol=1e-6):
                log.warning("%s: the rounds before round %d did not replay identically for %s", info.name,
                            study_round, name)
            first_before = before if first_before is None else first_before
            stroked = sorted(stroke_frames(strokes[-1]))
            stats = agent.last_finetune
            rows.append({
                "sample": f"{info.name}-{scribble_index}", "round": study_round, "variant": name,
                "jaccard_before": float(before.mean()) if before is not None else math.nan,
                "jaccard": float(jaccard.mean()),
                "stroked_before": float(before[stroked].mean()) if before is not None else math.nan,
                "stroked": float(jaccard[stroked].mean()),
                "steps": stats.steps, "first_loss": stats.first_loss, "last_loss": stats.last_loss,
                "stopped_early": stats.stopped_early,
            })
            log.info("%s-%d round %d %s: J %.3f -> %.3f (%d steps)", info.name, scribble_index, study_round, name,
                     rows[-1]["jaccard_before"], rows[-1]["jaccard"], stats.steps)
    finally:
        agent.config = base_config
    return rows


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Variants (in the given order): mean J before and after the studied round, its change against no
    fine-tuning, on the stroked frames, and the mean steps."""
    order = list(dict.fromkeys(results["variant"]))
    table = results.groupby("variant")[["jaccard_before", "jaccard", "stroked", "steps"]].mean().loc[order]
    baseline = results[results["variant"] == NONE].set_index("sample")["jaccard"]
    change = results.assign(change=results["jaccard"] - results["sample"].map(baseline))
    table.insert(2, "vs no fine-tuning", change.groupby("variant")["change"].mean().loc[order])
    return table
