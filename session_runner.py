#!/usr/bin/env python
"""Play a DAVIS Interactive session: flags and config -> agent.evaluation.session.run_session().

    python session_runner.py                                      # built-in synthetic data, strategy auto
    python session_runner.py --davis-root ../shared/davis         # real DAVIS (val)
    python session_runner.py --config outputs/RUN/config.json --output-dir outputs/rerun   # re-run a run
    python session_runner.py --set agent.crf.iterations=10 --set agent.inference_scale=1.0
    python session_runner.py --host http://127.0.0.1:8000 --user-key me    # an evaluation server (test-dev)
    python session_runner.py --shard 2/4 --output-dir runs/val/2            # a quarter; see agent.report merge
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

from agent.config import AgentConfig, ConfigError, RunConfig, comma_names, load_config, resolved_record
from agent.errors import CommandParser
from strategies import describe_strategies

log = logging.getLogger("session_runner")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    strategies = "\n".join(f"  {line}" for line in describe_strategies().splitlines())
    parser = CommandParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"strategies (--strategy):\n{strategies}\n  module:Class: your own strategy class\n\n"
               "Every field of agent/config.py's RunConfig can be set with --set section.field=value "
               "(sections: session, agent, agent.transfer, agent.scribbles, agent.finetune, agent.crf, agent.identity, "
               "agent.flow).",
    )
    # Flags default to None: only the ones given override --config files (then --set overrides them). Paths stay
    # text until the config reads them: an empty one (`--output-dir "$UNSET"`) is refused there, Path("") was `.`.
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="JSON or YAML of RunConfig (e.g. a run's config.json); several are merged in order")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="assignments",
                        help="one config field, e.g. agent.crf.iterations=10 (repeatable; wins over everything)")
    parser.add_argument("--subset", default=None,
                        help="val (default), train or trainval; test-dev (the default) with --host")
    parser.add_argument("--host", default=None,
                        help="evaluation server URL, e.g. http://127.0.0.1:8000 (default localhost: in-process)")
    parser.add_argument("--user-key", default=None,
                        help="your key on the evaluation server (default: $DAVIS_USER_KEY)")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="play only part K of N (whole sequences); merge with python -m agent.report merge")
    parser.add_argument("--davis-root", default=None,
                        help="DAVIS-format root (official, partial or custom); default: built-in synthetic data")
    parser.add_argument("--sequences", default=None, help="comma-separated subset of the sequences")
    parser.add_argument("--max-interactions", type=int, default=None, help="per sample (default 8)")
    parser.add_argument("--max-time", type=float, default=None, help="seconds per object per sample (default 240)")
    parser.add_argument("--metric", default=None, help="J (default), F or J_AND_F")
    parser.add_argument("--strategy", default=None, help="a strategy name (below) or module:Class (default auto)")
    parser.add_argument("--predictor", default=None, help="simlearn (the paper's agent, default) or baseline")
    parser.add_argument("--checkpoint", default=None, help="model checkpoint (default: the shipped one)")
    parser.add_argument("--output-dir", default=None,
                        help="where results go (default: outputs/<subset>-<predictor>-<strategy>-<time>); an existing "
                             "non-empty one is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --output-dir, once this run completes (a failed or interrupted "
                             "run leaves it as it was)")
    parser.add_argument("--skip-bad-sequences", action="store_true", default=None,
                        help="leave out sequences that cannot be evaluated (bad files, or named and absent) instead "
                             "of stopping; summary.json lists them under skipped_sequences")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--seed", type=int, default=None, help=f"the agent's random seed (default {AgentConfig().seed})")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(_shard_glued(sys.argv[1:] if argv is None else list(argv)))


def _shard_glued(argv: list) -> list:
    """`--shard -1/2` as `--shard=-1/2`: argparse takes a value starting with '-' for an option unless it is a plain
    number, so a negative shard was "argument --shard: expected one argument"; glued, the K/N check names it."""
    out: list = []
    for arg in argv:
        if out and out[-1] == "--shard" and re.match(r"-\d", str(arg)):
            out[-1] = f"--shard={arg}"
        else:
            out.append(arg)
    return out


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults < --config files < flags < --set; ConfigError names the bad key or value."""
    sequences = comma_names(args.sequences, "--sequences")
    remote = args.host not in (None, "localhost")
    flags = {
        "session.subset": args.subset or ("test-dev" if remote else None),
        "session.host": args.host, "session.shard": args.shard,
        "session.user_key": args.user_key or os.environ.get("DAVIS_USER_KEY") or None,
        "session.davis_root": args.davis_root, "session.sequences": sequences,
        "session.max_interactions": args.max_interactions, "session.max_time": args.max_time,
        "session.metric": args.metric, "session.strategy": args.strategy, "session.predictor": args.predictor,
        "session.output_dir": args.output_dir, "session.skip_bad_sequences": args.skip_bad_sequences,
        "agent.checkpoint": args.checkpoint, "agent.device": args.device, "agent.seed": args.seed,
    }
    return load_config(RunConfig, args.config, args.assignments, flags)


def build_predictor(name: str, agent_config: AgentConfig | None = None):
    """The predictor factory: `simlearn` (the paper's agent) or `baseline` (scribble painting)."""
    if name == "baseline":
        from agent.evaluation.baseline import ScribblePaintBaseline

        return ScribblePaintBaseline()
    from agent.inference.agent import InteractiveAgent

    return InteractiveAgent.from_pretrained(config=agent_config)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("absl").setLevel(logging.WARNING)  # davisinteractive logs every step at INFO


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    try:
        config = resolve_config(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    # Heavy imports after argument parsing, so --help is instant.
    from agent.signals import terminate_as_interrupt

    # SIGTERM (a scheduler, `timeout`) and SIGHUP stop the run like Ctrl-C: what finished is written.
    with terminate_as_interrupt():
        return _run(config, args)


def _run(config: RunConfig, args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np
    import torch

    from agent.data.davis import DatasetError
    from agent.data.remote_compat import RemoteServerError
    from agent.device import resolve_device
    from agent.errors import first_line
    from agent.evaluation.outputs import PublishError, discard, publish, unused_dir
    from agent.evaluation.preflight import PREFLIGHT_ERRORS, check_run, with_output_dir
    from agent.evaluation.report import ResultsNotWritten
    from agent.evaluation.session import PredictionError, run_session
    from agent.inference import crf
    from agent.inference.plan import StrategyError
    from agent.model.backbones import WeightsUnavailableError
    from agent.model.checkpoint import CheckpointError
    from agent.signals import exit_code, signal_name
    from strategies import UnknownStrategyError, get_strategy, resolve_name

    session = config.session
    try:
        device = resolve_device(config.agent.device)
        strategy_name = resolve_name(session.strategy, device.type)
        strategy = get_strategy(strategy_name)
    except (UnknownStrategyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    shard = f"-shard{session.shard.replace('/', 'of')}" if session.shard else ""  # shards start together
    output_dir = session.output_dir or unused_dir(Path("outputs") / (
        f"{session.subset}-{session.predictor}-{strategy_name.replace(':', '.')}-{time.strftime('%Y%m%d-%H%M%S')}"
        f"{shard}"
    ))
    # config.json holds the resolved run: passing it back with --config plays the same run.
    config = dataclasses.replace(config, session=dataclasses.replace(session, strategy=strategy_name,
                                                                      output_dir=output_dir))
    if session.strategy != strategy_name:
        log.info("strategy auto -> %s (device %s)", strategy_name, device.type)
    # Every file, the checkpoint, the output directory and the strategy, before the model is built.
    try:
        checked = check_run(config, strategy, overwrite=args.overwrite, generated=session.output_dir is None)
    except PREFLIGHT_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"interrupted ({signal_name(interrupt)}) before the run began", file=sys.stderr)
        return exit_code(interrupt)
    output = checked.output
    if session.output_dir is None:  # the default name, or the next free one when another run took it meanwhile
        config = with_output_dir(config, output.final)
    np.random.seed(config.agent.seed)
    torch.manual_seed(config.agent.seed)
    try:
        predictor = build_predictor(config.session.predictor, config.agent)
        result = run_session(with_output_dir(config, output.work).session, predictor, strategy,
                             registration=checked.registration, run_config=resolved_record(config))
    except RemoteServerError as error:  # the server went away: one line, and what finished stays
        if args.verbose:
            raise
        discard(output)
        kept = output.work.is_dir() and any(output.work.iterdir())
        print(f"error: {error}" + (f"; results so far are in {output.work}" if kept else ""), file=sys.stderr)
        if output.staged and kept:
            print(f"{output.final} still holds the earlier run's results (not replaced)", file=sys.stderr)
        return 1
    # MemoryError: InteractiveAgent.start refuses a video too long for the memory (inference/footprint.py).
    except (DatasetError, UnknownStrategyError, CheckpointError, WeightsUnavailableError, PredictionError,
            StrategyError, ValueError, MemoryError, crf.CRFWorkerError) as error:
        if args.verbose:
            raise
        discard(output)
        print(f"error: {str(error) or first_line(error)}", file=sys.stderr)  # a bare MemoryError: its name
        _say_where(output, "results so far")
        return 2
    except OSError as error:  # a full disk or a file-size limit while writing, a file that went away
        if args.verbose:
            raise
        discard(output)
        if isinstance(error, ResultsNotWritten):  # a completed run: its figures all the same (they were lost)
            _print_figures(error.summary)
        # A write's error names no file (the framework's report, interactions.jsonl): the run's folder then.
        print(f"error: {error.filename or output.work}: {error.strerror or first_line(error)}", file=sys.stderr)
        _say_where(output, "results so far")
        return 2
    except KeyboardInterrupt as interrupt:
        crf.shutdown_workers()  # queued frames are not needed any more
        discard(output)
        print(f"interrupted ({signal_name(interrupt)})", file=sys.stderr)
        _say_where(output, "partial results")
        return exit_code(interrupt)
    unpublished = None
    try:
        final = publish(output)
    except PublishError as error:  # a full disk, the folder removed or made read-only: the results stay staged
        unpublished = error
    _print_figures(result.summary)
    if unpublished is not None:  # after the figures, which are this completed run's
        print(f"error: {unpublished}", file=sys.stderr)
        return 2
    print(f"results: {final}")
    return 0


def _print_figures(summary: dict) -> None:
    """A completed run's figures, and warnings about how they were scored."""
    from agent.evaluation.report import printed_figures

    print(printed_figures(summary))
    unavailable = (summary.get("framework") or {}).get("unavailable")
    if unavailable:  # every round played and scored: only the server's own summary is missing
        print(f"warning: the evaluation server's own summary could not be fetched ({unavailable}); every round was "
              "played and scored, and the figures above are this run's own", file=sys.stderr)
    if summary.get("rounds_late"):  # the framework's own warning came glued to a progress bar, without a name
        print(f"warning: {summary['rounds_late']} of {summary['rounds_played']} rounds were not scored: the "
              "framework scores no round submitted after its sample's time limit (session.max_time per object), "
              "and J stays at the last round scored; a faster --device, "
              "a lighter --strategy or a longer --set session.max_time=... fits them", file=sys.stderr)


def _say_where(output, what: str) -> None:
    """Where the stopped run's files are, and that earlier results were kept."""
    if not output.work.is_dir():
        return
    if (output.work / "summary.json").is_file():  # none when the disk is full: no results there to point to
        print(f"{what}: {output.work}", file=sys.stderr)
    if output.staged:
        print(f"{output.final} still holds the earlier run's results (not replaced)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
