"""Embeddings kept between rounds: the model's own decode, within the memory budget, never stale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.config import AgentConfig
from agent.data.davis import DavisReader
from agent.inference.agent import InteractiveAgent
from agent.inference.embedding_cache import EmbeddingCache, decode_frames
from agent.inference.plan import RoundPlan
from agent.model.checkpoint import save_checkpoint

GRID = (12, 20)


def features(model, frames: int = 5) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(frames, sum(model.backbone.level_channels), 6, 10)


def test_embeddings_are_the_models_decode_and_each_frame_is_kept_once(tiny_model):
    feats = features(tiny_model)
    cache = EmbeddingCache(max_bytes=10**9)
    out = cache.embed(tiny_model, feats, [3, 1, 3], GRID)
    assert torch.allclose(out, tiny_model.decode(feats[[3, 1, 3]], GRID), atol=1e-6)
    assert len(cache) == 2
    again = cache.embed(tiny_model, feats, np.array([0, 1]), (6, 10))  # kept frame 1, new frame 0, another grid
    assert torch.allclose(again, decode_frames(tiny_model, feats, [0, 1], (6, 10)), atol=1e-6)
    assert len(cache) == 3
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize("frames_that_fit", [0, 1])
def test_the_budget_bounds_what_is_kept(tiny_model, frames_that_fit):
    feats = features(tiny_model)
    one_frame = tiny_model.coarse_embeddings(feats[:1])[0]
    cache = EmbeddingCache(max_bytes=frames_that_fit * one_frame.numel() * one_frame.element_size())
    out = cache.embed(tiny_model, feats, [0, 1, 2], GRID)
    assert len(cache) == frames_that_fit
    assert torch.allclose(out, tiny_model.decode(feats[:3], GRID), atol=1e-6)


@pytest.fixture
def reader(tiny_synthetic_root):
    return DavisReader(tiny_synthetic_root)


def play(agent: InteractiveAgent, reader: DavisReader, rounds: int, plan: RoundPlan) -> list[np.ndarray]:
    sequence = reader.sequences("val")[1]
    agent.start(reader.load_frames(sequence), reader.info(sequence).num_objects)
    return [agent.step(reader.load_scribble(sequence, 1), plan) for _ in range(rounds)]


def test_rounds_give_the_same_masks_with_and_without_kept_embeddings(tmp_path, tiny_model, reader):
    path = save_checkpoint(tmp_path / "tiny.pt", tiny_model)
    plan = RoundPlan(finetune_seconds=0.0, use_crf=False)
    kept = InteractiveAgent.from_pretrained(path, AgentConfig(device="cpu"))
    none = InteractiveAgent.from_pretrained(path, AgentConfig(device="cpu", embedding_cache_mb=0))
    with_cache, without = play(kept, reader, 3, plan), play(none, reader, 3, plan)
    assert len(kept._embeddings) > 0 and len(none._embeddings) == 0
    for a, b in zip(with_cache, without, strict=True):
        assert np.array_equal(a, b)


def test_fine_tuning_leaves_no_stale_embedding(tmp_path, tiny_model, reader):
    agent = InteractiveAgent.from_pretrained(save_checkpoint(tmp_path / "tiny.pt", tiny_model), AgentConfig(device="cpu"))
    play(agent, reader, 2, RoundPlan(finetune_seconds=0.3, use_crf=False))
    assert agent.last_finetune.steps > 0 and len(agent._embeddings) > 0
    frames = np.arange(len(agent._frames))
    kept = agent._embeddings.embed(agent.model, agent._features, frames, agent.grid)
    assert torch.allclose(kept, decode_frames(agent.model, agent._features, frames, agent.grid), atol=1e-6)
