"""Incremental top-k label transfer: a growing pool of reference pixels and every query pixel's running
top-k similarities to it.

Why: between rounds without fine-tuning the model does not change and the scribbled pixels only grow,
and the top-k of a union is the top-k of the old top-k plus the new candidates. So a round only has to
compare every query pixel with the pixels that are new this round (at most `max_new_reference_pixels`
per class), not with the whole pool: on 2 CPU cores this takes most of the transfer's cost out of every
round after the first. The result equals `transfer_labels` (topk) over the same pool exactly.

Frames can join late: `update(..., frames=...)` keeps only the given frames up to date (a round that
propagates to keyframes only), and a frame that was left out is built against the whole pool when it
is first asked for, so every frame's top-k is always that of the whole pool.

Which labelled pixels become references is decided by a fixed random key per pixel (the smallest keys
within each budget), so the choice never reshuffles. The top-k starts over when the model changed
(fine-tuning) or when a stroke gave a pooled pixel another class, because the top-k of a set cannot
forget an element; it is then rebuilt against the same pooled pixels less the contradicted ones, so a
correction changes the references by its own pixels only. Pooled pixels whose derived background label receded (far-away background
shrinking as object strokes spread, the least-similar background ending at the first background stroke)
are kept: it scored as dropping them did and saves a full transfer per such round (docs/METHOD.md). A round that
strokes an object for the first time after the first (update's forget_receded) drops them: the background lifted
where that object may be held it down on every frame.

A pixel may count several times (a weight, fixed when it is pooled): its similarity then fills as many of
a query's top-k slots, as if the reference set held that many copies of it.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..config import TransferConfig
from ..model.siamese import SiameseEmbedder
from .embedding_cache import Embed, uncached
from .transfer import ABSENT_SCORE, head_affine, query_chunks

log = logging.getLogger(__name__)

UNPOOLED = -1


class ReferencePool:
    """One sample's reference pixels (per scribbled frame: pooled pixels' labels) and the running top-k
    (sign-adjusted raw similarities, best first) of every frame's query pixels per class."""

    def __init__(self, num_frames: int, grid: tuple[int, int], config: TransferConfig, seed: int = 0) -> None:
        if config.aggregation != "topk":
            raise ValueError("the incremental reference pool needs the topk aggregation")
        self.num_frames = num_frames
        self.grid = grid
        self.config = config
        self.seed = seed
        self.rebuilds = 0  # how often the top-k started over after its first build
        self._priority: dict[int, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        self._pooled: dict[int, np.ndarray] = {}  # frame -> (h*w,) class id of pooled pixels, else UNPOOLED
        self._seen: dict[int, np.ndarray] = {}  # frame -> (h*w,) labels as of the last update
        self._best: torch.Tensor | None = None  # (T, C, k, h*w), -inf where a class has < k references
        self._built = np.zeros(self.num_frames, bool)  # frames whose top-k covers the whole pool
        self._counts: dict[int, int] = {}  # class -> pooled pixels, each times its weight
        self._weights: dict[int, np.ndarray] = {}  # frame -> (h*w,) weight of each pixel as it was pooled

    def references(self, cls: int) -> int:
        return self._counts.get(cls, 0)

    def _is_stale(self, labels: dict[int, np.ndarray]) -> bool:
        """Whether a stroke now gives a pooled pixel another class. A pooled pixel that merely lost a derived
        background label (the far-away or least-similar background receded) stays in the pool: it was
        background evidence when it was drawn, and no stroke contradicts it."""
        for frame, pooled in self._pooled.items():
            current = labels.get(frame)
            if current is None:
                continue
            mask = (pooled != UNPOOLED) & (current >= 0)
            if (current[mask] != pooled[mask]).any():
                return True
        return False

    def priority(self, frame: int) -> np.ndarray:
        """A fixed random key per pixel of `frame` (h*w,): a budget takes the pixels with the smallest keys, so
        the same labelled pixels are chosen whenever they are candidates again (after a rebuild, say), and a
        new stroke never reshuffles which of the old pixels are references."""
        if frame not in self._priority:
            self._priority[frame] = np.random.default_rng([self.seed, frame]).random(self.grid[0] * self.grid[1])
        return self._priority[frame]

    def _has_receded(self, labels: dict[int, np.ndarray]) -> bool:
        """Whether a pooled pixel is unlabelled now (its derived background receded)."""
        return any(((pooled != UNPOOLED) & (labels[frame] < 0)).any()
                   for frame, pooled in self._pooled.items() if frame in labels)

    def _drop_contradicted(self, labels: dict[int, np.ndarray], receded: bool = False) -> None:
        """Unpool the pixels a stroke now gives another class; they become candidates for it (a changed label
        counts as new). receded: also those unlabelled now."""
        for frame, pooled in self._pooled.items():
            current = labels.get(frame)
            if current is not None:
                changed = (current >= 0) | receded
                pooled[(pooled != UNPOOLED) & changed & (current != pooled)] = UNPOOLED

    def _sample_new(self, labels: dict[int, np.ndarray], budget: int,
                    weights: dict[int, np.ndarray] | None = None) -> dict[int, list[tuple[int, np.ndarray]]]:
        """Up to `budget` pixels per class among those labelled since the last update (the smallest priority
        keys) -> {class: [(frame, flat indices)]}; marks them pooled, with their weight (default 1)."""
        candidates: dict[int, list[tuple[int, np.ndarray]]] = {}
        for frame in sorted(labels):
            current = labels[frame]
            seen = self._seen.get(frame)
            fresh = current >= 0 if seen is None else (current >= 0) & (current != seen)
            for cls in np.unique(current[fresh]).tolist():
                candidates.setdefault(int(cls), []).append((frame, np.flatnonzero(fresh & (current == cls))))
            self._seen[frame] = current.copy()
        chosen: dict[int, list[tuple[int, np.ndarray]]] = {}
        for cls, parts in candidates.items():
            total = sum(len(idx) for _, idx in parts)
            if total > budget:
                keys = np.concatenate([self.priority(frame)[idx] for frame, idx in parts])
                threshold = np.partition(keys, budget - 1)[budget - 1]
                parts = [(frame, idx[self.priority(frame)[idx] <= threshold]) for frame, idx in parts]
            for frame, idx in parts:
                if len(idx):
                    chosen.setdefault(cls, []).append((frame, idx))
                    pooled = self._pooled.setdefault(frame, np.full(labels[frame].size, UNPOOLED, np.int64))
                    pooled[idx] = cls
                    weight = self._weights.setdefault(frame, np.ones(labels[frame].size, np.int64))
                    weight[idx] = 1 if weights is None or frame not in weights else weights[frame][idx]
        return chosen

    @torch.no_grad()
    def update(
        self,
        model: SiameseEmbedder,
        features: torch.Tensor,
        labels: dict[int, torch.Tensor | np.ndarray],
        num_classes: int,
        rebuild: bool = False,
        batch: int = 8,
        frames: np.ndarray | list[int] | None = None,
        weights: dict[int, np.ndarray] | None = None,
        embed: Embed | None = None,
        forget_receded: bool = False,
    ) -> None:
        """Add this round's new labelled pixels (labels: {frame: (h, w)} on the grid, -1 unlabeled) and fold
        their similarities into the top-k of `frames` (None: every frame; the others catch up, against the
        whole pool, when a later update asks for them). rebuild=True (the model changed) starts the top-k over.
        features: (T, C', h', w') backbone features; only those of `frames` and the scribbled frames are read.
        weights: {frame: (h, w) int >= 1}, how many times a new pixel counts among the top-k (None: once).
        embed: the frames' embeddings (embedding_cache.py; None: decoded from `features` each time).
        forget_receded: unpool the pixels whose label receded too (an object stroked for the first time: the derived
        background it lifted, where it may be unstroked, was background evidence against it) and start over."""
        embed = embed or uncached(model, features)
        flat = {f: np.asarray(torch.as_tensor(v).cpu()).reshape(-1).astype(np.int64) for f, v in labels.items()}
        if weights is not None:
            weights = {f: np.asarray(w).reshape(-1).astype(np.int64) for f, w in weights.items()}
        forget_receded = forget_receded and self._has_receded(flat)
        if self._best is not None and (rebuild or forget_receded or self._is_stale(flat)
                                       or num_classes > self._best.shape[1]):
            # The top-k of a set cannot forget an element: start it over, against the same pooled pixels but
            # those a stroke contradicts (so a correction changes the references by its own pixels only).
            self._drop_contradicted(flat, forget_receded)
            self._best = None
            self._built[:] = False
            self.rebuilds += 1
        first = not self._pooled
        budget = self.config.max_reference_pixels if first else self.config.max_new_reference_pixels
        new = self._sample_new(flat, budget, weights)
        if self._best is None:
            height, width = self.grid
            self._best = torch.full(
                (self.num_frames, num_classes, self.config.topk, height * width), float("-inf")
            )
        wanted = np.arange(self.num_frames) if frames is None else np.unique(np.asarray(frames, np.int64))
        stale = wanted[self._built[wanted]]  # up to date but for this round's new pixels
        late = wanted[~self._built[wanted]]  # never built (or since a reset): against the whole pool
        device = next(model.parameters()).device
        if new and len(stale):
            self._fold(stale, self._embed(model, embed, new, device), batch, embed)
        if len(late):  # _sample_new has already marked this round's pixels as pooled
            self._best[torch.from_numpy(late)] = float("-inf")  # a frame left out of a round holds an older top-k
            self._fold(late, self._embed(model, embed, self._pooled_by_class(), device), batch, embed)
        added = {cls: sum(len(idx) for _, idx in parts) for cls, parts in new.items()}
        self._counts = {cls: sum(int(self._weights[frame][idx].sum()) for frame, idx in parts)
                        for cls, parts in self._pooled_by_class().items()}
        if new:  # frames left out of this update missed its pixels: rebuilt against the whole pool when asked for
            left_out = np.ones(self.num_frames, bool)
            left_out[wanted] = False
            self._built[left_out] = False
        self._built[wanted] = True
        log.debug("reference pool: +%s pixels per class, now %s; %d frames caught up", added, self._counts, len(late))

    def _pooled_by_class(self) -> dict[int, list[tuple[int, np.ndarray]]]:
        """Every pooled pixel so far, as {class: [(frame, flat indices)]} (the layout _sample_new returns)."""
        out: dict[int, list[tuple[int, np.ndarray]]] = {}
        for frame, pooled in sorted(self._pooled.items()):
            for cls in np.unique(pooled[pooled != UNPOOLED]).tolist():
                out.setdefault(int(cls), []).append((frame, np.flatnonzero(pooled == cls)))
        return out

    @torch.no_grad()
    def reference_embeddings(self, model: SiameseEmbedder, features: torch.Tensor,
                             embed: Embed | None = None) -> dict[int, torch.Tensor]:
        """{class: (M, d)} embeddings of every pooled pixel, times the sign of the head's scale (as folded)."""
        embed = embed or uncached(model, features)
        return self._embed(model, embed, self._pooled_by_class(), next(model.parameters()).device)

    def _embed(self, model: SiameseEmbedder, embed: Embed, parts_by_class: dict, device) -> dict:
        """{class: (M, d) sign-adjusted embeddings} of the given {class: [(frame, flat indices)]}, each pixel's row
        repeated by its weight."""
        scale, _ = head_affine(model.head, device)
        sign = 1.0 if scale >= 0 else -1.0  # a negative BN scale flips the order: keep the bottom k
        frames = sorted({frame for parts in parts_by_class.values() for frame, _ in parts})
        emb = embed(np.array(frames, np.int64), self.grid)
        emb = emb.reshape(len(frames), emb.shape[1], -1)
        position = {f: i for i, f in enumerate(frames)}
        def rows(frame: int, idx: np.ndarray) -> torch.Tensor:
            out = emb[position[frame]][:, torch.from_numpy(idx).to(device)].t()
            weight = self._weights[frame][idx]
            return out if (weight == 1).all() else out.repeat_interleave(torch.from_numpy(weight).to(device), dim=0)

        return {cls: torch.cat([rows(f, idx) for f, idx in parts]) * sign for cls, parts in parts_by_class.items()}

    def _fold(self, frames: np.ndarray, refs: dict, batch: int, embed: Embed) -> None:
        """Merge the similarities of `frames`' query pixels to `refs` into their running top-k."""
        for lo_frame in range(0, len(frames), batch):
            index = frames[lo_frame:lo_frame + batch]
            query = embed(index, self.grid)
            for b, frame in enumerate(index.tolist()):
                q = query[b].reshape(query.shape[1], -1).t().contiguous()
                for lo, hi in query_chunks(q.shape[0], self.config.chunk_size):  # disjoint: a pixel must merge only once
                    for cls, r in refs.items():
                        sims = (q[lo:hi] @ r.t()).cpu()  # (n, M)
                        # The top k of the union is the top k of (what the frame has so far, -inf until k
                        # references; the new pixels' own top k): the same values without copying the (n, M) block.
                        new = sims.topk(min(self.config.topk, sims.shape[1]), dim=1).values
                        merged = torch.cat([self._best[frame, cls, :, lo:hi].t(), new], dim=1)
                        self._best[frame, cls, :, lo:hi] = merged.topk(self.config.topk, dim=1).values.t()

    def scores(self, model: SiameseEmbedder, frames: np.ndarray | list[int] | range) -> torch.Tensor:
        """(len(frames), C, h, w) scores of the given frames: BN of the mean of each class's top-k
        similarities (ABSENT_SCORE for classes without references), as transfer_labels (topk) gives them."""
        if self._best is None:
            raise RuntimeError("update() the pool before asking for scores")
        index = np.asarray(frames, np.int64)
        if not self._built[index].all():
            raise RuntimeError(f"frames {index[~self._built[index]].tolist()} were left out of the last update()")
        scale, shift = head_affine(model.head, self._best.device)
        sign = 1.0 if scale >= 0 else -1.0
        best = self._best[torch.from_numpy(index)]
        height, width = self.grid
        out = torch.full((len(index), best.shape[1], height * width), ABSENT_SCORE)
        for cls, count in self._counts.items():
            k = min(self.config.topk, count)
            mean = best[:, cls, :k].mean(1) * sign
            out[:, cls] = mean * scale + shift
        return out.reshape(len(index), best.shape[1], height, width)
