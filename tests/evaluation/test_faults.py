"""The fault suite: bad input to session_runner.py and agent.bench ends in exactly one `error:` line and exit
code 2 before the model is built; a stopped run (error, Ctrl-C, SIGTERM) keeps what finished, and no score is
silently wrong. Everything runs in-process on the tiny synthetic root, with the baseline predictor where a
session must play."""

from __future__ import annotations

import errno
import json
import math
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import session_runner
from agent.data.registry import restore
from agent.evaluation import bench
from agent.evaluation.baseline import ScribblePaintBaseline
from agent.evaluation.report import load_report
from agent.model.checkpoint import DEFAULT_CHECKPOINT

from .conftest import StopsOnTheSecondVideo

ONE = "synth-000"  # 1 object; synth-001 has 2, synth-002 3 (6 frames of 96x160 each)


@pytest.fixture(autouse=True)
def _restore_registry():
    yield
    restore()


@pytest.fixture
def root(tiny_synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny synthetic root, free to break."""
    return Path(shutil.copytree(tiny_synthetic_root, tmp_path / "root"))


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the CLI gets as far as building the predictor (checks must come before it)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the predictor was built before the bad input was found")

    monkeypatch.setattr(session_runner, "build_predictor", refuse)


def _cli(capsys, *args: str) -> tuple[int, list[str], str]:
    """(exit code, the `error:` lines on stderr, all of stderr)."""
    code = session_runner.main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")], err


def _refused(capsys, *args, fragments=()) -> str:
    code, errors, err = _cli(capsys, *args)
    assert code == 2, err
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def _baseline_run(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--davis-root", root, "--predictor", "baseline", "--output-dir", out, "--sequences", ONE,
            "--max-interactions", "2", *extra]


def _paint(path: Path, label: int) -> None:
    image = Image.open(path)
    mask = np.array(image)
    mask[:20, :20] = label
    painted = Image.fromarray(mask)
    painted.putpalette(image.getpalette())
    painted.save(path)


def _edit_scribble(root: Path, sequence: str, edit) -> Path:
    path = root / "Scribbles" / sequence / "001.json"
    data = json.loads(path.read_text())
    frame = next(i for i, strokes in enumerate(data["scribbles"]) if strokes)
    edit(data["scribbles"][frame][0], data)
    path.write_text(json.dumps(data))
    return path


# --- bad data: one line naming the file, before the model ---------------------------------------------


def test_stray_label_is_an_error_not_phantom_objects(root, tmp_path, capsys, no_model):
    annotation = root / "Annotations" / "480p" / ONE / "00003.png"
    _paint(annotation, 7)
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out",
             fragments=(f"{annotation}: label 7", "appear in no annotation"))
    assert not (tmp_path / "out").exists()  # nothing left behind by a run that never began


def test_missing_middle_frame_is_an_error_not_a_shift(root, tmp_path, capsys, no_model):
    frame = root / "JPEGImages" / "480p" / ONE / "00002.jpg"
    frame.unlink()
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", fragments=(f"{frame}: missing",))


@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["truncated", "zero-byte"])
def test_undecodable_frame(root, tmp_path, capsys, no_model, keep):
    frame = root / "JPEGImages" / "480p" / ONE / "00004.jpg"
    frame.write_bytes(frame.read_bytes()[: int(frame.stat().st_size * keep)])
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out",
             fragments=(f"{frame}: cannot decode this frame",))


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda stroke, data: stroke["path"].__setitem__(0, [math.nan, 0.5]), "NaN or infinite"),
    (lambda stroke, data: stroke.__setitem__("object_id", None), "object_id None"),
    (lambda stroke, data: stroke.__setitem__("object_id", 1.7), "object_id 1.7"),
    (lambda stroke, data: stroke.__setitem__("object_id", 3), "object_id 3, but the video has 1 object(s)"),
    (lambda stroke, data: data["scribbles"].append([]), "has 7 frames of strokes, the video has 6"),
], ids=["nan", "null-id", "float-id", "id-out-of-range", "one-entry-too-many"])
def test_bad_scribble_file(root, tmp_path, capsys, no_model, edit, fragment):
    path = _edit_scribble(root, ONE, edit)
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", fragments=(f"{path}: ", fragment))


@pytest.mark.parametrize("names", [f"{ONE},,synth-002", f"{ONE},", f",{ONE}"])
def test_an_empty_name_in_sequences_is_one_line(root, tmp_path, capsys, no_model, names):
    # It was dropped without a word (`"$A,$B"` with one variable unset played the other video alone).
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", "--sequences", names,
             fragments=(f"error: --sequences {names!r}: an empty name between commas",))
    assert not (tmp_path / "out").exists()


def test_named_sequence_that_cannot_be_used_is_an_error_or_skipped_and_listed(root, tmp_path, capsys):
    listing = root / "ImageSets" / "2017" / "val.txt"
    listing.write_text(listing.read_text() + "ghost\n")
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", "--predictor", "baseline",
             "--sequences", f"{ONE},ghost", fragments=("sequence 'ghost' cannot be evaluated (not in the root)",
                                                      "--skip-bad-sequences"))
    code, _, err = _cli(capsys, *_baseline_run(root, tmp_path / "out"), "--sequences", f"{ONE},ghost",
                        "--skip-bad-sequences")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sequences"] == [ONE] and summary["skipped_sequences"] == {"ghost": "not in the root"}


def test_broken_sequence_is_skipped_only_when_asked(root, tmp_path, capsys):
    annotation = root / "Annotations" / "480p" / "synth-001" / "00001.png"
    annotation.unlink()
    _refused(capsys, "--davis-root", root, "--predictor", "baseline", "--output-dir", tmp_path / "out",
             fragments=(f"{annotation}: missing",))
    code, _, err = _cli(capsys, "--davis-root", root, "--predictor", "baseline", "--output-dir", tmp_path / "out",
                        "--max-interactions", "1", "--skip-bad-sequences")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sequences"] == [ONE, "synth-002"] and list(summary["skipped_sequences"]) == ["synth-001"]
    assert str(annotation) in summary["skipped_sequences"]["synth-001"]


def test_unwritable_cache_for_the_builtin_data(tmp_path, capsys, monkeypatch, no_model):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SIMLEARN_CACHE", str(blocker / "cache"))  # under a file: unwritable, even for root
    _refused(capsys, "--output-dir", tmp_path / "out", fragments=("cannot write the built-in synthetic dataset",
                                                                 "SIMLEARN_CACHE"))


# --- bad arguments, checkpoints and output directories ------------------------------------------------


@pytest.mark.parametrize(("args", "fragment"), [
    (["--max-interactions", "0"], "session.max_interactions must be in 1..16"),
    (["--max-interactions", "17"], "session.max_interactions must be in 1..16 (davisinteractive's limit)"),
    (["--max-interactions", str(10**12)], "session.max_interactions must be in 1..16"),
    (["--max-time", "0"], "session.max_time must be a finite number of seconds >= 1"),
    (["--max-time", "1e-300"], "session.max_time must be a finite number of seconds >= 1"),
    (["--max-time", "nan"], "session.max_time must be a finite number"),
    (["--max-time", "inf"], "session.max_time must be a finite number"),
    (["--max-time", "1000"], "at most 600 seconds"),
    (["--seed", "-1"], "agent.seed must be in 0..2**32-1"),
    (["--seed", str(2**40)], "agent.seed must be in 0..2**32-1"),
    (["--set", "session.max_interactions=true"], "expected an integer"),
    (["--set", "agent.transfer.round_fusion_frames=-1"], "transfer.round_fusion_frames must be a finite number >= 0"),
    (["--set", "agent.transfer.round_fusion_frames=nan"], "agent.transfer.round_fusion_frames: expected a decimal number, got the text 'nan'"),
    (["--set", "agent.crf.gaussian_compat=.nan"], "crf.gaussian_compat must be a finite number >= 0"),
    (["--set", "agent.crf.bilateral_compat=-5"], "crf.bilateral_compat must be a finite number >= 0"),
    # A kernel of 1e-6 was a segfault in pydensecrf (a BrokenProcessPool traceback); a temperature or weight beyond
    # float32's range scored J = 0 without a word.
    (["--set", "agent.crf.bilateral_srgb=1e-6"], "crf.bilateral_srgb must be a finite number >= 0.1"),
    (["--set", "agent.crf.gaussian_sxy=1e-300"], "crf.gaussian_sxy must be a finite number >= 0.1"),
    (["--set", "agent.crf.score_temperature=1e-300"], "crf.score_temperature must be a number in [1e-06, 1e+06]"),
    (["--set", "agent.crf.score_temperature=1e300"], "crf.score_temperature must be a number in [1e-06, 1e+06]"),
    (["--set", "agent.crf.bilateral_compat=1e39"], "crf.bilateral_compat must be a finite number >= 0 and at most 1e+06"),
    (["--set", "agent.crf.workers=100000"], "crf.workers must be in 0..256"),
    (["--set", "agent.crf.iterations=100000000"], "crf.iterations must be in 0..1000"),
    (["--set", "agent.inference_scale=1000"], "agent.inference_scale must be 'auto' or a number in [0.125, 8]"),
    (["--set", "agent.inference_scale=1e-300"], "agent.inference_scale must be 'auto' or a number in [0.125, 8]"),
    (["--set", "agent.transfer.narrow_correction_reach=1e300"], "transfer.narrow_correction_reach must be a number in [0, 64]"),
    (["--set", "agent.scribbles.halo_margin=-1e300"], "scribbles.halo_margin must be a number in [-1000, 1000]"),
    (["--set", "agent.finetune.scale_range=[0.5,.inf]"], "finetune.scale_range must be (low, high) with finite"),
    (["--strategy", "os:path"], "'os:path' is not a class"),
    (["--strategy", ":"], "give it as package.module:ClassName"),
], ids=["no-interactions", "17-interactions", "huge-interactions", "no-time", "tiny-time", "nan-time", "inf-time", "time-above-cap", "negative-seed", "huge-seed",
        "bool-interactions", "negative-fusion", "nan-fusion", "nan-compat", "negative-compat", "tiny-srgb", "tiny-sxy",
        "tiny-temperature", "huge-temperature", "huge-compat", "many-workers",
        "many-iterations", "huge-scale", "tiny-scale", "huge-reach", "huge-margin", "inf-scale-range", "strategy-not-a-class", "strategy-empty"])
def test_bad_argument(root, tmp_path, capsys, no_model, args, fragment):
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", *args, fragments=(fragment,))


@pytest.mark.parametrize("flag", ["--output-dir", "--davis-root", "--checkpoint"])
def test_an_empty_path_flag_is_an_error_not_the_working_directory(root, tmp_path, capsys, no_model, monkeypatch,
                                                                   flag):
    # `--output-dir "$UNSET" --overwrite` was `.`: the working directory, replaced by the results (as the config
    # file's and --set's empty paths are refused).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", "--overwrite", flag, "",
             fragments=("is an empty path (leave it out for the default)",))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_default_output_name_another_run_took_meanwhile_is_the_next_free_one(root, tmp_path, capsys, monkeypatch):
    """Runs started in the same second (a script's `&`) without --output-dir each found the default name free: the
    later ones were refused, "another run is writing there (started at the same time?)"."""
    from agent.evaluation import outputs
    from agent.paths import lock_folder, unlock_folder

    monkeypatch.chdir(tmp_path)
    free_name, held = outputs.unused_dir, []

    def taken_meanwhile(path):
        name = free_name(path)
        if not held:  # the other run makes and locks it after this one looked
            name.mkdir(parents=True)
            held.append(lock_folder(name))
        return name

    monkeypatch.setattr(outputs, "unused_dir", taken_meanwhile)
    code, errors, err = _cli(capsys, "--davis-root", root, "--predictor", "baseline", "--sequences", ONE,
                             "--max-interactions", "1")
    unlock_folder(held[0])
    assert code == 0 and not errors, err
    (other,) = [p for p in (tmp_path / "outputs").iterdir() if not any(p.iterdir())]
    ours = other.with_name(f"{other.name}-2")
    assert (ours / "summary.json").is_file()
    assert json.loads((ours / "config.json").read_text())["session"]["output_dir"] == str(Path("outputs") / ours.name)


def test_strategy_that_needs_arguments_or_fails_to_import(root, tmp_path, capsys, no_model, monkeypatch):
    (tmp_path / "mystrategies.py").write_text(
        "class NeedsArgs:\n    def __init__(self, budget):\n        pass\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", "--strategy", "mystrategies:NeedsArgs",
             fragments=("cannot create strategy 'mystrategies:NeedsArgs' without arguments", "TypeError"))
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", "--strategy", "broken:S",
             fragments=("cannot load strategy 'broken:S': RuntimeError: no GPU here",))
    # A script that exits when imported ended the run without a word, with its exit code (0 here).
    (tmp_path / "script.py").write_text("import sys\nsys.exit(0)\nclass S:\n    pass\n")
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", "--strategy", "script:S",
             fragments=("cannot load strategy 'script:S': SystemExit: 0 (it exits when imported",))
    # A constructor that parses the command line (argparse exits on the runner's own flags) likewise.
    (tmp_path / "parses.py").write_text("import sys\nclass S:\n    def __init__(self):\n        sys.exit(2)\n")
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", "--strategy", "parses:S",
             fragments=("cannot create strategy 'parses:S' without arguments: SystemExit: 2",))


def test_overwrite_never_replaces_the_dataset(root, tmp_path, capsys, no_model):
    # With --overwrite the run would have replaced the folder, and with it the videos, when it completed.
    before = sorted(p.relative_to(root) for p in Path(root).rglob("*"))
    for target in (Path(root), Path(root).parent, Path(root) / "Scribbles"):
        _refused(capsys, "--davis-root", root, "--output-dir", target, "--overwrite",
                 fragments=(f"{target}: --overwrite would replace the run's input {root}",))
    assert sorted(p.relative_to(root) for p in Path(root).rglob("*")) == before


def test_overwrite_never_replaces_the_shipped_checkpoint_or_the_built_in_dataset(root, tmp_path, capsys, no_model,
                                                                                 monkeypatch):
    from agent.data.synthetic import default_dataset_root
    from agent.model.checkpoint import DEFAULT_CHECKPOINT

    # Neither is named on the command line, so the check must know them by default.
    _refused(capsys, "--davis-root", root, "--output-dir", DEFAULT_CHECKPOINT.parent, "--overwrite",
             fragments=(f"--overwrite would replace the run's input {DEFAULT_CHECKPOINT}",))
    monkeypatch.setenv("SIMLEARN_CACHE", str(tmp_path / "cache"))
    cached = default_dataset_root()
    cached.mkdir(parents=True)
    (cached / "ImageSets").mkdir()
    for target in (cached, cached.parent):
        _refused(capsys, "--predictor", "baseline", "--output-dir", target, "--overwrite",
                 fragments=(f"--overwrite would replace the run's input {cached}",))
    assert (cached / "ImageSets").is_dir() and DEFAULT_CHECKPOINT.is_file()


def test_a_name_too_long_for_the_file_system_is_one_line(root, tmp_path, capsys, no_model):
    long = "e" * 300  # one component beyond NAME_MAX (255 on Linux file systems)
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / long,
             fragments=(f"{tmp_path / long}: File name too long",))
    _refused(capsys, "--davis-root", tmp_path / long, "--output-dir", tmp_path / "out",
             fragments=(f"{tmp_path / long}", "File name too long"))
    assert not (tmp_path / "out").exists()


def test_a_host_that_cannot_be_reached_is_one_line_before_the_model(root, tmp_path, capsys, no_model):
    import socket

    with socket.socket() as listener:  # a port nothing listens on once this closes
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    _refused(capsys, "--host", f"http://127.0.0.1:{port}", "--user-key", "k", "--davis-root", root,
             "--output-dir", tmp_path / "out", fragments=(f"--host http://127.0.0.1:{port}: cannot connect",))
    assert not (tmp_path / "out").exists()


def test_a_host_that_is_no_evaluation_server_is_one_line_before_the_model(root, tmp_path, capsys, no_model):
    """Another web service on the port, or a URL whose path is not the server's: a 404 once the model was built."""
    from fastapi import FastAPI

    from agent.config import ServerConfig
    from agent.evaluation.server import create_app, serving

    with serving(FastAPI()) as other, serving(create_app(ServerConfig(), root)) as davis:
        for url in (other.url, f"{davis.url}/prefix"):
            _refused(capsys, "--host", url, "--user-key", "k", "--davis-root", root, "--output-dir", tmp_path / "out",
                     fragments=(f"--host {url}: no evaluation server there", f"GET {url}/api/healthcheck with 404"))
            assert not (tmp_path / "out").exists()


def test_a_host_that_redirects_is_one_line_before_the_model(root, tmp_path, capsys, no_model):
    """A moved server (http:// sent to https://, a path renamed): its health check passed through the redirect, the
    model was built, and the first round's POST was re-sent as a GET ("answered GET .../interaction with 405"); one to
    another host dropped the user key (the samples were a 401 asking for the key that was given)."""
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    from agent.config import ServerConfig
    from agent.evaluation.server import create_app, serving

    with serving(create_app(ServerConfig(), root)) as davis:
        moved = FastAPI()

        @moved.get("/old/{rest:path}")
        def renamed(rest: str):
            return RedirectResponse(f"{davis.url}/{rest}", status_code=301)

        @moved.get("/elsewhere/{rest:path}")
        def elsewhere(rest: str):
            return RedirectResponse(f"{davis.url}/{rest}", status_code=307)

        @moved.get("/kept/{rest:path}")
        def kept(rest: str):  # the method and key kept: followed, as before (here to no server)
            return RedirectResponse(f"/new/{rest}", status_code=308)

        with serving(moved) as server:
            url = server.url
            for host, fragments in (
                    (f"{url}/old", (f"--host {url}/old: the server redirects its requests (301 to "
                                    f"{davis.url}/api/healthcheck): pass --host {davis.url}; followed, every round's "
                                    "masks would be re-sent as a GET and the user key would not be sent to another "
                                    "host",)),
                    (f"{url}/elsewhere", (f"(307 to {davis.url}/api/healthcheck): pass --host {davis.url}; followed, "
                                          "the user key would not be sent to another host",)),
                    (f"{url}/kept", (f"--host {url}/kept: no evaluation server there", "/new/api/healthcheck with 404"))):
                _refused(capsys, "--host", host, "--user-key", "k", "--davis-root", root, "--output-dir",
                         tmp_path / "out", fragments=fragments)
                assert not (tmp_path / "out").exists()


def test_image_whose_header_claims_billions_of_pixels(root, tmp_path, capsys, no_model, monkeypatch):
    from PIL import Image

    # PIL refuses such a header (a decompression bomb) with an error none of its decoder errors derives from;
    # a lower limit makes every frame of the tiny root look like one.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", fragments=("00000.", "cannot"))


def test_empty_shard_is_found_before_the_model(root, tmp_path, capsys, no_model):
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", "--sequences", ONE, "--shard", "2/2",
             fragments=("shard 2/2 has no sequence",))
    assert not (tmp_path / "out").exists()


def test_text_file_as_checkpoint(root, tmp_path, capsys, no_model):
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", "--checkpoint", text,
             fragments=(f"checkpoint {text} is corrupt or not a checkpoint",))


def test_checkpoint_with_a_config_value_of_the_wrong_type(root, tmp_path, capsys, no_model):
    payload = torch.load(DEFAULT_CHECKPOINT, weights_only=True)
    payload["model_config"]["embedding_dim"] = "wide"
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    _refused(capsys, "--davis-root", root, "--output-dir", tmp_path / "out", "--checkpoint", path,
             fragments=(f"checkpoint {path} has an invalid model_config", "embedding_dim"))


def test_output_dir_that_is_a_file_or_unwritable(root, tmp_path, capsys, no_model):
    blocker = tmp_path / "results.txt"
    blocker.write_text("keep me")
    _refused(capsys, "--davis-root", root, "--output-dir", blocker, fragments=(f"{blocker}: is a file",))
    _refused(capsys, "--davis-root", root, "--output-dir", blocker / "run", fragments=(f"{blocker / 'run'}: ",))
    assert blocker.read_text() == "keep me"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_existing_results_are_refused_then_replaced_only_by_a_complete_run(root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert _cli(capsys, *_baseline_run(root, out))[0] == 0
    earlier = _snapshot(out)
    assert {"summary.json", "report.csv", "per_sequence.csv", "curve.png", "config.json"} <= set(earlier)

    _refused(capsys, *_baseline_run(root, out), fragments=(f"{out}: exists and is not empty", "--overwrite"))
    assert _snapshot(out) == earlier

    # --overwrite with a run that fails half-way: the earlier results stay, the partial ones lie beside them.
    monkeypatch.setattr(session_runner, "build_predictor", lambda *a, **k: _WrongShapeOnRound2())
    code, errors, err = _cli(capsys, *_baseline_run(root, out), "--overwrite")
    assert code == 2 and len(errors) == 1 and "predictor returned masks of shape" in errors[0], err
    assert _snapshot(out) == earlier and "still holds the earlier run's results" in err
    staged = [p for p in tmp_path.iterdir() if p.name.startswith("out.new-")]
    assert len(staged) == 1 and json.loads((staged[0] / "summary.json").read_text())["interrupted"] is True

    monkeypatch.setattr(session_runner, "build_predictor", lambda *a, **k: ScribblePaintBaseline())
    assert _cli(capsys, *_baseline_run(root, out, "--max-interactions", "1"), "--overwrite")[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and len(summary["per_interaction"]["J"]) == 1  # the new run's
    assert not list(tmp_path.glob("out.old-*")) and not list(out.glob(".*"))  # no leftovers, no temp files


def test_a_run_whose_result_files_cannot_all_be_written_replaces_nothing(root, tmp_path, capsys, monkeypatch):
    # A disk that filled at the very end: the run was published without its curve.png (or report.csv, or
    # summary.json) over an earlier complete run's folder, and exited 0.
    from agent.evaluation import report

    out = tmp_path / "out"
    assert _cli(capsys, *_baseline_run(root, out))[0] == 0
    earlier = _snapshot(out)

    def full_disk(summary, path, title):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "plot_curve", full_disk)
    line = _refused(capsys, *_baseline_run(root, out), "--overwrite")
    assert line.startswith("error: ") and line.endswith("curve.png: could not be written (No space left on device)")
    assert _snapshot(out) == earlier
    staged = [p for p in tmp_path.iterdir() if p.name.startswith("out.new-")]
    assert len(staged) == 1 and json.loads((staged[0] / "summary.json").read_text())["complete"]


def test_a_completed_run_whose_report_csv_the_disk_refuses_still_prints_its_figures(root, tmp_path, capsys,
                                                                                   monkeypatch):
    """A disk that filled at the very end: summary.json (written first) held the completed run's figures, but the
    command ended with the report.csv line alone, exit 2, and printed no AUC. (The session's end without playing
    it: write_outputs as a completed session calls it.)"""
    import pandas as pd

    from agent.evaluation import report, session

    rows = pd.DataFrame([dict(session_id="s", sequence=ONE, scribble_idx=1, interaction=1, object_id=1, frame=0,
                              jaccard=0.75, contour=0.75, j_and_f=0.75, timing=2.0)])
    summary = report.summarize(rows, report.SampleLayout({ONE: 1}, {ONE: 1}), max_interactions=1, max_time=10.0)
    atomic_path = report.atomic_path

    def full_for_csv(path):
        if Path(path).name == "report.csv":
            raise OSError(errno.ENOSPC, "No space left on device")
        return atomic_path(path)

    def completed(config, *args, **kwargs):
        report.write_outputs(Path(config.output_dir), rows, summary, "test", strict=True)

    monkeypatch.setattr(report, "atomic_path", full_for_csv)
    monkeypatch.setattr(session, "run_session", completed)
    monkeypatch.setattr(session_runner, "build_predictor", lambda *a, **k: ScribblePaintBaseline())
    out = tmp_path / "out"
    code = session_runner.main([str(a) for a in _baseline_run(root, out)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out.splitlines()[:2] == [f"AUC-J: {summary['auc']:.3f}", f"J@60s: {summary['metric_at_threshold']:.3f}"]
    assert captured.err.splitlines() == [f"error: {out / 'report.csv'}: could not be written (No space left on device)",
                                         f"results so far: {out}"]
    assert json.loads((out / "summary.json").read_text())["auc"] == pytest.approx(summary["auc"])


def test_a_completed_run_that_cannot_be_published_says_where_its_results_are(root, tmp_path, capsys, monkeypatch):
    """The earlier results' folder removed while the run played (or made read-only, a full disk): publishing was an
    OSError traceback once every round was played, not saying where the finished results were."""
    out = tmp_path / "out"
    assert _cli(capsys, *_baseline_run(root, out))[0] == 0

    def removes_the_earlier_results(*args, **kwargs):
        shutil.rmtree(out)
        return ScribblePaintBaseline()

    monkeypatch.setattr(session_runner, "build_predictor", removes_the_earlier_results)
    code, errors, err = _cli(capsys, *_baseline_run(root, out), "--overwrite")
    (staged,) = tmp_path.glob("out.new-*")
    assert code == 2 and "Traceback" not in err and errors == [
        f"error: {out}: cannot put this run's results there (No such file or directory); the finished results are "
        f"in {staged} ({out} is as it was)"], err
    assert json.loads((staged / "summary.json").read_text())["complete"]


class _WrongShapeOnRound2(ScribblePaintBaseline):
    def step(self, scribbles, plan=None):
        masks = super().step(scribbles, plan)
        self.rounds = getattr(self, "rounds", 0) + 1
        return masks[:1] if self.rounds == 2 else masks


def test_rounds_submitted_after_the_time_limit_are_named_after_the_figures(root: Path, tmp_path: Path, capsys,
                                                                           monkeypatch) -> None:
    """Every round late printed only "AUC-J: 0.000": the framework's own warning came glued to the progress bar."""
    import time

    import davisinteractive.session.session as framework

    clock = {"offset": 0.0}
    later = type("Clock", (), {"time": staticmethod(lambda: time.time() + clock["offset"])})
    monkeypatch.setattr(framework, "time", later)

    class SlowOnRound2(ScribblePaintBaseline):  # round 2 takes "hours" on the framework's clock
        def step(self, scribbles, plan=None):
            self.rounds = getattr(self, "rounds", 0) + 1
            clock["offset"] += 1e5 if self.rounds == 2 else 0.0
            return super().step(scribbles, plan)

    monkeypatch.setattr(session_runner, "build_predictor", lambda *a, **k: SlowOnRound2())
    out = tmp_path / "out"
    code, errors, err = _cli(capsys, *_baseline_run(root, out))
    assert code == 0 and not errors, err
    (line,) = [line for line in err.splitlines() if line.startswith("warning:")]
    assert line.startswith("warning: 1 of 2 rounds were not scored") and "session.max_time" in line
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["rounds_played"], summary["rounds_late"]) == (2, 1)
    late = [json.loads(row) for row in (out / "interactions.jsonl").read_text().splitlines()]
    assert [row["evaluated"] for row in late] == [True, False]


# --- strategies ---------------------------------------------------------------------------------------


STRATEGIES = '''
from agent.inference.plan import RoundPlan


class Raises:
    name, description = "raises", "test"

    def plan(self, interaction, time_left, info):
        return {1: RoundPlan()}[interaction]  # KeyError from round 2 on


class WrongType:
    name, description = "wrong-type", "test"

    def plan(self, interaction, time_left, info):
        return {"use_crf": True}


class Exits:
    name, description = "exits", "test"

    def plan(self, interaction, time_left, info):
        if interaction == 2:  # a script's argparse or sys.exit() in a later round
            raise SystemExit(0)
        return RoundPlan()


class BadValue:
    name, description = "bad-value", "test"

    def plan(self, interaction, time_left, info):
        return RoundPlan(frame_stride=0)


class FailsInTheSession:
    """Fine when asked in advance; its second plan in the session raises."""
    name, description = "late-failure", "test"
    calls = 0

    def plan(self, interaction, time_left, info):
        FailsInTheSession.calls += 1
        if FailsInTheSession.calls > 6:  # the preflight: 2 rounds x 2 sequences; the session: synth-000
            raise RuntimeError("out of ideas")
        return RoundPlan()
'''


@pytest.fixture
def user_strategies(tmp_path, monkeypatch):
    (tmp_path / "user_strategies.py").write_text(STRATEGIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("user_strategies", None)


@pytest.mark.parametrize(("name", "fragment"), [
    ("Raises", "strategy 'raises': plan() failed at interaction 2 of synth-000 (KeyError: 2)"),
    ("WrongType", "strategy 'wrong-type': plan() returned dict at interaction 1 of synth-000, expected a RoundPlan"),
    ("BadValue", "strategy 'bad-value': plan() failed at interaction 1 of synth-000 (ValueError: RoundPlan.frame_"),
    # It ended the run without a word, exit code 0, with nothing played.
    ("Exits", "strategy 'exits': plan() failed at interaction 2 of synth-000 (SystemExit: 0)"),
])
def test_broken_strategy_is_named_before_the_model(root, tmp_path, capsys, no_model, user_strategies, name,
                                                   fragment):
    _refused(capsys, *_baseline_run(root, tmp_path / "out"), "--strategy", f"user_strategies:{name}",
             fragments=(fragment,))


def test_strategy_failing_in_the_session_keeps_what_finished(root, tmp_path, capsys, user_strategies):
    out = tmp_path / "out"
    _refused(capsys, *_baseline_run(root, out), "--sequences", f"{ONE},synth-001", "--strategy",
             "user_strategies:FailsInTheSession", fragments=("strategy 'late-failure': plan() failed at "
                                                            "interaction 1 of synth-001 (RuntimeError: out of ideas)",))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["stopped_by"].startswith("StrategyError")
    assert summary["auc"] is None and summary["samples_played"] == 1 and summary["samples_total"] == 2
    report = load_report(out / "report.csv")
    assert set(report["sequence"]) == {ONE} and sorted(report["interaction"].unique()) == [1, 2]


def test_a_full_disk_during_the_session_is_one_line_and_keeps_what_finished(root, tmp_path, capsys, monkeypatch):
    # OSError (a write the disk refused) was a traceback, exit 1, after the partial results were written.
    from agent.evaluation import session

    log_interaction = session._log_interaction

    def full_on_the_second_sample(path, session_, sequence, *args):
        if sequence != ONE:
            raise OSError(errno.ENOSPC, "No space left on device")  # as a write's: it names no file
        log_interaction(path, session_, sequence, *args)

    monkeypatch.setattr(session, "_log_interaction", full_on_the_second_sample)
    out = tmp_path / "out"
    _refused(capsys, *_baseline_run(root, out), "--sequences", f"{ONE},synth-001",
             fragments=(f"error: {out}: No space left on device",))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["stopped_by"].startswith("OSError")
    assert summary["auc"] is None and summary["auc_partial"] > 0  # the second sample stopped after its round 1




def test_a_full_disk_under_the_interactions_log_names_it(root, tmp_path, capsys, monkeypatch):
    """A write's error names no file: the line named the run's folder."""
    real_open = Path.open

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    def opened(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        return Full(handle) if self.name == "interactions.jsonl" and mode == "a" else handle

    monkeypatch.setattr(Path, "open", opened)
    out = tmp_path / "out"
    _refused(capsys, *_baseline_run(root, out), fragments=(f"error: {out / 'interactions.jsonl'}: No space left on device",))
    assert json.loads((out / "summary.json").read_text())["stopped_by"].startswith("OSError")

def test_a_disk_too_full_for_any_result_points_to_no_results(root, tmp_path, capsys, caplog, monkeypatch):
    """Every file refused: the run said "partial results written to <out>" and "results so far: <out>" of a folder
    holding only its config.json."""
    from agent.evaluation import report, session

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(session, "_log_interaction", full)
    monkeypatch.setattr(report, "atomic_path", full)
    out = tmp_path / "out"
    code, errors, err = _cli(capsys, *_baseline_run(root, out))
    assert (code, errors) == (2, [f"error: {out}: No space left on device"]) and "results so far" not in err, err
    assert not (out / "summary.json").exists()
    assert "partial results written" not in caplog.text and f"its results could not be written to {out}" in caplog.text

class _RemovesAFrameOfTheNextVideo(ScribblePaintBaseline):
    def __init__(self, frames_dir: Path):
        super().__init__()
        self.frames_dir = frames_dir

    def start(self, frames, num_objects, sequence=None):
        for path in sorted(self.frames_dir.glob("*.jpg"))[-1:]:
            path.unlink()  # the dataset changing while the run reads it (a sync, another user)
        super().start(frames, num_objects, sequence)


def test_a_video_that_changed_during_the_run_is_named_not_blamed_on_the_predictor(root, tmp_path, capsys,
                                                                                   monkeypatch):
    frames_dir = root / "JPEGImages" / "480p" / "synth-001"
    count = len(list(frames_dir.glob("*.jpg")))
    monkeypatch.setattr(session_runner, "build_predictor", lambda *a, **k: _RemovesAFrameOfTheNextVideo(frames_dir))
    out = tmp_path / "out"
    line = _refused(capsys, *_baseline_run(root, out), "--sequences", f"{ONE},synth-001")
    assert line.startswith(f"error: {frames_dir}: {count - 1} frames of ") and "dataset changed" in line, line
    assert json.loads((out / "summary.json").read_text())["samples_played"] == 1  # the first video's kept


def _too_long_for_the_memory(frames):  # as InteractiveAgent.start refuses one (footprint.py)
    raise MemoryError(f"frames: {len(frames)} frames of 480x854 need about 40.0 GiB in one sample, more than the "
                      "3.0 GiB available: segment a long video in chunks")


def test_a_video_too_long_for_the_memory_is_one_line_and_keeps_the_results_so_far(root, tmp_path, capsys,
                                                                                  monkeypatch):
    monkeypatch.setattr(session_runner, "build_predictor",
                        lambda *a, **k: StopsOnTheSecondVideo(_too_long_for_the_memory))
    out = tmp_path / "out"
    line = _refused(capsys, *_baseline_run(root, out), "--sequences", f"{ONE},synth-001")
    assert line.startswith("error: frames: ") and "GiB available" in line, line
    assert json.loads((out / "summary.json").read_text())["samples_played"] == 1  # the first video's kept


def _a_crf_worker_crashed(frames):  # as crf.refine_frames raises it when a worker faulted (SIGSEGV)
    from agent.inference.crf import CRFWorkerError

    raise CRFWorkerError("a CRF worker process crashed (SIGSEGV: a fault in pydensecrf), which in this process would "
                         "end the run: set agent.crf nearer its defaults, or turn the CRF off")


def test_a_crashed_crf_worker_is_one_line_and_keeps_the_results_so_far(root, tmp_path, capsys, monkeypatch):
    # concurrent.futures' BrokenProcessPool was a traceback; a killed worker (out of memory) is no error at all now:
    # tests/inference/test_crf.py.
    monkeypatch.setattr(session_runner, "build_predictor",
                        lambda *a, **k: StopsOnTheSecondVideo(_a_crf_worker_crashed))
    out = tmp_path / "out"
    line = _refused(capsys, *_baseline_run(root, out), "--sequences", f"{ONE},synth-001")
    assert line.startswith("error: a CRF worker process crashed (SIGSEGV"), line
    assert json.loads((out / "summary.json").read_text())["samples_played"] == 1  # the first video's kept


# --- signals: SIGTERM like Ctrl-C, partial figures apart ----------------------------------------------


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


@pytest.mark.parametrize(("send", "code", "name"), [
    (lambda: signal.raise_signal(signal.SIGTERM), 143, "SIGTERM"),
    (_raise_keyboard_interrupt, 130, "SIGINT"),
], ids=["sigterm", "ctrl-c"])
def test_stopped_run_writes_an_honest_partial_summary(root, tmp_path, capsys, monkeypatch, send, code, name):
    def unhandled(signum, frame):  # without the CLI's handler SIGTERM would end pytest itself
        raise AssertionError("SIGTERM reached the default handler")

    monkeypatch.setattr(session_runner, "build_predictor",
                        lambda *a, **k: StopsOnTheSecondVideo(lambda frames: send()))
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        result, errors, err = _cli(capsys, *_baseline_run(root, tmp_path / "out"), "--sequences",
                                   f"{ONE},synth-001")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result == code and not errors and f"interrupted ({name})" in err, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["stopped_by"] == name and summary["complete"] is False
    # No AUC over the sample never played: the figures over the played one are apart, and said to be partial.
    assert summary["auc"] is None and summary["metric_at_threshold"] is None
    assert 0 < summary["auc_partial"] <= 1 and summary["samples_played"] == 1 and summary["samples_total"] == 2
    report = load_report(tmp_path / "out" / "report.csv")
    assert set(report["sequence"]) == {ONE} and sorted(report["interaction"].unique()) == [1, 2]
    assert (tmp_path / "out" / "curve.png").stat().st_size > 0


# --- agent.bench ----------------------------------------------------------------------------------------


def test_bench_on_an_empty_root_fails_before_any_work(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark loaded its model before checking the root")

    monkeypatch.setattr(bench, "load_checkpoint", refuse)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert bench.main(["--davis-root", str(empty), "--output", str(tmp_path / "bench.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "val.txt" in err[0]
    assert bench.main(["--output", str(tmp_path)]) == 2  # a directory where the JSON file should go
    assert "is a directory" in capsys.readouterr().err


def test_a_user_key_sent_unencrypted_to_another_machine_is_warned_of(caplog):
    from agent.evaluation.preflight import warn_plain_http

    for url in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "https://eval.example.org",
                "http://10.0.0.5:8000", "HTTP://Eval.Example.org/davis"):
        warn_plain_http(url)
    warned = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warned) == 2 and all("plain HTTP: your user key is sent unencrypted" in line for line in warned)
    assert "to 10.0.0.5 " in warned[0] and "to eval.example.org " in warned[1]
