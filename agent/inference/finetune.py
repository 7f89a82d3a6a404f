"""Time-budgeted fine-tuning of the decoder and similarity head on the scribbles of one sample.

Each step draws two scribbled frames (the same one twice when there is only one), transforms each with
its own random flip/scale/rotation (applied to the cached backbone features and the labels alike), pools
K labelled pixels per class in both (the top-k loss: TOPK_REFERENCES in the first) and minimises the loss the
agent passes (FinetuneConfig.loss; by default the checkpoint's own: the pairwise "same object?" loss, or the
top-k transfer's cross-entropy for the shipped checkpoint).
It stops at the time budget, at FinetuneConfig.max_steps, or as soon as the largest of the recent step
losses falls below the early-stop threshold (the paper's 0.04). With pseudo-labelled frames (not in the
paper) the second view may be one of them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import torch

from ..config import FinetuneConfig
from ..data.augment import augment
from ..model.siamese import SiameseEmbedder
from ..model.similarity import pair_loss, sample_pixels, topk_loss

log = logging.getLogger(__name__)

# The early stop looks at the largest loss of this many recent steps, so one easy draw does not stop it.
EARLY_STOP_WINDOW = 5
# topk loss: reference pixels per class drawn from the first view (the query view draws samples_per_class).
TOPK_REFERENCES = 1024


@dataclass
class FinetuneStats:
    steps: int = 0
    seconds: float = 0.0
    first_loss: float = float("nan")
    last_loss: float = float("nan")
    stopped_early: bool = False


def trainable_parameters(model: SiameseEmbedder, train_backbone: bool) -> list[torch.nn.Parameter]:
    modules = [model.decoder, model.head] + ([model.backbone] if train_backbone else [])
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def finetune(
    model: SiameseEmbedder,
    features: dict[int, torch.Tensor],
    labels: dict[int, torch.Tensor],
    seconds: float,
    config: FinetuneConfig,
    samples_per_class: int,
    early_stop_loss: float | None = None,
    generator: torch.Generator | None = None,
    clock=time.perf_counter,
    loss: str = "pairwise",
    topk: int = 20,
    pseudo_labels: dict[int, torch.Tensor] | None = None,
) -> FinetuneStats:
    """Fine-tune on scribbled frames for at most `seconds`.

    features: frame -> cached backbone features (C, h8, w8); labels: frame -> (h, w) int64 on the
    embedding grid (-1 unlabeled, 0 background, 1..N objects). `clock`: seconds, injectable for tests.
    loss: pairwise (the paper's, K pooled pixels per class in both views) or topk (the agent's own transfer
    from the first view's labelled pixels to the second's, model/similarity.py topk_loss). pseudo_labels:
    frame -> labels like `labels` (their features in `features` too); a step's first view is then a scribbled
    frame and its second any frame. Returns what happened.
    """
    start = clock()  # the budget covers the set-up too
    stats = FinetuneStats()
    frames = [f for f in labels if (labels[f] >= 0).any()]
    classes = torch.unique(torch.cat([labels[f][labels[f] >= 0] for f in frames])) if frames else []
    if seconds <= 0 or len(classes) < 2:
        return stats  # nothing to learn from a single class
    pseudo = {f: v for f, v in (pseudo_labels or {}).items() if f not in labels and (v >= 0).any()}
    all_labels = {**labels, **pseudo}
    partners = frames + list(pseudo)
    early_stop_loss = config.early_stop_loss if early_stop_loss is None else early_stop_loss
    generator = generator or torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    params = trainable_parameters(model, config.train_backbone)
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    recent: deque[float] = deque(maxlen=EARLY_STOP_WINDOW)
    out_size = next(iter(labels.values())).shape
    model.train()
    for module in model.decoder.modules():  # the adapter's statistics stay those of pretraining: a round's
        if isinstance(module, torch.nn.BatchNorm2d):  # two scribbled frames are no population to estimate
            module.eval()
    try:
        while clock() - start < seconds and not (config.max_steps and stats.steps >= config.max_steps):
            if pseudo:
                pick = [frames[int(torch.randint(len(frames), (1,), generator=generator))],
                        partners[int(torch.randint(len(partners), (1,), generator=generator))]]
            else:
                pick = [frames[i] for i in torch.randint(len(frames), (2,), generator=generator).tolist()]
            views = []
            for frame in pick:
                feats, labs = augment(
                    features[frame].float(), all_labels[frame], generator,
                    flip=config.flip, scale_range=config.scale_range, rotation_degrees=config.rotation_degrees,
                )
                views.append((feats, labs))
            budgets = (TOPK_REFERENCES, samples_per_class) if loss == "topk" else (samples_per_class,) * 2
            pooled = [sample_pixels(labs, k, generator) for (_, labs), k in zip(views, budgets, strict=True)]
            # A transform pushed every labelled pixel out of a view (none to pool), or all but one in both: the head's
            # batch norm needs two scores (a 1x1 was torch's "Expected more than 1 value per channel when training",
            # a traceback ending the round).
            if len(pooled[0].indices) * len(pooled[1].indices) < 2:
                continue
            if loss == "topk" and not torch.isin(pooled[1].classes, pooled[0].classes).any():
                continue
            batch = torch.stack([feats for feats, _ in views]).to(device)
            refs, queries = model.decode_points(batch, tuple(out_size), [p.indices for p in pooled])
            if loss == "topk":
                value_t = topk_loss(queries, pooled[1].classes.to(device), refs, pooled[0].classes.to(device),
                                    topk, model.head)
            else:
                value_t = pair_loss(refs, pooled[0].classes, queries, pooled[1].classes, model.head)
            optimizer.zero_grad(set_to_none=True)
            value_t.backward()
            optimizer.step()
            value = float(value_t.detach())
            stats.first_loss = value if stats.steps == 0 else stats.first_loss
            stats.last_loss = value
            stats.steps += 1
            recent.append(value)
            if len(recent) == EARLY_STOP_WINDOW and max(recent) < early_stop_loss:
                stats.stopped_early = True
                break
    finally:
        model.eval()
        stats.seconds = clock() - start
    log.debug("fine-tuned %d steps in %.1fs, loss %.3f -> %.3f%s", stats.steps, stats.seconds,
              stats.first_loss, stats.last_loss, " (early stop)" if stats.stopped_early else "")
    return stats
