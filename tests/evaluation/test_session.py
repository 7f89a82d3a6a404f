"""A full local DAVIS Interactive session (the framework's own evaluation) on tiny synthetic data."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from agent.config import SessionConfig
from agent.data.registry import restore
from agent.evaluation.baseline import ScribblePaintBaseline
from agent.evaluation.report import load_report
from agent.evaluation.session import PredictionError, run_session
from agent.inference.plan import RoundPlan
from strategies import get_strategy

from .conftest import StopsOnTheSecondVideo

INTERACTIONS = 3


@pytest.fixture(autouse=True)
def _restore_registry():
    yield
    restore()


def _config(root, tmp_path, **overrides) -> SessionConfig:
    values = dict(subset="val", davis_root=root, max_interactions=INTERACTIONS, max_time=60.0,
                  output_dir=tmp_path / "out", strategy="no-finetune")
    values.update(overrides)
    return SessionConfig(**values)


class _RecordsSequences(ScribblePaintBaseline):
    def __init__(self):
        super().__init__()
        self.sequences = []

    def start(self, frames, num_objects, sequence=None):
        self.sequences.append(sequence)
        super().start(frames, num_objects, sequence)


def test_baseline_session_end_to_end(tiny_synthetic_root, tmp_path):
    config = _config(tiny_synthetic_root, tmp_path)
    predictor = _RecordsSequences()
    result = run_session(config, predictor, get_strategy(config.strategy))
    summary = result.summary
    assert not result.interrupted
    assert 0.0 <= summary["auc"] <= 1.0
    assert 0.0 <= summary["metric_at_threshold"] <= 1.0
    assert summary["auc"] > 0.0  # painted scribbles overlap the objects
    for path in result.paths.values():
        assert path.is_file() and path.stat().st_size > 0

    # Every interaction of every sample was submitted in time and evaluated.
    report = load_report(result.paths["report"])
    samples = report.groupby(["sequence", "scribble_idx"])["interaction"].unique()
    assert len(samples) == 3
    # Each sample's predictor knows its video: scribbles naming another are refused (check_sequence).
    assert sorted(predictor.sequences) == sorted(name for name, _ in samples.index)
    for interactions in samples:
        assert sorted(interactions) == list(range(1, INTERACTIONS + 1))
    assert summary["evaluated_fraction"] == 1.0

    # Our independent recomputation agrees with the framework's own summary.
    framework = summary["framework"]
    assert summary["auc"] == pytest.approx(framework["auc"], abs=1e-9)
    assert summary["metric_at_threshold"] == pytest.approx(framework["metric_at_threshold"]["J"], abs=1e-9)
    assert summary["curve"]["time"] == pytest.approx(framework["curve"]["time"])

    table = pd.read_csv(result.paths["per_sequence"])
    assert len(table) == 3 and f"J@{INTERACTIONS}" in table.columns
    lines = (config.output_dir / "interactions.jsonl").read_text().splitlines()
    assert len(lines) == 3 * INTERACTIONS
    assert all(json.loads(line)["evaluated"] for line in lines)


def _interrupt(frames):
    raise KeyboardInterrupt


def test_interrupted_session_keeps_finished_results(tiny_synthetic_root, tmp_path):
    config = _config(tiny_synthetic_root, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_session(config, StopsOnTheSecondVideo(_interrupt), get_strategy(config.strategy))
    summary = json.loads((config.output_dir / "summary.json").read_text())
    assert summary["interrupted"] is True
    report = load_report(config.output_dir / "report.csv")
    assert sorted(report["interaction"].unique()) == list(range(1, INTERACTIONS + 1))
    assert report["sequence"].nunique() == 1
    assert (config.output_dir / "curve.png").is_file()


class _WrongShape(ScribblePaintBaseline):
    def step(self, scribbles, plan=None):
        return np.zeros((1, 2, 3), np.int64)


def test_wrong_prediction_shape_is_one_clear_error(tiny_synthetic_root, tmp_path):
    config = _config(tiny_synthetic_root, tmp_path)
    with pytest.raises(PredictionError, match="expected"):
        run_session(config, _WrongShape(), get_strategy(config.strategy))


class _BareError(ScribblePaintBaseline):
    def step(self, scribbles, plan=None):
        raise KeyError


def test_stopped_by_an_error_without_message_names_its_type_once(tiny_synthetic_root, tmp_path):
    config = _config(tiny_synthetic_root, tmp_path)
    with pytest.raises(KeyError):
        run_session(config, _BareError(), get_strategy(config.strategy))
    summary = json.loads((config.output_dir / "summary.json").read_text())
    assert summary["stopped_by"] == "KeyError"  # it was "KeyError: KeyError"


def test_a_user_without_a_name_plays_a_local_session(tiny_synthetic_root, tmp_path, monkeypatch):
    """No USER/LOGNAME and a user id the system does not know (a container's `--user 1234`): the framework's
    getpass.getuser() KeyError was a traceback once the model was built."""
    import pwd

    def unknown_user(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown_user)
    config = _config(tiny_synthetic_root, tmp_path, max_interactions=1, sequences=("synth-000",))
    result = run_session(config, ScribblePaintBaseline(), get_strategy(config.strategy))
    assert not result.interrupted and result.summary["samples_total"] == 1


class _SlowPlan:
    name, description = "slow", "takes a while to plan"

    def __init__(self):
        self.given = []

    def plan(self, interaction, time_left, info):
        self.given.append(time_left)
        time.sleep(0.3)
        return RoundPlan()


class _RecordsTimeLeft(ScribblePaintBaseline):
    def __init__(self):
        super().__init__()
        self.time_left = []

    def step(self, scribbles, plan=None):
        self.time_left.append(plan.time_left)
        return super().step(scribbles, plan)


def test_the_round_plan_counts_the_seconds_a_slow_plan_took(tiny_synthetic_root, tmp_path):
    strategy, predictor = _SlowPlan(), _RecordsTimeLeft()
    run_session(_config(tiny_synthetic_root, tmp_path, max_interactions=1), predictor, strategy)
    # The sample's clock runs while plan() does: the agent was given the time left before it, so it counted on
    # seconds already spent (no round lightened for them, the round late).
    assert len(predictor.time_left) == len(strategy.given) == 3
    assert all(left <= given - 0.3 for left, given in zip(predictor.time_left, strategy.given, strict=True))
