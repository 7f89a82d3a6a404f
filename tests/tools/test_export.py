"""What an export writes: palette PNGs, COCO RLE that decodes to them, an overlay video; output safety."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from agent.tools.export import export, overlay, prepare_output, upsample_labels
from agent.tools.video import InputError, open_video


def test_non_empty_output_is_refused_and_overwrite_replaces_only_our_files_once_the_masks_exist(
        small_video, tmp_path):
    out = tmp_path / "out"
    prepare_output(out)
    (out / "masks" / "99999.png").write_bytes(b"old")
    (out / "masks.json").write_text("{}")
    (out / "scribbles.json").write_text('{"the": "input"}')  # the docs feed it back with --scribbles
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not empty"):
        prepare_output(out)
    prepare_output(out, overwrite=True)
    # Nothing goes before the masks are ready: a run that fails now loses no earlier result or input.
    assert (out / "scribbles.json").read_text() == '{"the": "input"}' and (out / "masks" / "99999.png").exists()
    video = open_video(small_video.video)
    export(video, lambda i: small_video.masks[i], out, 2, scribbles={"scribbles": []})
    assert sorted(p.name for p in out.iterdir()) == ["masks", "masks.json", "notes.txt", "overlay.mp4",
                                                     "scribbles.json"]
    assert not (out / "masks" / "99999.png").exists() and json.loads((out / "masks.json").read_text())["frames"]


def test_overwrite_never_replaces_masks_or_an_overlay_no_export_wrote(tmp_path):
    """A folder's own masks/ (ground truth, another tool's results) or overlay.mp4, with no masks.json beside them,
    were deleted and replaced by an export with overwrite, without a word."""
    out = tmp_path / "clip"
    (out / "masks").mkdir(parents=True)
    for index in range(3):
        (out / "masks" / f"{index:05d}.png").write_bytes(b"truth")
    with pytest.raises(InputError, match=r"masks/00000.png \(and 2 more\): not written by an export \(no masks.json"):
        prepare_output(out, overwrite=True)
    for name in ("00000.png", "00001.png", "00002.png"):
        (out / "masks" / name).unlink()
    (out / "overlay.mp4").write_bytes(b"mine")
    with pytest.raises(InputError, match=r"overlay.mp4: not written by an export"):
        prepare_output(out, overwrite=True)
    (out / "masks.json").write_text("{}")  # an earlier export's: replaced
    assert prepare_output(out, overwrite=True) == out
    assert (out / "overlay.mp4").read_bytes() == b"mine"  # nothing goes before the new masks are ready


def test_an_output_below_a_file_is_one_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        prepare_output(tmp_path / "file" / "out")


def test_an_earlier_export_that_may_not_be_written_is_refused_before_any_work(tmp_path, monkeypatch):
    out = tmp_path / "out"
    prepare_output(out)
    (out / "masks" / "00000.png").write_bytes(b"earlier")
    (out / "masks.json").write_text("{}")
    locked = {out, out / "masks"}
    access = os.access
    # Tests run as root, which may write anywhere: a read-only folder (or read-only mount) simulated.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) not in locked and access(path, mode))
    for folder in (out, out / "masks"):  # the mkdir passed; the export failed after every mask was computed
        locked = {folder}
        message = f"out: cannot write there (no permission to write in {folder})"
        with pytest.raises(InputError, match=re.escape(message)):
            prepare_output(out, overwrite=True)
    assert (out / "masks" / "00000.png").read_bytes() == b"earlier"


def test_an_export_finished_meanwhile_in_a_new_folder_is_kept_not_replaced(small_video, tmp_path):
    video = open_video(small_video.video)
    out = prepare_output(tmp_path / "out")  # new: the run did not ask to overwrite

    def other_run_finishes_first(index):  # another run given the same new folder (a script's `&`), prepared too
        if index == 0:
            export(video, lambda i: small_video.masks[i], out, 2, {"scribbles": "first"}, overwrite=False)
        return np.zeros_like(small_video.masks[index])

    with pytest.raises(InputError, match=r"out: another export was written there while this one ran; it is kept "
                                         r".* this one's results are in .*out-2$"):
        export(video, other_run_finishes_first, out, 2, {"scribbles": "second"}, overwrite=False)
    # The later run replaced the first's masks without a word; now both are there.
    assert json.loads((out / "scribbles.json").read_text()) == {"scribbles": "first"}
    assert np.asarray(Image.open(out / "masks" / "00000.png")).any()
    kept = tmp_path / "out-2"
    assert json.loads((kept / "scribbles.json").read_text()) == {"scribbles": "second"}
    assert len(list((kept / "masks").glob("*.png"))) == 8 and not np.asarray(Image.open(kept / "masks" / "00000.png")).any()
    assert not list(out.glob(".export-*"))


def test_an_export_moved_aside_to_another_file_system_is_copied_never_lost(small_video, tmp_path, monkeypatch):
    """An output folder that is a mount point: `<output>-2` lies on another file system, so moving this run's export
    there failed (EXDEV), and its hidden staging folder was deleted with every mask. Simulated: tests cannot mount."""
    import errno
    import shutil

    video = open_video(small_video.video)
    out = prepare_output(tmp_path / "out")
    kept = tmp_path / "out-2"
    rename = os.rename

    def across_devices(src, dst):
        if Path(dst) == kept:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src), None, str(dst))
        rename(src, dst)

    monkeypatch.setattr(os, "rename", across_devices)

    def other_run_finishes_first(index):
        if index == 0:
            export(video, lambda i: small_video.masks[i], out, 2, {"scribbles": "first"}, overwrite=False)
        return np.zeros_like(small_video.masks[index])

    with pytest.raises(InputError, match=r"this one's results are in .*out-2$"):
        export(video, other_run_finishes_first, out, 2, {"scribbles": "second"}, overwrite=False)
    assert json.loads((kept / "scribbles.json").read_text()) == {"scribbles": "second"}
    assert len(list((kept / "masks").glob("*.png"))) == 8 and (kept / "overlay.mp4").stat().st_size > 0
    assert not list(out.glob(".export-*")) and json.loads((out / "scribbles.json").read_text()) == {"scribbles": "first"}

    # The copy refused too (that file system full): the export stays in its staging folder, named.
    shutil.rmtree(kept)
    monkeypatch.setattr(shutil, "copytree", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC,
                                                                                        "No space left on device")))
    with pytest.raises(InputError, match=r"could not be moved to .*out-2 \(No space left on device\): they are in "
                                         r".*out/\.export-\w+$") as refused:
        export(video, lambda i: np.zeros_like(small_video.masks[i]), out, 2, {"scribbles": "third"}, overwrite=False)
    (staged,) = out.glob(".export-*")
    assert str(staged) in str(refused.value) and not kept.exists()
    assert json.loads((staged / "scribbles.json").read_text()) == {"scribbles": "third"}
    assert len(list((staged / "masks").glob("*.png"))) == 8


def test_upsampling_is_smooth_and_keeps_classes():
    labels = np.zeros((10, 10), np.uint8)
    labels[2:8, 2:8] = 2
    big = upsample_labels(labels, (40, 40))
    assert big.shape == (40, 40) and set(np.unique(big)) == {0, 2}
    assert abs(int((big == 2).sum()) - 24 * 24) < 60
    assert upsample_labels(labels, (10, 10)) is labels


def test_export_round_trip(small_video, tmp_path):
    video = open_video(small_video.video)
    truth = small_video.masks
    half = [truth[i][::2, ::2] for i in range(len(truth))]  # working size: half the video's
    out = export(video, lambda i: half[i], prepare_output(tmp_path / "out"), 2, scribbles={"scribbles": []})
    meta = json.loads((out / "masks.json").read_text())
    assert (meta["width"], meta["height"], meta["num_frames"], meta["objects"]) == (426, 240, 8, [1, 2])
    for entry in meta["frames"]:
        png = Image.open(out / entry["mask"])
        assert png.mode == "P" and png.size == (426, 240)
        labels = np.asarray(png)
        for key, encoded in entry["objects"].items():
            decoded = mask_utils.decode({"size": encoded["size"], "counts": encoded["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), labels == int(key))
        assert (labels == truth[entry["index"]]).mean() > 0.97  # upsampled from half size
    overlay_video = open_video(out / "overlay.mp4")
    assert (overlay_video.num_frames, overlay_video.width, overlay_video.height) == (8, 426, 240)
    assert json.loads((out / "scribbles.json").read_text()) == {"scribbles": []}


def test_overlay_tints_objects_only():
    frame = np.full((6, 6, 3), 200, np.uint8)
    labels = np.zeros((6, 6), np.uint8)
    labels[2:4, 2:4] = 1
    out = overlay(frame, labels)
    assert np.array_equal(out[0, 0], frame[0, 0]) and not np.array_equal(out[2, 2], frame[2, 2])


def test_a_failed_export_leaves_the_folder_as_it_was(small_video, tmp_path):
    video = open_video(small_video.video)

    def failing(index):
        if index == 5:
            raise RuntimeError("the disk is full")
        return small_video.masks[index]

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="disk is full"):
        export(video, failing, prepare_output(fresh), 2)
    assert not fresh.exists()  # nothing half-written, and the next try is not refused as "not empty"
    earlier = export(video, lambda i: small_video.masks[i], prepare_output(tmp_path / "out"), 2)
    before = {p.relative_to(earlier): p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="disk is full"):
        export(video, failing, prepare_output(earlier, overwrite=True), 2)
    assert {p.relative_to(earlier): p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == before


def test_a_link_or_folder_where_an_export_writes_is_refused_and_nothing_is_lost(small_video, tmp_path):
    video = open_video(small_video.video)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.png").write_bytes(b"not ours")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "masks").symlink_to(elsewhere)  # the old masks' deletion would have followed it
    with pytest.raises(InputError, match="masks: is a link or a file"):
        prepare_output(linked, overwrite=True)
    assert (elsewhere / "precious.png").read_bytes() == b"not ours"

    earlier = export(video, lambda i: small_video.masks[i], prepare_output(tmp_path / "out"), 2)
    before = {p.relative_to(earlier): p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
    (earlier / "masks.json").unlink()
    (earlier / "masks.json").mkdir()  # would have failed the move after the earlier export was deleted
    del before[(earlier / "masks.json").relative_to(earlier)]
    with pytest.raises(InputError, match="masks.json: is a link or a folder"):
        prepare_output(earlier, overwrite=True)
    with pytest.raises(InputError, match="masks.json: is a link or a folder"):  # changed while it ran
        export(video, lambda i: small_video.masks[i], earlier, 2)
    assert {p.relative_to(earlier): p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == before
    assert not list(earlier.glob(".export-*"))


def test_a_video_wider_than_h264_allows_gets_a_scaled_overlay(tmp_path):
    """libx264 encodes at most 16384 pixels a side: a panorama's overlay.mp4 was empty, exit 0."""
    import imageio_ffmpeg

    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(2):
        Image.fromarray(np.full((4, 16400, 3), 60 * index, np.uint8)).save(folder / f"{index:05d}.png")
    video = open_video(folder)
    output = prepare_output(tmp_path / "out")
    export(video, lambda index: np.ones((4, 16400), np.uint8), output, 1)
    assert np.asarray(Image.open(output / "masks" / "00001.png")).shape == (4, 16400)
    reader = imageio_ffmpeg.read_frames(str(output / "overlay.mp4"))
    assert next(reader)["size"] == (16384, 4)
    assert len(list(reader)) == 2


def test_an_overlay_of_odd_size_is_padded_not_stretched(tmp_path, caplog):
    """H.264 needs even sides: imageio-ffmpeg stretched a 641x359 overlay to 642x360 (a WARNING said so), each
    column and row moved by up to a pixel against its mask. It is padded by a black column and row now."""
    import imageio_ffmpeg

    folder = tmp_path / "frames"
    folder.mkdir()
    frame = np.zeros((359, 641, 3), np.uint8)
    frame[:, -1] = frame[-1] = 255  # the last column and row white
    for index in range(2):
        Image.fromarray(frame).save(folder / f"{index:05d}.png")
    video = open_video(folder)
    output = export(video, lambda index: np.zeros((359, 641), np.uint8), prepare_output(tmp_path / "out"), 1)
    reader = imageio_ffmpeg.read_frames(str(output / "overlay.mp4"))
    size = next(reader)["size"]
    assert size == (642, 360)
    shown = np.frombuffer(next(reader), np.uint8).reshape(360, 642, 3).mean(axis=2)
    assert shown[:358, 640].mean() > 240 and shown[:, 641].mean() < 15  # the white column in place, then the pad
    assert shown[358, :640].mean() > 240 and shown[359].mean() < 15
    assert (shown[:358, :640] < 15).mean() > 0.99  # nothing stretched into the black
    assert "macro_block_size" not in caplog.text
    reader.close()


def test_an_export_into_a_relative_folder_with_a_colon_is_written(small_video, tmp_path, monkeypatch):
    """FFmpeg read `run:1/overlay.mp4` as the protocol `run:`: the export failed once every mask was computed."""
    monkeypatch.chdir(tmp_path)
    video = open_video(small_video.folder)
    output = prepare_output("run:1")
    export(video, lambda index: np.zeros((video.height, video.width), np.uint8), output, 1)
    assert (tmp_path / "run:1" / "overlay.mp4").stat().st_size > 0


def test_a_copy_aside_that_fails_file_by_file_is_one_short_line(small_video, tmp_path, monkeypatch):
    """copytree reports every file it could not copy: the error line quoted that whole list (a full file system:
    every mask's source, destination and error, thousands of characters). Now the count and the first file."""
    import errno
    import shutil

    video = open_video(small_video.video)
    out = prepare_output(tmp_path / "out")
    export(video, lambda i: small_video.masks[i], out, 2, {"scribbles": "first"}, overwrite=False)
    rename = os.rename

    def across_devices(src, dst):
        if Path(dst).name == "out-2":
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src), None, str(dst))
        rename(src, dst)

    def disk_full(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "rename", across_devices)
    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(InputError) as refused:
        export(video, lambda i: np.zeros_like(small_video.masks[i]), out, 2, {"scribbles": "second"}, overwrite=False)
    (staged,) = out.glob(".export-*")
    line = str(refused.value)
    assert re.fullmatch(rf".* could not be moved to {re.escape(str(tmp_path / 'out-2'))} \(11 files not copied, the "
                        rf"first (masks/)?[\w.]+: \[Errno 28\] No space left on device\): they are in "
                        rf"{re.escape(str(staged))}", line), line
    assert len(line.replace(str(tmp_path), "")) < 300 and "\n" not in line  # the whole list before
    assert len(list((staged / "masks").glob("*.png"))) == 8 and not (tmp_path / "out-2").exists()


def test_two_overwrite_exports_moved_in_at_once_never_mix(small_video, tmp_path, monkeypatch):
    """Two runs with --overwrite on one folder, their final moves interleaved (a window of milliseconds, made
    deterministic here: run A pauses between moving its masks and its other files while run B moves in): out held
    B's masks beside A's masks.json and overlay. Now A's export is there whole, and B's, kept aside, in out-2."""
    import threading

    from agent.tools import export as export_module

    video = open_video(small_video.video)
    out = export(video, lambda i: np.zeros_like(small_video.masks[i]), prepare_output(tmp_path / "out"), 2,
                 {"scribbles": "earlier"})
    a_masks, b_masks = small_video.masks, np.where(small_video.masks > 0, 3 - small_video.masks, 0)
    b_writing, a_paused, b_at_lock, release_a = (threading.Event() for _ in range(4))
    errors: dict[str, BaseException] = {}
    replace, held = os.replace, export_module.folder_held
    threads: dict[str, threading.Thread] = {}

    def pausing_replace(src, dst):
        if threading.current_thread() is threads["A"] and Path(dst).name == "overlay.mp4":
            a_paused.set()  # its masks are moved in, the rest not yet
            release_a.wait(10)
        replace(src, dst)

    def watched_hold(folder):
        if threading.current_thread() is threads["B"] and b_writing.is_set():
            b_at_lock.set()  # B's final moves begin: it waits for A's (or, unguarded, goes on)
        return held(folder)

    def b_labels(index):
        if index == 0:  # B's export has begun (and seen the earlier export) before A's moves
            b_writing.set()
            a_paused.wait(10)
        return b_masks[index]

    def run(name, labels_at, record):
        try:
            export(video, labels_at, prepare_output(out, overwrite=True), 2, {"scribbles": record})
        except BaseException as error:  # noqa: BLE001 (asserted below)
            errors[name] = error
        finally:
            if name == "B":  # done (unguarded, it never waits)
                b_at_lock.set()

    monkeypatch.setattr(os, "replace", pausing_replace)
    monkeypatch.setattr(export_module, "folder_held", watched_hold)
    threads["B"] = threading.Thread(target=run, args=("B", b_labels, "B"))
    threads["A"] = threading.Thread(target=run, args=("A", lambda i: a_masks[i], "A"))
    threads["B"].start()
    assert b_writing.wait(10)
    threads["A"].start()
    assert a_paused.wait(10) and b_at_lock.wait(10)
    release_a.set()
    for thread in threads.values():
        thread.join(10)
    for folder, record, masks in ((out, "A", a_masks), (tmp_path / "out-2", "B", b_masks)):
        assert json.loads((folder / "scribbles.json").read_text()) == {"scribbles": record}
        written = np.stack([np.asarray(Image.open(folder / "masks" / f"{i:05d}.png")) for i in range(8)])
        assert (written == masks).all(), folder
    assert "A" not in errors and isinstance(errors.get("B"), InputError), errors
    assert re.search(r"out: another export was written there while this one ran; it is kept \(not the export this "
                     r"run was to replace\), and this one's results are in .*out-2$", str(errors["B"]))
    assert not list(out.glob(".export-*"))


def test_ctrl_c_while_an_export_is_moved_into_place_loses_neither_export(small_video, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, as agent.segment turns it) once the earlier export's files were removed and before the
    new ones were all moved in: the rest of the new export was deleted with its hidden folder, so neither export
    was left. The move now completes first; the interrupt comes after it."""
    import signal

    from agent.tools import export as export_module

    video = open_video(small_video.video)
    out = export(video, lambda i: np.zeros_like(small_video.masks[i]), prepare_output(tmp_path / "out"), 2)
    clear = export_module._clear_output

    def interrupted_once_cleared(output):
        clear(output)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(export_module, "_clear_output", interrupted_once_cleared)
    with pytest.raises(KeyboardInterrupt):
        export(video, lambda i: small_video.masks[i], prepare_output(out, overwrite=True), 2)
    masks = np.stack([np.asarray(Image.open(out / "masks" / f"{i:05d}.png")) for i in range(8)])
    assert (masks == small_video.masks).all() and (out / "masks.json").exists() and (out / "overlay.mp4").exists()
    assert sorted(p.name for p in out.iterdir()) == ["masks", "masks.json", "overlay.mp4"]


def test_an_output_folder_removed_or_made_read_only_while_the_masks_are_computed_is_one_line_naming_it(
        small_video, tmp_path, monkeypatch):
    """The error named the hidden folder inside the output (`out/.export-8f4_4jk0: No such file or directory`),
    no path the user gave."""
    import shutil
    import tempfile

    video = open_video(small_video.video)
    out = prepare_output(tmp_path / "out")
    shutil.rmtree(out)  # removed before the export began (while the masks were computed)
    removed = f"{out}: the output folder was removed while this run went on, so nothing was written"
    with pytest.raises(InputError, match=re.escape(removed)):
        export(video, lambda i: small_video.masks[i], out, 2)
    out = prepare_output(tmp_path / "out")

    def removed_halfway(index):
        if index == 3:
            shutil.rmtree(out)
        return small_video.masks[index]

    with pytest.raises(InputError, match=re.escape(removed)):
        export(video, removed_halfway, out, 2)
    out = prepare_output(tmp_path / "out")

    def read_only(prefix, dir):  # noqa: A002 (tests run as root, which may write anywhere: the refusal simulated)
        raise PermissionError(13, "Permission denied", str(Path(dir) / f"{prefix}x1y2z3"))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(InputError, match=re.escape(f"{out}: cannot write the export there (Permission denied); "
                                                   "the folder is as it was")):
        export(video, lambda i: small_video.masks[i], out, 2)


def test_an_overlay_ffmpeg_could_not_write_fails_the_export_and_publishes_nothing(small_video, tmp_path, monkeypatch):
    """imageio-ffmpeg never looked at FFmpeg's exit status: a full disk or a file-size limit cut overlay.mp4 short
    (no index, no player opens it), or left none, and the export was published, exit 0."""
    import resource

    from agent.tools import export as export_module

    video = open_video(small_video.video)
    earlier = export(video, lambda i: small_video.masks[i], prepare_output(tmp_path / "out"), 2)
    before = {p.relative_to(earlier): p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
    # FFmpeg cannot open its output (a folder that is not there): the masks and masks.json are written all the same.
    monkeypatch.setattr(export_module, "ffmpeg_path", lambda path: str(tmp_path / "gone" / "overlay.mp4"))
    with pytest.raises(InputError, match=re.escape(f"{earlier}: cannot write the export there (overlay.mp4: FFmpeg: ")):
        export(video, lambda i: small_video.masks[i], prepare_output(earlier, overwrite=True), 2)
    assert {p.relative_to(earlier): p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == before
    monkeypatch.undo()
    # A file-size limit: FFmpeg is killed by SIGXFSZ halfway through the overlay (this process ignores it, as
    # Python does, and its small files fit).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    fresh = tmp_path / "fresh"
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
    try:
        with pytest.raises(InputError, match=re.escape(f"{fresh}: cannot write the export there (overlay.mp4: FFmpeg "
                                                       "was killed by SIGXFSZ")):
            export(video, lambda i: small_video.masks[i], prepare_output(fresh), 2)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert not fresh.exists()


def test_a_full_disk_in_a_new_output_folder_is_named_so(small_video, tmp_path, monkeypatch):
    """It was "the output folder was removed while this run went on": the empty folder the run made was removed
    before the error was told."""
    video = open_video(small_video.video)
    out = prepare_output(tmp_path / "out")

    def full(self, path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(InputError, match=re.escape(f"{out}: cannot write the export there (No space left on device); "
                                                   "the folder is as it was")):
        export(video, lambda i: small_video.masks[i], out, 2)
    assert not out.exists()
