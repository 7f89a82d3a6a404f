#!/usr/bin/env python
"""Measure fine-tuning without the clock (agent/evaluation/finetune_study.py): J after a round with and without it.

    python finetune_study.py --davis-root data/holdout                           # round 2, <= 300 steps
    python finetune_study.py --davis-root data/holdout --variant lr=5e-5 --variant loss=pairwise --steps 100

Each video's first scribble (--scribbles) is played without fine-tuning up to --round, the robot drawing
each later stroke; that round is played once per variant after the same strokes: without fine-tuning,
with the agent's fine-tuning (FinetuneConfig, --set agent fields, e.g. finetune.lr=1e-4) and with each
--variant (FinetuneConfig fields over it). Fine-tuning stops after --steps (agent.finetune.max_steps) or
the paper's early stop, whichever comes first. Prints mean J per variant; writes one CSV row per sample
and variant.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from agent.config import AgentConfig, ConfigError, load_config
from agent.errors import CommandParser
from agent.paths import path_arg
from session_runner import setup_logging
from strategies import describe_strategies

log = logging.getLogger("finetune_study")

STEPS = 300  # about what an H200 does in the paper's 20 s round on this model (a CPU step takes ~0.2 s)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    strategies = "\n".join(f"  {line}" for line in describe_strategies().splitlines())
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=f"strategies (--strategy):\n{strategies}")
    parser.add_argument("--davis-root", type=path_arg, required=True, help="DAVIS-format root (e.g. data/holdout)")
    parser.add_argument("--subset", default="val", choices=("train", "val", "trainval"),
                        help="its ImageSets/2017/<subset>.txt (default val)")
    parser.add_argument("--sequences", default=None, help="comma-separated subset of the sequences")
    parser.add_argument("--scribbles", default="1", help="which scribble files start a sample (default 1: the first)")
    parser.add_argument("--round", type=int, default=2, dest="study_round",
                        help="the round the variants play, 1..16 as a session's (default 2: the first correction)")
    parser.add_argument("--steps", type=int, default=STEPS,
                        help=f"fine-tuning steps at most, agent.finetune.max_steps (default {STEPS})")
    parser.add_argument("--seconds", type=float, default=3600.0,
                        help="wall-clock budget of a variant's fine-tuning (default 3600: the steps end it)")
    parser.add_argument("--variant", action="append", default=[], metavar="FIELD=VALUE[,FIELD=VALUE]",
                        help="FinetuneConfig fields, e.g. lr=5e-5 (repeatable); no fine-tuning and the agent's "
                             "own are always played")
    parser.add_argument("--crf", action="store_true", help="keep the strategy's CRF (default off: argmax)")
    parser.add_argument("--strategy", default="auto", help="whose rounds (default auto)")
    parser.add_argument("--checkpoint", type=path_arg, default=None, help="model checkpoint (default: the shipped one)")
    parser.add_argument("--config", action="append", default=[], metavar="FILE", help="AgentConfig JSON or YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="assignments",
                        help="one AgentConfig field, e.g. finetune.lr=1e-4 (repeatable)")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--output", type=path_arg, default=Path("outputs/finetune_study.csv"),
                        help="CSV of every sample and variant (default outputs/finetune_study.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from agent.evaluation.study_inputs import run_reporting_errors
    from strategies import UnknownStrategyError

    return run_reporting_errors(lambda: run(args), UnknownStrategyError)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agent.evaluation.finetune_study import study_sample, summary_table, variants_from_specs
    from agent.evaluation.outputs import atomic_write_text
    from agent.evaluation.preflight import check_checkpoint
    from agent.evaluation.study_inputs import (
        check_output_file,
        check_round,
        check_study_strategy,
        int_list,
        study_videos,
    )
    from agent.inference.agent import InteractiveAgent
    from strategies import get_strategy, resolve_name

    # Everything is checked before the model is built.
    scribbles = int_list(args.scribbles, "--scribbles")
    check_round(args.study_round, "--round")
    # Finite: inf (or 1e400, which float() reads as inf) passed, and was RoundPlan's ValueError traceback once the
    # model was built and the first sample played.
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise ConfigError(f"--seconds {args.seconds}: expected a finite number > 0")
    config = load_config(AgentConfig, args.config, args.assignments,
                         {"checkpoint": args.checkpoint, "device": args.device, "finetune.max_steps": args.steps})
    if config.finetune.max_steps == 0:
        raise ConfigError("--steps 0: the study needs a step cap (the clock does not bound it)")
    variants = variants_from_specs(args.variant, config.finetune)
    checkpoint = check_checkpoint(config.checkpoint)
    output = args.output
    check_output_file(output, args.overwrite, "study's results", inputs=(args.davis_root, checkpoint))
    reader, infos = study_videos(args.davis_root, args.subset, args.sequences, scribbles)
    strategy = get_strategy(resolve_name(args.strategy))
    check_study_strategy(strategy, infos, args.study_round)

    import pandas as pd

    agent = InteractiveAgent.from_pretrained(config=config)
    agent.prepare({(info.height, info.width) for info in infos})
    rows: list[dict] = []
    output.parent.mkdir(parents=True, exist_ok=True)
    for info in tqdm(infos, desc="fine-tuning study", unit="video"):
        frames, truth = reader.load_frames(info.name), reader.load_annotations(info.name)
        for index in scribbles:
            rows += study_sample(agent, strategy, info, frames, truth, reader.load_scribble(info.name, index), index,
                                 variants, args.study_round, args.seconds, args.crf)
            atomic_write_text(output, pd.DataFrame(rows).to_csv(index=False))  # an interrupted study keeps its samples
    results = pd.DataFrame(rows)
    print(summary_table(results).to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
