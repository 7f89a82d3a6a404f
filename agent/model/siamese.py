"""The Siamese embedding network: backbone -> decoder -> pixel embeddings at H/2 x W/2 x d.

Both branches of the Siamese pair are the same module applied to two frames (shared weights). The
backbone and the decoder are separate calls because the interactive agent caches backbone features per
video (on CPU) and fine-tunes only the decoder and the similarity head on the scribbles.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .backbones import build_backbone
from .similarity import SimilarityHead

log = logging.getLogger(__name__)


def embedding_size(input_size: tuple[int, int], stride: int = 2) -> tuple[int, int]:
    """Embedding grid for an (H, W) input: H/stride x W/stride rounded up (as 'same' strided convs do).

    stride 2 is the paper's grid; stride 4 is the decoder's transposed-conv grid before its bilinear x2,
    where label transfer is ~4x cheaper and, at a fixed reference budget, more accurate (see transfer.py).
    """
    return math.ceil(input_size[0] / stride), math.ceil(input_size[1] / stride)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(H, W) times scale, rounded (at least 1 pixel): the agent's frame size for AgentConfig.inference_scale."""
    if scale <= 0:
        raise ValueError(f"inference_scale must be positive, got {scale}")
    return tuple(max(1, round(side * scale)) for side in size)


# inference_scale auto: at most this multiple of the checkpoint's size (measured best: docs/METHOD.md).
AUTO_MAX_SCALE = 1.5


def oriented(size: tuple[int, int], frame_size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) `size` turned to the frames' orientation: a landscape size becomes portrait for portrait frames
    (H > W), and back, so that a phone's upright video is not squeezed into the checkpoint's landscape shape."""
    portrait = frame_size[0] > frame_size[1]
    return (max(size), min(size)) if portrait else (min(size), max(size))


def inference_size(trained_size: tuple[int, int], frame_size: tuple[int, int], scale: float | str = "auto") -> tuple[int, int]:
    """The backbone's input size for frames of `frame_size` (H, W): `scale` times the checkpoint's size, turned
    to the frames' orientation (`oriented`); auto: the frames' height over the checkpoint's, clipped to
    [1, AUTO_MAX_SCALE] (small videos are not upscaled beyond the size the model was trained at)."""
    trained_size = oriented(trained_size, frame_size)
    if scale == "auto":
        scale = min(AUTO_MAX_SCALE, max(1.0, frame_size[0] / trained_size[0]))
    return scaled_size(trained_size, float(scale))


def preprocess_frames(
    frames: np.ndarray,
    input_size: tuple[int, int],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    batch: int = 16,
) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (T, 3, *input_size) float32, resized (antialiased bilinear) and normalised."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {frames.shape}")
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    out = torch.empty((len(frames), 3, *input_size), dtype=torch.float32)
    for start in range(0, len(frames), batch):  # bounded memory for long 480p videos
        x = (
            torch.from_numpy(np.ascontiguousarray(frames[start : start + batch])).permute(0, 3, 1, 2).float()
            / 255
        )
        if tuple(x.shape[-2:]) != tuple(input_size):
            x = F.interpolate(x, size=input_size, mode="bilinear", align_corners=False, antialias=True)
        out[start : start + batch] = (x - mean_t) / std_t
    return out


class Decoder(nn.Module):
    """One transposed convolution (stride 2) then non-parametric bilinear upsampling (x2), as in the paper.

    The transposed conv has a 2x2 kernel, computed as a 1x1 convolution to 4d channels followed by a pixel
    shuffle: exactly the same operator, but a single matmul on CPU (a 4x4 kernel measured ~4x slower and
    decoding every frame of a video is on the interactive agent's critical path).
    """

    def __init__(self, in_channels: int, embedding_dim: int, hidden: int = 0, skip_channels: int = 0) -> None:
        super().__init__()
        # hidden > 0: a small nonlinear adapter (ModelConfig.decoder_hidden) whose output the transposed conv
        # sees beside the features, so the linear decoder stays one of the functions it can learn.
        self.adapter = None if hidden == 0 else nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.up = nn.Sequential(nn.Conv2d(in_channels + hidden, 4 * embedding_dim, kernel_size=1), nn.PixelShuffle(2))
        # skip_channels > 0 (ModelConfig.skip_level): the finer stage's linear map, added on the 2h x 2w grid.
        # Zero at the start, so that training (or a checkpoint without it) starts from the decoder above.
        self.skip = None
        if skip_channels:
            self.skip = nn.Conv2d(skip_channels, embedding_dim, kernel_size=1, bias=False)
            nn.init.zeros_(self.skip.weight)

    def coarse(self, features: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, h, w) features [and (B, c, 2h, 2w) skip stage] -> (B, d, 2h, 2w): the decoder before its
        bilinear upsampling."""
        if self.adapter is not None:
            features = torch.cat([features, self.adapter(features)], dim=1)
        out = self.up(features)
        if self.skip is not None:
            if skip is None:
                raise ValueError("this decoder has a skip connection: it needs the backbone's skip stage")
            out = out + self.skip(skip)
        return out

    @torch.no_grad()
    def init_identity(self) -> None:
        """Every one of the 2x2 output positions copies the input channels (nearest-neighbour upsampling)."""
        conv = self.up[0]
        channels = conv.in_channels
        if conv.out_channels != 4 * channels:
            raise ValueError(f"identity decoder init needs embedding_dim == backbone channels ({channels})")
        conv.weight.zero_()
        conv.bias.zero_()
        # PixelShuffle reads output channel c*4 + k as sub-position k of embedding channel c.
        for k in range(4):
            conv.weight[torch.arange(channels) * 4 + k, torch.arange(channels), 0, 0] = 1.0

    @torch.no_grad()
    def init_pca(self, samples: torch.Tensor) -> None:
        """Every output position projects its input on the first principal directions of `samples` (N, C)
        (the decoder's input, centred): training starts from the backbone features' own similarity,
        compressed to embedding_dim channels."""
        conv = self.up[0]
        dim = conv.out_channels // 4
        mean = samples.mean(0)
        _, _, directions = torch.linalg.svd(samples - mean, full_matrices=False)  # (C, C), rows by variance
        basis = directions[:dim]  # (d, C)
        for k in range(4):  # PixelShuffle reads output channel c*4 + k as sub-position k of channel c
            conv.weight[torch.arange(dim) * 4 + k, :, 0, 0] = basis
            conv.bias[torch.arange(dim) * 4 + k] = -basis @ mean

    def forward(self, features: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        x = self.coarse(features)
        size = out_size or (2 * x.shape[-2], 2 * x.shape[-1])
        if tuple(size) == tuple(x.shape[-2:]):
            return x  # the H/4 grid: no interpolation needed
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SiameseEmbedder(nn.Module):
    """Backbone + decoder (+ the similarity head, so one state dict holds everything that is trained).

    The stored `config` has mean/std filled in from the backbone.
    """

    def __init__(self, config: ModelConfig, load_pretrained: bool = True) -> None:
        super().__init__()
        pretrained = config.pretrained if load_pretrained else "none"
        self.backbone = build_backbone(
            config.backbone,
            pretrained=pretrained,
            output_stride=config.output_stride,
            feature_levels=config.feature_levels,
            skip_level=config.skip_level,
        )
        self.config = replace(
            config,
            mean=tuple(config.mean) if config.mean is not None else self.backbone.mean,
            std=tuple(config.std) if config.std is not None else self.backbone.std,
            input_size=tuple(config.input_size),
        )
        self.decoder = Decoder(sum(self.backbone.level_channels), config.embedding_dim, config.decoder_hidden,
                               self.backbone.skip_channels)
        if config.decoder_init == "identity":
            self.decoder.init_identity()
        elif config.decoder_init not in ("random", "pca"):  # pca: set by training from its data (init_pca)
            raise ValueError(f"unknown decoder_init '{config.decoder_init}': use random, identity or pca")
        self.head = SimilarityHead()

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def preprocess(self, frames: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (T, 3, *size) normalised float32 on the model's device (size None:
        config.input_size, the size the model was trained at)."""
        x = preprocess_frames(frames, size or self.config.input_size, self.config.mean, self.config.std)
        return x.to(next(self.parameters()).device)

    def embedding_size(self, input_size: tuple[int, int] | None = None, stride: int = 2) -> tuple[int, int]:
        return embedding_size(input_size or self.config.input_size, stride)

    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised -> (B, C, H/os, W/os)."""
        return self.backbone(images)

    def decode(self, features: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, C, h, w) backbone features -> (B, d, *out_size) embeddings.

        out_size None: 4x the feature grid (H/2 for output stride 8). `forward` passes ceil(H/2) x ceil(W/2);
        callers decoding cached features should pass `self.embedding_size(image size)` to match.
        """
        return self.finish_embeddings(self.coarse_embeddings(features), out_size)

    def coarse_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """decode's costly part, on the decoder's own grid (2x the feature grid): (B, C, h, w) -> (B, d, 2h, 2w).
        finish_embeddings of it is decode; inference/embedding_cache.py keeps it per frame."""
        return self.decoder.coarse(*self.decoder_inputs(features))

    def decoder_inputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backbone features -> the decoder's (levels, skip stage or None), each L2-normalised over its channels
        when config.normalize_features."""
        levels, skip = self.backbone.split(features)
        if self.config.normalize_features:
            levels = self._normalize_each(levels)
            skip = None if skip is None else F.normalize(skip, dim=1)
        return levels, skip

    def finish_embeddings(self, coarse: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """coarse_embeddings -> embeddings at out_size (None: 2x the coarse grid, as decode), normalised."""
        size = out_size or (2 * coarse.shape[-2], 2 * coarse.shape[-1])
        emb = coarse if tuple(size) == tuple(coarse.shape[-2:]) else F.interpolate(
            coarse, size=size, mode="bilinear", align_corners=False)
        if self.config.normalize_embeddings:
            emb = F.normalize(emb, dim=1)
        return emb

    def decode_points(self, features: torch.Tensor, out_size: tuple[int, int], indices: list[torch.Tensor]) -> list[torch.Tensor]:
        """decode(features, out_size) at a few pixels only: (B, C, h, w) features and per frame flat indices into
        the out_size grid -> per frame (N_b, d) embeddings. Equal to gathering from the dense decode (to float
        rounding) but upsamples and normalises only the gathered pixels: training pools ~100 pixels per class
        of a 120x214 grid, and the dense decode's upsampling, normalisation and their backward were most of
        a training step's cost."""
        coarse = self.decoder.coarse(*self.decoder_inputs(features))  # (B, d, 2h, 2w): before the bilinear step
        height, width = out_size
        out = []
        for b, flat in enumerate(indices):
            flat = flat.to(coarse.device)
            rows, cols = flat // width, flat % width
            if tuple(coarse.shape[-2:]) == (height, width):
                emb = coarse[b][:, rows, cols].t()
            else:
                # grid_sample's align_corners=False mapping is F.interpolate's; border padding is its clamp.
                x = (2 * cols.float() + 1) / width - 1
                y = (2 * rows.float() + 1) / height - 1
                grid = torch.stack([x, y], 1)[None, None]
                emb = F.grid_sample(coarse[b:b + 1], grid, mode="bilinear", padding_mode="border",
                                    align_corners=False)[0, :, 0].t()
            out.append(F.normalize(emb, dim=1) if self.config.normalize_embeddings else emb)
        return out

    def normalized_levels(self, features: torch.Tensor) -> torch.Tensor:
        """Each backbone level L2-normalised over its channels (levels differ in magnitude by orders); without
        the skip stage."""
        return self._normalize_each(self.backbone.split(features)[0])

    def _normalize_each(self, levels: torch.Tensor) -> torch.Tensor:
        parts = torch.split(levels, list(self.backbone.level_channels), dim=1)
        return torch.cat([F.normalize(part, dim=1) for part in parts], dim=1)

    def feature_embeddings(
        self, features: torch.Tensor, out_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Decode-free embeddings from raw backbone features: L2 per level, concatenated, L2 again, then
        bilinear to out_size (default 4x the feature grid). With ImageNet Lite0 (levels 2-4) this gives
        one-shot J ~0.78 with top-k transfer: a baseline before any training or fine-tuning."""
        emb = F.normalize(self.normalized_levels(features), dim=1)
        size = out_size or (4 * features.shape[-2], 4 * features.shape[-1])
        return F.interpolate(emb, size=size, mode="bilinear", align_corners=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, d, ceil(H/2), ceil(W/2))."""
        return self.decode(self.backbone_features(images), embedding_size(tuple(images.shape[-2:])))

    @torch.no_grad()
    def extract_features(
        self, images: torch.Tensor, batch: int = 1, backbone: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Backbone features of many frames, batched, in eval mode, kept on CPU (the agent's cache).
        One frame at a time is the fastest on CPU (measured at 240x427: 0.26 s/frame, 0.39 s in batches
        of 4, 0.50 s in batches of 8: larger activations fall out of the caches). `backbone`: another
        runtime for the same network (e.g. onnx_backbone.OnnxBackbone); None: this module's."""
        forward = backbone or self.backbone_features
        was_training = self.training
        self.eval()
        try:
            out = [forward(images[i : i + batch]).cpu() for i in range(0, len(images), batch)]
        finally:
            self.train(was_training)
        return torch.cat(out)


def build_model(config: ModelConfig, load_pretrained: bool = True, quiet: bool = False) -> SiameseEmbedder:
    """A SiameseEmbedder; load_pretrained=False skips downloading/reading backbone weights (checkpoint loads);
    quiet: no INFO line (a bare model built only to check a checkpoint, before a run that may yet be refused)."""
    model = SiameseEmbedder(config, load_pretrained=load_pretrained)
    (log.debug if quiet else log.info)(
        "model: %s (os %d, %d channels) -> d=%d, %.1fM parameters",
        config.backbone,
        config.output_stride,
        model.backbone.out_channels,
        config.embedding_dim,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model
