"""Round 1's dilation halo keeps a stroke's label only where the frame's own transfer agrees (scribbles.check_halo):
a stroke drawn along an object's edge must not make the background beside it the object's reference."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from agent.config import AgentConfig, ScribbleConfig
from agent.inference.agent import InteractiveAgent
from agent.inference.scribbles import UNLABELED, labels_on_grid

HEIGHT, WIDTH = 48, 80  # the tiny model's size: a 12x20 transfer grid
TOP, LEFT = 12, 16  # the object's corner: rows 12..35, columns 16..63


def _frames() -> tuple[np.ndarray, np.ndarray]:
    frames = np.zeros((3, HEIGHT, WIDTH, 3), np.uint8)
    frames[..., 2] = 200
    truth = np.zeros((3, HEIGHT, WIDTH), np.int64)
    truth[:, TOP:TOP + 24, LEFT:LEFT + 48] = 1
    frames[truth == 1] = (210, 30, 30)
    return frames, truth


def _colour_embeddings(frame: np.ndarray, grid: tuple[int, int]):
    """A decoder whose embeddings are the frame's colours on the grid: red and blue cells are orthogonal, as a
    trained model's object and background would be far apart (the tiny random model's are not)."""
    colours = F.interpolate(torch.from_numpy(frame).permute(2, 0, 1)[None].float(), size=grid, mode="area")
    return lambda features, size: F.normalize(colours, dim=1)


def _settled(checkpoint, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(the frame's labels after round 1's strokes were settled, before, the halo before, the truth on the grid) for a stroke
    drawn along the object's top edge, just inside it: its 3x3 halo reaches a row of background above."""
    frames, truth = _frames()
    agent = InteractiveAgent.from_pretrained(checkpoint, AgentConfig(
        device="cpu", inference_scale=1.0, scribbles=ScribbleConfig(check_halo=True, halo_margin=margin)))
    agent.start(frames, 1)
    y = (TOP + 1) / (HEIGHT - 1)
    agent.memory.add({"scribbles": [[{"path": [[(LEFT + 8) / (WIDTH - 1), y], [(LEFT + 40) / (WIDTH - 1), y]],
                                      "object_id": 1}], [], []]}, require_object=True)
    halo, before = agent.memory.halo(0), agent.memory.raw_labels(0)
    agent.model.decode = _colour_embeddings(frames[0], agent.grid)
    agent._settle_halo(agent._backbone_features(np.arange(3)))
    return agent.memory.raw_labels(0), before, halo, labels_on_grid(truth[0], agent.grid)


def test_the_halo_keeps_the_object_side_of_an_edge_stroke(tiny_checkpoint):
    labels, before, halo, truth = _settled(tiny_checkpoint)
    outside, inside = halo & (truth == 0), halo & (truth == 1)
    assert outside.sum() >= 5 and inside.sum() >= 5  # the halo straddles the edge
    assert (labels[outside] == UNLABELED).all()  # the background row above is no object reference
    assert (labels[inside] == 1).all()
    assert (labels[~halo] == before[~halo]).all() and (before[~halo] == 1).sum() >= 5  # the stroke itself stays


def test_without_the_check_the_background_row_is_the_objects(tiny_checkpoint):
    labels, _, halo, truth = _settled(tiny_checkpoint, margin=-1000.0)  # every halo cell passes (scores span about -1..10)
    assert (labels[halo & (truth == 0)] == 1).all()


def test_a_margin_takes_the_halo_the_transfer_is_not_sure_of(tiny_checkpoint):
    labels, _, halo, _ = _settled(tiny_checkpoint, margin=1000.0)
    assert halo.any() and (labels[halo] == UNLABELED).all()


def test_a_round_settles_the_halo_only_when_asked(tiny_checkpoint):
    frames, _ = _frames()
    stroke = {"scribbles": [[{"path": [[0.3, 0.5], [0.6, 0.5]], "object_id": 1}], [], []]}
    for check in (True, False):
        agent = InteractiveAgent.from_pretrained(tiny_checkpoint, AgentConfig(
            device="cpu", inference_scale=1.0, scribbles=ScribbleConfig(check_halo=check)))
        agent.start(frames, 1)
        agent.step(stroke)
        assert agent.memory.halo(0).any() != check
