"""Tune the dense CRF on cached score maps instead of full sessions (`crf_study.py` at the repository root
is the command).

A full session re-runs the backbone, the transfer and the robot for every setting; the CRF only refines the
transfer's score maps. So `capture` plays each video once with the agent, the CRF off: its first scribble,
then the framework's robot on the worst frame not scribbled before, as a session does. It keeps the
transfer's scores (grid resolution, before upsampling) of every `every`-th frame after the chosen rounds,
and the CRF scale the strategy plans for each. `sweep` then scores CRF variants on those maps: mean J per
round, each round at its planned scale. Every variant sees the same inputs; the masks the robot saw were
the CRF-less ones, so a variant's effect on the next strokes is not measured (a session confirms a choice).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import ConfigError, CRFConfig, load_config
from ..data import compat  # noqa: F401  (patches davisinteractive before it is imported)
from ..data.davis import VOID_LABEL, DatasetError, DavisReader, SequenceInfo
from ..errors import ascii_digits, ascii_int, first_line
from ..inference.crf import refine_frames
from ..inference.plan import Strategy, plan_round
from ..inference.predictor import Predictor
from ..paths import is_hidden, special_file, writing
from .error_location import BAND_PIXELS, boundary_distance, error_split
from .outputs import atomic_path
from .robot_play import frame_jaccard, next_scribble, stroke_frames
from .study_inputs import variant_assignments

from davisinteractive.robot import InteractiveScribblesRobot  # isort: skip

log = logging.getLogger(__name__)

ARGMAX = "no CRF"  # the variant that takes each pixel's best class
DEFAULT = "default"  # CRFConfig's defaults


@dataclass
class CapturedSample:
    """One video and first scribble: per captured round, the frames kept, their (N, C, h, w) scores, the CRF
    scale the strategy planned and the round's mean J without CRF (every frame)."""

    sequence: str
    scribble: int
    num_objects: int
    frames: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, np.ndarray] = field(default_factory=dict)
    crf_scale: dict[int, float] = field(default_factory=dict)
    jaccard: dict[int, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.sequence}-{self.scribble:03d}"

    def save(self, folder: Path) -> Path:
        arrays = {"num_objects": np.int64(self.num_objects)}
        for r in self.frames:
            arrays.update({f"frames_{r}": self.frames[r], f"scores_{r}": self.scores[r],
                           f"crf_scale_{r}": np.float64(self.crf_scale[r]), f"jaccard_{r}": np.float64(self.jaccard[r])})
        path = folder / f"{self.name}.npz"
        # Atomic: a full disk (or Ctrl-C) mid-write left a truncated .npz that refused the whole folder's sweep, and
        # the error ("a path: No space left on device") named no file.
        with writing(path), atomic_path(path) as tmp:
            np.savez_compressed(tmp, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> CapturedSample:
        sequence, _, scribble = path.stem.rpartition("-")
        if special_file(path):  # np.load waited for a FIFO's writer forever
            raise DatasetError(f"{path}: {special_file(path)}, not a captured sample")
        # np.load reads anything that is not a zip as .npy or a pickle: say what the file is instead.
        if path.is_file() and not zipfile.is_zipfile(path):
            what = "empty file" if path.stat().st_size == 0 else "not an .npz (zip) archive"
            raise DatasetError(f"{path}: cannot read it as a captured sample ({what})")
        try:
            with np.load(path) as data:
                # ASCII digits only: `dog-١.npz` was sample 1 (twice, beside dog-001.npz), `scores_١` round 1.
                rounds = sorted(ascii_int(k.split("_")[1]) for k in data.files if k.startswith("scores_"))
                if not sequence or not ascii_digits(scribble) or not rounds:
                    raise ValueError("not a captured sample (<sequence>-<scribble>.npz with scores_<round>)")
                sample = cls(sequence, int(scribble), int(data["num_objects"]))
                for r in rounds:
                    frames = data[f"frames_{r}"]
                    if frames.ndim != 1 or not np.issubdtype(frames.dtype, np.integer):
                        raise ValueError(f"round {r}'s frame indices are {frames.dtype} {frames.shape}, expected a "
                                         "list of integers")
                    sample.frames[r] = frames.astype(np.int64)
                    sample.scores[r] = data[f"scores_{r}"].astype(np.float32)
                    sample.crf_scale[r] = float(data[f"crf_scale_{r}"])
                    if not (math.isfinite(sample.crf_scale[r]) and 0 < sample.crf_scale[r] <= 1):
                        raise ValueError(f"round {r}'s CRF scale {sample.crf_scale[r]} is not in (0, 1]")
                    sample.jaccard[r] = float(data[f"jaccard_{r}"])
        # A truncated or foreign file (numpy raises most of these, zipfile BadZipFile; int() of an array TypeError).
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
            raise DatasetError(f"{path}: cannot read it as a captured sample ({first_line(error)})") from error
        for r in rounds:
            unique, counts = np.unique(sample.frames[r], return_counts=True)
            if (counts > 1).any():  # a frame scored twice would weigh twice in the round's mean J
                raise DatasetError(f"{path}: round {r} names frame {unique[counts > 1][0]} more than once")
            scores = sample.scores[r]
            if scores.ndim != 4 or len(scores) != len(sample.frames[r]) or scores.shape[1] != sample.num_objects + 1:
                raise DatasetError(f"{path}: round {r}'s scores {scores.shape} do not match "
                                   f"{len(sample.frames[r])} frames and {sample.num_objects} objects")
            if not np.isfinite(scores).all():
                raise DatasetError(f"{path}: round {r}'s scores contain NaN or infinite values")
        return sample


def capture_sample(
    predictor: Predictor,
    strategy: Strategy,
    info: SequenceInfo,
    frames: np.ndarray,
    truth: np.ndarray,
    scribble: dict,
    scribble_index: int,
    rounds: Iterable[int] = (1, 2, 4),
    every: int = 4,
) -> CapturedSample:
    """Play `max(rounds)` rounds of one sample with the CRF off (the predictor needs a `score_observer`
    attribute, as InteractiveAgent has), the robot drawing every stroke after the first."""
    rounds = sorted(set(rounds))
    robot = InteractiveScribblesRobot()
    sample = CapturedSample(info.name, scribble_index, info.num_objects)
    kept: list[tuple[np.ndarray, torch.Tensor]] = []

    def observe(index: np.ndarray, scores: torch.Tensor) -> None:
        chosen = index % every == 0
        if chosen.any():
            kept.append((index[chosen], scores[torch.from_numpy(chosen)].detach().float().cpu()))

    predictor.score_observer = observe
    used = stroke_frames(scribble)
    try:
        predictor.start(frames, info.num_objects, sequence=info.name)  # its scribbles checked as a session's
        for interaction in range(1, rounds[-1] + 1):
            plan = plan_round(strategy, interaction, math.inf, info)
            kept.clear()
            labels = predictor.step(scribble, dataclasses.replace(plan, use_crf=False))
            jaccard = frame_jaccard(truth, labels, info.num_objects)
            if interaction in rounds:
                index = np.concatenate([i for i, _ in kept])
                order = np.argsort(index)
                sample.frames[interaction] = index[order]
                sample.scores[interaction] = torch.cat([s for _, s in kept])[torch.from_numpy(order)].numpy()
                sample.crf_scale[interaction] = plan.crf_scale or predictor.config.crf.scale
                sample.jaccard[interaction] = float(jaccard.mean())
            if interaction == rounds[-1]:
                break
            scribble = next_scribble(robot, info.name, labels, truth, info.num_objects, jaccard, used)
    finally:
        predictor.score_observer = None
    return sample


def parse_variant(spec: str) -> tuple[CRFConfig, set[str]]:
    """`field=value,field=value` of CRFConfig -> (config, the fields it sets); one ConfigError line if wrong."""
    assignments = variant_assignments(spec, "CRFConfig")
    try:
        config = load_config(CRFConfig, assignments=assignments)
    except ConfigError as error:  # its message speaks of --set
        raise ConfigError(f"--variant {spec!r}: {str(error).removeprefix('--set ')}") from None
    return config, {a.partition("=")[0].strip() for a in assignments}


def variants_from_specs(specs: Iterable[str]) -> dict[str, tuple[CRFConfig, set[str]] | None]:
    """The no-CRF baseline, the defaults and each spec, by name (None: argmax)."""
    variants: dict[str, tuple[CRFConfig, set[str]] | None] = {ARGMAX: None, DEFAULT: (CRFConfig(), set())}
    for spec in specs:
        variants[spec] = parse_variant(spec)
    return variants


def score_sample(
    sample: CapturedSample,
    frames: np.ndarray,
    truth: np.ndarray,
    variants: dict[str, tuple[CRFConfig, set[str]] | None],
    progress: Callable[[], None] | None = None,
) -> list[dict]:
    """Mean J of every variant and captured round on the kept frames, one row each; also J with the errors
    within BAND_PIXELS of the true boundary put right (band_right) and with those farther put right
    (beyond_right): where the J is lost."""
    rows = []
    height, width = frames.shape[1:3]
    for r, index in sample.frames.items():
        full = F.interpolate(torch.from_numpy(sample.scores[r]), size=(height, width), mode="bilinear",
                             align_corners=False).numpy()
        distance = boundary_distance(truth[index])
        for name, variant in variants.items():
            if variant is None:
                labels = full.argmax(1)
            else:
                config, explicit = variant
                if "scale" not in explicit:  # the round's planned scale unless the variant sets one
                    config = dataclasses.replace(config, scale=sample.crf_scale[r])
                labels = refine_frames(frames[index], full, config)
            split = error_split(truth[index], labels, sample.num_objects, distance)
            rows.append({"sample": sample.name, "round": r, "variant": name, **split})
            if progress is not None:
                progress()
    return rows


def load_captures(folder: Path, reader: DavisReader) -> list[CapturedSample]:
    """Every captured sample in `folder`, checked against the root's videos before any CRF runs."""
    paths = sorted(p for p in Path(folder).glob("*.npz") if not is_hidden(p))  # a save's temporary file is hidden
    if not paths:
        raise DatasetError(f"{folder}: no captured samples (*.npz); run `crf_study.py capture` first")
    samples = [CapturedSample.load(path) for path in paths]
    objects_of: dict[str, int] = {}  # a video's samples (one per scribble) read its annotations once
    for path, sample in zip(paths, samples, strict=True):
        if not reader.has_sequence(sample.sequence):
            raise DatasetError(f"{path}: its video {sample.sequence} is not in {reader.root}")
        num_frames = len(reader.frame_paths(sample.sequence))
        if sample.sequence not in objects_of:
            labels = np.unique(reader.load_annotations(sample.sequence))
            objects_of[sample.sequence] = int(np.setdiff1d(labels, [0, VOID_LABEL]).size)
        objects = objects_of[sample.sequence]
        if sample.num_objects != objects:
            raise DatasetError(f"{path}: captured with {sample.num_objects} object(s), but {sample.sequence} has "
                               f"{objects} in {reader.root}")
        for r, index in sample.frames.items():
            if len(index) and (index.min() < 0 or index.max() >= num_frames):
                raise DatasetError(f"{path}: round {r} names frames outside {sample.sequence}'s {num_frames}")
    return samples


def sweep(samples: list[CapturedSample], reader: DavisReader,
          variants: dict[str, tuple[CRFConfig, set[str]] | None]) -> pd.DataFrame:
    """One row per sample, round and variant (column jaccard)."""
    rows: list[dict] = []
    total = sum(len(s.frames) for s in samples) * len(variants)
    with tqdm(total=total, desc="CRF variants", unit="round") as bar:
        for sample in samples:
            frames, truth = reader.load_frames(sample.sequence), reader.load_annotations(sample.sequence)
            rows += score_sample(sample, frames, truth, variants, progress=bar.update)
    return pd.DataFrame(rows)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Variants x rounds: mean J over the samples, plus their mean over the rounds, in the given order."""
    order = list(dict.fromkeys(results["variant"]))
    table = results.pivot_table(index="variant", columns="round", values="jaccard", aggfunc="mean")
    table.columns = [f"J round {r}" for r in table.columns]
    table["mean"] = table.mean(axis=1)
    return table.loc[order]


def error_table(results: pd.DataFrame, variant: str = DEFAULT) -> pd.DataFrame:
    """Rounds x (J, J with the errors near the true boundary put right, with those farther put right) of one
    variant, mean over the samples."""
    rows = results[results["variant"] == variant]
    table = rows.groupby("round")[["jaccard", "band_right", "beyond_right"]].mean()
    table.columns = ["J", f"J, errors within {BAND_PIXELS:g} px of the boundary right", "J, errors farther right"]
    table.index = [f"round {r}" for r in table.index]
    return table


def capture_metadata(checkpoint: str, strategy: str, rounds: list[int], every: int, config: dict,
                     davis_root: str | None = None) -> str:
    """capture.json: what the scores were captured with (`davis_root`, resolved: a sweep against another root
    whose videos share the names scored other videos' truth)."""
    return json.dumps({"checkpoint": checkpoint, "strategy": strategy, "rounds": rounds, "every": every,
                       "davis_root": davis_root, "agent": config}, indent=2)
