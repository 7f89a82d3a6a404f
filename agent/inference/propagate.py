"""Propagation: label transfer from the scribbled pixels to every frame, upsampled to the video size,
optionally refined by the dense CRF. Frames go through in batches so memory stays bounded for long
480p videos; only the labels and a per-frame confidence are kept."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import CRFConfig, FlowConfig, IdentityConfig, TransferConfig
from ..model.siamese import SiameseEmbedder
from .crf import refine_frames
from .detail import refine_boundaries
from .embedding_cache import Embed, uncached
from .flow import FlowWarper
from .identity import separate_objects
from .round_fusion import RoundFusion
from .transfer import transfer_labels

log = logging.getLogger(__name__)


@dataclass
class Detail:
    """What boundary detail needs: the fine grid, the references ({class: (M, d)}, times the sign of the
    head's scale) and the head's affine."""

    grid: tuple[int, int]
    refs: dict[int, torch.Tensor]
    scale: float
    shift: float


@dataclass
class Propagation:
    labels: np.ndarray  # (T, H, W) int64
    confidence: np.ndarray  # (T,) mean margin between the best and second-best class score
    crf_seconds: float = 0.0  # spent in the CRF (the agent's cost model tells it from the transfer)
    fill_seconds: float = 0.0  # spent filling the frames between keyframes


def reference_set(
    model: SiameseEmbedder,
    features: dict[int, torch.Tensor],
    labels: dict[int, torch.Tensor],
    out_size: tuple[int, int],
    weights: dict[int, np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (M, d) and class ids (M,) of every labelled pixel of the scribbled frames; weights {frame: (h, w)
    int}: each pixel's row repeated that many times (None: once)."""
    device = next(model.parameters()).device
    frames = sorted(labels)
    with torch.no_grad():
        emb = model.decode(torch.stack([features[f] for f in frames]).float().to(device), out_size)
    lab = torch.stack([labels[f] for f in frames]).to(device)
    emb = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
    lab = lab.reshape(-1)
    keep = lab >= 0
    if weights is None:
        return emb[keep], lab[keep]
    repeats = torch.from_numpy(np.stack([np.asarray(weights[f]) for f in frames]).reshape(-1)).to(device)[keep]
    return emb[keep].repeat_interleave(repeats, dim=0), lab[keep].repeat_interleave(repeats)


def _argmax_classes(scores: torch.Tensor) -> torch.Tensor:
    """argmax over dim 1 of (B, C, H, W), C small: a running maximum over the classes is ~50x faster
    on CPU than torch.argmax(1) here (0.46 s for 8 frames of 2 x 480 x 854)."""
    best, labels = scores[:, 0].clone(), torch.zeros(scores[:, 0].shape, dtype=torch.int64, device=scores.device)
    for cls in range(1, scores.shape[1]):
        better = scores[:, cls] > best  # ties keep the lower class, as argmax does
        labels[better] = cls
        best = torch.maximum(best, scores[:, cls])
    return labels


@torch.no_grad()
def propagate(
    model: SiameseEmbedder,
    features: torch.Tensor,
    ref_embeddings: torch.Tensor | None,
    ref_labels: torch.Tensor | None,
    num_classes: int,
    frames: np.ndarray,
    grid: tuple[int, int],
    transfer_config: TransferConfig,
    crf_config: CRFConfig | None,
    batch: int = 8,
    generator: torch.Generator | None = None,
    scorer: Callable[[np.ndarray], torch.Tensor] | None = None,
    keyframes: np.ndarray | None = None,
    detail: Detail | None = None,
    fusion: RoundFusion | None = None,
    on_scores: Callable[[np.ndarray, torch.Tensor], None] | None = None,
    previous: np.ndarray | None = None,
    identity: IdentityConfig | None = None,
    strokes: dict[int, np.ndarray] | None = None,
    flow: FlowConfig | None = None,
    embed: Embed | None = None,
    frame_numbers: np.ndarray | None = None,
) -> Propagation:
    """Labels for every frame. features: (T, C, h8, w8) cached backbone features; frames: (T, H, W, 3)
    uint8 (the output size and the CRF's image); grid: the embedding grid; crf_config None = no CRF.
    scorer(frame indices) -> (B, C, h, w) scores replaces the transfer from ref_embeddings (e.g. a
    ReferencePool's running top-k). keyframes: sorted frame indices to compute (None: all); every other
    frame takes the labels of its nearest keyframe (only their features are read), moved along optical flow
    (`flow`, flow.py; None or disabled: copied in place), or, given `previous` (the last round's (T, H, W)
    labels), only where that keyframe's labels changed (fill_between_keyframes).
    detail: transfer again on a finer grid near the labels' boundaries (detail.py). fusion: blend the
    scores with the last round's by distance to the new strokes (round_fusion.py). on_scores(frame indices,
    (B, C, h, w) scores) sees the scores the CRF or argmax gets, before upsampling (evaluation/crf_study.py
    caches them). identity: with several objects, choose between them by position, sweeping the keyframes
    outward from the scribbled frames, `strokes` {frame: (h, w) its labels on the grid} (identity.py).
    embed: the frames' embeddings (embedding_cache.py; None: decoded from `features` each time).
    frame_numbers: (T,) each frame's number in its video, for the identity step's distances (None: its index)."""
    device = next(model.parameters()).device
    embed = embed or uncached(model, features)
    num_frames, height, width = frames.shape[:3]
    computed = np.arange(num_frames) if keyframes is None else np.asarray(keyframes, np.int64)
    labels = np.empty((num_frames, height, width), np.int64)
    confidence = np.empty(num_frames, np.float32)
    crf_seconds = 0.0

    def transferred(index: np.ndarray) -> torch.Tensor:
        if scorer is not None:
            scores = scorer(index).to(device)
        else:
            query = embed(index, grid)
            scores = transfer_labels(query, ref_embeddings, ref_labels, transfer_config, model.head,
                                     num_classes=num_classes, generator=generator).scores
        return scores if fusion is None else fusion.fuse(index, scores).to(device)

    separated = None
    if identity is not None and num_classes > 2:
        # The sweep needs every keyframe's scores before any is final (grid-sized, so they fit in memory).
        # Distances in the video's frames: a chunk's scribbled frame 3 beside its frame 50 is 47 frames away.
        numbers = np.arange(num_frames) if frame_numbers is None else np.asarray(frame_numbers, np.int64)
        separated = separate_objects(
            torch.cat([transferred(computed[lo:lo + batch]) for lo in range(0, len(computed), batch)]),
            numbers[computed], {int(numbers[f]): g for f, g in (strokes or {}).items()}, identity)
    for lo in range(0, len(computed), batch):
        index = computed[lo:lo + batch]
        scores = transferred(index) if separated is None else separated[lo:lo + batch]
        # a class without references scores transfer.ABSENT_SCORE (finite)
        top2 = scores.topk(min(2, num_classes), dim=1).values
        margin = top2[:, 0] - top2[:, -1] if num_classes > 1 else top2[:, 0]
        confidence[index] = margin.mean((1, 2)).cpu().numpy()
        if detail is not None:
            query = embed(index, detail.grid)
            scores = refine_boundaries(query, scores, detail.refs, detail.scale, detail.shift, transfer_config.topk,
                                       transfer_config.detail_band, transfer_config.chunk_size)
        if on_scores is not None:
            on_scores(index, scores)
        full = F.interpolate(scores, size=(height, width), mode="bilinear", align_corners=False)
        if crf_config is not None and num_classes > 1:
            crf_started = time.perf_counter()
            labels[index] = refine_frames(frames[index], full.cpu().numpy(), crf_config)
            crf_seconds += time.perf_counter() - crf_started
        else:
            labels[index] = _argmax_classes(full).cpu().numpy()
    fill_seconds = 0.0
    if len(computed) < num_frames:
        others = np.setdiff1d(np.arange(num_frames), computed)
        source = computed[nearest_keyframe(computed, num_frames)][others]
        fill_started = time.perf_counter()
        warper = FlowWarper(frames, flow) if flow is not None and flow.enabled else None
        fill_between_keyframes(labels, others, source, previous, warper, chain=flow is not None and flow.chain)
        fill_seconds = time.perf_counter() - fill_started
        confidence[others] = confidence[source]
        if fusion is not None:
            fusion.copy(others, source)
    return Propagation(labels=labels, confidence=confidence, crf_seconds=crf_seconds, fill_seconds=fill_seconds)


def fill_between_keyframes(
    labels: np.ndarray, others: np.ndarray, source: np.ndarray, previous: np.ndarray | None = None,
    warper: FlowWarper | None = None, chain: bool = True,
) -> None:
    """labels[others] from their keyframes' labels[source], in place: moved along the optical flow with a
    `warper` (chain: frame by frame from the keyframe, each from its filled neighbour), else copied. With the
    last round's labels `previous`, a frame keeps them but where its keyframe's labels changed since: a round
    the clock lightened to keyframes then adds its strokes' effect without throwing away the full round before
    it (a replayed val round, goat 3 round 7 with every 4th frame: J 0.823 against 0.772 copying whole
    keyframes)."""
    others, source = np.asarray(others, np.int64), np.asarray(source, np.int64)
    # Where each filled frame's keyframe changed since the last round, moved with it (previous only).
    changed = {int(k): labels[k] != previous[k] for k in np.unique(source)} if previous is not None else {}
    # Nearer frames first: a frame's neighbour toward its keyframe is then filled (the nearest keyframe of every
    # frame in between is the same one).
    for i in np.argsort(np.abs(others - source), kind="stable"):
        frame, keyframe = int(others[i]), int(source[i])
        origin = frame + int(np.sign(keyframe - frame)) if warper is not None and chain else keyframe
        moved, moved_changed = labels[origin], changed.get(origin)
        if warper is not None:
            maps = [moved] if previous is None else [moved, moved_changed]
            moved, *rest = warper.warp(frame, origin, *maps)
            moved_changed = rest[0] if rest else None
        if previous is None:
            labels[frame] = moved
        else:
            changed[frame] = moved_changed
            labels[frame] = np.where(moved_changed, moved, previous[frame])


def nearest_keyframe(keyframes: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames,) position in the sorted `keyframes` of each frame's nearest keyframe (ties: the earlier)."""
    keyframes = np.asarray(keyframes, np.int64)
    frames = np.arange(num_frames)
    after = np.clip(np.searchsorted(keyframes, frames), 0, len(keyframes) - 1)
    before = np.clip(after - 1, 0, len(keyframes) - 1)
    closer_before = np.abs(frames - keyframes[before]) <= np.abs(keyframes[after] - frames)
    return np.where(closer_before, before, after)


def select_keyframes(num_frames: int, stride: int, always: list[int] | set[int] = ()) -> np.ndarray:
    """Every `stride`-th frame, the last frame and the frames in `always` (e.g. the scribbled ones), sorted."""
    if stride < 1:
        raise ValueError(f"frame stride must be >= 1, got {stride}")
    chosen = set(range(0, num_frames, stride)) | {num_frames - 1} | {int(f) for f in always}
    return np.array(sorted(chosen), np.int64)
