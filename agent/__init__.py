"""Similarity-learning label transfer for interactive video object segmentation.

    from agent import InteractiveAgent
    agent = InteractiveAgent.from_pretrained()   # the shipped checkpoint
    agent.start(frames)                          # (T, H, W, 3) uint8
    masks = agent.step(scribbles)                # DAVIS scribble dict -> (T, H, W) int labels
"""

from __future__ import annotations

__all__ = ["InteractiveAgent"]


def __getattr__(name: str):
    # Lazy, so `import agent.data...` and `session_runner.py --help` do not pay for torch.
    if name == "InteractiveAgent":
        from .inference.agent import InteractiveAgent

        return InteractiveAgent
    raise AttributeError(name)
