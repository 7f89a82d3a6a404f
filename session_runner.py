#!/usr/bin/env python
"""Run a local DAVIS Interactive session: flags -> config dataclasses -> agent.session.run_session().

    python session_runner.py --subset val                                # built-in synthetic data
    python session_runner.py --subset val --davis-root ../shared/davis   # real DAVIS
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from agent.config import AgentConfig, SessionConfig
from agent.predictor import PREDICTORS
from strategies import REGISTRY

log = logging.getLogger("session_runner")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = SessionConfig()
    strategy_help = "\n".join(f"  {name}: {cls.description}" for name, cls in sorted(REGISTRY.items()))
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"strategies (--strategy):\n{strategy_help}\n  module:Class: your own strategy class",
    )
    parser.add_argument("--subset", default=defaults.subset, choices=["train", "val", "trainval"])
    parser.add_argument("--davis-root", type=Path, default=None,
                        help="DAVIS-format root (official, partial or custom); default: built-in synthetic data")
    parser.add_argument("--sequences", default=None, help="comma-separated subset of the sequences")
    parser.add_argument("--max-interactions", type=int, default=defaults.max_interactions)
    parser.add_argument("--max-time", type=float, default=defaults.max_time, help="seconds per object per sample")
    parser.add_argument("--metric", default=defaults.metric, choices=["J", "F", "J_AND_F"])
    parser.add_argument("--strategy", default=defaults.strategy, help="a strategy name (below) or module:Class")
    parser.add_argument("--predictor", default="simlearn", choices=PREDICTORS,
                        help="simlearn: the paper's agent; baseline: paint scribbles, copy to every frame")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model checkpoint (default: the shipped one)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="where results go (default: outputs/<subset>-<predictor>-<strategy>-<time>)")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("absl").setLevel(logging.WARNING)  # davisinteractive logs every step at INFO

    # Heavy imports after argument parsing, so --help is instant.
    import numpy as np
    import torch

    from agent.checkpoint import CheckpointError
    from agent.data.davis import DatasetError
    from agent.model.backbones import WeightsUnavailableError
    from agent.predictor import build_predictor
    from agent.session import PredictionError, run_session
    from strategies import UnknownStrategyError, get_strategy

    output_dir = args.output_dir or Path("outputs") / (
        f"{args.subset}-{args.predictor}-{args.strategy.replace(':', '.')}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    config = SessionConfig(
        subset=args.subset,
        davis_root=args.davis_root,
        sequences=tuple(s.strip() for s in args.sequences.split(",") if s.strip()) if args.sequences else None,
        max_interactions=args.max_interactions,
        max_time=args.max_time,
        metric=args.metric,
        strategy=args.strategy,
        output_dir=output_dir,
        device=args.device,
        seed=args.seed,
    )
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    try:
        strategy = get_strategy(config.strategy)
        predictor = build_predictor(
            args.predictor, AgentConfig(checkpoint=args.checkpoint, device=config.device, seed=config.seed)
        )
        result = run_session(config, predictor, strategy)
    except (DatasetError, UnknownStrategyError, CheckpointError, WeightsUnavailableError, PredictionError,
            ValueError) as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: partial results are in {output_dir}", file=sys.stderr)
        return 130
    summary = result.summary
    metric = summary["metric"]
    print(f"AUC-{metric}: {summary['auc']:.3f}")
    print(f"{metric}@{summary['threshold']:.0f}s: {summary['metric_at_threshold']:.3f}")
    print(f"results: {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
