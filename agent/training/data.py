"""Training videos for pretraining: DAVIS-format training sequences plus synthetic ones, and the random
frame pairs (with augmentation) that each iteration draws."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import HOLDOUT, TrainConfig, TransferConfig
from ..data.augment import random_affine, warp, warp_labels
from ..data.davis import VOID_LABEL, DatasetError, DavisReader
from ..data.synthetic import generate_sequence
from ..inference.scribbles import grid_labels
from ..model.checkpoint import save_atomic
from ..model.onnx_backbone import build_backbone_runtime
from ..model.siamese import SiameseEmbedder, preprocess_frames, scaled_size
from ..paths import cache_dir

log = logging.getLogger(__name__)
NO_TRAINING_VIDEOS = "no training videos: give --davis-root with ImageSets/2017/train.txt or synthetic ones"


@dataclass
class TrainingVideo:
    name: str
    inputs: torch.Tensor  # frozen: (T, C, h8, w8) fp16 backbone features; full: (T, 3, H, W) uint8 frames
    labels: torch.Tensor  # (T, h, w) int64 on the embedding grid, -1 = void


@dataclass
class TrainingSet:
    videos: list[TrainingVideo]
    frozen: bool
    config: TrainConfig
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    skip_channels: int = 0  # frozen: the backbone's skip stage packed after the levels (Backbone.split)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.videos]

    def sample_pair(self, generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A random video, two different random frames, each with its own random transform."""
        video = self.videos[int(torch.randint(len(self.videos), (1,), generator=generator))]
        count = len(video.labels)
        first = int(torch.randint(count, (1,), generator=generator))
        second = (first + 1 + int(torch.randint(max(count - 1, 1), (1,), generator=generator))) % count
        inputs, labels = [], []
        for index in (first, second):
            theta = random_affine(generator, True, self.config.scale_range, self.config.rotation_degrees)
            data = video.inputs[index].float()
            if not self.frozen:
                data = self._colour_jitter(data / 255, generator)
                data = (data - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)
            inputs.append(self._warp_features(data, theta) if self.frozen and self.skip_channels else warp(data, theta))
            labels.append(warp_labels(video.labels[index], theta))
        return torch.stack(inputs), labels

    def _warp_features(self, data: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """warp of packed features: the levels on their grid, the skip stage unpacked on its 2x grid (warping
        the packed channels would mix its 2x2 sub-positions)."""
        split = data.shape[0] - 4 * self.skip_channels
        skip = warp(F.pixel_shuffle(data[None, split:], 2), theta)
        return torch.cat([warp(data[:split], theta), F.pixel_unshuffle(skip, 2)[0]])

    @torch.no_grad()
    def decoder_inputs(self, model: SiameseEmbedder, count: int, generator: torch.Generator) -> torch.Tensor:
        """(count, C) random pixels of the decoder's input (the normalised backbone features), over all videos."""
        if not self.frozen:
            raise ValueError("decoder_init=pca needs cached features: train.mode frozen-backbone")
        per_video = max(1, count // len(self.videos))
        out = []
        for video in self.videos:
            frames = torch.randint(len(video.inputs), (per_video,), generator=generator)
            rows = torch.randint(video.inputs.shape[2], (per_video,), generator=generator)
            cols = torch.randint(video.inputs.shape[3], (per_video,), generator=generator)
            # Index the pixels first: whole frames per sample would hold count x C x h x w floats.
            pixels = video.inputs[frames, :, rows, cols].float()[:, :, None, None]  # (n, C, 1, 1)
            if model.config.normalize_features:
                pixels = model.normalized_levels(pixels)
            out.append(pixels[:, :, 0, 0])
        return torch.cat(out)

    def _colour_jitter(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        amount = self.config.colour_jitter
        brightness, contrast, saturation = (1 + amount * (2 * torch.rand(3, generator=generator) - 1)).tolist()
        image = image * brightness
        mean = image.mean()
        image = (image - mean) * contrast + mean
        grey = image.mean(0, keepdim=True)
        return ((image - grey) * saturation + grey).clamp(0, 1)


def training_sequences(reader: DavisReader, holdout: tuple[str, ...] = ()) -> list[str]:
    """The root's training videos that are present, without the held-out ones (which must be training videos)."""
    train = reader.sequences("train")  # a video listed twice is refused there
    unknown = sorted(set(holdout) - set(train))
    if unknown and tuple(holdout) != HOLDOUT:  # the default split may not apply to a custom root
        raise DatasetError(f"held-out videos {', '.join(unknown)} are not in {reader.subset_file('train')}")
    try:
        val = set(reader.sequences("val"))
    except DatasetError:
        val = set()
    overlap = sorted(set(train) & val)
    if overlap:
        raise DatasetError(f"training and validation lists share {', '.join(overlap)}: fix ImageSets/2017")
    present = [s for s in train if reader.has_sequence(s)]
    kept = [s for s in present if s not in holdout]
    # A root whose listed videos are all missing or held out trained on the synthetic videos alone, without a word.
    if train and not present:
        raise DatasetError(f"none of the {len(train)} videos {reader.subset_file('train')} lists is in "
                           f"{reader.root / 'JPEGImages' / '480p'}")
    if present and not kept:
        raise DatasetError(f"every training video of {reader.subset_file('train')} in the root is held out "
                           "(train.holdout): name fewer with --holdout (--holdout '' for none)")
    return kept


def _unpairable(labels: torch.Tensor) -> str | None:
    """Why no pair of a video's frames (T, h, w labels on the loss's grid, -1 void) can train, or None: a pair is two
    different frames, each with a labelled (non-void) pixel to pool."""
    if len(labels) < 2:
        return "one frame (a pair needs two frames)"
    labelled = int((labels >= 0).flatten(1).any(1).sum())
    if labelled < 2:
        return (f"{labelled} of its {len(labels)} frames hold(s) a labelled pixel, the others are all void "
                f"({VOID_LABEL}) on the {labels.shape[1]}x{labels.shape[2]} label grid (a pair needs two)")
    return None


def _feature_cache_dir() -> Path:
    return cache_dir() / "features"


def _cache_key(model: SiameseEmbedder, name: str, count: int, frame_limit: int, size: tuple[int, int]) -> str:
    c = model.config
    text = f"{c.backbone}|{c.pretrained}|{c.output_stride}|{c.feature_levels}|{size}|{name}|{count}|{frame_limit}"
    if c.skip_level is not None:  # (unset: the key of the features cached before the option existed)
        text += f"|skip{c.skip_level}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _extract(model: SiameseEmbedder, frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Backbone features (fp16) of frames resized to `size`: in ONNX Runtime on a CPU (the agent's runtime,
    several times faster than eager PyTorch here), else PyTorch."""
    device = next(model.parameters()).device
    runtime = build_backbone_runtime(model.backbone, size, "auto", device) if model.backbone.weights != "none" else None
    return model.extract_features(model.preprocess(frames, size), backbone=runtime).half()


def _features(model: SiameseEmbedder, frames: np.ndarray, key: str, size: tuple[int, int]) -> torch.Tensor:
    """Backbone features of the frames (fp16), from the on-disk cache when they were computed before.

    Only features of pretrained weights are cached (they never change); the key holds everything they
    depend on. A backbone without pretrained weights (pretrained none, or the tiny test backbone whatever
    `pretrained` says) is random: its features depend on the seed and are never cached.
    """
    if model.backbone.weights == "none":
        return _extract(model, frames, size)
    try:
        path = _feature_cache_dir() / f"{key}.pt"
    except ValueError as error:  # no home folder: the cache only saves time (it was a traceback)
        _warn_uncached(None, error)
        return _extract(model, frames, size)
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a broken cache file is recomputed
            log.warning("ignoring unreadable feature cache %s", path)
    features = _extract(model, frames, size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(features, path)
    except OSError as error:  # the cache only saves time: a full or read-only $SIMLEARN_CACHE ended the run
        _warn_uncached(path.parent, error.strerror or error)  # (a traceback, torch's RuntimeError, after the work)
    return features


_UNCACHED: set[Path | None] = set()  # cache folders already warned about (None: no folder), once a process


def _warn_uncached(folder: Path | None, why) -> None:
    """The warning that features are not cached, once a process per cache folder."""
    if folder not in _UNCACHED:
        _UNCACHED.add(folder)
        where = f" in {folder}" if folder is not None else ""
        log.warning("cannot cache backbone features%s (%s): they are computed again next run", where, why)


def load_training_set(config: TrainConfig, model: SiameseEmbedder, frozen: bool, rank: int = 0,
                      transfer: TransferConfig | None = None) -> TrainingSet:
    """DAVIS training videos (if a root is given, without the held-out ones) + `config.synthetic_sequences`
    synthetic ones; frames at config.feature_scale x the model's input size, labels on the loss's grid."""
    transfer = transfer or TransferConfig()
    sources: list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]]] = []
    max_frames_per_video = config.max_frames_per_video
    if config.davis_root is not None:
        reader = DavisReader(config.davis_root)

        def davis_video(name: str) -> tuple[np.ndarray, np.ndarray]:
            frames, masks = reader.load_frames(name), reader.load_annotations(name)
            stride = max(1, -(-len(frames) // max_frames_per_video)) if max_frames_per_video else 1
            return frames[::stride], masks[::stride]

        sources += [(name, functools.partial(davis_video, name)) for name in training_sequences(reader, config.holdout)]
    height, width = model.config.input_size
    for index in range(config.synthetic_sequences):
        sources.append((f"synthetic-{index:03d}", functools.partial(
            generate_sequence, [config.seed, 7, index], config.synthetic_frames, height, width, 1 + index % 3)))
    if not sources:
        raise DatasetError(NO_TRAINING_VIDEOS)

    # The topk loss transfers on the agent's grid; the paper's pairwise loss on the H/2 embeddings.
    grid = model.embedding_size(stride=transfer.grid_stride if config.loss == "topk" else 2)
    size = scaled_size(tuple(model.config.input_size), config.feature_scale)
    videos, unpaired = [], []
    for name, load in tqdm(sources, desc="training videos", disable=rank != 0):
        frames, masks = load()  # one video in memory at a time
        labels = torch.stack([grid_labels(mask, grid) for mask in masks])
        why = _unpairable(labels)
        if why:  # all-void frames: every pair had a view without a pixel to pool, drawn again for ever (a hang)
            unpaired.append((name, why))
            continue
        if frozen:
            inputs = _features(model, frames, _cache_key(model, name, len(frames), max_frames_per_video, size), size)
        else:
            resized = preprocess_frames(frames, size, (0, 0, 0), (1, 1, 1))
            inputs = (resized * 255).round().to(torch.uint8)
        videos.append(TrainingVideo(name, inputs, labels))
    for name, why in unpaired if rank == 0 else ():  # after the progress bar, not glued to it
        log.warning("%s: left out of training: %s", name, why)
    if not videos:
        raise DatasetError(f"no training video has two frames with labelled pixels ({', '.join(n for n, _ in unpaired)}): "
                           f"annotations all void ({VOID_LABEL}) in every frame but one, or one-frame videos")
    total = sum(len(v.labels) for v in videos)
    log.info("training on %d videos (%d frames): %s", len(videos), total, ", ".join(v.name for v in videos))
    return TrainingSet(videos, frozen, config, tuple(model.config.mean), tuple(model.config.std),
                       model.backbone.skip_channels)
