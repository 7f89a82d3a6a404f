#!/usr/bin/env python
"""Tune the dense CRF on cached score maps (agent/evaluation/crf_study.py): minutes instead of a session per setting.

    python crf_study.py capture --davis-root data/holdout --output-dir outputs/crf-holdout   # play once, CRF off
    python crf_study.py sweep outputs/crf-holdout --davis-root data/holdout \\
        --variant bilateral_srgb=10 --variant bilateral_srgb=6,bilateral_sxy=40            # mean J per round

capture plays each video's first scribble and the robot's later ones with the agent (--set agent fields,
e.g. transfer.topk=10), the CRF off, and keeps the transfer's scores of every --every-th frame after
--rounds; sweep runs the CRF variants (CRFConfig fields; each round at the scale the strategy plans for it
unless a variant sets `scale`) and prints mean J per round against no CRF and the defaults.
"""

from __future__ import annotations

import argparse
import logging

from agent.config import AgentConfig, ConfigError, load_config, to_dict
from agent.errors import CommandParser
from agent.paths import path_arg
from session_runner import setup_logging
from strategies import describe_strategies

log = logging.getLogger("crf_study")
MAX_EVERY = 10**6  # --every: frames


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    strategies = "\n".join(f"  {line}" for line in describe_strategies().splitlines())
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    capture = commands.add_parser("capture", help="play the videos once with the CRF off and cache the score maps",
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog=f"strategies (--strategy):\n{strategies}")
    capture.add_argument("--davis-root", type=path_arg, required=True, help="DAVIS-format root (e.g. data/holdout)")
    capture.add_argument("--subset", default="val", choices=("train", "val", "trainval"),
                         help="its ImageSets/2017/<subset>.txt (default val)")
    capture.add_argument("--sequences", default=None, help="comma-separated subset of the sequences")
    capture.add_argument("--scribbles", default="1", help="which scribble files start a sample (default 1: the first)")
    capture.add_argument("--rounds", default="1,2,4",
                         help="rounds whose scores are kept, each in 1..16 as a session's (default 1,2,4)")
    capture.add_argument("--every", type=int, default=4, help="keep every n-th frame's scores (default 4)")
    capture.add_argument("--strategy", default="auto", help="whose rounds and CRF scales (default auto)")
    capture.add_argument("--checkpoint", type=path_arg, default=None, help="model checkpoint (default: the shipped one)")
    capture.add_argument("--config", action="append", default=[], metavar="FILE", help="AgentConfig JSON or YAML")
    capture.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="assignments",
                         help="one AgentConfig field, e.g. transfer.topk=10 (repeatable)")
    capture.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    capture.add_argument("--output-dir", type=path_arg, required=True, help="where the .npz files go")
    capture.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir when done")

    sweep = commands.add_parser("sweep", help="score CRF variants on cached score maps")
    sweep.add_argument("cache", type=path_arg, help="a capture's --output-dir")
    sweep.add_argument("--davis-root", type=path_arg, required=True, help="the root the capture played")
    sweep.add_argument("--variant", action="append", default=[], metavar="FIELD=VALUE[,FIELD=VALUE]",
                       help="CRFConfig fields, e.g. bilateral_srgb=6,bilateral_sxy=40 (repeatable); no CRF and the "
                            "defaults are always scored")
    sweep.add_argument("--output", type=path_arg, default=None,
                       help="CSV of every sample, round and variant (default CACHE/sweep.csv)")
    sweep.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    for sub in (capture, sweep):
        sub.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from agent.evaluation.study_inputs import run_reporting_errors
    from strategies import UnknownStrategyError

    return run_reporting_errors(lambda: run_capture(args) if args.command == "capture" else run_sweep(args),
                                UnknownStrategyError)


def run_capture(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agent.config import MAX_INTERACTIONS_LIMIT
    from agent.evaluation.crf_study import capture_metadata, capture_sample
    from agent.evaluation.outputs import atomic_write_text, discard, prepare_output_dir, publish
    from agent.evaluation.preflight import check_checkpoint
    from agent.evaluation.study_inputs import check_study_strategy, int_list, study_videos
    from agent.inference.agent import InteractiveAgent
    from agent.inference.crf import CRFWorkerError
    from strategies import get_strategy, resolve_name

    # Everything is checked before the model is built.
    rounds = int_list(args.rounds, "--rounds", at_most=MAX_INTERACTIONS_LIMIT)
    scribbles = int_list(args.scribbles, "--scribbles")
    # Bounded: 10**23 passed, and was an OverflowError traceback in the first round's frame selection, once the
    # model was built (a million is beyond any video's frames: DAVIS's hold about 100).
    if not 1 <= args.every <= MAX_EVERY:
        raise ConfigError(f"--every {args.every}: expected an integer in 1..{MAX_EVERY:,}")
    config = load_config(AgentConfig, args.config, args.assignments,
                         {"checkpoint": args.checkpoint, "device": args.device})
    checkpoint = check_checkpoint(config.checkpoint)
    reader, infos = study_videos(args.davis_root, args.subset, args.sequences, scribbles)
    strategy_name = resolve_name(args.strategy)
    strategy = get_strategy(strategy_name)
    check_study_strategy(strategy, infos, max(rounds))
    # --overwrite replaces the folder when done: never the root it reads or the checkpoint.
    target = prepare_output_dir(args.output_dir, overwrite=args.overwrite, inputs=(args.davis_root, checkpoint))
    try:
        agent = InteractiveAgent.from_pretrained(config=config)
        agent.prepare({(info.height, info.width) for info in infos})
        for info in tqdm(infos, desc="capture", unit="video"):
            frames, truth = reader.load_frames(info.name), reader.load_annotations(info.name)
            for index in scribbles:
                sample = capture_sample(agent, strategy, info, frames, truth, reader.load_scribble(info.name, index),
                                        index, rounds, args.every)
                sample.save(target.work)
                log.info("%s: J without CRF %s", sample.name,
                         " ".join(f"round {r} {j:.3f}" for r, j in sample.jaccard.items()))
        atomic_write_text(target.work / "capture.json", capture_metadata(
            str(agent.config.checkpoint), strategy_name, rounds, args.every, to_dict(agent.config),
            str(args.davis_root.resolve())))
    except BaseException as error:
        discard(target)
        if isinstance(error, KeyboardInterrupt) and target.work.is_dir():
            log.warning("the samples captured so far are in %s", target.work)
        if isinstance(error, CRFWorkerError) and target.work.is_dir():  # its one line says where they are kept
            raise CRFWorkerError(f"{error}; the samples captured so far are in {target.work}") from error
        raise
    print(f"written: {publish(target)}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agent.data.davis import DavisReader
    from agent.evaluation.crf_study import (
        DEFAULT,
        error_table,
        load_captures,
        summary_table,
        sweep,
        variants_from_specs,
    )
    from agent.evaluation.outputs import atomic_write_text
    from agent.evaluation.study_inputs import check_output_file
    from agent.inference import crf
    from agent.paths import read_json

    variants = variants_from_specs(args.variant)
    output = args.output or args.cache / "sweep.csv"
    check_output_file(output, args.overwrite, "sweep's results",
                      inputs=(args.davis_root, *args.cache.glob("*.npz"), args.cache / "capture.json"))
    reader = DavisReader(args.davis_root)
    samples = load_captures(args.cache, reader)
    if not (args.cache / "capture.json").is_file():  # written last: it ran on without a word
        log.warning("%s has no capture.json: its capture stopped before the end, so this sweep covers only the %d "
                    "sample(s) captured so far", args.cache, len(samples))
    else:  # a warning only: a copy of the root (its files linked) is as good; another with the same names is not
        try:
            captured_from = read_json(args.cache / "capture.json").get("davis_root")
        except (ValueError, OSError, AttributeError):
            captured_from = None
        if captured_from and Path(captured_from) != args.davis_root.resolve():
            log.warning("%s was captured from %s, not --davis-root %s: its scores are measured against this root's "
                        "truth, right only if it holds the same videos", args.cache, captured_from, args.davis_root)
    crf.warm_up(variants["default"][0])
    results = sweep(samples, reader, variants)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, results.to_csv(index=False))
    print(summary_table(results).to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\nwhere the {DEFAULT} CRF's J is lost:")
    print(error_table(results).to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
