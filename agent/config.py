"""Configuration dataclasses: every parameter has its one home here, with the paper's value (Najafi et al.,
2018) as default unless a comment says why we differ (measurements: docs/METHOD.md).

The CLIs fill these from flags, from `--config FILE` (JSON or YAML of the dataclasses, e.g. a run's
config.json) and from `--set section.field=value`; `load_config` validates all of it, so a wrong key or
value ends with one clear line.
"""

from __future__ import annotations

import codecs
import functools
import ipaddress
import logging
import math
import numbers
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

from .errors import ascii_digits, ascii_int, first_line, repeated
from .paths import expand_user, special_file

log = logging.getLogger(__name__)

STRATEGY_AUTO = "auto"
# Training videos of ../shared/davis held out as our own validation split (robot scribbles,
# agent/data/robot_root.py): dancers, a car, a rider, a small bird and a large animal, like DAVIS val.
HOLDOUT = ("breakdance-flare", "car-turn", "dance-jump", "horsejump-low", "mallard-fly", "rhino")
MAX_TIME_LIMIT = 600.0  # davisinteractive's DavisInteractiveSession caps max_time at 10 minutes per object
MAX_INTERACTIONS_LIMIT = 16  # ... and max_nb_interactions at 16
MAX_CRF_ITERATIONS = 1000
MAX_CRF_WORKERS = 256
# A CRF kernel narrower than a tenth of a pixel (or intensity level) reaches no neighbour, as one of 0.1 does not;
# pydensecrf's lattice overflows once a pixel's position or colour over it passes ~3e7 (1e-6 of a level, or of a
# pixel on a 80-pixel frame): it wrote out of its bounds, a segfault that killed the CRF worker (a BrokenProcessPool
# traceback) or, with crf.workers=1, the run itself, its results unwritten.
MIN_CRF_KERNEL = 0.1
# The CRF's weights (compat) at most, its score temperature within 1/this..this: beyond, a softmax is already one-hot
# or flat, and float32 (the softmax's, pydensecrf's) overflowed to inf (1e39, or 1e-40 for the temperature): NaN
# probabilities or a pairwise term of inf, every label background (J = 0) without a word.
MAX_CRF_FACTOR = 1e6
MAX_INFERENCE_SCALE = 8.0  # 8x the checkpoint's 240x427 is already 1920x3416 per frame
# ... and 1/8 at least: the backbone sees a 240x427 checkpoint's frames at 30x53, 4x7 feature cells (1e-300 was
# taken, one cell, AUC 0.28 instead of 0.94 without a word).
MIN_INFERENCE_SCALE = 0.125
MAX_TOPK = 1024  # top-k and correction weight: the defaults are 20 and 3
MAX_REFERENCE_PIXELS = 2**20  # per class (the default pools 4096); also chunk and pooled-sample sizes
MAX_GRID_STRIDE = 16  # the decoder's own grid is H/4; H/16 is already 15x27 cells at 240x427
MAX_DILATION = 64  # grid cells: a stroke's kernel side, the detail band
MAX_SCORE_MARGIN = 1000.0  # a margin between transfer scores (they span about -1..10)
# The model's d and frame side: the shipped 128 and 240x427; an identity decoder needs d = the backbone's channels
# (ResNet: 2048). A typo (d = 10**8, 100000x100000 frames) asked for 100 GB when the model or the first frame was
# built: a traceback, from a checkpoint's stored config too, or the process was killed.
MAX_EMBEDDING_DIM = 4096
MAX_SYNTHETIC = 1000  # synthetic training videos, and frames in each (the defaults are 8 and 16)
MAX_INPUT_SIDE = 4096
# Seconds a request may wait to connect or for an answer: a day is far beyond any server's (the defaults are 10 and
# 300 s); the socket refuses far more (1e300 was an OverflowError traceback before the model was built).
MAX_TIMEOUT = 86400.0
# Retries of one request (the framework's default is 3): urllib3 waits 1, 2, 4, ... s between them (at most 120 s
# each), so 20 already wait about half an hour for a server that is gone; 10**9 waited for ever (a hang).
MAX_RETRIES = 20
# A configuration is a few kB (a run's config.json ~3 kB); PyYAML parses in pure Python (a 38 MB file took
# minutes), so a larger file is refused before it is read.
MAX_CONFIG_BYTES = 2**20
# Values a configuration may hold with its YAML aliases expanded (a run's config.json holds ~100): nine aliases of
# nine aliases ... (a "billion laughs") are read as shared lists in no time, but an error message printing one, or
# any walk over it, never ended.
MAX_CONFIG_VALUES = 100_000
# The key a run's written config (config.json, train_config.json) holds, true: every field is there, so one that is
# missing on reading it back was added since (resolved_record, load_config). A file without it (written by hand, or
# before the key existed) may leave fields out without a word.
RESOLVED_KEY = "resolved"


class ConfigError(ValueError):
    """A configuration key or value that does not fit the dataclasses; the message names it."""


def _unbracketed_ipv6(url: str) -> str:
    """A hint when `url`'s authority is an IPv6 address without its brackets (`http://::1:8000`: urlparse's
    "Port could not be cast to integer value as ':1:8000'"), else ""."""
    try:
        netloc = urlsplit(url).netloc.rpartition("@")[2]
    except ValueError:  # "Invalid IPv6 URL": a bracket is there already
        return ""
    head, _, port = netloc.rpartition(":")
    # `::1:8000` is an address too: read as one with a port first, as it was most likely meant.
    for bracketed in (f"[{head}]:{port}", f"[{netloc}]"):
        try:
            ipaddress.IPv6Address(bracketed[1:bracketed.index("]")])
        except ValueError:
            continue
        return f"; an IPv6 address goes in brackets: {url.replace(netloc, bracketed, 1)}"
    return ""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _header_value(value: str, name: str) -> None:
    """`value` can be sent as an HTTP header as it is (the user key): requests refuses a line break or a leading
    space (a key read from a CRLF file) and http.client a character outside Latin-1, once the model is built,
    the first as "evaluation server unavailable". The message names the character, never the key."""
    odd = next(((i, c) for i, c in enumerate(value) if not c.isprintable() or ord(c) > 255), None)
    if odd is None and value != value.strip():
        odd = (0, value[0]) if value[0].isspace() else (len(value) - 1, value[-1])
    _require(odd is None, f"{name} cannot be sent in an HTTP header: character {odd and odd[1]!r} at position "
             f"{odd and odd[0]} (printable Latin-1 only, no space at either end)")


def _choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _finite(value: float) -> bool:
    # numbers.Real: numpy's float32 is no float, and was refused as "must be a finite number"
    return isinstance(value, numbers.Real) and math.isfinite(value)


@functools.cache
def _plain_fields(cls) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, None allowed) of `cls`'s fields of one type: int, float, bool, text, a path, a tuple of numbers
    or text, or a config section (a union of several, `float | str`, is the field's own to check)."""
    plain = []
    for name, hint in typing.get_type_hints(cls).items():
        arms = _arms(hint)
        kinds = [arm for arm in arms if arm is not type(None)]
        if len(kinds) == 1 and (kinds[0] in (int, float, bool, str, Path) or is_dataclass(kinds[0])
                                or typing.get_origin(kinds[0]) is tuple):
            plain.append((name, kinds[0], len(kinds) < len(arms)))
    return tuple(plain)


_KINDS = {int: "an integer", float: "a number", bool: "True or False", str: "text", Path: "a path (str or Path)"}
_PLURALS = {int: "integers", float: "numbers", str: "strings"}


def _fits(value, kind) -> bool:
    """`value` is of `kind` as a config file's value must be: numpy's numbers are numbers, a bool is no number, a path
    is text or a Path, a tuple's items (a list's: what to_dict writes) are of its kinds, in its count when fixed."""
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is Path:
        return isinstance(value, str | os.PathLike)
    if typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        if not isinstance(value, tuple | list):
            return False
        if Ellipsis in items:
            return all(_fits(item, items[0]) for item in value)
        return len(value) == len(items) and all(_fits(item, each) for item, each in zip(value, items, strict=True))
    return isinstance(value, kind)


def _wanted(kind) -> str:
    if typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        count = "" if Ellipsis in items else f"{len(items)} "
        return f"a tuple (or list) of {count}{_PLURALS.get(items[0], items[0])}"
    return _KINDS.get(kind) or f"a {kind.__name__}"


def _check_types(config, section: str) -> None:
    """A config built in Python (dataclasses.replace included) holds the types a config file must (from_dict checks
    those): `incremental="no"` was true, `topk=2.5` or `crf={...}` a TypeError or AttributeError mid-round, and
    `device=None` an AttributeError here; every config dataclass calls it first (`section` names its fields)."""
    for name, kind, optional in _plain_fields(type(config)):
        value = getattr(config, name)
        if value is None and optional:
            continue
        if not _fits(value, kind):
            raise ConfigError(f"{section + '.' if section else ''}{name} must be {_wanted(kind)}"
                              f"{' or None' if optional else ''}, got {value!r} ({type(value).__name__})")


def _check_scale_range(value, name: str) -> None:
    low, high = value
    _require(_finite(low) and _finite(high) and 0 < low <= high,
             f"{name} must be (low, high) with finite 0 < low <= high, got {tuple(value)}")


@dataclass
class ModelConfig:
    """The Siamese embedding network: backbone + decoder -> H/2 x W/2 x d embeddings."""

    # efficientnet-lite0/1/2 | resnet101-deeplab | resnet50-deeplab | tiny. Lite2: its trained embedding beat
    # Lite0's in the held-out sessions (docs/TRAINING.md).
    backbone: str = "efficientnet-lite2"
    pretrained: str = "imagenet"  # imagenet | coco | none: which weights the backbone starts from
    output_stride: int = 8  # paper: dilated backbone with output stride 8
    embedding_dim: int = 128  # d
    input_size: tuple[int, int] = (240, 427)  # frames are resized to this (H, W) in training
    # Per-channel normalisation of RGB in [0, 1]; None: the backbone's own.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # Backbone stages concatenated (Lite: 0..4 at strides 2..32); None: the backbone's default (Lite: 2, 3, 4).
    feature_levels: tuple[int, ...] | None = None
    # L2-normalised embeddings (cosine similarity, the BN head rescales it): the paper's raw inner products
    # transferred far worse here.
    normalize_embeddings: bool = True
    # Each backbone level L2-normalised before the decoder: their magnitudes differ by orders.
    normalize_features: bool = True
    # random | identity (needs embedding_dim == backbone channels) | pca (training sets the decoder to the first
    # embedding_dim principal directions of its data): both start training from the ImageNet features' similarity.
    decoder_init: str = "random"
    # 0: the paper's decoder (one transposed conv, linear in the features). > 0: a nonlinear adapter of this
    # width (1x1 conv, 3x3 depthwise conv) beside it, trainable where the frozen backbone's last stage is not.
    decoder_hidden: int = 0
    # A finer backbone stage (Lite: 1, at stride 4) added linearly to the decoder's output on its own H/4 grid, a
    # skip connection for boundary detail the stride-8 levels lack; None: the paper's decoder (the skip measured no
    # better on our held-out videos: docs/TRAINING.md).
    skip_level: int | None = None

    def __post_init__(self) -> None:
        _check_types(self, "model")
        _choice(self.pretrained, "model.pretrained", ("imagenet", "coco", "none"))
        _require(isinstance(self.decoder_hidden, int) and not isinstance(self.decoder_hidden, bool)
                 and 0 <= self.decoder_hidden <= 4096,
                 f"model.decoder_hidden must be an integer in 0..4096, got {self.decoder_hidden!r}")
        _require(self.decoder_hidden == 0 or self.decoder_init == "random",
                 f"model.decoder_init={self.decoder_init} needs model.decoder_hidden=0 (the linear decoder)")
        _choice(self.decoder_init, "model.decoder_init", ("random", "identity", "pca"))
        _require(self.output_stride in (8, 16), f"model.output_stride must be 8 or 16, got {self.output_stride}")
        _require(self.skip_level is None or self.decoder_init == "random",
                 f"model.decoder_init={self.decoder_init} needs model.skip_level unset (it initialises the levels only)")
        # A stage given twice counted its channels twice in the decoder's input, but the backbone returns it once:
        # a traceback at the first training step, once every frame's features were computed.
        _require(self.feature_levels is None or len(set(self.feature_levels)) == len(self.feature_levels),
                 f"model.feature_levels must name each backbone stage once, got {self.feature_levels}")
        _require(1 <= self.embedding_dim <= MAX_EMBEDDING_DIM,
                 f"model.embedding_dim must be in 1..{MAX_EMBEDDING_DIM}, got {self.embedding_dim}")
        _require(len(self.input_size) == 2 and 16 <= min(self.input_size) and max(self.input_size) <= MAX_INPUT_SIDE,
                 f"model.input_size must be (H, W) of 16..{MAX_INPUT_SIDE} pixels, got {self.input_size}")
        for name in ("mean", "std"):  # the input normalisation: std divides
            value = getattr(self, name)
            _require(value is None or (len(value) == 3 and all(_finite(v) for v in value)
                                       and (name == "mean" or min(value) > 0)),
                     f"model.{name} must be 3 finite numbers{' > 0' if name == 'std' else ''}, got {value}")


@dataclass
class TransferConfig:
    """Label transfer from the labelled reference pixels to every query pixel."""

    # eq3 (the paper's Eq. 3: mean BN-ed similarity to K pooled pixels per class) | topk (mean of the k best
    # similarities per class): topk transfers far better, with or without training (docs/METHOD.md).
    aggregation: str = "topk"
    samples_per_class: int = 100  # K: pooled pixels per class (eq3, training and fine-tuning pairs)
    topk: int = 20  # k for topk
    max_reference_pixels: int = 4096  # topk: random subset per class; coverage matters, cost is linear
    # Query pixels per chunk (evenly split, 1-2x this): the similarity block then stays in the CPU cache.
    chunk_size: int = 1024
    # Transfer on the H/grid_stride grid and upsample the scores: the decoder's own H/4 grid is 4x cheaper
    # than the paper's H/2 (a bilinear interpolation of it) and covers more of the frame per reference.
    grid_stride: int = 4
    # Rounds without fine-tuning compare every frame only with the pixels labelled since the last round
    # (inference/reference_pool.py); False: a full transfer every round.
    incremental: bool = True
    max_new_reference_pixels: int = 1024  # per class and round, for the incremental pool
    # Each pixel of a later round's stroke counts this many times among a query pixel's top-k: gives undilated
    # corrections (scribbles.correction_dilation=1) back the weight a halo had, without the halo; 1: once.
    correction_weight: int = 3
    # ... but once where every stroke pixel of the cell lies within this many grid cells of where the last round
    # already gave the stroke's class: along an error strip narrower than a cell the cell also holds what lies
    # beyond it (a car's tyres beside its shadow), and weighted it won their top-k (docs/METHOD.md). 0: off.
    narrow_correction_reach: float = 1.0
    # Transfer again on the decoder's finer native grid (90x160 at 1.5x frames), only within this many fine
    # cells of a change in the coarse labels (inference/detail.py); 0: off. Off: a band of 3 lowered J on
    # our held-out videos (docs/METHOD.md).
    detail_band: int = 0
    # > 0: a round's scores replace the last round's with weight exp(-frames to its nearest stroke / this),
    # so a stroke changes mostly its own part of the video (inference/round_fusion.py); 0: everywhere.
    # Off: 10 frames scored level with it on our held-out videos (docs/METHOD.md).
    round_fusion_frames: float = 0.0

    def __post_init__(self) -> None:
        _check_types(self, "transfer")
        _choice(self.aggregation, "transfer.aggregation", ("eq3", "topk"))
        # Upper bounds: far beyond any useful value, a typo would otherwise ask for terabytes once the model is
        # built (top-k buffers, reference blocks) or shrink the transfer grid to a few cells.
        for name, highest in (("samples_per_class", MAX_REFERENCE_PIXELS), ("topk", MAX_TOPK),
                              ("max_reference_pixels", MAX_REFERENCE_PIXELS), ("chunk_size", MAX_REFERENCE_PIXELS),
                              ("grid_stride", MAX_GRID_STRIDE), ("max_new_reference_pixels", MAX_REFERENCE_PIXELS),
                              ("correction_weight", MAX_TOPK)):
            value = getattr(self, name)
            _require(1 <= value <= highest, f"transfer.{name} must be in 1..{highest}, got {value}")
        # At most MAX_DILATION cells (beyond a grid's side every stroke cell is narrow alike): 1e300 overflowed a
        # float32 distance limit, numpy's raw "overflow encountered in cast" warning in the progress bar.
        _require(_finite(self.narrow_correction_reach) and 0 <= self.narrow_correction_reach <= MAX_DILATION,
                 f"transfer.narrow_correction_reach must be a number in [0, {MAX_DILATION}], got "
                 f"{self.narrow_correction_reach}")
        _require(0 <= self.detail_band <= MAX_DILATION,
                 f"transfer.detail_band must be in 0..{MAX_DILATION}, got {self.detail_band}")
        _require(_finite(self.round_fusion_frames) and self.round_fusion_frames >= 0,
                 f"transfer.round_fusion_frames must be a finite number >= 0, got {self.round_fusion_frames}")


@dataclass
class TrainConfig:
    """Pretraining (python -m agent.train)."""

    mode: str = "frozen-backbone"  # frozen-backbone (cached features, CPU) | full (the paper's, a GPU)
    # pairwise: the paper's BCE on pooled pixel pairs | topk: cross-entropy of the agent's own top-k transfer
    # from a reference frame's labels to a query frame's pixels (model/similarity.py topk_loss).
    loss: str = "pairwise"
    # Frames at this multiple of model.input_size, as the agent sees them (AgentConfig.inference_scale); the
    # topk loss transfers on the agent's grid (transfer.grid_stride of model.input_size).
    feature_scale: float = 1.0
    queries_per_class: int = 256  # topk loss: query pixels drawn per class and pair
    references_per_class: int = 1024  # topk loss: reference pixels drawn per class and pair
    # topk loss: share of steps whose references are strokes (each object's skeleton + far-away background),
    # the agent's first-round regime, instead of the reference frame's whole ground truth.
    stroke_references: float = 0.0
    # topk loss: mean over this hardest share of the query pixels (1: all). J is lost at boundaries and
    # distractors, while most sampled pixels are easy interior ones.
    hard_query_fraction: float = 1.0
    # Start decoder and head from this checkpoint's weights (None: random or model.decoder_init).
    init_checkpoint: Path | None = None
    davis_root: Path | None = None
    # Training videos never trained on (a validation split of your own; see docs/TRAINING.md).
    holdout: tuple[str, ...] = HOLDOUT
    val_sequences: tuple[str, ...] | None = None  # validated on (None: the root's val.txt)
    synthetic_sequences: int = 8
    synthetic_frames: int = 16
    max_frames_per_video: int = 0  # 0: every frame
    iterations: int = 100_000  # paper
    lr_backbone: float = 2.5e-4
    lr_decoder: float = 5e-4  # twice the backbone's, for decoder and head
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    scale_range: tuple[float, float] = (0.75, 1.25)
    rotation_degrees: float = 15.0
    colour_jitter: float = 0.2  # full mode only: brightness/contrast/saturation factors in 1 +- this
    # Full mode: the backbone's BatchNorm keeps its ImageNet statistics (its affine weights still train); the
    # statistics of one pair of frames per step are too few to replace them, as in DeepLab's fine-tuning.
    freeze_backbone_bn: bool = True
    checkpoint_every: int = 500
    validate_every: int = 0
    # > 0: stop after this many seconds of training, saving last.pt and model.pt there (--resume goes on with
    # the same schedule): a session or a lent GPU with a fixed time gets its checkpoint instead of a kill.
    max_seconds: float = 0.0
    seed: int = 0
    device: str = "auto"
    output_dir: Path = Path("runs/train")

    def __post_init__(self) -> None:
        _check_types(self, "train")
        _choice(self.mode, "train.mode", ("frozen-backbone", "full"))
        _choice(self.loss, "train.loss", ("pairwise", "topk"))
        # Upper bounds: a typo asked for hundreds of GB once the videos were read (an allocator traceback), or
        # generated videos for hours. feature_scale is the agent's inference_scale; DAVIS's videos have <= 104 frames.
        _require(_finite(self.feature_scale) and MIN_INFERENCE_SCALE <= self.feature_scale <= MAX_INFERENCE_SCALE,
                 f"train.feature_scale must be a number in [{MIN_INFERENCE_SCALE:g}, {MAX_INFERENCE_SCALE:g}], got "
                 f"{self.feature_scale}")
        _require(self.synthetic_sequences <= MAX_SYNTHETIC,
                 f"train.synthetic_sequences must be in 0..{MAX_SYNTHETIC}, got {self.synthetic_sequences}")
        _require(self.synthetic_frames <= MAX_SYNTHETIC,
                 f"train.synthetic_frames must be in 2..{MAX_SYNTHETIC}, got {self.synthetic_frames}")
        _require(self.queries_per_class >= 1 and self.references_per_class >= 1,
                 "train.queries_per_class and train.references_per_class must be >= 1")
        _require(_finite(self.stroke_references) and 0 <= self.stroke_references <= 1,
                 f"train.stroke_references must be in [0, 1], got {self.stroke_references}")
        _require(_finite(self.hard_query_fraction) and 0 < self.hard_query_fraction <= 1,
                 f"train.hard_query_fraction must be in (0, 1], got {self.hard_query_fraction}")
        _require(self.iterations >= 1, f"train.iterations must be >= 1, got {self.iterations}")
        _require(self.checkpoint_every >= 1, f"train.checkpoint_every must be >= 1, got {self.checkpoint_every}")
        _require(_finite(self.max_seconds) and self.max_seconds >= 0,
                 f"train.max_seconds must be a number >= 0 (0: no limit), got {self.max_seconds}")
        for name in ("synthetic_sequences", "max_frames_per_video", "validate_every"):
            _require(getattr(self, name) >= 0, f"train.{name} must be >= 0, got {getattr(self, name)}")
        # torch's generators take 64 bits: beyond, "Overflow when unpacking long long" once the videos were read.
        _require(0 <= self.seed < 2**64, f"train.seed must be in 0..2**64-1, got {self.seed}")
        _require(self.synthetic_frames >= 2, f"train.synthetic_frames must be >= 2, got {self.synthetic_frames}")
        # 1 kept one frame of every video: each pair was that frame twice (or, now, every video left out)
        _require(self.max_frames_per_video != 1,
                 "train.max_frames_per_video must be 0 (every frame) or >= 2 (a pair needs two frames), got 1")
        for name in ("lr_backbone", "lr_decoder", "momentum", "weight_decay", "poly_power", "colour_jitter",
                     "rotation_degrees"):
            value = getattr(self, name)
            _require(_finite(value) and value >= 0, f"train.{name} must be a finite number >= 0, got {value}")
        # Factors 1 +- colour_jitter: beyond 1 a negative brightness blacked out frames, and 1e30 made the loss NaN
        _require(self.colour_jitter <= 1, f"train.colour_jitter must be in [0, 1], got {self.colour_jitter}")
        _check_scale_range(self.scale_range, "train.scale_range")


@dataclass
class ScribbleConfig:
    """Scribbles -> sparse labels on the embedding grid."""

    dilation: int = 3  # square kernel side (paper: 3x3)
    # Not in the paper: a class's strokes on a frame are dilated only while they hold fewer grid cells than this (0:
    # always). A short stroke needs the halo's references; a long one has enough, and its halo mostly crosses the
    # object's edge, which a human stroke often runs along (docs/METHOD.md).
    dilate_below: int = 100
    # Kernel side for the strokes of later rounds (corrections); 0: as `dilation`. 1: a correction drawn along
    # a boundary puts no halo across it (with transfer.correction_weight, docs/METHOD.md).
    correction_dilation: int = 1
    # Pixels farther than this fraction of the image diagonal from every object scribble are background.
    far_background_fraction: float = 0.25
    # Which scribbled frames get derived background (far-away, least-similar): all | first-round (only frames
    # scribbled in the first round: a later correction stroke marks only the missed part of an object).
    derived_background_frames: str = "first-round"
    # Without any background label, this fraction of the frame's least object-similar pixels is background.
    least_similar_fraction: float = 0.25
    # True: least-similar background until the first background stroke, on top of far-away background.
    # False: only while there is no background at all (far-away background included).
    least_similar_until_stroke: bool = True
    # True: no derived background (far-away, least-similar) where the previous round predicted an object,
    # so a short late object stroke cannot make the rest of a large object background. Off: measured no
    # clear gain (docs/METHOD.md).
    spare_predicted_objects: bool = False
    # Not in the paper: a frame the annotator corrects keeps the last round's labels where they drew nothing near
    # (what they left alone on the frame they looked at, they accepted), as references counted once: off |
    # one-object (samples started with num_objects=1: with two it lowered J, docs/METHOD.md) | all.
    confirm_corrected_frames: str = "one-object"
    confirmed_distance: int = 3  # grid cells: only labels farther than this from every stroke on the frame
    confirmed_erosion: int = 2  # grid cells inside each label's region (its border is where masks err)
    confirmed_background_band: int = 4  # grid cells: background only this near a predicted object (0: none)
    # Not in the paper: a cell the dilation adds around a stroke keeps the stroke's label only where a transfer from
    # the frame's strokes (and derived background) alone gives it that class by halo_margin or more; a stroke drawn
    # along an object's edge would otherwise label the background beside it. Off: it gained on real videos, but took
    # the halo round 1 needed on a synthetic one whose features are weak (docs/METHOD.md).
    check_halo: bool = False
    halo_margin: float = 0.0  # the halo cell's score for its stroke's class minus the best other class's

    def __post_init__(self) -> None:
        _check_types(self, "scribbles")
        _choice(self.derived_background_frames, "scribbles.derived_background_frames", ("all", "first-round"))
        _choice(self.confirm_corrected_frames, "scribbles.confirm_corrected_frames", ("off", "one-object", "all"))
        _require(1 <= self.dilation <= MAX_DILATION, f"scribbles.dilation must be in 1..{MAX_DILATION}, got {self.dilation}")
        _require(self.dilate_below >= 0, f"scribbles.dilate_below must be >= 0 (0: always dilate), got {self.dilate_below}")
        _require(0 <= self.correction_dilation <= MAX_DILATION,
                 f"scribbles.correction_dilation must be in 0..{MAX_DILATION} (0: as dilation), got "
                 f"{self.correction_dilation}")
        _require(_finite(self.far_background_fraction) and self.far_background_fraction >= 0,
                 f"scribbles.far_background_fraction must be >= 0, got {self.far_background_fraction}")
        _require(_finite(self.least_similar_fraction) and 0 <= self.least_similar_fraction <= 1,
                 f"scribbles.least_similar_fraction must be in [0, 1], got {self.least_similar_fraction}")
        # Scores span about -1..10: beyond +-MAX_SCORE_MARGIN every halo cell is kept (or dropped) alike, and 1e300
        # overflowed float32 (numpy's raw "overflow encountered in cast" warning in the progress bar).
        _require(_finite(self.halo_margin) and abs(self.halo_margin) <= MAX_SCORE_MARGIN,
                 f"scribbles.halo_margin must be a number in [-{MAX_SCORE_MARGIN:g}, {MAX_SCORE_MARGIN:g}], got "
                 f"{self.halo_margin}")
        for name in ("confirmed_distance", "confirmed_erosion", "confirmed_background_band"):
            _require(getattr(self, name) >= 0, f"scribbles.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class FinetuneConfig:
    """Time-budgeted fine-tuning on the scribbles (the strategy sets the budget per round)."""

    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    flip: bool = True
    scale_range: tuple[float, float] = (0.5, 1.5)
    rotation_degrees: float = 30.0
    early_stop_loss: float = 0.04  # stop once the largest recent loss is below this (paper)
    # pairwise (the paper's) | topk (the agent's own transfer) | pretraining: the loss the checkpoint was
    # trained with (its head is calibrated for it; the pairwise loss re-estimates the head's BatchNorm).
    loss: str = "pretraining"
    train_backbone: bool = False  # on CPU only decoder + head adapt; backbone features are cached
    # At most this many steps a round (0: the round's seconds alone); a step count is the same on any machine.
    max_steps: int = 0
    # Not in the paper: also train on the last round's labels of this many unscribbled frames (one cell inside
    # each region's border), each step pairing a scribbled frame with any; 0: the scribbles alone.
    pseudo_label_frames: int = 0

    def __post_init__(self) -> None:
        _check_types(self, "finetune")
        _choice(self.loss, "finetune.loss", ("pretraining", "pairwise", "topk"))
        _require(self.max_steps >= 0, f"finetune.max_steps must be >= 0, got {self.max_steps}")
        _require(self.pseudo_label_frames >= 0,
                 f"finetune.pseudo_label_frames must be >= 0, got {self.pseudo_label_frames}")
        for name in ("lr", "momentum", "weight_decay", "rotation_degrees", "early_stop_loss"):
            value = getattr(self, name)
            _require(_finite(value) and value >= 0, f"finetune.{name} must be a finite number >= 0, got {value}")
        _check_scale_range(self.scale_range, "finetune.scale_range")


@dataclass
class CRFConfig:
    """Dense CRF (pydensecrf) on the per-class scores with the RGB frame."""

    # DeepLab-style values for 480p frames (sxy in pixels, srgb in 0-255 intensity units), but srgb 6: with the
    # Lite2 checkpoint a narrower colour kernel kept more of the transfer's boundary (docs/METHOD.md).
    iterations: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 6.0
    bilateral_compat: float = 5.0
    score_temperature: float = 1.0  # scores / temperature -> softmax -> unary
    # <1: the CRF runs on a downscaled frame (sxy scaled along), ~1/scale^2 faster; a RoundPlan may override.
    scale: float = 1.0
    # Processes refining frames in parallel (pydensecrf holds the GIL); 0 = one per core, 1 = in-process.
    workers: int = 0

    def __post_init__(self) -> None:
        _check_types(self, "crf")
        # Upper bounds: a typo of 100000 would otherwise start that many processes, or run for hours.
        _require(0 <= self.iterations <= MAX_CRF_ITERATIONS,
                 f"crf.iterations must be in 0..{MAX_CRF_ITERATIONS}, got {self.iterations}")
        _require(0 <= self.workers <= MAX_CRF_WORKERS, f"crf.workers must be in 0..{MAX_CRF_WORKERS}, got {self.workers}")
        _require(_finite(self.scale) and 0 < self.scale <= 1, f"crf.scale must be in (0, 1], got {self.scale}")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            value = getattr(self, name)
            _require(_finite(value) and value >= MIN_CRF_KERNEL,
                     f"crf.{name} must be a finite number >= {MIN_CRF_KERNEL:g}, got {value}")
        _require(_finite(self.score_temperature) and 1 / MAX_CRF_FACTOR <= self.score_temperature <= MAX_CRF_FACTOR,
                 f"crf.score_temperature must be a number in [{1 / MAX_CRF_FACTOR:g}, {MAX_CRF_FACTOR:g}], got "
                 f"{self.score_temperature}")
        for name in ("gaussian_compat", "bilateral_compat"):  # NaN made every label background (J = 0)
            value = getattr(self, name)
            _require(_finite(value) and 0 <= value <= MAX_CRF_FACTOR,
                     f"crf.{name} must be a finite number >= 0 and at most {MAX_CRF_FACTOR:g}, got {value}")


@dataclass
class IdentityConfig:
    """Which object a foreground pixel belongs to when there are several (inference/identity.py): an object
    is near where it was on the neighbouring keyframe. Not in the paper; a lone object is never touched."""

    weight: float = 0.5  # score an object loses per grid cell beyond its reach; 0: appearance alone decides
    radius: float = 2.0  # grid cells an object without a lookalike may move between keyframes at no cost ...
    speed: float = 1.0  # ... plus this many cells per frame between them
    # The most an object loses: position breaks near-ties of appearance (lookalikes differ by < 1), it does not
    # overrule a clear difference (distinct objects differ by ~2 at the median). 1 kept too little on twins,
    # none lost late rounds on distinct objects (docs/METHOD.md).
    cap: float = 2.0
    # An object whose score leads the best other object's by less than this at its own stroke cells (median) has a
    # lookalike: it gets no reach (the nearer object's place wins) and, where lookalikes touch on a scribbled
    # frame, each pixel goes to its nearest stroke. Lookalikes lead by 0.2-1.4, distinct objects by 2-5. 0: none.
    alike_margin: float = 1.75

    def __post_init__(self) -> None:
        _check_types(self, "identity")
        for name in ("weight", "radius", "speed", "cap", "alike_margin"):
            value = getattr(self, name)
            _require(_finite(value) and value >= 0, f"identity.{name} must be a finite number >= 0, got {value}")


@dataclass
class FlowConfig:
    """Frames a round does not propagate to (between keyframes) take their keyframe's labels moved along dense
    optical flow, not copied in place (inference/flow.py). Not in the paper."""

    enabled: bool = True  # False: copied in place
    # OpenCV DIS preset: ultrafast | fast | medium. medium gained 0.007 J@1 on our held-out videos for 4x the
    # flow's cost (docs/METHOD.md).
    preset: str = "ultrafast"
    height: int = 480  # flow on frames resized to this height (never upscaled); half of 480p lost 0.004-0.01 J@1
    # Each frame from its neighbour toward the keyframe (steps of one frame) rather than from the keyframe at once.
    chain: bool = True

    def __post_init__(self) -> None:
        _check_types(self, "flow")
        _choice(self.preset, "flow.preset", ("ultrafast", "fast", "medium"))
        _require(isinstance(self.height, int) and not isinstance(self.height, bool) and 16 <= self.height <= 4320,
                 f"flow.height must be an integer in 16..4320, got {self.height!r}")


@dataclass
class AgentConfig:
    """The interactive agent; its model (ModelConfig) comes with the checkpoint."""

    transfer: TransferConfig = field(default_factory=TransferConfig)
    scribbles: ScribbleConfig = field(default_factory=ScribbleConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    crf: CRFConfig = field(default_factory=CRFConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    checkpoint: Path | None = None  # None: the shipped default checkpoint
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    # The backbone sees frames at this multiple of the checkpoint's input size while label transfer stays
    # on the checkpoint's grid: finer features for backbone time only. auto: the video's height over the
    # checkpoint's, clipped to [1, 1.5] (never upscales beyond the checkpoint's size; 1.5 measured best).
    inference_scale: float | str = "auto"
    # Backbone forward passes: auto = ONNX Runtime on CPU when installed (same features, faster), else
    # PyTorch | torch | onnxruntime.
    backbone_runtime: str = "auto"
    # Each frame's decoder output kept between rounds while the model does not change (every later round
    # reads every frame's embeddings, twice with transfer.detail_band); ~7 MB per frame at the shipped
    # checkpoint's 1.5x. 0: none kept.
    embedding_cache_mb: int = 1024

    def __post_init__(self) -> None:
        _check_types(self, "agent")
        if isinstance(self.inference_scale, str):
            _require(self.inference_scale == "auto",
                     f"agent.inference_scale must be 'auto' or a number > 0, got {self.inference_scale!r}")
        else:
            _require(_finite(self.inference_scale) and MIN_INFERENCE_SCALE <= self.inference_scale <= MAX_INFERENCE_SCALE,
                     f"agent.inference_scale must be 'auto' or a number in [{MIN_INFERENCE_SCALE:g}, "
                     f"{MAX_INFERENCE_SCALE:g}], got "
                     f"{self.inference_scale}")
        _choice(self.backbone_runtime, "agent.backbone_runtime", ("auto", "torch", "onnxruntime"))
        _require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                 f"agent.device must be auto, cpu or cuda, got {self.device!r}")
        _require(0 <= self.embedding_cache_mb <= 2**20,
                 f"agent.embedding_cache_mb must be in 0..{2**20}, got {self.embedding_cache_mb}")
        _require(0 <= self.seed < 2**32, f"agent.seed must be in 0..2**32-1 (numpy's range), got {self.seed}")


@dataclass
class SessionConfig:
    """One DAVIS Interactive session (python session_runner.py)."""

    subset: str = "val"
    davis_root: Path | None = None  # None: the built-in synthetic dataset
    sequences: tuple[str, ...] | None = None
    max_interactions: int = 8  # DAVIS-2017 challenge
    max_time: float = 240.0  # seconds per object
    metric: str = "J"
    strategy: str = STRATEGY_AUTO  # auto: the best measured schedule for the device (strategies/__init__.py)
    predictor: str = "simlearn"  # simlearn: the paper's agent | baseline: paint scribbles, copy to every frame
    output_dir: Path | None = None  # None: outputs/<subset>-<predictor>-<strategy>-<time>
    # A sequence that cannot be evaluated (bad files, or named in `sequences` and absent) is an error; True
    # leaves it out instead, listed under summary.json's "skipped_sequences".
    skip_bad_sequences: bool = False
    # localhost: the framework's in-process evaluation. A URL (http://host:port): an evaluation server played
    # through the framework's own RemoteConnector; it plays test-dev only and the server sets max_interactions,
    # max_time and metric.
    host: str = "localhost"
    user_key: str | None = None  # remote: who evaluates (the challenge's key); never written to config.json
    connect_timeout: float = 10.0  # seconds, every request to a remote server
    read_timeout: float = 300.0  # seconds: the server scores a whole video and runs its robot per interaction
    retries: int = 3  # per request, on refused connections and 502-504 answers (the framework's count)
    # K/N: play only the K-th (1..N) of N disjoint parts of the sequences (agent/evaluation/sharding.py);
    # `python -m agent.report merge` combines the parts' results.
    shard: str | None = None

    @property
    def remote(self) -> bool:
        return self.host != "localhost"

    def __post_init__(self) -> None:
        _check_types(self, "session")
        _choice(self.subset, "session.subset", ("train", "val", "trainval", "test-dev"))
        if self.remote:
            # urlparse drops tabs and newlines and keeps a space in the host name: `http://local host:8000` was
            # found by the connection check, once the output folder and the checkpoint had been.
            _require(not any(character.isspace() or not character.isprintable() for character in self.host),
                     f"session.host {self.host!r} holds a space or control character: a URL has none (in its path, "
                     "write a space as %20)")
            try:
                url = urlparse(self.host)
                url.port  # noqa: B018 (parses the port: a bad one raises here, not when connecting)
            except ValueError as error:
                raise ConfigError(f"session.host {self.host!r} is not a valid URL ({error}"
                                  f"{_unbracketed_ipv6(self.host)})") from error
            # requests drops a port 0 (the health check went to port 80), and no server listens on it.
            _require(url.port != 0, f"session.host {self.host!r} has port 0: give the server's port, 1..65535")
            # A host name, not only a netloc: `http://:8000` passed, the preflight connected to this machine, and
            # requests refused the URL (InvalidURL) once the model was built.
            _require(url.scheme in ("http", "https") and bool(url.hostname),
                     f"session.host must be localhost or an http(s):// URL with a host name, got {self.host!r}")
            # The framework appends its API paths to the URL (os.path.join): after a query or fragment every request
            # went to the same path, `/?x=1/api/dataset/samples`, and a server answering it was read as each answer.
            _require(not url.query and not url.fragment and not self.host.rstrip("/").endswith(("?", "#")),
                     f"session.host {self.host!r} has a query or fragment ('?' or '#'): the client appends its API "
                     "paths to the URL; give the server's base URL")
            # Written as given to config.json, summary.json and the log: a password there would be kept in the results.
            _require(url.username is None and url.password is None,
                     f"session.host for {url.hostname} holds a user name or password ('user:pass@'): it would be "
                     "written to config.json, summary.json and the log; the server authenticates with --user-key")
            _require(bool(self.user_key), "session.user_key is required with a remote host (--user-key KEY or $DAVIS_USER_KEY)")
            _header_value(self.user_key, "session.user_key")
            _require(self.subset == "test-dev", "a remote host plays test-dev only (the framework's RemoteConnector); "
                     f"got session.subset {self.subset!r}: pass --subset test-dev")
        else:
            _require(self.subset != "test-dev", "test-dev has no public annotations: play it on an evaluation "
                     "server (--host URL --user-key KEY)")
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            _require(_finite(value) and 0 < value <= MAX_TIMEOUT,
                     f"session.{name} must be a number of seconds in (0, {MAX_TIMEOUT:g}], got {value}")
        _require(0 <= self.retries <= MAX_RETRIES, f"session.retries must be in 0..{MAX_RETRIES}, got {self.retries}")
        if self.shard is not None:
            parse_shard(self.shard)
        _choice(self.metric, "session.metric", ("J", "F", "J_AND_F"))
        _choice(self.predictor, "session.predictor", ("simlearn", "baseline"))
        _require(1 <= self.max_interactions <= MAX_INTERACTIONS_LIMIT,
                 f"session.max_interactions must be in 1..{MAX_INTERACTIONS_LIMIT} (davisinteractive's limit), got "
                 f"{self.max_interactions}")
        # >= 1 s: less cannot hold a round, and 1e-300 used to "work" with AUC 0
        _require(_finite(self.max_time) and self.max_time >= 1,
                 f"session.max_time must be a finite number of seconds >= 1, got {self.max_time}")
        # davisinteractive silently caps it there; our summary would then use a timeout the session did not.
        _require(self.max_time <= MAX_TIME_LIMIT, f"session.max_time must be at most {MAX_TIME_LIMIT:.0f} seconds "
                 f"per object (davisinteractive's limit), got {self.max_time}")
        if self.sequences is not None:
            _require_names(self.sequences, "session.sequences")


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 1 <= K <= N; ConfigError otherwise."""
    index, sep, count = str(text).partition("/")
    try:
        index, count = ascii_int(index), ascii_int(count)
    except ValueError:
        index = count = 0
    _require(bool(sep) and 1 <= index <= count, f"session.shard must be K/N with 1 <= K <= N (e.g. 2/4), got {text!r}")
    return index, count


@dataclass
class ServerConfig:
    """The local evaluation server (python -m agent.server). Its protocol (max_interactions, max_time, metric)
    overrides what clients ask for, as the challenge server's does: these are the server's own parameters."""

    davis_root: Path | None = None  # None: the built-in synthetic dataset
    subset: str = "val"  # served as the challenge's samples; clients call it test-dev
    sequences: tuple[str, ...] | None = None
    max_interactions: int = 8
    max_time: float = 240.0
    metric: str = "J"
    port: int = 8000  # on 127.0.0.1 only: the server has no authentication beyond the keys; 0: any free port
    user_keys: tuple[str, ...] | None = None  # None: any non-empty user key
    skip_bad_sequences: bool = False  # serve the others when a sequence's files are wrong (else: refuse to start)

    def __post_init__(self) -> None:
        _check_types(self, "server")
        _choice(self.subset, "server.subset", ("train", "val", "trainval", "test-dev"))
        _choice(self.metric, "server.metric", ("J", "F", "J_AND_F"))
        _require(1 <= self.max_interactions <= MAX_INTERACTIONS_LIMIT,  # the framework's session caps it there
                 f"server.max_interactions must be in 1..{MAX_INTERACTIONS_LIMIT}, got {self.max_interactions}")
        _require(_finite(self.max_time) and 1 <= self.max_time <= 600,  # and max_time at 600 s
                 f"server.max_time must be seconds in [1, 600], got {self.max_time}")
        _require(0 <= self.port <= 65535, f"server.port must be in 0..65535, got {self.port}")
        if self.sequences is not None:
            _require_names(self.sequences, "server.sequences")
        if self.user_keys is not None:
            _require(len(self.user_keys) > 0 and all(self.user_keys), "server.user_keys must be non-empty keys")
            for key in self.user_keys:  # a client could never send it: no one could play
                _header_value(key, "server.user_keys")


@dataclass
class RunConfig:
    """Everything session_runner.py runs with; written as config.json, which --config reads back."""

    session: SessionConfig = field(default_factory=SessionConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)

    def __post_init__(self) -> None:
        _check_types(self, "")  # its sections: a dict of fields was an AttributeError later


@dataclass
class TrainRunConfig:
    """Everything python -m agent.train runs with (train_config.json)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    scribbles: ScribbleConfig = field(default_factory=ScribbleConfig)  # stroke references' far-away background

    def __post_init__(self) -> None:
        _check_types(self, "")  # its sections: a dict of fields was an AttributeError later


# --- loading, overriding, validating -------------------------------------------------------------------
def to_dict(config) -> dict[str, Any]:
    """A config as plain JSON types (paths as strings, tuples as lists)."""
    return _plain(asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@functools.cache
def _field_error_class() -> type:
    import dacite  # (imported where it is used, as below: not at the config's import)

    class FieldError(dacite.DaciteFieldError):
        def __init__(self, message: str) -> None:
            super().__init__()
            self.message = message

        def __str__(self) -> str:
            return f"{self.field_path}: {self.message}"

    return FieldError


def comma_names(text: str | None, flag: str) -> list[str] | None:
    """A comma-separated option (`--sequences a,b`) as its names, spaces stripped; '' is none, None not given. An
    empty name among others (`a,,b`, a trailing comma, `"$A,$B"` with one unset) is a ConfigError naming the flag:
    every command dropped it without a word."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    if names == [""]:
        return []
    if "" in names:
        raise ConfigError(f"{flag} {text!r}: an empty name between commas (an unset variable?): name each one")
    return names


def _require_names(names: tuple[str, ...], field: str) -> None:
    """Sequence names: at least one, none empty, none twice (`--sequences dog,dog` played dog once without a word)."""
    _require(len(names) > 0 and all(names), f"{field} must name sequences")
    twice = sorted(repeated(names))
    _require(not twice, f"{field} names {', '.join(twice)} more than once")


def _field_error(message: str) -> Exception:
    """An error of a type hook below that dacite prefixes with the field's path (`session.max_time: ...`)."""
    return _field_error_class()(message)


def _int_hook(value: Any) -> Any:
    if isinstance(value, bool):
        raise _field_error(f"expected an integer, got {value!r}")
    if isinstance(value, str):  # `0x10`, `0b11`, `1:30` among them (the reader keeps them text: _yaml_loader)
        raise _field_error(f"expected a decimal integer, got the text {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _bool_hook(value: Any) -> Any:
    # `yes`, `on` are text (the reader keeps YAML 1.1's booleans so: _yaml_loader); dacite said only 'should be
    # "bool" instead of value "yes" of type "str"'.
    if isinstance(value, str):
        raise _field_error(f"expected true or false, got the text {value!r}")
    if not isinstance(value, bool):
        raise _field_error(f"expected true or false, got {'null' if value is None else repr(value)}")
    return value


def _path_hook(value: Any) -> Any:
    if not isinstance(value, str | Path):
        return value
    try:
        return expand_user(value)
    except ValueError as error:  # `~nosuchuser/x`
        raise _field_error(str(error)) from None


def _float_hook(value: Any) -> Any:
    # bool is an int in Python: `max_time: true` played 1 s per object. An integer beyond a float's range raised
    # OverflowError (a traceback).
    if isinstance(value, bool):
        raise _field_error(f"expected a number, got {value!r}")
    if isinstance(value, str):  # `nan`, `0x10`, `1:30` (dacite said only "should be float instead of ... str")
        raise _field_error(f"expected a decimal number, got the text {value!r}")
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise _field_error(f"{str(value)[:20]}... ({len(str(value))} digits) is beyond a float's range") from None
    return value


def from_dict(cls, data: dict[str, Any], strict: bool = True, where: str = "config"):
    """Build (nested) dataclass `cls` from a dict, checking every key and value's type; ConfigError says
    which. strict=False ignores unknown keys (e.g. a checkpoint written by a newer version)."""
    import dacite

    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    if not strict:
        data = _known_keys(cls, data)
    # `~` is the home folder in every path field, as the shell would make it: a config file's "~/runs/a" made a
    # folder named `~` for the outputs while the framework (pandas) wrote to the home folder's, which was missing.
    options = dacite.Config(strict=strict, cast=[tuple], type_hooks={int: _int_hook, float: _float_hook,
                                                                      bool: _bool_hook, Path: _path_hook})
    _check_sequences(cls, data, where)
    try:
        return dacite.from_dict(cls, data, options)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from error
    except dacite.DaciteError as error:
        raise ConfigError(f"{where}: {error}") from error
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error


def _check_sequences(cls, data: dict[str, Any], where: str, prefix: str = "") -> None:
    """A text where a list belongs (`--set session.sequences=dog`): dacite's tuple cast would split it into
    characters, so it is one error naming the field. Unknown keys are named with their section (dacite's error
    has none: `session.foo` listed the top level's keys as the known ones)."""
    hints = typing.get_type_hints(cls)
    names = [item.name for item in fields(cls)]
    unknown = sorted(str(key) for key in data if key not in names)  # YAML keys may be numbers or null (`1: 2`)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(prefix + key for key in unknown)} (known"
                          f"{' in ' + prefix[:-1] if prefix else ''}: {', '.join(names)})")
    for item in fields(cls):
        if item.name not in data:
            continue
        value, hint = data[item.name], hints[item.name]
        kinds = {typing.get_origin(arm) or arm for arm in (typing.get_args(hint) or (hint,))} | {typing.get_origin(hint)}
        if isinstance(value, str) and (tuple in kinds or list in kinds):
            raise ConfigError(f"{where}: {prefix}{item.name} must be a list, got the text {value!r} (write [{value}])")
        # A number where a list belongs (`scale_range: 0.5`): dacite's cast said "'float' object is not iterable".
        if (tuple in kinds or list in kinds) and value is not None and not isinstance(value, list | tuple | set):
            raise ConfigError(f"{where}: {prefix}{item.name} must be a list, got {type(value).__name__} {value!r}")
        # A list of the wrong length where a fixed one belongs (input_size [48, 80, 3]): dacite's message was
        # 'should be "tuple" instead of value "(48, 80, 3)" of type "tuple"'.
        size = next((len(typing.get_args(arm)) for arm in _arms(hint) if typing.get_origin(arm) is tuple
                     and typing.get_args(arm) and Ellipsis not in typing.get_args(arm)), None)
        if size is not None and isinstance(value, list | tuple) and len(value) != size:
            raise ConfigError(f"{where}: {prefix}{item.name} must be a list of {size} values, got {len(value)}")
        if isinstance(value, list | tuple):
            _check_items(value, hint, f"{where}: {prefix}{item.name}")
        if Path in kinds and value is not None:  # dacite's cast would raise without naming the field
            if not isinstance(value, str | Path):
                raise ConfigError(f"{where}: {prefix}{item.name} must be a path, got {type(value).__name__} {value!r}")
            if not str(value).strip():  # Path("") is the working directory
                raise ConfigError(f"{where}: {prefix}{item.name} is an empty path (leave it out for the default)")
        default = item.default_factory() if callable(item.default_factory) else None
        if is_dataclass(default) and isinstance(value, dict):
            _check_sequences(type(default), value, where, f"{prefix}{item.name}.")


def _check_items(value: list | tuple, hint, where: str) -> None:
    """Each item of a list where a tuple of int, float or str belongs is one: dacite's message for one that is not
    ([48, "80"], sequences [1, 2], [dog, null]) was 'should be "tuple" instead of value "(48, '80')" of type
    "tuple"', naming the type the list had."""
    arm = next((arm for arm in _arms(hint) if typing.get_origin(arm) is tuple and typing.get_args(arm)), None)
    if arm is None:
        return
    kinds = [kind for kind in typing.get_args(arm) if kind is not Ellipsis]
    for index, item in enumerate(value):
        kind = kinds[0] if len(kinds) == 1 else kinds[index] if index < len(kinds) else None
        if kind is int:  # 48.0 is 48 (_int_hook); true and false are _int_hook's and _float_hook's to name
            fits = isinstance(item, int) or isinstance(item, float) and item.is_integer()
            expected = "an integer"
        elif kind is float:
            fits = isinstance(item, int | float)
            expected = "a number"
        elif kind is str:
            fits = isinstance(item, str)
            expected = "text"
        else:
            continue
        if not fits:
            got = "null" if item is None else f"{type(item).__name__} {item!r}"[:60]
            raise ConfigError(f"{where}: item {index + 1} is {got}, expected {expected}")


def _arms(hint) -> tuple:
    """The types a hint allows: each arm of a union (`tuple[float, float] | None`), else the hint itself."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _known_keys(cls, data: dict[str, Any]) -> dict[str, Any]:
    known = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in data.items():
        if key not in known:
            continue
        default = known[key].default_factory() if callable(known[key].default_factory) else None
        out[key] = _known_keys(type(default), value) if is_dataclass(default) and isinstance(value, dict) else value
    return out


def _yaml_load(text: str):
    """yaml.safe_load, but numbers such as 5e-1 or 1e2 are floats (YAML 1.2 and JSON), not text (PyYAML
    follows YAML 1.1, which needs a dot and a signed exponent), and a key given twice is an error."""
    import yaml

    try:
        data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
    except RecursionError as error:  # [[[[...]]]] 50000 deep: PyYAML's parser recurses per level
        raise yaml.YAMLError("nested too deeply to parse") from error
    except ValueError as error:  # a value its constructors refuse: an integer of 5000 digits, a date 2020-13-45
        raise yaml.YAMLError(first_line(error)) from error
    if _expanded_size(data, {}) > MAX_CONFIG_VALUES:
        raise yaml.YAMLError(f"holds more than {MAX_CONFIG_VALUES:,} values with its aliases expanded; a "
                             "configuration holds a few hundred")
    return data


def _expanded_size(value, sizes: dict[int, int]) -> int:
    """How many values `value` holds with every alias expanded, each shared list or mapping counted once per
    use but walked once (`sizes` by id: linear in the file; a recursive alias, `&a [*a]`, adds nothing)."""
    if not isinstance(value, list | dict):
        return 1
    if id(value) not in sizes:
        sizes[id(value)] = 0
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        sizes[id(value)] = 1 + sum(_expanded_size(item, sizes) for item in items)
    return sizes[id(value)]


@functools.cache
def _yaml_loader():
    """The loader class, built once (yaml is imported lazily: most commands never read a config file)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            # A merge key (`<<: *defaults`) is no key of its own: constructing it failed ("could not determine a
            # constructor"), and a key it merges may be given again (that one wins).
            keys = [self.construct_object(key, deep=deep) for key, _ in node.value
                    if key.tag != "tag:yaml.org,2002:merge"]
            try:  # counted at once: keys.count per key took minutes for a 1 MB file of 80,000 keys
                twice = sorted(map(str, repeated(keys)))
            except TypeError:  # an unhashable key ([a]: 1): the SafeLoader refuses it below
                twice = []
            if twice:  # YAML and JSON keep the last silently: an edit that was meant to apply may not
                raise yaml.constructor.ConstructorError(None, None, f"key(s) {', '.join(twice)} given twice",
                                                        node.start_mark)
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node):
            # Integers are decimal, as JSON writes them. A leading zero too, as in YAML 1.2: YAML 1.1 read `010` as
            # octal (`--set agent.seed=010` was 8). Its other forms are text, refused where a number belongs: `0x10`
            # was 16, `0b11` 3 and `1:30` 90 (base 60), which YAML 1.2 and JSON read otherwise or not at all.
            text = str(self.construct_scalar(node))
            if ascii_digits(text.replace("_", "").lstrip("+-")):  # `!!int ١٢` was 12
                return int(text.replace("_", ""), 10)
            return text

        def construct_yaml_bool(self, node):
            # Booleans are JSON's (and YAML 1.2's) true and false: YAML 1.1's yes/no/on/off, any case, stay text
            # (`--set session.user_key=yes` was refused as "value True of type bool"; a bool field names them).
            text = str(self.construct_scalar(node))
            return text.lower() == "true" if text in ("true", "True", "TRUE", "false", "False", "FALSE") else text

        def construct_yaml_float(self, node):
            text = str(self.construct_scalar(node))
            # Base 60: `1:30.5` was 90.5; `!!float ١.٥` was 1.5 (float() takes other scripts' digits).
            return text if ":" in text or not text.isascii() else super().construct_yaml_float(node)

    Loader.add_constructor("tag:yaml.org,2002:bool", Loader.construct_yaml_bool)
    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_yaml_float)
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."))
    return Loader


def _yaml_problem(error: Exception) -> str:
    """A YAML error's problem and where it is: its first line was the context alone ("while scanning for the next
    token" for a tab, "while parsing a flow mapping" for a JSON comment), naming neither."""
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if mark is None or not problem:
        return first_line(error)
    context = getattr(error, "context", None)
    if context and problem.startswith("but "):  # "expected a single document in the stream", "but found another"
        problem = f"{context}, {problem}"
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML file (by suffix; .json is read as YAML too, a superset) as a dict."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory, not a JSON or YAML file")
    special = special_file(path)
    if special:  # a FIFO would wait for a writer, /dev/zero never ends
        raise ConfigError(f"config file {path} is {special}, not a JSON or YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {size / 2**20:.1f} MB: a configuration is at most "
                          f"{MAX_CONFIG_BYTES // 2**20} MB (a run's config.json is a few kB)")
    try:
        raw = path.read_bytes()
        # UTF-16 with its byte-order mark is what Windows PowerShell 5's `>` writes: "'utf-8' codec can't decode
        # byte 0xff". Anything else is UTF-8, as JSON and YAML are (not the locale's encoding).
        utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        data = _yaml_load(raw.decode("utf-16" if utf16 else "utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid JSON or YAML ({_yaml_problem(error)})") from error
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def set_key(data: dict[str, Any], assignment: str, cls) -> None:
    """Apply one `section.field=value` (value parsed as YAML: 3, 0.5, true, null, [1, 2], text) to `data`."""
    import yaml

    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected section.field=value")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment!r}: cannot parse the value ({_yaml_problem(error)})") from error
    parts = key.strip().split(".")
    node, node_cls = data, cls
    for depth, part in enumerate(parts):
        known = {f.name: f for f in fields(node_cls)} if is_dataclass(node_cls) else {}
        if part not in known:
            prefix = ".".join(parts[:depth]) or "the top level"
            raise ConfigError(f"--set {key}: unknown key '{part}' in {prefix} (known: {', '.join(known)})")
        if depth == len(parts) - 1:
            # A whole section (`agent.crf={iterations: 3}`) merges with an earlier --set of its fields, as it does
            # with a config file's: it replaced them without a word.
            node[part] = merge(node[part], value) if isinstance(value, dict) and isinstance(node.get(part), dict) \
                else value
            return
        default = known[part].default_factory() if callable(known[part].default_factory) else None
        if not is_dataclass(default):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[:depth + 1])}' is a value, not a section")
        if not isinstance(node.get(part), dict):  # an earlier --set gave the section a value (`agent.crf=3`): this
            node[part] = {}                       # one wins, as the later --set does (it was a TypeError traceback)
        node = node[part]
        node_cls = type(default)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge: `update` wins, sections merge key by key."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(cls, files: list[str | Path] = (), assignments: list[str] = (), flags: dict[str, Any] | None = None,
                base=None):
    """Defaults (or `base`, a `cls`) < each file < flags ({'section.field': value}, None values skipped) < --set
    assignments."""
    data = to_dict(cls() if base is None else base)
    for path in files:
        raw, resolved = _resolved_marker(read_config_file(path), path)
        update, where = _own_section(cls, raw, path)
        _check_sections(data, update, where)
        # Its keys and lists' shapes, naming the file: checked once merged, "config: unknown key(s) ..." left the
        # user to find which of several files (an old run's config.json: a field since removed) held it.
        _check_sequences(cls, update, f"config file {where}")
        if resolved:
            _warn_missing(cls, update, where)
        data = merge(data, update)
    overrides: dict[str, Any] = {}
    for key, value in (flags or {}).items():
        if value is not None:
            set_key(overrides, f"{key}=null", cls)  # validates the key
            _assign(overrides, key, _plain(value))
    for assignment in assignments:
        set_key(overrides, assignment, cls)
    return from_dict(cls, merge(data, overrides))


def resolved_record(config) -> dict[str, Any]:
    """`config` as a run writes it (config.json, train_config.json): every field, marked as such (RESOLVED_KEY), so
    that reading it back can tell a field it lacks (written by an older version) from one a user left out."""
    return {RESOLVED_KEY: True, **to_dict(config)}


def _resolved_marker(data, path) -> tuple[Any, bool]:
    """(`data` without RESOLVED_KEY, whether it said it is a run's resolved config)."""
    if not isinstance(data, dict) or RESOLVED_KEY not in data:
        return data, False
    marker = data[RESOLVED_KEY]
    _require(isinstance(marker, bool), f"config file {path}: '{RESOLVED_KEY}' must be true or false (a run writes "
             f"true: its config holds every field), got {marker!r}")
    return {key: value for key, value in data.items() if key != RESOLVED_KEY}, marker


def _missing_fields(cls, data: dict[str, Any], prefix: str = "") -> list[str]:
    """The fields of `cls` that `data` lacks, dotted; a section lacking as a whole is named once."""
    missing = []
    for item in fields(cls):
        default = item.default_factory() if callable(item.default_factory) else None
        if item.name not in data:
            missing.append(f"{prefix}{item.name}{' (the whole section)' if is_dataclass(default) else ''}")
        elif is_dataclass(default) and isinstance(data[item.name], dict):
            missing += _missing_fields(type(default), data[item.name], f"{prefix}{item.name}.")
    return missing


def _warn_missing(cls, data: dict[str, Any], where: str) -> None:
    """A run's resolved config (an older version's config.json) lacking fields is replayed with today's defaults
    for them: one warning naming them, since that is not quite the run that wrote it (it was silent)."""
    missing = _missing_fields(cls, data)
    if missing:
        log.warning("config file %s is a run's resolved config without %s (written by an older version?): today's "
                    "defaults fill %s, so this is not exactly the run that wrote it", where, ", ".join(missing),
                    "it" if len(missing) == 1 else "them")


def _own_section(cls, update: dict[str, Any], path) -> tuple[dict[str, Any], str]:
    """(`update`, `path`), or for a run's config.json (session_runner's: `agent` and `session` sections) given where
    `cls` is read (agent.segment, agent.app and the studies read AgentConfig) its section of that type and where
    errors name it, said so. It was "unknown key(s) agent, session", as if the file were of no use there."""
    if not isinstance(update, dict) or not update or any(key in {item.name for item in fields(cls)} for key in update):
        return update, str(path)
    names = {item.name for item in fields(RunConfig)}
    section = next((name for name, hint in typing.get_type_hints(RunConfig).items() if hint is cls), None)
    if section is None or section not in update or not set(map(str, update)) <= names:
        return update, str(path)
    if not isinstance(update[section], dict):
        raise ConfigError(f"config file {path}: section '{section}' must be a mapping of its fields, got "
                          f"{type(update[section]).__name__}")
    others = sorted(str(key) for key in update if key != section)
    log.info("config file %s: a run's config.json; its '%s' section is read%s", path, section,
             f" ({', '.join(others)} ignored: not settings of this command)" if others else "")
    return update[section], f"{path} (its {section} section)"


def _check_sections(base: dict[str, Any], update: dict[str, Any], path, prefix: str = "") -> None:
    """A section (a nested config) given as anything but a mapping: one error, not silently replaced by the
    next layer's values."""
    for key, value in update.items():
        if isinstance(base.get(key), dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: section '{prefix}{key}' must be a mapping of its fields, got "
                                  f"{type(value).__name__}")
            _check_sections(base[key], value, path, f"{prefix}{key}.")


def _assign(data: dict[str, Any], key: str, value: Any) -> None:
    *sections, last = key.split(".")
    for section in sections:
        data = data.setdefault(section, {})
    data[last] = value
