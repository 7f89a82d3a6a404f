"""The CRF study: captured score maps reproduce the agent's masks, and variants are scored on them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crf_study
from agent.config import ConfigError
from agent.data.davis import DatasetError, DavisReader
from agent.evaluation.crf_study import (
    ARGMAX,
    DEFAULT,
    CapturedSample,
    capture_sample,
    frame_jaccard,
    load_captures,
    parse_variant,
    score_sample,
    variants_from_specs,
)
from agent.inference.agent import InteractiveAgent
from agent.inference.plan import RoundPlan

# The commands register their root with davisinteractive, as a session does.
pytestmark = pytest.mark.usefixtures("restore_registry")


class TwoScales:
    """Round 1 on every 2nd frame with a quarter-scale CRF, later rounds every frame at half scale."""

    name = "two-scales"
    description = "test"

    def plan(self, interaction, time_left, info):
        if interaction == 1:
            return RoundPlan(use_crf=True, crf_scale=0.25, frame_stride=2)
        return RoundPlan(use_crf=True, crf_scale=0.5)


@pytest.fixture(scope="module")
def reader(tiny_synthetic_root) -> DavisReader:
    return DavisReader(tiny_synthetic_root)


@pytest.fixture(scope="module")
def agent(study_agent) -> InteractiveAgent:
    return study_agent


def _play(agent, reader, sequence, rounds=(1, 3), every=1) -> tuple[CapturedSample, np.ndarray, np.ndarray]:
    info = reader.info(sequence)
    frames, truth = reader.load_frames(sequence), reader.load_annotations(sequence)
    sample = capture_sample(agent, TwoScales(), info, frames, truth, reader.load_scribble(sequence, 1), 1,
                            rounds, every)
    return sample, frames, truth


def test_a_capture_refuses_scribbles_of_another_sequence(agent, reader):
    # The agent was started without the video's name: another video's scribbles played as this one's.
    sequence = reader.sequences("val")[0]
    info = reader.info(sequence)
    scribble = {**reader.load_scribble(sequence, 1), "sequence": "another"}
    with pytest.raises(ValueError, match=f"scribbles of sequence 'another', but the sample was started on "
                                         f"'{sequence}'"):
        capture_sample(agent, TwoScales(), info, reader.load_frames(sequence), reader.load_annotations(sequence),
                       scribble, 1, (1,), 1)


def test_captured_scores_give_the_agents_masks(agent, reader):
    sequence = next(s for s in reader.sequences("val") if reader.info(s).num_objects == 2)
    sample, frames, truth = _play(agent, reader, sequence, rounds=(2, 3), every=1)
    assert agent.score_observer is None  # left as it was
    assert sorted(sample.frames) == [2, 3]
    for r in (2, 3):
        assert sample.frames[r].tolist() == list(range(len(frames)))
        assert sample.scores[r].shape[:2] == (len(frames), 3)
        assert sample.crf_scale[r] == 0.5
    rows = score_sample(sample, frames, truth, {ARGMAX: None})
    # argmax of the upsampled cached scores is what the agent returned in that round (every frame kept)
    assert [row["jaccard"] for row in rows] == pytest.approx([sample.jaccard[2], sample.jaccard[3]], abs=1e-9)


def test_every_nth_frame_and_the_planned_scale(agent, reader):
    sequence = reader.sequences("val")[0]
    sample, frames, truth = _play(agent, reader, sequence, rounds=(1, 2), every=2)
    assert sample.frames[1].tolist() == list(range(0, len(frames), 2))
    assert sample.crf_scale == {1: 0.25, 2: 0.5}
    variants = variants_from_specs(["bilateral_srgb=20,iterations=2"])
    rows = pd.DataFrame(score_sample(sample, frames, truth, variants))
    assert len(rows) == 2 * 3
    assert rows["jaccard"].between(0, 1).all()
    assert set(rows["variant"]) == {ARGMAX, DEFAULT, "bilateral_srgb=20,iterations=2"}


def test_save_and_load_round_trip(agent, reader, tmp_path):
    sequence = reader.sequences("val")[0]
    sample, *_ = _play(agent, reader, sequence, rounds=(1,), every=3)
    path = sample.save(tmp_path)
    loaded = load_captures(tmp_path, reader)[0]
    assert (loaded.sequence, loaded.scribble, loaded.num_objects) == (sample.sequence, 1, sample.num_objects)
    np.testing.assert_array_equal(loaded.frames[1], sample.frames[1])
    np.testing.assert_array_equal(loaded.scores[1], sample.scores[1])
    assert path.name == f"{sequence}-001.npz"


def test_bad_captures_are_named(reader, tmp_path):
    with pytest.raises(DatasetError, match="no captured samples"):
        load_captures(tmp_path, reader)
    (tmp_path / "junk-001.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="junk-001.npz: cannot read it"):
        load_captures(tmp_path, reader)
    (tmp_path / "junk-001.npz").unlink()
    sample = CapturedSample("nowhere", 1, 1, {1: np.array([0])}, {1: np.zeros((1, 2, 4, 4), np.float32)},
                            {1: 0.5}, {1: 0.0})
    sample.save(tmp_path)
    with pytest.raises(DatasetError, match="nowhere-001.npz: its video nowhere is not in"):
        load_captures(tmp_path, reader)
    (tmp_path / "nowhere-001.npz").unlink()
    sequence = reader.sequences("val")[0]
    bad = {"NaN": (np.full((1, 2, 4, 4), np.nan, np.float32), [0], "contain NaN or infinite values"),
           "shape": (np.zeros((2, 2, 4, 4), np.float32), [0], "do not match 1 frames"),
           "frames": (np.zeros((1, 2, 4, 4), np.float32), [999], "names frames outside")}
    for scores, frames, message in bad.values():
        CapturedSample(sequence, 1, 1, {1: np.array(frames)}, {1: scores}, {1: 0.5}, {1: 0.0}).save(tmp_path)
        with pytest.raises(DatasetError, match=message):
            load_captures(tmp_path, reader)
    objects = int(reader.load_annotations(sequence).max())
    CapturedSample(sequence, 1, objects + 1, {1: np.array([0])}, {1: np.zeros((1, objects + 2, 4, 4), np.float32)},
                   {1: 0.5}, {1: 0.0}).save(tmp_path)
    with pytest.raises(DatasetError, match=f"captured with {objects + 1} object"):
        load_captures(tmp_path, reader)
    CapturedSample(sequence, 1, objects, {1: np.array([0])}, {1: np.zeros((1, objects + 1, 4, 4), np.float32)},
                   {1: float("nan")}, {1: 0.0}).save(tmp_path)
    with pytest.raises(DatasetError, match=r"-001.npz: cannot read it .*CRF scale nan is not in \(0, 1\]"):
        load_captures(tmp_path, reader)



def test_a_capture_numbered_in_another_scripts_digits_is_refused(reader, tmp_path):
    # str.isdigit() and int() read Arabic-Indic digits: `<sequence>-١.npz` was scribble 1, beside <sequence>-001.npz
    sequence = reader.sequences("val")[0]
    objects = int(reader.load_annotations(sequence).max())
    arrays = {"frames": np.array([0]), "scores": np.zeros((1, objects + 1, 4, 4), np.float32),
              "crf_scale": np.float64(0.5), "jaccard": np.float64(0.0)}
    np.savez(tmp_path / f"{sequence}-\u0661.npz", num_objects=objects, **{f"{k}_1": v for k, v in arrays.items()})
    with pytest.raises(DatasetError, match=r"\u0661.npz: cannot read it as a captured sample \(not a captured"):
        load_captures(tmp_path, reader)
    (tmp_path / f"{sequence}-\u0661.npz").unlink()
    np.savez(tmp_path / f"{sequence}-001.npz", num_objects=objects, **{f"{k}_\u0661": v for k, v in arrays.items()})
    with pytest.raises(DatasetError, match=r"-001.npz: cannot read it .*not a decimal integer in ASCII digits"):
        load_captures(tmp_path, reader)


def test_a_sample_the_disk_cannot_hold_leaves_no_truncated_npz(reader, tmp_path, monkeypatch):
    """A full disk mid-save left a truncated .npz, which refused the whole capture's sweep ("cannot read it as a
    captured sample"), and its error named no file ("error: a path: No space left on device")."""
    sequence = reader.sequences("val")[0]
    objects = int(reader.load_annotations(sequence).max())

    def sample(scribble):
        return CapturedSample(sequence, scribble, objects, {1: np.array([0])},
                              {1: np.zeros((1, objects + 1, 4, 4), np.float32)}, {1: 0.5}, {1: 0.0})

    sample(1).save(tmp_path)

    def full_disk(file, **arrays):
        Path(file).write_bytes(b"PK\x03\x04 the first bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full_disk)
    with pytest.raises(OSError) as raised:
        sample(2).save(tmp_path)
    assert (raised.value.filename, raised.value.strerror) == (str(tmp_path / f"{sequence}-002.npz"),
                                                              "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{sequence}-001.npz"]
    # a save's temporary file left by a process killed outright is no sample: the samples saved are swept
    (tmp_path / f".{sequence}-002.npz.k3j2_x.npz").write_bytes(b"PK\x03\x04 the first bytes")
    assert [s.scribble for s in load_captures(tmp_path, reader)] == [1]

def test_variant_parsing():
    config, explicit = parse_variant("bilateral_srgb=6, scale=0.5")
    assert (config.bilateral_srgb, config.scale, explicit) == (6.0, 0.5, {"bilateral_srgb", "scale"})
    with pytest.raises(ConfigError, match="unknown key 'srgb'"):
        parse_variant("srgb=6")
    with pytest.raises(ConfigError, match="bilateral_srgb must be a finite number >= 0.1"):
        parse_variant("bilateral_srgb=0")
    with pytest.raises(ConfigError, match="sets bilateral_srgb more than once"):  # the last would win silently
        parse_variant("bilateral_srgb=6,scale=0.5,bilateral_srgb=4")
    # an empty item (`a,,b`, a trailing comma) was dropped without a word; every other comma list refuses it so
    for spec in ("bilateral_srgb=6,,scale=0.5", "bilateral_srgb=6,"):
        with pytest.raises(ConfigError, match=f"--variant '{spec}': an empty name between commas"):
            parse_variant(spec)
    for spec in ("", ","):
        with pytest.raises(ConfigError, match="expected field=value|an empty name"):
            parse_variant(spec)


def test_frame_jaccard_averages_objects():
    truth = np.array([[[1, 2], [0, 0]]])
    assert frame_jaccard(truth, np.array([[[1, 1], [0, 0]]]), 2).tolist() == [0.25]


def test_command_line_capture_then_sweep(tiny_synthetic_root, tiny_checkpoint, tmp_path, capsys, caplog):
    cache = tmp_path / "cache"
    sequence = DavisReader(tiny_synthetic_root).sequences("val")[0]
    assert crf_study.main(["capture", "--davis-root", str(tiny_synthetic_root), "--sequences", sequence,
                           "--rounds", "1,2", "--every", "2", "--checkpoint", str(tiny_checkpoint),
                           "--device", "cpu", "--set", "crf.workers=1", "--output-dir", str(cache)]) == 0
    assert (cache / f"{sequence}-001.npz").is_file() and (cache / "capture.json").is_file()
    argv = ["sweep", str(cache), "--davis-root", str(tiny_synthetic_root), "--variant", "bilateral_srgb=20"]
    assert crf_study.main(argv) == 0
    out = capsys.readouterr().out
    assert "no CRF" in out and "bilateral_srgb=20" in out and "J round 2" in out
    assert "errors within 8 px of the boundary right" in out and "round 2" in out.split("where")[1]
    table = pd.read_csv(cache / "sweep.csv")
    assert len(table) == 2 * 3
    # putting errors right never lowers J
    assert (table["band_right"] >= table["jaccard"] - 1e-9).all() and (table["beyond_right"] >= table["jaccard"] - 1e-9).all()
    # finished results are not overwritten without --overwrite
    assert crf_study.main(argv) == 2
    assert "sweep.csv: exists" in capsys.readouterr().err
    # a capture stopped before the end (capture.json is written last): the sweep says it covers part of it
    (cache / "capture.json").unlink()
    caplog.set_level("WARNING", logger="crf_study")
    assert crf_study.main([*argv, "--overwrite"]) == 0
    assert "has no capture.json: its capture stopped before the end" in caplog.text and "1 sample(s)" in caplog.text
    # swept against another root than the one captured (whose videos may merely share the names): said so
    other = Path(shutil.copytree(tiny_synthetic_root, tmp_path / "other"))
    (cache / "capture.json").write_text(json.dumps({"davis_root": str(tiny_synthetic_root.resolve())}))
    caplog.clear()
    assert crf_study.main(["sweep", str(cache), "--davis-root", str(other), "--overwrite"]) == 0
    assert f"was captured from {tiny_synthetic_root.resolve()}, not --davis-root {other}" in caplog.text
    caplog.clear()
    assert crf_study.main([*argv, "--overwrite"]) == 0
    assert "was captured from" not in caplog.text
    assert crf_study.main(["capture", "--davis-root", str(tiny_synthetic_root), "--output-dir", str(cache)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_command_line_refuses_bad_input_in_one_line(tiny_synthetic_root, tmp_path, capsys):
    base = ["capture", "--davis-root", str(tiny_synthetic_root), "--output-dir", str(tmp_path / "out")]
    for extra, message in ((["--rounds", "0"], "--rounds '0': expected integers >= 1"),
                           (["--scribbles", "9"], "scribble file(s), --scribbles asks for 9"),
                           (["--rounds", "2,4,2"], "--rounds '2,4,2': 2 given more than once"),
                           (["--rounds", "1,,2"], "--rounds '1,,2': an empty name between commas"),  # was dropped
                           (["--scribbles", "1,"], "--scribbles '1,': an empty name between commas"),
                           (["--sequences", "absent"], "unknown sequence(s) absent"),
                           (["--strategy", "nope"], "unknown strategy 'nope'"),
                           (["--set", "crf.srgb=1"], "unknown key 'srgb'")):
        assert crf_study.main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()  # nothing was created for a refused run
    assert crf_study.main(["sweep", str(tmp_path), "--davis-root", str(tiny_synthetic_root),
                           "--variant", "iterations=-1"]) == 2
    assert "crf.iterations must be in 0..1000" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert crf_study.main(["sweep", str(tmp_path), "--davis-root", str(tiny_synthetic_root),
                           "--output", str(tmp_path / "file" / "s.csv")]) == 2
    assert "cannot be written below it" in capsys.readouterr().err


class RaisesAtTwo:
    """A strategy whose plan() fails in round 2: found by the preflight, not minutes into the capture."""

    name = "raises-at-two"
    description = "test"

    def plan(self, interaction, time_left, info):
        if interaction >= 2:
            raise KeyError(interaction)
        return RoundPlan()


def _no_model(*args, **kwargs):
    raise AssertionError("the model was built before the input was checked")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_capture_never_overwrites_the_root_it_reads_or_the_checkpoint(tiny_synthetic_root, tiny_checkpoint, tmp_path,
                                                                      capsys, monkeypatch):
    monkeypatch.setattr(InteractiveAgent, "from_pretrained", _no_model)
    sequence = DavisReader(tiny_synthetic_root).sequences("val")[0]
    root = tmp_path / "root"
    for sub in ("JPEGImages/480p", "Annotations/480p", "Scribbles"):
        shutil.copytree(tiny_synthetic_root / sub / sequence, root / sub / sequence)
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/val.txt").write_text(f"{sequence}\n")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    base = ["capture", "--davis-root", str(root), "--checkpoint", str(tiny_checkpoint), "--rounds", "1", "--overwrite"]
    for output, replaced in ((root, root), (root / "JPEGImages", root), (tiny_checkpoint.parent, tiny_checkpoint)):
        assert crf_study.main([*base, "--output-dir", str(output)]) == 2
        assert f"would replace the run's input {replaced}" in _one_error_line(capsys)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before and tiny_checkpoint.is_file()


def test_capture_checks_the_strategy_and_rounds_before_the_model(tiny_synthetic_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(InteractiveAgent, "from_pretrained", _no_model)
    base = ["capture", "--davis-root", str(tiny_synthetic_root), "--output-dir", str(tmp_path / "out")]
    for extra, message in ((["--rounds", "1,2", "--strategy", f"{__name__}:RaisesAtTwo"],
                            "strategy 'raises-at-two': plan() failed at interaction 2 of"),
                           (["--rounds", "1,17"], "--rounds '1,17': expected integers in 1..16"),
                           # an OverflowError traceback in the first round, once the model was built
                           (["--every", str(10**23)], f"--every {10**23}: expected an integer in 1..1,000,000")):
        assert crf_study.main(base + extra) == 2
        assert message in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


class NoModel:
    """Stands for the agent where a test plays no round."""

    def prepare(self, sizes):
        pass


def test_a_crashed_crf_worker_is_one_line_and_keeps_the_samples_captured(tiny_synthetic_root, tmp_path, capsys,
                                                                        monkeypatch):
    """crf.CRFWorkerError (a CRF worker's SIGSEGV) was a traceback once the model was built; session_runner and
    agent.segment say it in one line."""
    from agent.evaluation import crf_study as study
    from agent.inference.crf import CRFWorkerError

    def capture(agent, strategy, info, frames, truth, scribble, index, rounds, every):
        if any(output.iterdir()):  # the first sample is saved: the second crashes
            raise CRFWorkerError("a CRF worker process crashed (SIGSEGV: a fault in pydensecrf)")
        return CapturedSample(info.name, index, info.num_objects, {1: np.array([0])},
                              {1: np.zeros((1, info.num_objects + 1, 4, 4), np.float32)}, {1: 0.5}, {1: 0.0})

    monkeypatch.setattr(InteractiveAgent, "from_pretrained", lambda config: NoModel())
    monkeypatch.setattr(study, "capture_sample", capture)
    output = tmp_path / "out"
    assert crf_study.main(["capture", "--davis-root", str(tiny_synthetic_root), "--output-dir", str(output),
                           "--rounds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # below the progress bar's lines
    assert err[-1] == ("error: a CRF worker process crashed (SIGSEGV: a fault in pydensecrf); the samples captured so "
                       f"far are in {output}")
    assert not any("Traceback" in line for line in err)
    first = DavisReader(tiny_synthetic_root).sequences("val")[0]
    assert [p.name for p in output.iterdir()] == [f"{first}-001.npz"]


def test_capture_interrupted_ends_in_one_line_and_leaves_no_folder(tiny_synthetic_root, tiny_checkpoint, tmp_path,
                                                                   capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(InteractiveAgent, "from_pretrained", interrupted)
    assert crf_study.main(["capture", "--davis-root", str(tiny_synthetic_root), "--checkpoint", str(tiny_checkpoint),
                           "--output-dir", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted (SIGINT)"]
    assert not (tmp_path / "out").exists()


def test_sweep_names_an_unreadable_or_inconsistent_npz_in_one_line(tiny_synthetic_root, tmp_path, capsys):
    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[0]
    objects = int(reader.load_annotations(sequence).max())
    path = tmp_path / f"{sequence}-001.npz"
    argv = ["sweep", str(tmp_path), "--davis-root", str(tiny_synthetic_root), "--output", str(tmp_path / "s.csv")]
    for content, message in ((b"", "cannot read it as a captured sample (empty file)"),
                             (b"hello", "cannot read it as a captured sample (not an .npz (zip) archive)")):
        path.write_bytes(content)
        assert crf_study.main(argv) == 2
        assert _one_error_line(capsys) == f"error: {path}: {message}"
    scores = np.zeros((3, objects + 1, 4, 4), np.float32)
    for frames, message in (([0, 0, 1], "round 1 names frame 0 more than once"),
                            ([0.0, 1.0, 2.0], "round 1's frame indices are float64")):
        CapturedSample(sequence, 1, objects, {1: np.array(frames)}, {1: scores}, {1: 0.5}, {1: 0.0}).save(tmp_path)
        assert crf_study.main(argv) == 2
        line = _one_error_line(capsys)
        assert line.startswith(f"error: {path}: ") and message in line, line
    path.unlink()
    os.mkfifo(path)  # np.load waited for a writer forever
    assert crf_study.main(argv) == 2
    assert _one_error_line(capsys) == f"error: {path}: a FIFO (named pipe), not a captured sample"
    assert not (tmp_path / "s.csv").exists()
