"""agent.bench on a tiny checkpoint: speed and memory figures, one-shot J, the untrained baseline."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import pytest
import torch

from agent.config import ModelConfig
from agent.evaluation.bench import main, untrained_baseline
from agent.model import WeightsUnavailableError
from agent.model.backbones import lite_wheel_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_bench_figures_and_one_shot_j(tiny_checkpoint: Path, tiny_synthetic_root: Path, tmp_path: Path,
                                      capsys) -> None:
    output = tmp_path / "out" / "bench.json"
    args = ["--checkpoint", str(tiny_checkpoint), "--repeats", "1", "--device", "cpu", "--output", str(output),
            "--davis-root", str(tiny_synthetic_root)]
    assert main(args) == 0
    report = json.loads(output.read_text())

    assert report["checkpoint"] == str(tiny_checkpoint) and report["model"]["backbone"] == "tiny"
    assert _positive(report["matmul_gflops"])
    assert _positive(report["backbone_ms_240x427"]) and _positive(report["backbone_ms_480x854"])
    runtime = report["backbone_runtime"]  # the agent's frame size: 1.5x the checkpoint's 48x80
    assert runtime["size"] == [72, 120] and runtime["onnxruntime"]
    assert _positive(runtime["torch_ms"]) and _positive(runtime["onnxruntime_ms"])
    assert runtime["max_feature_difference"] < 1e-3
    transfer = report["transfer"]
    for key in ("transfer_seconds_per_frame", "transfer_gflops", "decode_seconds_per_frame",
                "fraction_of_matmul_peak"):
        assert _positive(transfer[key]), key
    assert transfer["grid"] == [12, 20] and transfer["references"] == 2 * 4096
    assert _positive(report["peak_memory"]["max_rss_mb"])
    assert _positive(report["incremental"]["update_seconds_per_frame"])
    assert report["crf"]["size"] == [96, 160]
    for scale in (0.25, 0.5, 1.0):
        for kind in ("one_process", "workers"):
            assert _positive(report["crf"][f"scale_{scale}_{kind}_seconds_per_frame"])

    # The tiny backbone has no ImageNet weights: the baseline is its random initialisation, said so.
    assert report["one_shot_baseline"]["features"] == "random_features"
    assert "no ImageNet weights" in report["one_shot_baseline"]["reason"]
    sequences = ["synth-000", "synth-001", "synth-002"]
    assert set(report["one_shot_J"]) == {"random_features", "checkpoint"}
    for splits in report["one_shot_J"].values():
        assert set(splits) == {"val"}  # the synthetic root has none of the held-out training videos
        assert set(splits["val"]) == {*sequences, "mean"}
        assert all(0.0 <= v <= 1.0 for v in splits["val"].values())

    printed = capsys.readouterr().out
    assert "incremental pool" in printed and "dense CRF at scale 0.5" in printed
    assert "one-shot J, checkpoint, val" in printed and "no ImageNet baseline" in printed
    assert f"written: {output}" in printed


def test_untrained_baseline_uses_imagenet_weights_when_there_are_some() -> None:
    try:
        lite_wheel_path(0)
    except WeightsUnavailableError as error:
        pytest.skip(str(error))
    config = ModelConfig(backbone="efficientnet-lite0", pretrained="none", input_size=(48, 80))
    name, model, reason = untrained_baseline(config, torch.device("cpu"))
    assert (name, reason, model.backbone.weights) == ("imagenet_features", None, "imagenet")
    assert not model.training


def test_untrained_baseline_without_imagenet_weights_is_seeded_random() -> None:
    config = ModelConfig(backbone="tiny", pretrained="none", input_size=(48, 80))
    name, first, reason = untrained_baseline(config, torch.device("cpu"))
    _, second, _ = untrained_baseline(config, torch.device("cpu"))
    assert name == "random_features" and reason == "tiny has no ImageNet weights"
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))


@pytest.mark.parametrize(("args", "fragment"), [
    (["--stride", "0"], "--stride and --repeats must be >= 1"),
    (["--repeats", "-1"], "--stride and --repeats must be >= 1"),
    (["--repeats", "100000000"], "--repeats 100000000: at most 100"),  # it timed every figure for years
    (["--aggregation", "bogus"], "transfer.aggregation must be one of"),
    ([], "--one-shot-only: one-shot J is measured on --davis-root, and none was given"),  # a report of nothing
])
def test_bad_arguments_are_one_line_and_leave_an_earlier_output(tmp_path: Path, capsys, args, fragment) -> None:
    output = tmp_path / "bench.json"
    output.write_text('{"earlier": "figures"}')
    assert main(["--one-shot-only", "--output", str(output), *args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], errors
    assert output.read_text() == '{"earlier": "figures"}'


def test_the_checkpoint_it_measures_is_never_its_output(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(tiny_checkpoint.read_bytes())
    # the figures replaced the model they measured (a JSON file named model.pt, the weights gone)
    assert main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "." / "model.pt")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is the checkpoint it measures" in errors[0], errors
    assert checkpoint.read_bytes() == tiny_checkpoint.read_bytes()


def test_a_bad_checkpoint_leaves_no_new_output_folder(tmp_path: Path, capsys) -> None:
    """The output's folder was made before the checkpoint was read: a bad one left it, empty."""
    checkpoint = tmp_path / "notes.pt"
    checkpoint.write_text("hello\n")
    output = tmp_path / "new" / "sub" / "bench.json"
    assert main(["--checkpoint", str(checkpoint), "--output", str(output)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is corrupt or not a checkpoint" in errors[0], errors
    assert not (tmp_path / "new").exists()


def test_a_broken_held_out_video_is_one_line_before_any_figure(tiny_synthetic_root: Path, tmp_path: Path,
                                                               capsys) -> None:
    import shutil

    from agent.config import HOLDOUT

    root = tmp_path / "root"
    shutil.copytree(tiny_synthetic_root, root)
    (root / "JPEGImages" / "480p" / HOLDOUT[0]).mkdir()  # a held-out video the benchmark would also measure
    output = tmp_path / "bench.json"
    assert main(["--one-shot-only", "--davis-root", str(root), "--output", str(output)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"no frames for sequence '{HOLDOUT[0]}'" in errors[0], errors
    assert not output.exists()


def test_holdout_names_the_held_out_videos_measured(tiny_checkpoint: Path, tiny_synthetic_root: Path, tmp_path: Path,
                                                   capsys) -> None:
    """Only TrainConfig.holdout's videos were measured as held out: a model trained with its own --holdout had
    its held-out videos left unmeasured, without a word."""
    import shutil

    root = tmp_path / "root"  # synth-001 and synth-002 training videos, not val
    shutil.copytree(tiny_synthetic_root, root)
    (root / "ImageSets" / "2017" / "val.txt").write_text("synth-000\n")
    output = tmp_path / "bench.json"
    args = ["--one-shot-only", "--davis-root", str(root), "--checkpoint", str(tiny_checkpoint),
            "--device", "cpu", "--output", str(output)]
    assert main([*args, "--holdout", "synth-002, synth-001"]) == 0
    for splits in json.loads(output.read_text())["one_shot_J"].values():
        assert set(splits["held_out"]) == {"synth-002", "synth-001", "mean"}
    assert "one-shot J, checkpoint, held_out: mean" in capsys.readouterr().out
    assert main([*args, "--holdout", "synth-001,bogus"]) == 2  # a typo measured nothing in its place
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--holdout bogus: not in" in errors[0], errors


def test_a_val_video_as_holdout_is_one_line(tiny_checkpoint: Path, tiny_synthetic_root: Path, tmp_path: Path,
                                           capsys) -> None:
    """A val video named held out was measured twice, its val J counted into the held-out mean without a word."""
    output = tmp_path / "bench.json"
    assert main(["--one-shot-only", "--davis-root", str(tiny_synthetic_root), "--holdout", "synth-001",
                 "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--output", str(output)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--holdout synth-001: a val video" in errors[0], errors
    assert not output.exists()


@pytest.mark.parametrize("name", ["synth-001/", "synth-001/.", "ROOT/JPEGImages/480p/synth-001"])
def test_a_path_as_holdout_name_is_one_line(tiny_checkpoint: Path, tiny_synthetic_root: Path, tmp_path: Path, capsys,
                                            name: str) -> None:
    """A path (a shell's trailing slash, another folder) was measured under that name: a video counted twice, or
    another root's."""
    output = tmp_path / "bench.json"
    name = name.replace("ROOT", str(tiny_synthetic_root))
    assert main(["--one-shot-only", "--davis-root", str(tiny_synthetic_root), "--holdout", f"synth-001,{name}",
                 "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--output", str(output)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"--holdout {name}: not a sequence name" in errors[0], errors
    assert not output.exists()


def test_a_one_frame_video_is_one_line_not_its_own_transfer(tiny_checkpoint: Path, tiny_synthetic_root: Path,
                                                              tmp_path: Path, capsys) -> None:
    """A video of one frame has no frame to transfer frame 0 to: its one-shot J was frame 0's own (~0.9)."""
    import shutil

    root = tmp_path / "root"
    shutil.copytree(tiny_synthetic_root, root)
    sequence = (root / "ImageSets" / "2017" / "val.txt").read_text().split()[0]
    for kind, suffix in (("JPEGImages", "jpg"), ("Annotations", "png")):
        for path in (root / kind / "480p" / sequence).glob(f"*.{suffix}"):
            if path.stem != "00000":
                path.unlink()
    output = tmp_path / "bench.json"
    assert main(["--one-shot-only", "--davis-root", str(root), "--checkpoint", str(tiny_checkpoint),
                 "--output", str(output)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{sequence}: one frame: one-shot J" in errors[0], errors
    assert not output.exists()


@pytest.mark.parametrize("value", [255, 0])
def test_a_video_without_an_object_in_frame_0_is_one_line(tiny_checkpoint: Path, tiny_synthetic_root: Path,
                                                          tmp_path: Path, capsys, value: int) -> None:
    """Frame 0's annotation all void (255) was a ValueError traceback, "label transfer needs at least one labelled
    reference pixel" (in agent.train, at the first validation); all background scored its objects 0."""
    import shutil

    from PIL import Image

    root = tmp_path / "root"
    shutil.copytree(tiny_synthetic_root, root)
    sequence = (root / "ImageSets" / "2017" / "val.txt").read_text().split()[-1]
    path = root / "Annotations" / "480p" / sequence / "00000.png"
    with Image.open(path) as image:
        blank = Image.new("P", image.size, value)
        blank.putpalette(image.getpalette())
    blank.save(path)
    output = tmp_path / "bench.json"
    assert main(["--one-shot-only", "--davis-root", str(root), "--checkpoint", str(tiny_checkpoint),
                 "--output", str(output)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and errors == [f"error: {path}: no object in frame 0's annotation: one-shot J "
                                                 "transfers frame 0's objects to later frames (objects that appear "
                                                 "later would score 0)"], err
    assert not output.exists()


def test_a_full_disk_when_the_figures_are_written_is_one_line(tiny_checkpoint: Path, tiny_synthetic_root: Path,
                                                              tmp_path: Path, capsys, monkeypatch) -> None:
    from agent.evaluation import bench

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bench, "atomic_write_text", full_disk)
    output = tmp_path / "bench.json"
    args = ["--checkpoint", str(tiny_checkpoint), "--one-shot-only", "--device", "cpu", "--output", str(output),
            "--davis-root", str(tiny_synthetic_root)]
    assert main(args) == 2  # an OSError traceback once every figure was measured
    captured = capsys.readouterr()
    assert captured.err == (f"error: {output}: cannot write it (No space left on device); the figures are printed "
                            "above\n")
    assert "one-shot J, checkpoint, val" in captured.out


def test_an_output_the_file_system_refuses_is_one_line_naming_it(tiny_checkpoint: Path, tmp_path: Path, capsys,
                                                                  monkeypatch) -> None:
    """`--output /sys/fs/out` (as root) was Python's own text: "error: [Errno 1] Operation not permitted: ..."."""
    from types import SimpleNamespace

    from agent.evaluation import bench

    def refused(dir=None):  # what /sys answers root, whatever os.access says
        raise PermissionError(errno.EPERM, "Operation not permitted", str(Path(dir) / "tmpq1w2e3"))

    monkeypatch.setattr(bench, "tempfile", SimpleNamespace(TemporaryFile=refused))
    output = tmp_path / "bench.json"
    args = ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--output", str(output)]
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {output}: cannot write it (Operation not permitted)"], errors


def test_help_describes_every_flag(capsys) -> None:
    # --repeats, --device and --output had no help: what they do and their defaults were nowhere in --help.
    from tests.conftest import bare_flags

    with pytest.raises(SystemExit):
        main(["--help"])
    assert bare_flags(capsys.readouterr().out) == []


def test_help_names_the_command(capsys) -> None:
    """--help's usage line is the command a user types, not the file argparse found (`usage: bench.py`)."""
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m agent.bench ")
