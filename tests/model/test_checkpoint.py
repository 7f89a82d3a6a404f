"""Checkpoints: round trip (float32 and fp16), and one clear CheckpointError for every bad file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from agent.config import ModelConfig
from agent.model import build_model
from agent.model.checkpoint import (
    CheckpointError,
    check_checkpoint_fits,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)


def _model(**overrides):
    torch.manual_seed(0)
    values = dict(backbone="tiny", pretrained="none", embedding_dim=8, input_size=(32, 48))
    values.update(overrides)
    model = build_model(ModelConfig(**values))
    with torch.no_grad():  # non-trivial head statistics, so a lost buffer would show
        model.head.bn.running_mean.fill_(0.25)
        model.head.bn.running_var.fill_(3.0)
    return model.eval()


@pytest.mark.parametrize("hidden", [0, 6])  # 6: the decoder's nonlinear adapter (model.decoder_hidden)
def test_round_trip(tmp_path, hidden):
    model = _model(decoder_hidden=hidden)
    path = save_checkpoint(tmp_path / "m.pt", model, model.config, extra={"step": 7, "sizes": (1, 2)})
    loaded, config, extra = load_checkpoint(path, "cpu")
    assert config == model.config and config.mean is not None
    assert extra == {"step": 7, "sizes": [1, 2]}
    assert read_checkpoint_config(path) == config
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert torch.equal(loaded.head.bn.running_var, model.head.bn.running_var)
    assert torch.load(path, weights_only=True)["model_config"]["input_size"] == [32, 48]  # plain types


def test_half_is_smaller_and_loads_as_float32(tmp_path):
    model = _model(embedding_dim=64)
    full = save_checkpoint(tmp_path / "full.pt", model)
    half = save_checkpoint(tmp_path / "half.pt", model, half=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    loaded, _, _ = load_checkpoint(half)
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values() if v.is_floating_point())
    assert torch.equal(loaded.head.bn.running_mean, model.head.bn.running_mean)  # small tensors stay fp32
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-2)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(garbage)
    path = save_checkpoint(tmp_path / "m.pt", _model())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_training_state_or_a_bare_state_dict_says_what_it_is(tmp_path):
    """Both were only "not a simlearn-ivos/siamese-v1 checkpoint": agent.train's last.pt beside its model.pt, and
    torch.save(model.state_dict(), path), PyTorch's usual way to save a model."""
    model = _model()
    torch.save({"model_config": {}, "state_dict": model.state_dict(), "optimizer": {}, "iteration": 2},
               tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"last.pt is not a .* checkpoint: it is agent.train's training state "
                                              rf"\(for --resume\), pass the model.pt beside it \({tmp_path / 'model.pt'}\)"):
        check_checkpoint_fits(tmp_path / "last.pt")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match=r"weights.pt is not a .* checkpoint: it holds bare weights \(a torch "
                                              r"state_dict\), without the model settings they fit; save the model "
                                              r"with agent.model.checkpoint.save_checkpoint\(path, model\)"):
        load_checkpoint(tmp_path / "weights.pt")


def _tampered(tmp_path, **config_changes):
    path = save_checkpoint(tmp_path / "m.pt", _model())
    payload = torch.load(path, weights_only=True)
    payload["model_config"].update(config_changes)
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    return bad


def test_mismatched_config_and_shapes(tmp_path):
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(_tampered(tmp_path, embedding_dim=16))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(_tampered(tmp_path, backbone="resnet50-deeplab"))
    with pytest.raises(CheckpointError, match="unknown backbone 'no-such-net'"):
        read_checkpoint_config(_tampered(tmp_path, backbone="no-such-net"))  # before any model is built
    path = save_checkpoint(tmp_path / "ok.pt", _model())
    with pytest.raises(CheckpointError, match="backbone"):
        load_checkpoint(path, expected=ModelConfig(backbone="efficientnet-lite0", embedding_dim=8))


def test_a_checkpoint_checked_says_nothing_of_the_bare_model(tmp_path, caplog):
    # agent.segment checks it before a run that may yet be refused: its "model: ..." line came before the error.
    path = save_checkpoint(tmp_path / "ok.pt", _model())
    with caplog.at_level("INFO", logger="agent.model.siamese"):
        check_checkpoint_fits(path)
        assert not [r for r in caplog.records if r.name == "agent.model.siamese" and r.levelname == "INFO"]
        load_checkpoint(path)  # the model a run uses is still named
        assert [r for r in caplog.records if r.name == "agent.model.siamese" and r.getMessage().startswith("model:")]


def test_weights_that_do_not_fit_are_found_without_loading_them(tmp_path):
    # What the preflight calls: the bare model is built (well under a second), nothing is loaded.
    with pytest.raises(CheckpointError, match="shape"):
        check_checkpoint_fits(_tampered(tmp_path, embedding_dim=16))
    path = save_checkpoint(tmp_path / "ok.pt", _model())
    assert check_checkpoint_fits(path) == read_checkpoint_config(path)
    payload = torch.load(path, weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][key] = payload["state_dict"][key].long()  # load_state_dict would cast it silently
    torch.save(payload, tmp_path / "int.pt")
    for check in (check_checkpoint_fits, load_checkpoint):
        with pytest.raises(CheckpointError, match=f"{key} is int64, the model's weights are floating point"):
            check(tmp_path / "int.pt")


def test_nan_weights_and_a_zero_std_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "ok.pt", _model())
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.bn.running_var"] = torch.full_like(payload["state_dict"]["head.bn.running_var"],
                                                                   float("nan"))
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="head.bn.running_var holds NaN or infinite weights"):
        read_checkpoint_config(tmp_path / "nan.pt")  # what the preflight reads, before any model is built
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["std"] = [0.0, 0.0, 0.0]  # the input normalisation divides by it
    torch.save(payload, tmp_path / "std.pt")
    with pytest.raises(CheckpointError, match=r"model.std must be 3 finite numbers > 0"):
        read_checkpoint_config(tmp_path / "std.pt")


def test_a_stored_size_beyond_any_model_is_refused_before_the_model_is_built(tmp_path):
    # d = 10**8 was the allocator's RuntimeError traceback as the bare model was built (100 GB of decoder weights);
    # frames of 100000x100000 a MemoryError traceback once a session had built the agent.
    for changes, message in (({"embedding_dim": 10**8}, "model.embedding_dim must be in 1..4096"),
                             ({"input_size": [100_000, 100_000]}, "model.input_size must be")):
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint_config(_tampered(tmp_path, **changes))


def test_extra_must_be_plain(tmp_path):
    with pytest.raises(ValueError, match="plain types"):
        save_checkpoint(tmp_path / "m.pt", _model(), extra={"bad": object()})


def test_loading_skips_imagenet_weights(tmp_path, monkeypatch):
    import agent.model.backbones as backbones

    config = ModelConfig(pretrained="imagenet", embedding_dim=8, input_size=(32, 48))
    model = build_model(config, load_pretrained=False)
    path = save_checkpoint(tmp_path / "lite.pt", model, half=True)

    def forbidden(*args, **kwargs):
        raise AssertionError("ImageNet weights loaded for a checkpoint")

    monkeypatch.setattr(backbones, "load_lite_wheel_weights", forbidden)
    loaded, config, _ = load_checkpoint(path)
    assert config.backbone == ModelConfig().backbone and config.pretrained == "imagenet"


def test_half_refuses_weights_beyond_fp16_before_writing(tmp_path, capsys):
    """A weight beyond 65504 became inf: the fp16 copy was written, exit 0, and no command could load it."""
    from agent.model.checkpoint import main

    model = _model(embedding_dim=64)
    key = next(k for k, v in model.state_dict().items() if v.is_floating_point() and v.numel() >= 1024)
    with torch.no_grad():
        model.state_dict()[key].view(-1)[0] = 1e6
    source = save_checkpoint(tmp_path / "src.pt", model)  # finite in fp32: it loads
    with pytest.raises(SystemExit) as exit_info:
        main([str(source), str(tmp_path / "half.pt"), "--half"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert f"{key} holds weights up to 1e+06, beyond fp16's 65504" in err, err
    assert not (tmp_path / "half.pt").exists()
    assert main([str(source), str(tmp_path / "full.pt")]) == 0  # without --half it is copied


def test_the_command_never_replaces_a_checkpoint_silently(tmp_path, capsys):
    from agent.model.checkpoint import main

    source = save_checkpoint(tmp_path / "src.pt", _model())
    kept = tmp_path / "kept.pt"
    kept.write_bytes(b"an earlier result")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    for destination, message in ((kept, f"{kept}: exists (an earlier checkpoint?): pass --overwrite"),
                                 (tmp_path / "folder", "folder: is a directory, name the .pt file"),
                                 (tmp_path / "afile" / "x.pt", "afile: is a file, ")):
        with pytest.raises(SystemExit) as exit_info:
            main([str(source), str(destination)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err, err
    with pytest.raises(IsADirectoryError):  # a save that fails leaves no stray .tmp beside its destination
        save_checkpoint(tmp_path / "folder", _model())
    assert kept.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder", "kept.pt", "src.pt"]
    kept_source = source.read_bytes()  # its fp32 weights were replaced by their fp16 rounding
    for same in (source, tmp_path / "." / "src.pt"):
        with pytest.raises(SystemExit) as exit_info:
            main([str(source), str(same), "--overwrite", "--half"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and "is the checkpoint it reads" in err, err
    assert source.read_bytes() == kept_source
    assert main([str(source), str(kept), "--overwrite", "--half"]) == 0
    assert read_checkpoint_config(kept) == read_checkpoint_config(source)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "usage: python -m agent.model.checkpoint" in capsys.readouterr().out


def test_a_fifo_or_device_as_checkpoint_says_so(tmp_path) -> None:
    from agent.model.checkpoint import read_checkpoint_config

    fifo, device = tmp_path / "model.pt", tmp_path / "zero.pt"
    os.mkfifo(fifo)
    device.symlink_to("/dev/zero")
    for path, what in ((fifo, "a FIFO"), (device, "a character device")):  # both were "does not exist"
        with pytest.raises(CheckpointError, match=f"checkpoint {path} is {what}"):
            read_checkpoint_config(path)


def test_the_command_never_replaces_a_device_or_fifo_and_names_an_unwritable_folder(tmp_path, capsys,
                                                                                    monkeypatch) -> None:
    from agent.model import checkpoint
    from agent.model.checkpoint import main

    source = save_checkpoint(tmp_path / "src.pt", _model())
    fifo, device = tmp_path / "fifo.pt", tmp_path / "null.pt"
    os.mkfifo(fifo)
    device.symlink_to("/dev/null")  # --overwrite replaced /dev/null itself with a file (as root)
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda path: pytest.fail("the source was read"))
    for destination, what in ((fifo, "a FIFO"), (device, "a character device")):
        with pytest.raises(SystemExit) as exit_info:
            main([str(source), str(destination), "--overwrite"])
        assert exit_info.value.code == 2 and f"{destination}: is {what}" in capsys.readouterr().err
    assert fifo.is_fifo() and device.resolve() == Path("/dev/null") and Path("/dev/null").is_char_device()
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests run as root: simulated
    with pytest.raises(SystemExit) as exit_info:  # torch raised RuntimeError there: a traceback
        main([str(source), str(tmp_path / "new.pt")])
    assert exit_info.value.code == 2 and "cannot write it (no permission to write in" in capsys.readouterr().err


def test_an_empty_checkpoint_says_it_is_empty(tmp_path) -> None:
    empty = tmp_path / "model.pt"
    empty.touch()  # it was "corrupt or not a checkpoint (EOFError)"
    with pytest.raises(CheckpointError, match=r"model.pt is an empty file \(0 bytes\), not a saved model$"):
        read_checkpoint_config(empty)



def test_a_truncated_checkpoint_says_so_in_a_short_line(tmp_path) -> None:
    """torch's zip reader's error went on for five sentences of advice, a 400-character line."""
    path = save_checkpoint(tmp_path / "model.pt", _model())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as error:
        read_checkpoint_config(path)
    assert str(error.value) == (f"checkpoint {path} is corrupt or not a checkpoint (truncated or damaged: "
                                "PytorchStreamReader failed reading zip archive: failed finding central directory)")

def test_a_training_run_folder_without_model_pt_says_none_is_saved_yet(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text("{}")  # written when training starts; model.pt at the first save
    with pytest.raises(CheckpointError) as error:  # it advised passing run/model.pt, which did not exist
        read_checkpoint_config(run)
    assert str(error.value) == (f"checkpoint {run} is a directory: a training run's folder that holds no model.pt "
                                "(training has not saved one yet)")
    save_checkpoint(run / "model.pt", _model())
    with pytest.raises(CheckpointError, match=rf"name its .pt file \(e.g. {run / 'model.pt'}\)$"):
        read_checkpoint_config(run)


def test_a_checkpoint_that_cannot_be_read_says_so(tmp_path, monkeypatch) -> None:
    path = save_checkpoint(tmp_path / "model.pt", _model())

    def refused(*args, **kwargs):  # tests run as root: a file without read permission simulated
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", refused)
    with pytest.raises(CheckpointError, match=r"model.pt cannot be read \(Permission denied\)$"):  # not "corrupt"
        read_checkpoint_config(path)


def test_a_full_disk_while_saving_is_one_line_and_leaves_the_earlier_file(tmp_path, capsys) -> None:
    import resource

    from agent.model.checkpoint import main

    source = save_checkpoint(tmp_path / "src.pt", _model())
    kept = tmp_path / "kept.pt"
    kept.write_bytes(b"an earlier result")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # as `ulimit -f`: writes past 4 kB fail (EFBIG)
    try:
        with pytest.raises(OSError, match="kept.pt"):  # torch's RuntimeError ("unexpected pos"): a traceback
            save_checkpoint(kept, _model())
        with pytest.raises(SystemExit) as exit_info:
            main([str(source), str(kept), "--overwrite"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err == f"error: {kept}: cannot write it (File too large)\n", err
    assert kept.read_bytes() == b"an earlier result"  # and no half-written temporary file beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.pt", "src.pt"]


class _RunsCode:
    def __reduce__(self):
        return (os.makedirs, ("ran",))


def test_a_pickle_of_other_objects_is_refused_in_one_line_without_running_it(tmp_path, monkeypatch) -> None:
    import pickle
    import warnings

    monkeypatch.chdir(tmp_path)
    torch.save({"format": "simlearn-ivos/siamese-v1", "x": _RunsCode()}, tmp_path / "code.pt")
    with open(tmp_path / "plain.pkl", "wb") as handle:  # protocol 4: torch warned "Detected pickle protocol 4"
        pickle.dump({"x": _RunsCode()}, handle, protocol=4)
    for name, refused in (("code.pt", "os.makedirs"), ("plain.pkl", "pickle opcode 149")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning is a line before the error line
            with pytest.raises(CheckpointError) as info:
                read_checkpoint_config(tmp_path / name)
        message = str(info.value)
        # torch's own message advised weights_only=False, which would run the file's code
        assert f"refuses {refused}: only tensors and plain values" in message and "weights_only" not in message
        assert "\n" not in message
    assert not (tmp_path / "ran").exists()
