"""Videos as the tools see them: a file (anything FFmpeg decodes: mp4, avi, mov, ...) or a folder of frame
images, read frame by frame so that long videos never sit in memory at full resolution; and the same frames
at a working size, kept JPEG-encoded in memory (a 1,000-frame 480p video takes ~140 MB instead of 1.2 GB).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..data.davis import (
    GREY16_MODES,
    IMAGE_ERRORS,
    TRANSPOSING_ORIENTATIONS,
    draft_jpeg,
    exif_orientation,
    frame_mode_problem,
    image_count,
    narrow_grey16_levels,
    rgb_pixels,
    upright,
)
from ..errors import counted, first_line
from ..paths import expand_user, is_hidden, odd_entry, special_file

log = logging.getLogger(__name__)


def _not_a_size_notice(record: logging.LogRecord) -> bool:
    """imageio-ffmpeg warns "The frame size for reading (1080, 1920) is different from the source frame size
    (1920, 1080)" whenever FFmpeg turns a phone's video by its rotation metadata (as players show it), or the stream
    it reads is not the file's first: three WARNING lines for every portrait phone video, read as if the frames had
    been resized. Neither is a fault; a size that really changes is decode_pass's to find."""
    return "is different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_not_a_size_notice)

# .jpe and .jfif are JPEG too (Windows browsers save JPEGs as .jfif).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Photo formats that are not read (HEIC from iPhones, which PIL cannot decode; GIF, camera raw, ...): a frame in
# one, among the others, was left out without a word, its mask missing and JSON strokes after it on other frames.
UNREAD_IMAGE_SUFFIXES = (".heic", ".heif", ".avif", ".jxl", ".gif", ".jp2", ".j2k", ".tga", ".ppm", ".pgm", ".pnm",
                         ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".exr")
# The short side of the frames the agent sees: DAVIS's 480p, the size the method was tuned at (the backbone
# itself sees at most 1.5x the checkpoint's 240 rows, see AgentConfig.inference_scale).
DEFAULT_WORKING_SIDE = 480
# The browser page's largest upload (agent.app): a long 1080p video; more would only fill the temporary folder.
DEFAULT_MAX_UPLOAD_MB = 2048
JPEG_QUALITY = 95
DEFAULT_FPS = 24.0
# Every decoded frame once, as counted (count_frames_and_secs decodes to the null muxer, which passes frames through):
# to raw video FFmpeg keeps a constant rate by default, so a variable-frame-rate video (phones record them) came
# with frames repeated in its gaps, and the first N of those were taken: later frames were never segmented.
DECODE_PARAMS = ["-fps_mode", "passthrough"]

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class InputError(ValueError):
    """A video, scribble or output path the tools cannot use; the message is one line saying what to do."""


def ffmpeg_path(path: str | Path) -> str:
    """`path` as FFmpeg must be given it: absolute. FFmpeg reads a relative name with a colon (`take:2.mp4`,
    `run:1/overlay.mp4`) as a protocol (`take:`): such a video was "not a video FFmpeg can read", and an export
    into such a folder failed ("Protocol not found") once every mask was computed."""
    return str(Path(path).absolute())


def natural_key(path: Path) -> list:
    """frame2 before frame10: digit runs compare as numbers. The runs are split's odd parts: str.isdigit() also
    holds for `²` or `①`, which int() refuses (a ValueError traceback for a frame named `²1.jpg`)."""
    return [int(part) if index % 2 else part.lower() for index, part in enumerate(re.split(r"(\d+)", path.name))]


@dataclass
class VideoSource:
    """A video file or a folder of frames; `frames()` yields (H, W, 3) uint8 RGB frames in order."""

    path: Path
    num_frames: int
    height: int
    width: int
    fps: float
    frame_paths: list[Path] | None = None  # a folder of frames; None for a video file
    frame_names: list[str] = field(default_factory=list)  # output file stems, one per frame
    grey16_levels: tuple[int, int] | None = None  # 16-bit grey frames of a narrow range: read from lo..hi (see below)

    @property
    def name(self) -> str:
        # Of the absolute path: `agent.app .` in a frame folder named nothing, and the page offered `-masks` as the
        # export folder (`..` too: `..-masks`).
        path = Path(os.path.abspath(self.path))
        return path.stem if self.frame_paths is None else path.name

    def frames(self) -> Iterator[np.ndarray]:
        if self.frame_paths is not None:
            for path in self.frame_paths:
                yield _read_image(path, (self.height, self.width), self.grey16_levels)
            return
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(ffmpeg_path(self.path), output_params=DECODE_PARAMS)
        try:
            # Read again (an export): moved, deleted or replaced since it was opened, the export said "OSError" or
            # numpy's "cannot reshape array of size 28800 into shape (64,96,3)".
            try:
                meta = next(reader)  # the metadata
            except OSError as error:
                gone = "removed" if not self.path.exists() else "changed: FFmpeg cannot read it"
                raise InputError(f"{self.path}: {gone} since it was opened ({first_line(error)})") from error
            size = tuple(int(v) for v in meta["size"])
            if size != (self.width, self.height):
                raise InputError(f"{self.path}: changed since it was opened: its frames are {size[0]}x{size[1]} "
                                 f"now, not {self.width}x{self.height}")
            count = 0
            for raw in reader:
                if count == self.num_frames:
                    break
                yield np.frombuffer(raw, np.uint8).reshape(self.height, self.width, 3)
                count += 1
        finally:
            reader.close()  # stops the ffmpeg process
        if count < self.num_frames:
            raise InputError(f"{self.path}: FFmpeg delivered {counted(count, 'frame')}, {self.num_frames} were counted")


def _read_image(path: Path, shape: tuple[int, int] | None = None,
                grey16_levels: tuple[int, int] | None = None) -> np.ndarray:
    try:
        with Image.open(path) as image:
            frame = rgb_pixels(upright(image), grey16_levels)
    except IMAGE_ERRORS as error:
        raise InputError(f"cannot read image {path} ({error})") from error
    if shape is not None and frame.shape[:2] != shape:
        raise InputError(f"{path} is {frame.shape[1]}x{frame.shape[0]}, the other frames {shape[1]}x{shape[0]}")
    return frame


def user_path(path: str | Path) -> Path:
    """`path` with `~` or `~user` expanded; InputError for a user this machine does not know (pathlib raises
    RuntimeError there) and for text no file name can hold (a lone surrogate such as "\\ud800", which JSON can
    carry: the page's export failed with a 500, its open with the codec's message)."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError as error:
        bad = str(path)[error.start]
        raise InputError(f"{path}: not a usable path ({bad!r} is half of a UTF-16 pair, which no file name "
                         "holds)") from error
    try:
        return expand_user(path)
    except ValueError as error:
        raise InputError(str(error)) from error


def open_video(path: str | Path) -> VideoSource:
    """Probe a video file or frame folder; InputError (one line) when it is missing, unreadable or empty."""
    path = user_path(path)
    if not path.exists():
        raise InputError(f"{path}: no such video file or folder of frames")
    special = special_file(path)
    if special:  # FFmpeg waited 10 s for a FIFO's writer, then said "not a video"
        raise InputError(f"{path}: {special}, not a video file or folder of frames")
    if path.is_dir():
        return _open_folder(path)
    return _open_file(path)


def image_entries(folder: Path, what: str = "frame") -> list[Path]:
    """The entries of `folder` named as images, hidden ones (`.name`) left out: the `._00001.jpg` beside each
    file that macOS writes on USB drives and network shares is no image (the folder was refused), and a hidden
    thumbnail was a frame no file manager shows. InputError for an image in a format that is not read (`what`:
    "frame" or "scribble image", for its message)."""
    entries = list(folder.iterdir())
    unread = sorted((p for p in entries if p.suffix.lower() in UNREAD_IMAGE_SUFFIXES and not is_hidden(p)),
                    key=natural_key)
    if unread:
        more = f" (and {len(unread) - 1} more)" if unread[1:] else ""
        raise InputError(f"{unread[0]}{more}: a {unread[0].suffix.lower()[1:].upper()} image, which is not read as a "
                         f"{what} ({', '.join(IMAGE_SUFFIXES)} are): convert it to one of those, or move it out of "
                         "the folder")
    images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    hidden = sorted(p.name for p in images if is_hidden(p))
    if hidden:
        log.info("%s: left out %d hidden file(s) (%s%s)", folder, len(hidden), hidden[0], ", ..." if hidden[1:] else "")
    return [p for p in images if not is_hidden(p)]


def _open_folder(path: Path) -> VideoSource:
    images = image_entries(path)
    for image_path in images:  # a FIFO, device or broken link named as a frame was left out: later frames shifted
        problem = odd_entry(image_path) or ("a folder" if image_path.is_dir() else None)
        if problem:
            raise InputError(f"{image_path}: {problem}, not a frame image")
    paths = sorted((p for p in images if p.is_file()), key=natural_key)
    if not paths:
        raise InputError(f"{path}: no frame images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    first = None
    levels: list[tuple[int, int]] = []  # the extrema of the 16-bit grey frames
    for frame_path in paths:  # every byte, cheaply: a truncated frame ends here, before the model loads
        try:
            with Image.open(frame_path) as image:
                size, orientation = image.size, exif_orientation(image)
                if image.mode in GREY16_MODES:
                    pixels = np.asarray(image)  # its levels (below; getextrema refuses I;16B)
                    levels.append((int(pixels.min()), int(pixels.max())))
                elif draft_jpeg(image) or image.format != "PNG" or image.mode == "I":
                    image.load()  # JPEG at 1/8 scale; BMP, TIFF, mode I's values: verify() reads no pixels
                else:
                    image.verify()  # chunk checksums (PNG), without decoding the pixels
                problem = frame_mode_problem(image)  # a float image; 16-bit grey is read
        except IMAGE_ERRORS as error:
            raise InputError(f"cannot read image {frame_path} ({error})") from error
        if problem:
            raise InputError(f"{frame_path}: {problem}")
        if orientation in TRANSPOSING_ORIENTATIONS:  # the size it is shown (and read) at
            size = size[::-1]
        first = first or size
        if size != first:
            turned = " once turned by its EXIF orientation" if orientation in TRANSPOSING_ORIENTATIONS else ""
            raise InputError(f"{path}: the frames differ in size ({frame_path.name} is {size[0]}x{size[1]}{turned}, "
                             f"{paths[0].name} {first[0]}x{first[1]})")
    stems: dict[str, Path] = {}
    for frame_path in paths:  # masks are written as <stem>.png: two frames would share one
        other = stems.setdefault(frame_path.stem.lower(), frame_path)
        if other is not frame_path:
            raise InputError(f"{path}: {other.name} and {frame_path.name} would write the same mask "
                             f"({frame_path.stem}.png): keep one of them")
    for before, after in pairwise(paths):  # frame3 and frame03: which comes first is the listing's whim
        if natural_key(before) == natural_key(after):
            raise InputError(f"{path}: {before.name} and {after.name} have the same number, so their order is "
                             "not defined (frames are sorted by the numbers in their names): keep one of them or "
                             "rename it")
    width, height = first
    return VideoSource(path, len(paths), height, width, DEFAULT_FPS, paths, [p.stem for p in paths],
                       narrow_grey16_levels(path, levels))


# FFmpeg's listing of an input's streams, in the error imageio-ffmpeg raises: "Stream #0:0[0x1](und): Audio: aac ..."
STREAM_KIND = re.compile(r"^\s*Stream #\S+: (\w+):", re.MULTILINE)


def _not_a_video(path: Path, error: Exception) -> InputError:
    """The error for a file FFmpeg reads no frame from: an audio-only file says so (it was "not a video FFmpeg can
    read (Could not load meta information)", as a file in no known format)."""
    kinds = sorted({kind.lower() for kind in STREAM_KIND.findall(str(error))})
    if kinds and "video" not in kinds:
        return InputError(f"{path}: holds no video stream (only {' and '.join(kinds)}), not a video")
    return InputError(f"{path}: not a video FFmpeg can read ({first_line(error)[:200]})")


# What FFmpeg logs when a stream's decoded frames change size: it then scales every later frame to the first size
# (its default `-autoscale`), so the frames after the change were stretched, and their masks with them, unsaid.
# FFmpeg 7 and later, then the older wording.
SIZE_CHANGED = (re.compile(r"video parameters changed to [^\n]*?, (\d+)x(\d+)"),
                re.compile(r"frame changed from size:(\d+)x(\d+) .*?to size:(\d+)x(\d+)"))
# The input stream FFmpeg decodes (its own choice, as read_frames gets it), then that stream's line in its listing.
MAPPED_STREAM = re.compile(r"^Stream mapping:\s*\n\s*Stream #(\d+:\d+)\b", re.MULTILINE)
STREAM_LINE = r"^\s*Stream #{}(?!\d)[^:\n]*: Video: [^\n]*"


@dataclass
class DecodePass:
    """What decode_pass found of the video stream FFmpeg decodes."""

    num_frames: int
    sizes: list[tuple[int, int]]  # each (width, height) its frames have, in order: one unless they change size
    fps: float | None  # the stream's frame rate as FFmpeg lists it (None when it lists none)


def decode_pass(path: str | Path) -> DecodePass:
    """The video stream FFmpeg reads from `path` (read_frames' stream: FFmpeg's own choice among several), decoded
    once to FFmpeg's null muxer, as imageio_ffmpeg.count_frames_and_secs does: its frame count, the sizes its frames
    have and its frame rate; RuntimeError when FFmpeg fails. count_frames_and_secs counts the first video stream
    (`-map 0:v:0`): a cover picture stored as an mkv's first stream counted 1 frame, and the video read was cut
    there; imageio's metadata names the first stream too (its frame rate was the cover's 25 fps)."""
    import subprocess

    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-i", ffmpeg_path(path), "-an", "-sn", "-dn", "-vf", "null", "-f",
               "null", "-"]
    try:
        out = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, check=True).stderr.decode(
            errors="ignore")
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"FFMPEG call failed with {error.returncode}:\n"
                           f"{error.stderr.decode(errors='ignore')}") from error
    counts = re.findall(r"^frame=\s*(\d+)", out.replace("\r", "\n"), re.MULTILINE)
    if not counts:
        raise RuntimeError("Could not get number of frames")
    mapped = MAPPED_STREAM.search(out)
    line = re.search(STREAM_LINE.format(re.escape(mapped[1]) if mapped else r"\S+"), out, re.MULTILINE)
    first = re.search(r", (\d+)x(\d+)", line[0]) if line else None
    rate = re.search(r", (\d+(?:\.\d+)?) fps\b", line[0]) if line else None
    sizes = [(int(first[1]), int(first[2]))] if first else []
    for text in out.splitlines():
        for pattern in SIZE_CHANGED:
            found = pattern.search(text)
            if found:
                size = (int(found[found.lastindex - 1]), int(found[found.lastindex]))
                if not sizes or sizes[-1] != size:
                    sizes.append(size)
    return DecodePass(int(counts[-1]), sizes, float(rate[1]) if rate else None)


def _tiff_pages(path: Path) -> int:
    """The number of pages of a TIFF file; 1 for any other file (or one PIL cannot open: FFmpeg judges it)."""
    try:
        with Image.open(path) as image:
            return image_count(image) if image.format == "TIFF" else 1
    except IMAGE_ERRORS:
        return 1


def _open_file(path: Path) -> VideoSource:
    import imageio_ffmpeg

    if path.stat().st_size == 0:  # "Could not load meta information", as a file in no known format
        raise InputError(f"{path}: an empty file (0 bytes), not a video")
    pages = _tiff_pages(path)
    if pages > 1:  # FFmpeg decodes a TIFF's first page only: the others were dropped unsaid
        raise InputError(f"{path}: a multi-page TIFF ({pages} pages), read as a video of its first page only: save "
                         "its pages as a folder of frames, one image file each")
    try:
        reader = imageio_ffmpeg.read_frames(ffmpeg_path(path))
        meta = next(reader)
        reader.close()
        # An exact count needs a decode pass (container headers can be wrong); FFmpeg does it in seconds.
        decoded = decode_pass(path)
    except (RuntimeError, OSError, StopIteration, KeyError, ValueError) as error:
        raise _not_a_video(path, error) from error
    num_frames, sizes = decoded.num_frames, decoded.sizes
    if num_frames < 1:
        raise InputError(f"{path}: the video has no frames")
    if len(set(sizes)) > 1:
        shown = ", then ".join(f"{w}x{h}" for w, h in sizes[:4]) + (", ..." if sizes[4:] else "")
        largest = max(sizes, key=lambda size: size[0] * size[1])
        raise InputError(f"{path}: its frames change size ({shown}): FFmpeg would stretch every frame to the first "
                         "size, and the masks of the others would not fit them; make it one size first (e.g. ffmpeg "
                         f"-i {path.name} -vf scale={largest[0]}:{largest[1]},setsar=1 one-size.mp4), or cut it where "
                         "the size changes")
    width, height = (int(v) for v in meta["size"])
    fps = decoded.fps or float(meta.get("fps") or 0) or DEFAULT_FPS
    declared = round(float(meta.get("duration") or 0) * fps)
    if declared > num_frames + 1:  # a truncated or damaged file: the frames after the damage were dropped unsaid
        log.warning("%s: FFmpeg decodes %d of the %d frames its header declares (truncated or damaged?): masks "
                    "are for those %d", path, num_frames, declared, num_frames)
    digits = len(str(num_frames - 1))
    names = [f"{i:0{max(5, digits)}d}" for i in range(num_frames)]
    turned = ""
    if sizes and sizes[0] == (height, width) != (width, height):  # a phone's portrait video, stored landscape
        turned = f" (stored {height}x{width}: turned as its rotation metadata says, as players show it)"
    log.info("%s: %s of %dx%d at %.2f fps%s", path.name, counted(num_frames, "frame"), width, height, fps, turned)
    return VideoSource(path, int(num_frames), height, width, fps, None, names)


def working_size(height: int, width: int, short_side: int = DEFAULT_WORKING_SIDE) -> tuple[int, int]:
    """(h, w) with the short side at most `short_side` (never upscaled), aspect kept."""
    scale = min(1.0, short_side / min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def check_fits(video: VideoSource, size: tuple[int, int]) -> None:
    """InputError, before a frame is read, when the video at the working size `size` would not fit in the memory
    available (footprint.py): a 100,000-frame video was read for ~17 minutes (10 ms a 480p frame on 2 cores), then
    its ~15 GB were a MemoryError blamed on --chunk-frames, or the process was killed."""
    from ..inference.footprint import available_bytes, working_frames_bytes

    need, free = working_frames_bytes(video.num_frames, size), available_bytes()
    if free is not None and need > free:
        raise InputError(f"{video.path}: {video.num_frames} frames need about {need / 2**30:.1f} GiB in memory at the "
                         f"working size {size[1]}x{size[0]} (each kept JPEG-encoded, with its labels), more than the "
                         f"{free / 2**30:.1f} GiB available: cut the video into shorter parts, or pass a smaller "
                         "--working-size")


class WorkingFrames:
    """Every frame at the working size, JPEG-encoded in memory; `stack(indices)` decodes a batch."""

    def __init__(self, encoded: list[bytes], size: tuple[int, int]) -> None:
        self.encoded = encoded
        self.size = size

    def __len__(self) -> int:
        return len(self.encoded)

    @classmethod
    def read(cls, video: VideoSource, short_side: int = DEFAULT_WORKING_SIDE,
             progress: Progress | None = None) -> WorkingFrames:
        size = working_size(video.height, video.width, short_side)
        check_fits(video, size)
        encoded = []
        for index, frame in enumerate(video.frames()):
            if frame.shape[:2] != size:
                frame = cv2.resize(frame, size[::-1], interpolation=cv2.INTER_AREA)
            ok, data = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise InputError(f"cannot encode frame {index} of {video.path}")
            encoded.append(data.tobytes())
            if progress:
                progress("read", index + 1, video.num_frames)
        return cls(encoded, size)

    def frame(self, index: int) -> np.ndarray:
        image = cv2.imdecode(np.frombuffer(self.encoded[index], np.uint8), cv2.IMREAD_COLOR)
        return np.ascontiguousarray(image[..., ::-1])

    def stack(self, indices) -> np.ndarray:
        out = np.empty((len(indices), *self.size, 3), np.uint8)
        for row, index in enumerate(indices):
            out[row] = self.frame(int(index))
        return out
