"""Each frame's embeddings kept between rounds while the model does not change.

Without fine-tuning every round reads every frame's embeddings (the reference pool's fold on the transfer
grid; with transfer.detail_band, off by default, the boundary detail on the decoder's grid too), and the
decoder's 1x1 convolution over the backbone features is most of that cost. The decoder's output before its
bilinear step serves both grids.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from ..model.siamese import SiameseEmbedder

# (frame indices, grid) -> (B, d, *grid) embeddings of those frames: EmbeddingCache.embed bound to a model and its
# features, or uncached.
Embed = Callable[[np.ndarray, tuple[int, int]], torch.Tensor]


@torch.no_grad()
def decode_frames(model: SiameseEmbedder, features: torch.Tensor, index: np.ndarray | list[int],
                  out_size: tuple[int, int]) -> torch.Tensor:
    """model.decode of the cached backbone features of `index`, (B, d, *out_size), nothing kept."""
    index = torch.from_numpy(np.asarray(index, np.int64).reshape(-1))
    return model.decode(features[index].float().to(next(model.parameters()).device), out_size)


def uncached(model: SiameseEmbedder, features: torch.Tensor) -> Embed:
    """An Embed that decodes `features` each time it is asked (the default where no cache is given)."""
    return partial(decode_frames, model, features)


class EmbeddingCache:
    """coarse_embeddings per frame, up to max_bytes (frames beyond it are decoded each time they are asked for).
    clear() whenever the model's weights change (fine-tuning) or a new video starts."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._coarse: dict[int, torch.Tensor] = {}
        self._bytes = 0

    def clear(self) -> None:
        self._coarse.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._coarse)

    @torch.no_grad()
    def embed(self, model: SiameseEmbedder, features: torch.Tensor, index: np.ndarray | list[int],
              out_size: tuple[int, int]) -> torch.Tensor:
        """model.decode(features[index], out_size), (B, d, *out_size), from the kept coarse embeddings where
        there are some; the others are computed (in one batch) and kept while the budget allows."""
        index = [int(i) for i in np.asarray(index, np.int64).reshape(-1)]
        device = next(model.parameters()).device
        missing = [i for i in dict.fromkeys(index) if i not in self._coarse]
        computed: dict[int, torch.Tensor] = {}
        if missing:
            coarse = model.coarse_embeddings(features[torch.from_numpy(np.array(missing))].float().to(device))
            for frame, value in zip(missing, coarse, strict=True):
                value = value.clone()  # a view would keep the whole batch alive
                computed[frame] = value
                size = value.numel() * value.element_size()
                if self._bytes + size <= self.max_bytes:
                    self._coarse[frame] = value
                    self._bytes += size
        coarse = torch.stack([self._coarse[i] if i in self._coarse else computed[i] for i in index])
        return model.finish_embeddings(coarse, out_size)
