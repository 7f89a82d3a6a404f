"""Fixtures of the evaluation tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from agent.evaluation.baseline import ScribblePaintBaseline


class SteppingClock:
    """Stands in for the `time` module of davisinteractive's session: every call is `step` seconds after
    the previous one, so each interaction is timed the same in every run (real timings differ run to run,
    and with them the AUC)."""

    def __init__(self, step: float = 0.25) -> None:
        self.now = time.time()
        self.step = step

    def time(self) -> float:
        self.now += self.step
        return self.now


class StopsOnTheSecondVideo(ScribblePaintBaseline):
    """The baseline predictor, calling `stop(frames)` as the second video starts: a run stopped (Ctrl-C, a signal)
    or failing (a video refused) after its first video's results."""

    def __init__(self, stop: Callable[[np.ndarray], None]) -> None:
        super().__init__()
        self.stop, self.samples = stop, 0

    def start(self, frames, num_objects, sequence=None):
        self.samples += 1
        if self.samples == 2:
            self.stop(frames)
        super().start(frames, num_objects, sequence)


@pytest.fixture
def fixed_timing(monkeypatch) -> SteppingClock:
    from agent.data import compat  # noqa: F401  (before davisinteractive)

    import davisinteractive.session.session as framework_session  # isort: skip

    clock = SteppingClock()
    monkeypatch.setattr(framework_session, "time", clock)
    return clock


@pytest.fixture(autouse=True)
def _restore_remote_settings(monkeypatch):
    """Tests that set timeouts or retries (agent.data.remote_compat.configure) leave them as they were."""
    from agent.data.remote_compat import settings

    for name in ("connect_timeout", "read_timeout", "retries", "backoff"):
        monkeypatch.setattr(settings, name, getattr(settings, name))


@pytest.fixture
def restore_registry():
    """The study commands register their root with davisinteractive, as a session does: put the framework
    back after the test."""
    from agent.data.registry import restore

    yield
    restore()


@pytest.fixture(scope="module")
def study_agent(tiny_checkpoint):
    """The tiny model's agent on CPU, one CRF worker, shared by a module's study tests."""
    from agent.config import AgentConfig, CRFConfig
    from agent.inference.agent import InteractiveAgent

    return InteractiveAgent.from_pretrained(tiny_checkpoint, AgentConfig(device="cpu", crf=CRFConfig(workers=1)))
