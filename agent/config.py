"""Configuration dataclasses. Defaults are the paper's values (Najafi et al., 2018) unless a comment
says why we differ; the CLIs only fill these in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


def from_dict(cls, data: dict[str, Any]):
    """Build a dataclass from a dict, ignoring unknown keys and turning lists back into tuples."""
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key in known:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def to_dict(config) -> dict[str, Any]:
    return asdict(config)


@dataclass
class ModelConfig:
    """The Siamese embedding network: backbone + decoder -> H/2 x W/2 x d embeddings."""

    backbone: str = "efficientnet-lite0"  # efficientnet-lite0 | resnet101-deeplab | resnet50-deeplab | tiny
    pretrained: str = "imagenet"  # imagenet | coco | none (which weights the backbone starts from)
    output_stride: int = 8  # paper: dilated backbone with output stride 8
    embedding_dim: int = 128  # d
    # Frames are resized to this (H, W) before the network; embeddings come out at half of it.
    input_size: tuple[int, int] = (240, 427)
    # Per-channel normalisation of RGB in [0, 1]; filled from the backbone when left None.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # Backbone stages whose features are concatenated (Lite0: 0..4 at strides 2..32, capped at the output
    # stride); None: the backbone's default (Lite0: stages 2, 3, 4, measured better than the last alone).
    feature_levels: tuple[int, ...] | None = None
    # L2-normalise embeddings (cosine similarity; the BN head rescales it). The paper uses raw inner products;
    # for one-shot transfer with ImageNet features L2 measured much better (top-k J 0.78 vs 0.51).
    normalize_embeddings: bool = True
    # L2-normalise each backbone level before the decoder: the levels' magnitudes differ by orders, and
    # the same normalisation is what makes raw ImageNet features transfer well (see feature_embeddings).
    normalize_features: bool = True
    # random: the usual initialisation. identity (needs embedding_dim == backbone channels): the transposed
    # conv starts as a copy of its input, so training starts from the ImageNet features' own similarity.
    decoder_init: str = "random"


@dataclass
class PoolingConfig:
    """Stochastic pooling: K pixels uniformly at random per object class."""

    samples_per_class: int = 100  # K


@dataclass
class TransferConfig:
    """Label transfer from pooled reference pixels to every query pixel."""

    # eq3 (paper, Eq. 3: sum of BN-ed similarities over K samples) | topk. topk by default: one-shot J 0.78
    # vs 0.34 for eq3 with ImageNet Lite0 features on DAVIS val (eq3 is what the paper's training optimises).
    aggregation: str = "topk"
    samples_per_class: int = 100  # K for eq3
    topk: int = 20  # for topk: mean of the k best similarities per class (5/20/50 within 0.01 J)
    # For topk: per class, random subset of the reference pixels. Coverage matters: on the H/4 grid 1024
    # gave J 0.68, 4096 0.78, all 0.785; cost grows linearly.
    max_reference_pixels: int = 4096
    # Query pixels per chunk (chunks are split evenly, each 1-2x this; at least transfer.MIN_CHUNK): a
    # 1024 x 4096 similarity block (16 MB) fits the 32 MB L3 cache of the machines we measured on; per frame at 240x427 the top-k transfer took 216 ms against 369 ms with
    # 4096-row chunks (best of 8, 2 CPU cores).
    chunk_size: int = 1024
    # Transfer on the H/grid_stride grid, then upsample the scores bilinearly. The paper's grid is H/2
    # (stride 2); the decoder's transposed conv outputs H/4, and the H/2 embeddings are only its bilinear
    # interpolation, so stride 4 is 4x cheaper and, for a fixed reference budget, measured more accurate
    # (one-shot J 0.78 vs 0.71 at 4096 references).
    grid_stride: int = 4
    # Rounds without fine-tuning keep every frame's running top-k and compare it only with the pixels
    # labelled since the last round, at most this many per class (see reference_pool.py); False: full
    # transfer from a fresh sample of max_reference_pixels per class every round.
    incremental: bool = True
    max_new_reference_pixels: int = 1024


@dataclass
class TrainConfig:
    """Pretraining (python -m agent.train)."""

    davis_root: Path | None = None
    synthetic_sequences: int = 8
    iterations: int = 100_000  # paper
    lr_backbone: float = 2.5e-4
    lr_decoder: float = 5e-4  # twice the backbone's, for decoder and head
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    scale_range: tuple[float, float] = (0.75, 1.25)
    rotation_degrees: float = 15.0
    colour_jitter: float = 0.2  # full mode only: brightness/contrast/saturation factors in 1 +- this
    synthetic_frames: int = 16
    max_frame_gap: int = 0  # 0: any pair of frames of the video (paper); >0 limits the gap
    checkpoint_every: int = 500
    validate_every: int = 0
    seed: int = 0
    device: str = "auto"
    output_dir: Path = Path("runs/train")


@dataclass
class ScribbleConfig:
    """Scribbles -> sparse labels on the embedding grid."""

    dilation: int = 3  # square kernel side (paper: 3x3)
    # Pixels farther than this fraction of the image diagonal from every object scribble are background.
    far_background_fraction: float = 0.25
    # Without any background label, this fraction of the frame's least object-similar pixels is background.
    least_similar_fraction: float = 0.25
    # True: least-similar background until the first background stroke, on top of far-away background.
    # False: only while there is no background at all (far-away background included).
    least_similar_until_stroke: bool = True
    # True: no derived background (far-away, least-similar) where the previous round predicted an object. A
    # short late object stroke on part of a large object otherwise makes the rest of it far-away background
    # on that frame, and the object can collapse on every frame (seen on blackswan). Off: in a full val
    # session blackswan was steadier but libby lower (AUC-J 0.785 vs 0.783; README, Limitations).
    spare_predicted_objects: bool = False


@dataclass
class FinetuneConfig:
    """Time-budgeted fine-tuning on the scribbles (the strategy sets the budget per round)."""

    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    flip: bool = True
    scale_range: tuple[float, float] = (0.5, 1.5)
    rotation_degrees: float = 30.0
    early_stop_loss: float = 0.04
    train_backbone: bool = False  # on CPU only decoder + head adapt; backbone features are cached


@dataclass
class CRFConfig:
    """Dense CRF (pydensecrf) on the per-class scores with the RGB frame."""

    # DeepLab-style values for 480p frames (sxy in pixels, srgb in 0-255 intensity units); on a
    # synthetic 480x854 check bilateral sxy 30-50 / srgb 10 / compat 4-5 beat sxy 80 / compat 10.
    iterations: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 10.0
    bilateral_compat: float = 5.0
    score_temperature: float = 1.0  # scores / temperature -> softmax -> unary
    # <1 runs the CRF on a downscaled frame (sxy scaled along) and upsamples the marginals: ~1/scale^2
    # faster (a 480x854 frame with 2 classes takes ~0.5-0.8 s on one CPU core at 1.0).
    scale: float = 1.0
    # Processes that refine frames in parallel (pydensecrf is single-threaded and holds the GIL);
    # 0 = one per CPU core, 1 = in the calling process. 2 workers: 1.8x faster on 2 cores.
    workers: int = 0


@dataclass
class AgentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    scribbles: ScribbleConfig = field(default_factory=ScribbleConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    crf: CRFConfig = field(default_factory=CRFConfig)
    checkpoint: Path | None = None  # None: the shipped default checkpoint
    device: str = "auto"
    seed: int = 0
    # The backbone sees frames at this multiple of the checkpoint's input size (1.5: 360x640 for the shipped
    # 240x427), while label transfer stays on the grid of the checkpoint's size (TransferConfig.grid_stride
    # of 240x427: 60x107), so finer features cost backbone time only. In a robot-driven dev run on the 5 val
    # videos' first scribbles, 1.5 lifted mean J by 0.07 after round 1 and 0.01 after round 8 (0.04 on
    # average; small objects most); in full val sessions with `cpu`, AUC-J went from 0.783 to 0.823 (README).
    # Small videos gain nothing from upscaling: use 1.0 for frames smaller than 1.5x the checkpoint's size.
    inference_scale: float = 1.5
    # Backbone forward passes (features are cached per sample): auto = ONNX Runtime on CPU when installed
    # (same features, ~1.8x faster here; see model/onnx_backbone.py), else PyTorch | torch | onnxruntime.
    backbone_runtime: str = "auto"


@dataclass
class SessionConfig:
    """One local DAVIS Interactive session (python session_runner.py)."""

    subset: str = "val"
    davis_root: Path | None = None  # None: the built-in synthetic dataset
    sequences: tuple[str, ...] | None = None
    max_interactions: int = 8  # DAVIS-2017 challenge
    max_time: float = 240.0  # seconds per object
    metric: str = "J"
    strategy: str = "paper"
    output_dir: Path = Path("outputs/session")
    device: str = "auto"
    seed: int = 0
