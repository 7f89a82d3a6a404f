"""One DAVIS Interactive session (in-process or on a server): the davisinteractive loop, timing, and results written as they come.

The framework times each interaction from `get_scribbles` to `submit_masks`; everything the
predictor does for a sample (loading frames, computing features, fine-tuning) happens inside that
window, so the reported seconds are honest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..config import SessionConfig, to_dict
from ..data import (
    compat,  # noqa: F401  (patches davisinteractive before it is imported)
    remote_compat,
)
from ..data.davis import DatasetError, DavisReader, SequenceInfo
from ..data.registry import Registration, register_dataset
from ..errors import first_line, typed_line
from ..inference.plan import Strategy, plan_round
from ..inference.predictor import Predictor
from ..paths import writing
from ..signals import deferred_signals, signal_name
from .connection import keep_reports, open_session, redact
from .outputs import atomic_write_text
from .report import SampleLayout, summarize_run, write_outputs

log = logging.getLogger(__name__)


class PredictionError(RuntimeError):
    """The predictor returned something the evaluation cannot take."""


@dataclass
class SessionResult:
    summary: dict
    paths: dict[str, Path]
    interrupted: bool


def resolve_dataset(config: SessionConfig) -> Path:
    """The DAVIS root to evaluate on: the given one, or the built-in synthetic dataset."""
    if config.davis_root is not None:
        log.info("dataset: DAVIS-format root %s", config.davis_root)
        return Path(config.davis_root)
    from ..data.synthetic import ensure_default_dataset

    root = ensure_default_dataset()
    log.info("dataset: built-in synthetic DAVIS-format data at %s (pass --davis-root for real DAVIS)", root)
    return root


def check_masks(masks: np.ndarray, info: SequenceInfo) -> np.ndarray:
    expected = (info.num_frames, info.height, info.width)
    masks = np.asarray(masks)
    if masks.shape != expected:
        raise PredictionError(f"predictor returned masks of shape {masks.shape}, expected {expected}")
    if not np.issubdtype(masks.dtype, np.integer):
        raise PredictionError(f"predictor returned {masks.dtype} masks, expected integer labels")
    if masks.min() < 0 or masks.max() > info.num_objects:
        raise PredictionError(f"predictor returned labels outside 0..{info.num_objects}")
    return masks.astype(np.int64, copy=False)


def _frames_as_checked(reader: DavisReader, info: SequenceInfo) -> np.ndarray:
    """The video's frames, refused (DatasetError) when they are no longer those the run checked: a frame removed
    or added, or replaced by one of another size, while the run went on was blamed on the predictor ("returned
    masks of shape (15, ...), expected (16, ...)")."""
    frames = reader.load_frames(info.name)
    found, checked = frames.shape[:3], (info.num_frames, info.height, info.width)
    if found != checked:
        raise DatasetError(f"{reader.frames_dir(info.name)}: {found[0]} frames of {found[2]}x{found[1]} now, "
                           f"{checked[0]} of {checked[2]}x{checked[1]} when the run began (the dataset changed "
                           "during the run?)")
    return frames


def run_session(
    config: SessionConfig,
    predictor: Predictor,
    strategy: Strategy,
    registration: Registration | None = None,
    run_config: dict | None = None,
) -> SessionResult:
    """Play every sample of the subset (in-process or on config.host's server; only config.shard's part);
    write report.csv, summary.json, per_sequence.csv, curve.png, and config.json (`run_config`, the CLI's
    full resolved RunConfig without the user key; default: the session config alone).

    A crash, Ctrl-C or SIGTERM (see signals.terminate_as_interrupt) still writes what finished (summary
    marked "interrupted", its AUC only as "auc_partial") before re-raising. `registration`: the dataset as
    checked by the caller (preflight); None: registered here.
    """
    if registration is None and not config.remote:
        registration = register_dataset(resolve_dataset(config), config.subset, config.sequences,
                                        config.skip_bad_sequences)
    root = registration.root if registration is not None else resolve_dataset(config)
    reader = DavisReader(root)
    if config.output_dir is None:
        raise ValueError("session.output_dir is not set")
    output_dir = Path(config.output_dir)
    # In-process or on a server (config.host), this shard's sequences only; config: the protocol played.
    opened = open_session(config, root, output_dir / "framework", registration)
    session, registration, config = opened.session, opened.registration, opened.config
    output_dir.mkdir(parents=True, exist_ok=True)
    record = redact(run_config if run_config is not None else {"session": to_dict(config)})
    atomic_write_text(output_dir / "config.json", json.dumps(record, indent=2, default=str))
    layout = SampleLayout(
        num_scribbles={s: registration.infos[s].num_scribbles for s in registration.sequences},
        num_objects={s: registration.infos[s].num_objects for s in registration.sequences},
    )
    # One-off set-up for the videos' frame sizes (e.g. the backbone runtime), before any clock runs.
    predictor.prepare(sorted({(registration.infos[s].height, registration.infos[s].width)
                              for s in registration.sequences}))
    interactions_log = output_dir / "interactions.jsonl"
    interactions_log.write_text("")

    interrupted = True
    stopped_by = None
    framework_summary = None
    submitted = late = 0  # late: rounds submitted after the sample's time limit, which the framework does not score
    with keep_reports(session) as reports:
        progress = tqdm(total=len(session.samples) * config.max_interactions, desc="interactions", unit="it")
        try:
            while _next(session, reports):
                sequence, scribbles, new_sample = session.get_scribbles(only_last=True)
                info = registration.infos[sequence]
                if new_sample:
                    predictor.start(_frames_as_checked(reader, info), info.num_objects, sequence=sequence)
                interaction = session.interaction_nb + 1
                budget = config.max_time * info.num_objects
                planned = plan_round(strategy, interaction, budget - (time.time() - session.sample_start_time), info)
                # The time left once plan() returned: the sample's clock ran meanwhile, and a slow plan() made the
                # agent count on its seconds again (no round lightened for them, the round late).
                plan = dataclasses.replace(planned, time_left=budget - (time.time() - session.sample_start_time))
                started = time.time()
                masks = check_masks(predictor.step(scribbles, plan), info)
                candidates = None
                if plan.frame_candidates:
                    candidates = predictor.next_scribble_frame_candidates(plan.frame_candidates)
                session.submit_masks(masks, next_scribble_frame_candidates=candidates)
                played = getattr(predictor, "last_plan", None) or plan  # the agent may have lightened it
                submitted += 1
                late += not _log_interaction(interactions_log, session, sequence, interaction, time.time() - started,
                                             played)
                progress.update(1)
                progress.set_postfix_str(f"{sequence} #{interaction}")
            try:
                framework_summary = session.get_global_summary()
            except remote_compat.RemoteServerError as error:
                # Every round was played and scored (the report as last fetched holds them): the run is complete,
                # only the server's own summary is missing (it was an interrupted run's "results so far").
                framework_summary = {"unavailable": first_line(error)}
                log.warning("the evaluation server's own summary could not be fetched: %s", first_line(error))
            interrupted = False
        except BaseException as error:
            # A message-less error (a bare KeyError) is its type alone: it was "KeyError: KeyError".
            stopped_by = signal_name(error) if isinstance(error, KeyboardInterrupt) else typed_line(error)
            raise
        finally:
            progress.close()
            # Held signals: a second Ctrl-C must not cut the summary in half; nothing here may raise either,
            # but a completed run's file that could not be written (OSError: it is not published).
            with deferred_signals():
                summary, paths = _write_results(output_dir, reports, layout, config, registration, predictor,
                                                strategy, interrupted, stopped_by, framework_summary, (submitted, late))
            if interrupted and "summary" in paths:
                log.warning("session stopped early: partial results written to %s", output_dir)
            elif interrupted:  # a full disk: it said "partial results written" of a folder holding none
                log.warning("session stopped early: its results could not be written to %s", output_dir)
    return SessionResult(summary=summary, paths=paths, interrupted=interrupted)


def _next(session, reports) -> bool:
    """session.next(), which after the last round fetches the server's own summary (the framework's post_finish):
    when that fails, every round played and scored, the summary alone is unavailable (get_global_summary gives
    `{"unavailable": why}`). It ended the run as an interrupted one: "results so far", exit 1, no AUC. The
    framework's report is then finished as it finishes it (`reports`: the connection.ReportKeeper)."""
    try:
        return session.next()
    except remote_compat.RemoteServerError as error:
        if session.sample_idx < len(session.samples):  # not the end: no summary was asked for
            raise
        session.global_summary, session.running = {"unavailable": first_line(error)}, False
        log.warning("the evaluation server's own summary could not be fetched: %s", first_line(error))
        _finish_framework_report(session, reports.latest())
        return False


def _finish_framework_report(session, report: pd.DataFrame) -> None:
    """What the framework's last next() does once post_finish answers: its report as `<report_name>.csv` and the
    `.tmp.csv` it kept during the session removed. A failed finish left that `.tmp.csv` (without the last round)
    and no report in `framework/`."""
    folder = Path(session.report_save_dir)
    report.to_csv(folder / f"{session.report_name}.csv")
    (folder / f"{session.report_name}.tmp.csv").unlink(missing_ok=True)


def _write_results(output_dir, reports, layout, config, registration, predictor, strategy, interrupted,
                   stopped_by, framework_summary, rounds: tuple[int, int] = (0, 0)) -> tuple[dict, dict[str, Path]]:
    """summary.json, report.csv, per_sequence.csv and curve.png from whatever the session holds (`reports`: a
    connection.ReportKeeper, so a server that went away leaves the report as last fetched)."""
    try:
        report = reports.latest()
        summary = summarize_run(report, layout, config.max_interactions, config.max_time, config.metric,
                                complete=not interrupted)
    except Exception as error:  # noqa: BLE001  (an empty or odd report must not lose the run's record)
        log.error("could not summarise the report: %s", error)
        report, summary = pd.DataFrame(), {"auc": None, "metric": config.metric, "metric_at_threshold": None,
                                           "threshold": 60.0, "curve": {"time": [], config.metric: []}}
    summary["interrupted"] = interrupted
    summary["rounds_played"], summary["rounds_late"] = rounds
    if stopped_by:
        summary["stopped_by"] = stopped_by
    if framework_summary:
        summary["framework"] = framework_summary
    strategy_name = getattr(strategy, "name", type(strategy).__name__)
    title = f"{predictor.name} / {strategy_name} on {config.subset} ({len(layout.num_objects)} sequences)"
    extra = {
        "predictor": predictor.name,
        "strategy": strategy_name,
        "dataset": str(registration.root),
        "dataset_kind": registration.kind,
        "sequences": registration.sequences,
        # Every sequence of the subset not evaluated, with why: absent from a partial root, or skipped as
        # unusable on request (session.skip_bad_sequences).
        "skipped_sequences": dict(registration.reasons),
        # What `python -m agent.report merge` needs to summarize shards as one run.
        "layout": dataclasses.asdict(layout),
        "max_interactions": config.max_interactions,
        "max_time": config.max_time,
        "shard": config.shard,
        "host": config.host,
    }
    # A run stopped by an exception keeps what it can write; a completed one is not complete without its files.
    return summary, write_outputs(output_dir, report, summary, title, extra, strict=not interrupted)


def _log_interaction(path: Path, session, sequence: str, interaction: int, seconds: float, plan) -> bool:
    """Append one line per submitted interaction, so progress survives a crash; whether the framework scored it
    (not when it came after the sample's time limit)."""
    report = session.get_report()
    rows = report[(report["sequence"] == sequence) & (report["interaction"] == interaction)]
    _, scribble_idx = session.samples[session.sample_idx]
    rows = rows[rows["scribble_idx"] == scribble_idx]
    record = {
        "sequence": sequence,
        "scribble_idx": int(scribble_idx),
        "interaction": interaction,
        "seconds": round(seconds, 3),
        "evaluated": bool(len(rows)),
        "J": float(rows["jaccard"].astype(float).mean()) if len(rows) else None,
        "finetune_seconds": plan.finetune_seconds,
        "crf": plan.use_crf,
        "crf_scale": plan.crf_scale,
        "frame_stride": plan.frame_stride,
    }
    with writing(path), path.open("a") as handle:  # a full disk's error names no file: the run's folder was named
        handle.write(json.dumps(record) + "\n")
    return record["evaluated"]
