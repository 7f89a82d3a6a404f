"""python -m agent.segment VIDEO --scribbles S --output DIR: masks for a video from scribbles.

    python -m agent.segment clip.mp4 --scribbles strokes/ --output clip-masks      # painted scribble images
    python -m agent.segment frames/ --scribbles scribbles.json --output out         # DAVIS scribble JSON
    python -m agent.segment clip.mp4 --scribbles s/ --output out --set crf.iterations=10
    python -m agent.segment clip.mp4 --scribbles out/scribbles.json --scribbles fixes/ --output out2  # corrections

VIDEO: a video file (mp4, avi, mov, anything FFmpeg reads) or a folder of frame images.
S: DAVIS scribble JSON, one scribble image, or a folder of them (colours: docs/OWN_VIDEOS.md). Each --scribbles
is a round, played in order on the same agent; an export's scribbles.json holds its rounds, replayed exactly.
Writes masks/<frame>.png (palette PNG), overlay.mp4, masks.json (COCO RLE) and scribbles.json (the strokes,
round by round) into DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from ..config import AgentConfig, ConfigError, ScribbleConfig, load_config
from ..errors import CommandParser, counted, first_line, os_error_line
from ..paths import path_arg
from .video import DEFAULT_WORKING_SIDE, InputError

log = logging.getLogger("agent.segment")


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The options agent.segment and agent.app share: the agent's configuration and the working size."""
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="JSON or YAML of AgentConfig fields (agent/config.py); several are merged in order")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="assignments",
                        help="one AgentConfig field, e.g. crf.iterations=10 or inference_scale=1.0 (repeatable)")
    parser.add_argument("--checkpoint", type=path_arg, default=None, help="model checkpoint (default: the shipped one)")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--working-size", type=int, default=DEFAULT_WORKING_SIDE, metavar="PIXELS",
                        help=f"short side the agent works at; masks are upsampled back (default {DEFAULT_WORKING_SIDE})")
    parser.add_argument("--chunk-frames", type=int, default=None, metavar="N",
                        help="frames the agent holds at once (memory ~15 MB a frame at 480p; default 50)")
    parser.add_argument("--crf-scale", type=float, default=None,
                        help="dense CRF on frames downscaled by this factor (default 0.5); 0 turns the CRF off")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def tools_default_config() -> AgentConfig:
    """The agent's defaults, with confirmed labels (ScribbleConfig.confirm_corrected_frames) off: they take a
    corrected frame's other labels as accepted, which the benchmark's robot means (it marks every large error of
    the frame) and a person fixing one part of a frame at a time does not (docs/OWN_VIDEOS.md)."""
    return AgentConfig(scribbles=ScribbleConfig(confirm_corrected_frames="off"))


def agent_config(args: argparse.Namespace) -> AgentConfig:
    """tools_default_config() < --config files < --checkpoint/--device < --set."""
    return load_config(AgentConfig, args.config, args.assignments,
                       {"checkpoint": args.checkpoint, "device": args.device}, base=tools_default_config())


def check_sizes(args: argparse.Namespace) -> None:
    if args.working_size < 16:
        raise InputError(f"--working-size must be at least 16 pixels, got {args.working_size}")
    if args.chunk_frames is not None and args.chunk_frames < 1:
        raise InputError(f"--chunk-frames must be >= 1, got {args.chunk_frames}")
    if args.crf_scale is not None and not 0 <= args.crf_scale <= 1:
        raise InputError(f"--crf-scale must be in [0, 1] (0: no CRF), got {args.crf_scale}")


def check_device(name: str) -> None:
    """InputError for a device this machine does not have (`cuda` without CUDA, `cuda:3` past its devices): it was a
    ValueError traceback as the model loaded, once every frame had been checked."""
    from ..device import resolve_device

    try:
        resolve_device(name)
    except ValueError as error:
        raise InputError(str(error)) from error


def build_segmenter(agent, frames, args: argparse.Namespace):
    from .segmenter import DEFAULT_CHUNK_FRAMES, VideoSegmenter

    return VideoSegmenter(agent, frames, args.chunk_frames or DEFAULT_CHUNK_FRAMES, build_segmenter_plan(args))


def settings_warnings(sources: list, video, args: argparse.Namespace) -> list[str]:
    """replay.replay_warnings of `sources` (load_sources) against this run's settings, and a gap in their object ids."""
    from .replay import replay_warnings, segmenting_settings
    from .scribble_input import id_gap_warning
    from .segmenter import DEFAULT_CHUNK_FRAMES
    from .video import working_size

    now = segmenting_settings(video.num_frames, working_size(video.height, video.width, args.working_size),
                              args.chunk_frames or DEFAULT_CHUNK_FRAMES, build_segmenter_plan(args))
    gap = id_gap_warning(sources, video.num_frames)
    return replay_warnings(sources, now) + ([gap] if gap else [])


def build_segmenter_plan(args: argparse.Namespace):
    from .segmenter import DEFAULT_PLAN

    if args.crf_scale is None:
        return DEFAULT_PLAN
    return dataclasses.replace(DEFAULT_PLAN, use_crf=args.crf_scale > 0, crf_scale=args.crf_scale or None)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("PIL").setLevel(logging.INFO)  # its PNG chunk debug lines drown ours with -v


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(prog="python -m agent.segment", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=path_arg, help="video file or folder of frame images")
    parser.add_argument("--scribbles", type=path_arg, required=True, action="append", metavar="S",
                        help="DAVIS scribble JSON, a scribble image or a folder of scribble images; repeat it for "
                             "rounds of corrections, played in order (an export's scribbles.json: its own rounds)")
    parser.add_argument("--output", type=path_arg, required=True, help="output folder (must be empty or new)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    add_agent_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from ..data.davis import DatasetError
    from ..inference.crf import CRFWorkerError
    from ..inference.footprint import TooManyObjects
    from ..model.checkpoint import CheckpointError, check_checkpoint_fits, default_checkpoint_path
    from ..signals import exit_code, signal_name, terminate_as_interrupt
    from .scribble_input import drawn_objects
    from .segmenter import DEFAULT_CHUNK_FRAMES

    # SIGTERM and SIGHUP (`timeout`, a scheduler, a closed terminal) end the run as Ctrl-C does: they killed it,
    # leaving the empty output folder that refused the next try, or an export's half-written hidden folder in it.
    with terminate_as_interrupt():
        try:
            # Everything about the input is checked before the model loads or a frame is decoded in full (but an
            # export's recorded content, checked in `run` as soon as the frames are read).
            check_sizes(args)
            config = agent_config(args)
            check_device(config.device)
            # The model loads once the frames are read (an export's content is checked first): its checkpoint now.
            check_checkpoint_fits(Path(config.checkpoint or default_checkpoint_path()))
            from .export import discard_empty_output, prepare_output
            from .scribble_input import load_sources
            from .video import open_video

            video = open_video(args.video)
            # Every source is read before the first round plays: a mistake in the corrections came last.
            sources = load_sources(args.scribbles, video)
            warnings = settings_warnings(sources, video, args)
            output = prepare_output(args.output, args.overwrite, video=video.path)
            for line in warnings:  # after the output's check: a refused run is its one error line alone
                print(f"warning: {line}", file=sys.stderr)
            started = time.perf_counter()
            try:
                run(video, sources, output, config, args)
            except BaseException:  # a checkpoint that fails to load, Ctrl-C: no empty folder refuses the next try
                discard_empty_output(output)
                raise
        except (InputError, ConfigError, DatasetError, CheckpointError, CRFWorkerError) as error:
            if args.verbose:
                raise
            print(f"error: {error}", file=sys.stderr)
            return 2
        except OSError as error:  # a path the file system refuses (a name too long), a full disk
            if args.verbose:
                raise
            print(f"error: {os_error_line(error)}", file=sys.stderr)
            return 2
        except TooManyObjects:  # every id up to the highest is a class: a stray high id (palette colour) made many
            if args.verbose:
                raise
            objects, named = drawn_objects(sources, video.num_frames)
            drawn, highest = len(objects), max(objects)
            fix = ((f"{drawn} objects are drawn: number them 1..{drawn} (in a scribble image, the colours of objects "
                    f"1..{drawn})" if drawn > 1 else "1 object is drawn: number it 1 (in a scribble image, object 1's "
                    "colour)") if highest > drawn else
                   "segment fewer objects, or pass a smaller --chunk-frames or --working-size")
            print(f"error: {named}: object id {highest} makes {highest + 1} classes, each holding scores of "
                  f"every frame, too many for the memory: {fix}", file=sys.stderr)
            return 2
        except MemoryError as error:  # InteractiveAgent.start refuses a chunk too large for the memory (footprint.py)
            if args.verbose:
                raise
            print(f"error: --chunk-frames {args.chunk_frames or DEFAULT_CHUNK_FRAMES} at --working-size "
                  f"{args.working_size} does not fit in memory: pass a smaller --chunk-frames or --working-size ({first_line(error)})",
                  file=sys.stderr)
            return 2
        except KeyboardInterrupt as interrupt:
            print(f"interrupted ({signal_name(interrupt)})", file=sys.stderr)
            return exit_code(interrupt)
    print(f"masks for {counted(video.num_frames, 'frame')} in {time.perf_counter() - started:.1f} s: {output}")
    return 0


def run(video, sources: list, output: Path, config: AgentConfig, args: argparse.Namespace) -> None:
    from ..inference.agent import InteractiveAgent
    from .export import export
    from .progress import TqdmProgress
    from .replay import check_drawn_on
    from .video import WorkingFrames

    progress = TqdmProgress()
    try:
        frames = WorkingFrames.read(video, args.working_size, progress)
        # An export's recorded content needs the frames: checked as soon as they are read, before the model loads.
        check_drawn_on(sources, frames, video)
        agent = InteractiveAgent.from_pretrained(config=config)
        segmenter = build_segmenter(agent, frames, args)
        segmenter.segment_rounds([round_ for source in sources for round_ in source.rounds], progress)
        export(video, segmenter.labels, output, segmenter.num_objects(), segmenter.record, progress, args.overwrite)
    finally:
        progress.close()  # an error line starts a line of its own, not the end of a half-drawn bar


if __name__ == "__main__":
    sys.exit(main())
