"""Write what a segmentation gives, at the video's own resolution:

    <output>/masks/<frame>.png   DAVIS-style palette PNG: value 0 background, k object k (palette colour k)
    <output>/overlay.mp4         the frames with the masks blended on (H.264, the video's frame rate)
    <output>/masks.json          COCO run-length encoded masks per frame and object (format in docs/OWN_VIDEOS.md)
    <output>/scribbles.json      the strokes segmented: DAVIS's "scribbles" and each round's ("rounds"; feed it
                                 back with --scribbles to replay the rounds)

Masks come from the working-size labels, upsampled per class (bilinear, then the most likely class), which
gives smooth edges instead of the staircase of a nearest-neighbour upscale.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from contextlib import suppress
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..data.synthetic import davis_palette
from ..errors import counted, first_line, one_line
from ..paths import file_in_the_way, folder_held, root_or_home, unused_path, unwritable_folder
from ..signals import deferred_signals
from .video import InputError, Progress, VideoSource, ffmpeg_path, user_path

log = logging.getLogger(__name__)

OUTPUT_FILES = ("masks", "overlay.mp4", "masks.json", "scribbles.json")
OVERLAY_ALPHA = 0.5
# libx264 encodes at most 16384 pixels a side: a wider or taller video (a panorama) left an empty overlay.mp4 and
# FFmpeg's error lines, exit 0. Such an overlay is scaled down to fit; the masks keep the video's size.
MAX_OVERLAY_SIDE = 16384
FORMAT = "simlearn-ivos masks 1"


def prepare_output(output: str | Path, overwrite: bool = False, video: Path | None = None,
                   how_to_overwrite: str = "pass --overwrite") -> Path:
    try:
        return _prepare_output(output, overwrite, video, how_to_overwrite)
    except OSError as error:  # e.g. a name too long for the file system
        raise InputError(f"{output}: not a usable output folder ({error.strerror or error})") from error


def _prepare_output(output: str | Path, overwrite: bool = False, video: Path | None = None,
                    how_to_overwrite: str = "pass --overwrite") -> Path:
    """The output folder, created; InputError for a non-empty one unless overwrite (then `export` replaces
    our files, and only when the masks are ready: a failed run leaves the folder, and any input in it, as it was),
    and never when one of those files is the `video` being exported or holds its frames. `how_to_overwrite` ends
    the non-empty error (the page has a checkbox, not a flag)."""
    if "\x00" in str(output):
        raise InputError("the output folder's path contains a NUL character")
    output = user_path(output)
    where = root_or_home(output)
    if where is not None:  # `/` as root, or `~`: the export's masks/ and files were written among everything there
        raise InputError(f"{output}: is {where}: an export writes masks/, overlay.mp4, masks.json and scribbles.json "
                         "into its folder: choose a folder of their own (a new one is made)")
    if video is not None and overwrite:
        replaced = [(output / name).resolve() for name in OUTPUT_FILES]
        source = Path(video).resolve()
        if any(source == path or path in source.parents for path in replaced):
            raise InputError(f"{output}: exporting there would replace the video it reads ({video}): choose "
                             "another output folder")
    if output.exists() and not output.is_dir():
        raise InputError(f"{output} is a file: the output must be a folder")
    blocker = file_in_the_way(output.parent)
    if blocker is not None:
        raise InputError(f"{blocker} is a file: the output must be a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise InputError(f"{output} is not empty: choose another output folder or {how_to_overwrite}")
    check_replaceable(output)
    # Masks or an overlay beside no masks.json are no earlier export (another tool's masks, ground truth): overwrite
    # deleted and replaced them without a word.
    if overwrite and not (output / "masks.json").is_file():
        foreign = sorted((output / "masks").glob("*.png")) + [p for p in [output / "overlay.mp4"] if p.is_file()]
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if foreign[1:] else ""
            raise InputError(f"{foreign[0]}{more}: not written by an export (no masks.json beside it), and the "
                             "export would replace it: move it away or choose another output folder")
    # An earlier export's folder that may not be written (read-only, another user's) passed the mkdir below, and
    # the export failed only once every mask was computed.
    locked = unwritable_folder(output) or unwritable_folder(output / "masks")
    if locked is not None:
        raise InputError(f"{output}: cannot write there (no permission to write in {locked}): choose another "
                         "output folder")
    try:
        (output / "masks").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{output}: cannot create the output folder ({error.strerror or error})") from error
    return output


def check_replaceable(output: Path) -> None:
    """InputError unless an export can replace its own files in `output`: `masks` a real folder (a link would
    send the deletion of old masks elsewhere), the others files (a folder there would fail the export halfway,
    after the earlier one was removed)."""
    masks = output / "masks"
    if masks.is_symlink() or (masks.exists() and not masks.is_dir()):
        raise InputError(f"{masks}: is a link or a file, where the export writes its masks folder: remove it or "
                         "choose another output folder")
    for name in OUTPUT_FILES[1:]:
        path = output / name
        if path.is_symlink() or path.is_dir():
            raise InputError(f"{path}: is a link or a folder, where the export writes a file: remove it or choose "
                             "another output folder")


def discard_empty_output(output: Path) -> None:
    """Remove the folders prepare_output made when they are still empty (`masks`, then `output`): a run that
    failed or was stopped before its export left them, and they refused the next try as "not empty"."""
    for folder in (output / "masks", output):
        with suppress(OSError):  # gone, or not empty after all: the error that ended the run is what counts
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def has_export(output: Path) -> bool:
    """Whether `output` holds a file an export writes."""
    return any((output / "masks").glob("*.png")) or any((output / name).exists() for name in OUTPUT_FILES[1:])


def _clear_output(output: Path) -> None:
    """Remove what an earlier export wrote (only that: a folder given by mistake keeps everything else)."""
    for stale in (output / "masks").glob("*.png"):
        stale.unlink()
    for name in OUTPUT_FILES[1:]:
        (output / name).unlink(missing_ok=True)


def upsample_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) uint8 labels -> (H, W) uint8; per-class bilinear then argmax, smooth edges."""
    if labels.shape == tuple(size):
        return labels
    classes = np.unique(labels)
    if len(classes) == 1:
        return np.full(size, classes[0], np.uint8)
    scores = np.stack([cv2.resize((labels == c).astype(np.uint8) * 255, size[::-1], interpolation=cv2.INTER_LINEAR)
                       for c in classes])
    return classes[scores.argmax(0)].astype(np.uint8)


def palette_colours() -> np.ndarray:
    return np.array(davis_palette(), np.uint8).reshape(256, 3)


def overlay(frame: np.ndarray, labels: np.ndarray, colours: np.ndarray | None = None) -> np.ndarray:
    """The frame with each object blended in its palette colour and outlined."""
    colours = palette_colours() if colours is None else colours
    out = frame.copy()
    objects = labels > 0
    out[objects] = (frame[objects] * (1 - OVERLAY_ALPHA) + colours[labels[objects]] * OVERLAY_ALPHA).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    grown = cv2.dilate(labels, kernel)
    edge = grown != cv2.erode(labels, kernel)
    out[edge] = colours[grown[edge]]
    return out


def rle(labels: np.ndarray, objects: list[int]) -> dict[str, dict]:
    """COCO RLE ({"size": [H, W], "counts": str}) of each object's binary mask."""
    from pycocotools import mask as mask_utils

    if not objects:
        return {}
    binary = np.asfortranarray(np.stack([labels == k for k in objects], -1).astype(np.uint8))
    encoded = mask_utils.encode(binary)
    return {str(k): {"size": [int(v) for v in e["size"]], "counts": e["counts"].decode("ascii")}
            for k, e in zip(objects, encoded, strict=True)}


def export(video: VideoSource, labels_at: Callable[[int], np.ndarray], output: Path, num_objects: int,
           scribbles: dict | None = None, progress: Progress | None = None, overwrite: bool = True) -> Path:
    """Write masks, overlay and masks.json for every frame into `output` (from prepare_output). Everything is
    written into a hidden folder inside it first and moved into place only when complete: a failed export
    leaves `output` as it was (an earlier export included), less the empty folders prepare_output made.
    `overwrite` False (prepare_output's): an export that another finished in `output` meanwhile is kept, and
    this one goes to `<output>-2` (InputError saying so)."""
    output = Path(output)
    try:
        stage = Path(tempfile.mkdtemp(prefix=".export-", dir=output))
        with folder_held(output):  # not halfway through another run's moves
            replacing = _export_id(output)
    except OSError as error:
        raise _not_written(output, error) or error from error
    try:
        _write(video, labels_at, stage, num_objects, scribbles, progress)
    except BaseException as error:
        shutil.rmtree(stage, ignore_errors=True)
        # Told before the empty folders prepare_output made go: a full disk in a new output folder was "the output
        # folder was removed while this run went on".
        line = _not_written(output, error) if isinstance(error, OSError) else None
        discard_empty_output(output)
        if line is None:
            raise
        raise line from error
    # Ctrl-C or SIGTERM between removing the earlier export and moving the last new file in lost both (the rest
    # of the new one went with its hidden folder): the move completes first, the interrupt comes after it.
    keep_stage = False
    try:
        # Held while the files are moved in: two runs (overwrite or not) whose moves interleaved left one's masks
        # beside the other's masks.json. The later finds the first's export and moves its own aside.
        with folder_held(output), deferred_signals():
            check_replaceable(output)  # again: the folder may have changed while the masks were computed
            # Two runs given one new folder (a script's `&`), or one folder with overwrite: the later replaced the
            # first's export, which is not the one it was to replace.
            if has_export(output) and (not overwrite or _export_id(output) != replacing):
                kept = unused_path(output, keep_suffix=False)
                why = "not the export this run was to replace" if overwrite else "not replaced without overwrite"
                other = (f"{output}: another export was written there while this one ran; it is kept ({why}), and "
                         "this one's results")
                try:
                    _move_aside(stage, kept)
                except OSError as error:
                    keep_stage = True
                    raise InputError(f"{other} could not be moved to {kept} ({error.strerror or first_line(error)}):"
                                     f" they are in {stage}") from error
                raise InputError(f"{other} are in {kept}")
            _clear_output(output)
            (output / "masks").mkdir(parents=True, exist_ok=True)
            for png in (stage / "masks").iterdir():
                os.replace(png, output / "masks" / png.name)
            for name in OUTPUT_FILES[1:]:
                if (stage / name).exists():
                    os.replace(stage / name, output / name)
    finally:
        if not keep_stage:
            shutil.rmtree(stage, ignore_errors=True)
    log.info("wrote %s, overlay.mp4 and masks.json to %s", counted(video.num_frames, "mask"), output)
    return output


def _export_id(output: Path) -> tuple[int, int] | None:
    """Which export `output` holds (its masks.json's inode and time; None: none), to tell the one a run was to
    replace from one another run moved in meanwhile."""
    with suppress(OSError):
        stat = (output / "masks.json").stat()
        return stat.st_ino, stat.st_mtime_ns
    return None


def _move_aside(stage: Path, kept: Path) -> None:
    """Move the export staged inside the output folder to `kept`, its sibling: a rename, or a copy where `kept` lies
    on another file system (the output a mount point: the rename failed with EXDEV, and the staged export was then
    deleted). OSError when neither works, `stage` untouched; the caller removes `stage` once this returns."""
    try:
        os.rename(stage, kept)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    kept.mkdir()  # made here, so that a failed copy removes only what it wrote
    try:
        shutil.copytree(stage, kept, dirs_exist_ok=True)
    except BaseException as error:
        shutil.rmtree(kept, ignore_errors=True)
        if isinstance(error, shutil.Error):
            raise OSError(_not_copied(error, kept)) from error
        raise


def _not_copied(error: shutil.Error, kept: Path) -> str:
    """copytree's error, one (source, destination, why) per file it could not copy, as one short line: the count
    and the first file. Its text was the whole list (a full file system: every mask, thousands of characters)."""
    failed = [entry for entry in error.args[0] if isinstance(entry, tuple) and len(entry) == 3]
    if not failed:
        return first_line(error)
    _, first, why = failed[0]
    why = str(why).removesuffix(f": {str(first)!r}")  # the OSError's text names the file again
    with suppress(ValueError):
        first = Path(first).relative_to(kept)
    return f"{counted(len(failed), 'file')} not copied, the first {first}: {why}"


def _not_written(output: Path, error: OSError) -> InputError | None:
    """The one line for an export the file system refused in `output`, naming it rather than the hidden folder
    inside it that the OSError names (`out/.export-8f4_4jk0: No such file or directory` when the output folder was
    removed while the masks were computed; `Permission denied` once made read-only); None for an OSError about
    another file (the video's)."""
    if not output.is_dir():
        return InputError(f"{output}: the output folder was removed while this run went on, so nothing was written "
                          "(run it again)")
    if isinstance(error.filename, str | bytes | os.PathLike):
        named, folder = Path(os.path.abspath(error.filename)), Path(os.path.abspath(output))
        if named != folder and folder not in named.parents:
            return None
    return InputError(f"{output}: cannot write the export there ({error.strerror or first_line(error)}); the folder "
                      "is as it was")


class OverlayWriter:
    """FFmpeg encoding raw RGB frames into `path` (H.264, `fps`). imageio-ffmpeg's write_frames never looks at
    FFmpeg's exit status: a full disk or a file-size limit (FFmpeg killed by SIGXFSZ) cut overlay.mp4 short, with
    no index (no player opens it), and the export was published, exit 0, FFmpeg's own error lines on the terminal.
    Here FFmpeg's messages are kept, and a failure is an OSError naming the file and FFmpeg's last line."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float):
        import imageio_ffmpeg

        self.path = Path(path)
        rate = Fraction(fps).limit_denominator()
        # H.264's 4:2:0 needs even sides: an odd one is padded by a black pixel (FFmpeg's pad filter), not
        # stretched to the even size (imageio-ffmpeg's macro_block_size did, with its WARNING). -crf 15 is
        # imageio-ffmpeg's quality 7, which the overlays were written at.
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{size[0]}x{size[1]}", "-r", str(rate), "-i", "-", "-an", "-vcodec", "libx264",
                   "-pix_fmt", "yuv420p", "-crf", "15", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-preset", "veryfast",
                   "-movflags", "+faststart", ffmpeg_path(self.path)]
        self.messages = tempfile.TemporaryFile()  # a file, not a pipe: a pipe nobody reads fills and stalls FFmpeg
        try:
            # Its own session: Ctrl-C at the terminal reaches this process, which stops FFmpeg itself.
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            stderr=self.messages, start_new_session=True)
        except BaseException:
            self.messages.close()
            raise

    def send(self, frame: np.ndarray) -> None:
        try:
            self.process.stdin.write(np.ascontiguousarray(frame).tobytes())
        except OSError:  # FFmpeg has stopped (a broken pipe): its own error says why
            raise self._failure() from None

    def close(self) -> None:
        """Waits for FFmpeg to finish the file; OSError when it did not."""
        with suppress(OSError):  # a broken pipe at the end: the exit status says it all
            self.process.stdin.close()
        if self.process.wait() != 0:
            raise self._failure()
        self.messages.close()

    def abort(self) -> None:
        """Stops FFmpeg (a failed or stopped export: its file is removed with the export's hidden folder)."""
        if self.process.poll() is None:
            self.process.kill()
        with suppress(OSError):
            self.process.stdin.close()
        self.process.wait()
        self.messages.close()

    def _failure(self) -> OSError:
        with suppress(OSError):  # FFmpeg has exited or is exiting: whatever is buffered cannot go
            self.process.stdin.close()
        code = self.process.wait()
        self.messages.seek(0)
        lines = [line.strip() for line in self.messages.read().decode("utf-8", "replace").splitlines() if line.strip()]
        self.messages.close()
        if code < 0:  # SIGXFSZ: a file-size limit
            why = f"FFmpeg was killed by {signal.Signals(-code).name}, {signal.strsignal(-code)}"
        else:  # "[out#0/mp4 @ 0x55d0e11dc500] Error closing file: No space left on device": the part after "] "
            why = f"FFmpeg: {lines[-1].rpartition('] ')[2]}" if lines else f"FFmpeg exited with code {code}"
        return OSError(errno.EIO, f"{self.path.name}: {one_line(why)}", str(self.path))


def _write(video: VideoSource, labels_at: Callable[[int], np.ndarray], output: Path, num_objects: int,
           scribbles: dict | None, progress: Progress | None) -> None:
    (output / "masks").mkdir(parents=True, exist_ok=True)
    size = (video.height, video.width)
    objects = list(range(1, num_objects + 1))
    palette, colours = davis_palette(), palette_colours()
    scale = min(1.0, MAX_OVERLAY_SIDE / max(size))
    overlay_size = tuple(min(MAX_OVERLAY_SIDE, max(1, round(side * scale))) for side in (video.width, video.height))
    if scale < 1:
        log.info("%s: %dx%d frames, more than H.264's %d pixels a side: overlay.mp4 is %dx%d", video.path,
                 video.width, video.height, MAX_OVERLAY_SIDE, *overlay_size)
    writer = OverlayWriter(output / "overlay.mp4", overlay_size, video.fps)
    frames_json = []
    try:
        for index, frame in enumerate(video.frames()):
            labels = upsample_labels(labels_at(index), size)
            name = f"masks/{video.frame_names[index]}.png"
            png = Image.fromarray(labels, mode="L")
            png.putpalette(palette)  # "L" with a palette becomes "P" with the ids as indices
            png.save(output / name, compress_level=3)
            tinted = overlay(frame, labels, colours)
            if scale < 1:
                tinted = cv2.resize(tinted, overlay_size, interpolation=cv2.INTER_AREA)
            writer.send(tinted)
            frames_json.append({"index": index, "mask": name, "objects": rle(labels, objects)})
            if progress:
                progress("export", index + 1, video.num_frames)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    meta = {"format": FORMAT, "rle": "coco", "video": str(video.path), "width": video.width,
            "height": video.height, "num_frames": video.num_frames, "fps": video.fps, "objects": objects,
            "frames": frames_json}
    (output / "masks.json").write_text(json.dumps(meta))
    if scribbles is not None:
        (output / "scribbles.json").write_text(json.dumps(scribbles))
