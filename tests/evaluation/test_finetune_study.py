"""The fine-tuning study: every variant plays the studied round after the same strokes, capped in steps."""

from __future__ import annotations

import pandas as pd
import pytest

import finetune_study
from agent.config import ConfigError, FinetuneConfig
from agent.data.davis import DavisReader
from agent.evaluation.finetune_study import (
    DEFAULT,
    NONE,
    parse_variant,
    study_sample,
    summary_table,
    variants_from_specs,
)
from agent.inference.agent import InteractiveAgent
from agent.inference.plan import RoundPlan

# The commands register their root with davisinteractive, as a session does.
pytestmark = pytest.mark.usefixtures("restore_registry")


class EveryFrame:
    name = "every-frame"
    description = "test"

    def plan(self, interaction, time_left, info):
        return RoundPlan(use_crf=True, frame_stride=2 if interaction == 1 else 1)


@pytest.fixture(scope="module")
def agent(study_agent) -> InteractiveAgent:
    return study_agent


def test_variants_fine_tune_after_the_same_strokes(agent, tiny_synthetic_root):
    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[1]
    info = reader.info(sequence)
    frames, truth = reader.load_frames(sequence), reader.load_annotations(sequence)
    base = FinetuneConfig(max_steps=3, early_stop_loss=0.0)
    variants = variants_from_specs(["lr=0.05"], base)
    config_before = agent.config
    rows = study_sample(agent, EveryFrame(), info, frames, truth, reader.load_scribble(sequence, 1), 1, variants,
                        study_round=3)
    assert agent.config is config_before  # the variants' configs do not outlive the study
    table = pd.DataFrame(rows).set_index("variant")
    assert list(table.index) == [NONE, DEFAULT, "lr=0.05"]
    # rounds 1-2 replay identically (same strokes, no fine-tuning), so J before round 3 is the same
    assert table["jaccard_before"].nunique() == 1 and (table["round"] == 3).all()
    assert table.loc[NONE, "steps"] == 0 and table.loc[DEFAULT, "steps"] == 3 and table.loc["lr=0.05", "steps"] == 3
    assert table[["jaccard", "stroked"]].apply(lambda c: c.between(0, 1)).all().all()


def test_a_study_refuses_scribbles_of_another_sequence(agent, tiny_synthetic_root):
    # The agent was started without the video's name: another video's scribbles played as this one's.
    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[0]
    info = reader.info(sequence)
    scribble = {**reader.load_scribble(sequence, 1), "sequence": "another"}
    with pytest.raises(ValueError, match=f"scribbles of sequence 'another', but the sample was started on "
                                         f"'{sequence}'"):
        study_sample(agent, EveryFrame(), info, reader.load_frames(sequence), reader.load_annotations(sequence),
                     scribble, 1, {NONE: None}, study_round=1)


def test_summary_compares_with_no_fine_tuning():
    results = pd.DataFrame([
        {"sample": s, "variant": v, "jaccard_before": 0.5, "jaccard": j, "stroked": j, "steps": n}
        for s, v, j, n in [("a-1", NONE, 0.6, 0), ("a-1", DEFAULT, 0.5, 10), ("b-1", NONE, 0.8, 0),
                           ("b-1", DEFAULT, 0.9, 20)]])
    table = summary_table(results)
    assert list(table.index) == [NONE, DEFAULT]
    assert table.loc[DEFAULT, "vs no fine-tuning"] == pytest.approx(0.0)
    assert table.loc[DEFAULT, "jaccard"] == pytest.approx(0.7) and table.loc[DEFAULT, "steps"] == 15


def test_a_variant_is_finetune_fields_over_the_agents_own():
    base = FinetuneConfig(max_steps=50, lr=1e-3)
    variant = parse_variant("lr=5e-5,flip=false", base)
    assert (variant.lr, variant.flip, variant.max_steps) == (5e-5, False, 50)
    with pytest.raises(ConfigError, match="--variant 'lr=-1'"):
        parse_variant("lr=-1", base)
    with pytest.raises(ConfigError, match="unknown key 'speed'"):
        parse_variant("speed=2", base)
    with pytest.raises(ConfigError, match="sets lr more than once"):
        parse_variant("lr=1e-4,lr=1e-5", base)
    # an empty item was dropped without a word; every other comma list refuses it so
    with pytest.raises(ConfigError, match=r"--variant 'lr=1e-4,,flip=false': an empty name between commas"):
        parse_variant("lr=1e-4,,flip=false", base)


def test_command_line_writes_a_row_per_sample_and_variant(tiny_synthetic_root, tiny_checkpoint, tmp_path, capsys):
    output = tmp_path / "study.csv"
    sequence = DavisReader(tiny_synthetic_root).sequences("val")[0]
    argv = ["--davis-root", str(tiny_synthetic_root), "--sequences", sequence, "--checkpoint", str(tiny_checkpoint),
            "--device", "cpu", "--set", "crf.workers=1", "--steps", "2", "--variant", "lr=0.01",
            "--output", str(output)]
    assert finetune_study.main(argv) == 0
    out = capsys.readouterr().out
    assert NONE in out and "lr=0.01" in out and "vs no fine-tuning" in out
    results = pd.read_csv(output)
    assert len(results) == 3 and results["steps"].tolist() == [0, 2, 2]
    # finished results are not overwritten without --overwrite
    assert finetune_study.main(argv) == 2
    assert "study.csv: exists" in capsys.readouterr().err


def test_command_line_refuses_bad_input_in_one_line(tiny_synthetic_root, tmp_path, capsys):
    base = ["--davis-root", str(tiny_synthetic_root), "--output", str(tmp_path / "out" / "s.csv")]
    for extra, message in ((["--round", "0"], "--round 0: expected an integer in 1..16"),
                           (["--steps", "0"], "--steps 0: the study needs a step cap"),
                           (["--steps", "-3"], "finetune.max_steps must be >= 0"),
                           (["--scribbles", "9"], "scribble file(s), --scribbles asks for 9"),
                           # played twice, then a traceback in the summary once the study had run
                           (["--scribbles", "1,1"], "--scribbles '1,1': 1 given more than once"),
                           # int() took other scripts' digits: `١,٢` played samples 1 and 2
                           (["--scribbles", "\u0661,\u0662"], "expected comma-separated integers"),
                           (["--variant", "momentum=x"], "--variant 'momentum=x'"),
                           (["--sequences", "absent"], "unknown sequence(s) absent"),
                           (["--set", "finetune.speed=1"], "unknown key 'speed'")):
        assert finetune_study.main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()  # nothing was created for a refused run


class ReturnsADict:
    """A strategy whose plan() returns no RoundPlan: found by the preflight, before the model is built."""

    name = "returns-a-dict"
    description = "test"

    def plan(self, interaction, time_left, info):
        return {"use_crf": True}


def _no_model(*args, **kwargs):
    raise AssertionError("the model was built before the input was checked")


def test_command_line_checks_round_strategy_and_inputs_before_the_model(tiny_synthetic_root, tiny_checkpoint,
                                                                        tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(InteractiveAgent, "from_pretrained", _no_model)
    kept = tiny_checkpoint.read_bytes()
    base = ["--davis-root", str(tiny_synthetic_root), "--checkpoint", str(tiny_checkpoint)]
    output = ["--output", str(tmp_path / "out" / "s.csv")]
    for extra, message in (([*output, "--round", "17"], "--round 17: expected an integer in 1..16"),
                           ([*output, "--strategy", f"{__name__}:ReturnsADict"],
                            "strategy 'returns-a-dict': plan() returned dict at interaction 1"),
                           (["--output", str(tiny_checkpoint), "--overwrite"],
                            f"--overwrite would replace the study's input {tiny_checkpoint}"),
                           # RoundPlan's ValueError traceback once the first sample had played
                           ([*output, "--seconds", "inf"], "--seconds inf: expected a finite number > 0"),
                           ([*output, "--seconds", "1e400"], "--seconds inf: expected a finite number > 0")):
        assert finetune_study.main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists() and tiny_checkpoint.read_bytes() == kept


def test_a_crashed_crf_worker_is_one_line(tiny_synthetic_root, tmp_path, capsys, monkeypatch):
    """crf.CRFWorkerError (a CRF worker's SIGSEGV) was a traceback once the model was built."""
    from agent.evaluation import finetune_study as study
    from agent.inference.crf import CRFWorkerError

    class NoModel:
        def prepare(self, sizes):
            pass

    def crashed(*args, **kwargs):
        raise CRFWorkerError("a CRF worker process crashed (SIGSEGV: a fault in pydensecrf)")

    monkeypatch.setattr(InteractiveAgent, "from_pretrained", lambda config: NoModel())
    monkeypatch.setattr(study, "study_sample", crashed)
    assert finetune_study.main(["--davis-root", str(tiny_synthetic_root), "--output", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: a CRF worker process crashed (SIGSEGV: a fault in pydensecrf)"
    assert not any("Traceback" in line for line in err)


def test_command_line_stopped_by_a_signal_ends_in_one_line(tiny_synthetic_root, tiny_checkpoint, tmp_path, capsys,
                                                           monkeypatch):
    import signal

    from agent.signals import Terminated

    def terminated(*args, **kwargs):
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(InteractiveAgent, "from_pretrained", terminated)
    assert finetune_study.main(["--davis-root", str(tiny_synthetic_root), "--checkpoint", str(tiny_checkpoint),
                                "--output", str(tmp_path / "s.csv")]) == 143
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted (SIGTERM)"]
