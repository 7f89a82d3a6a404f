"""Read a DAVIS-format root (DAVIS-2017 layout): frames, palette annotations, scribble JSON.

    <root>/JPEGImages/480p/<seq>/00000.jpg
    <root>/Annotations/480p/<seq>/00000.png   palette PNG: 0 background, 1..N objects, 255 void
    <root>/Scribbles/<seq>/001.json           {"sequence": ..., "scribbles": [[{path, object_id}, ...] per frame]}
    <root>/ImageSets/2017/<subset>.txt        one sequence name per line
"""

from __future__ import annotations

import logging
import numbers
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import counted, first_line, repeated
from ..paths import is_hidden, read_json, special_file

log = logging.getLogger(__name__)

VOID_LABEL = 255
# Object ids 1..254: annotations are uint8 palette PNGs whose 255 is void. It also bounds the classes an API
# caller's scribbles can ask for (an id of 10**9 would allocate 10**9 score maps).
MAX_OBJECT_ID = VOID_LABEL - 1
# Points in one scribble dict (a file, or an API round): DAVIS's files hold at most ~4,200, a painted scribble
# image on a 1080p frame at most ~200,000; rasterising 3 million took a minute per round. A file is read only
# if its size could hold them (~25 bytes a point).
MAX_SCRIBBLE_POINTS = 10**6
MAX_SCRIBBLE_FILE_BYTES = 64 * 2**20


class DatasetError(ValueError):
    """A DAVIS-format root or file that is missing or malformed; the message says what to do."""


# What PIL raises for a file it cannot open: its decoders raise all of OSError, ValueError and SyntaxError, and a
# header claiming billions of pixels raises DecompressionBombError (none of them).
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# Annotation pixel modes whose values are object ids: palette, grey, and 1-bit (a bool mask as PIL saves it, 0/1:
# one object, read so by davisinteractive too). RGB and the rest are refused: a colour is no id.
ANNOTATION_MODES = ("P", "L", "1")
# Pixel modes with more than 8 bits per channel, which PIL's convert("RGB") does not rescale (every pixel white).
# Scribble images of these modes are refused; frames of 16-bit grey are read (rgb_pixels, frame_mode_problem).
WIDE_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit integer",
              "F": "32-bit float"}
# 16-bit grey, as PIL opens a 16-bit grey PNG or TIFF (older PIL opened the PNG as mode I: its values fit 16 bits).
GREY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# 16-bit grey frames are read by their top 8 bits, unless those hold fewer levels than this over the whole video.
GREY16_MIN_LEVELS = 32


def annotation_ids(image: Image.Image, path: Path) -> np.ndarray | None:
    """(H, W) uint8 object ids of an annotation image: palette, grey or 1-bit, or 16-bit grey (OpenCV's
    `imwrite` of a uint16 label map; davisinteractive reads its values as they are) whose ids are at most 255;
    None for another mode (a colour is no id). A 16-bit id above 255 is a DatasetError."""
    if image.mode in ANNOTATION_MODES:
        return np.asarray(image, dtype=np.uint8)
    if image.mode not in GREY16_MODES:
        return None
    ids = np.asarray(image)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high > VOID_LABEL:
        raise DatasetError(f"{path}: a 16-bit grey annotation of values {low}..{high}: object ids are 0 (background), "
                           f"1..254 and {VOID_LABEL} (void); save them as 8-bit ids, a palette PNG as DAVIS's")
    return ids.astype(np.uint8)


def refuse_special_file(path: Path) -> None:
    """DatasetError for a FIFO or a device where a file belongs: PIL would wait for a FIFO's writer forever."""
    special = special_file(path)
    if special:
        raise DatasetError(f"{path}: {special}, not a regular file")


def open_image(path: Path, what: str = "image") -> Image.Image:
    """Image.open, with one DatasetError naming the file for anything PIL cannot open."""
    refuse_special_file(path)
    try:
        return Image.open(path)
    except IMAGE_ERRORS as error:
        raise DatasetError(f"{path}: cannot open this {what} ({first_line(error)})") from error


def draft_jpeg(image: Image.Image) -> bool:
    """Make a JPEG decode at 1/8 scale, which still reads every byte (a truncated file still fails) for a
    fraction of the cost; whether the image is a JPEG. Call it before the image is loaded."""
    if image.format != "JPEG":
        return False
    width, height = image.size
    image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
    return True


# EXIF orientations (phone photos) that turn the stored pixels by 90 degrees: width and height swap.
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 upright .. 8); 1 when there is none or it cannot be read. A PNG's is read
    from its header chunks only: getexif() would load the pixels, which verify() must come before."""
    try:
        if image.format == "PNG":
            exif = Image.Exif()
            if image.info.get("exif"):
                exif.load(image.info["exif"])
        else:
            exif = image.getexif()
        orientation = exif.get(0x0112, 1)
    except Exception:  # a damaged EXIF block: the pixels are read as stored, as before
        return 1
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def upright(image: Image.Image) -> Image.Image:
    """`image` turned as its EXIF orientation says, as viewers and image editors show it (the scribbles are
    painted on that view); the image itself when it has no orientation to apply."""
    return ImageOps.exif_transpose(image) if exif_orientation(image) != 1 else image


# Formats whose files may hold several images. Not MPO: a camera's JPEG with a preview or depth image after the
# photo, whose first image is the frame.
MULTI_IMAGE_FORMATS = ("TIFF", "PNG", "WEBP", "GIF")


def image_count(image: Image.Image) -> int:
    """How many images the opened file holds (a multi-page TIFF, an animated PNG, WebP or GIF: more than one)."""
    return getattr(image, "n_frames", 1) if image.format in MULTI_IMAGE_FORMATS else 1


def frame_mode_problem(image: Image.Image) -> str | None:
    """Why `image`'s pixels are no frame, else None: 32-bit float (a depth map: which values are black and white
    cannot be told), or a mode I image (32-bit integer) whose values go beyond 16 bits (it loads its pixels to
    see). 16-bit grey is a frame: rgb_pixels reads it (grey16_rgb). Also a file of several images (a
    multi-page TIFF, an animated PNG or WebP): only its first would be read, the others dropped unsaid."""
    pages = image_count(image)
    if pages > 1:
        return (f"{pages} images in one file (a multi-page or animated {image.format}); a frame must be one image: "
                "save each as its own file")
    if image.mode == "F":
        return "a F image (32-bit float); frames must be 8-bit or 16-bit RGB or grey"
    if image.mode == "I":
        low, high = image.getextrema()
        if low < 0 or high > 0xFFFF:
            kind = "a signed 16-bit image" if _signed_16_bit(image) else "a I image (32-bit integer)"
            return (f"{kind} of values {low}..{high}, not 16-bit (0..65535); frames must be 8-bit or 16-bit RGB "
                    "or grey")
    return None


def _signed_16_bit(image: Image.Image) -> bool:
    """Whether a mode I image is a TIFF of signed 16-bit samples (PIL widens them to 32 bits)."""
    tags = getattr(image, "tag_v2", None)
    if image.format != "TIFF" or tags is None:
        return False
    return tuple(np.atleast_1d(tags.get(258, ()))) == (16,) and tuple(np.atleast_1d(tags.get(339, ()))) == (2,)


def narrow_grey16_levels(source: object, extrema: list[tuple[int, int]]) -> tuple[int, int] | None:
    """(lo, hi) of a video's 16-bit grey frames, given each one's (min, max), when their top 8 bits span fewer
    than GREY16_MIN_LEVELS levels (a thermal camera's raw values, 7000..8400: levels 27..32, an object a few levels
    off its surroundings, segmented as nothing without a word): grey16_rgb then reads them from lo (black) to hi
    (white), the same for every frame, with an INFO line naming `source`. None otherwise (their top 8 bits)."""
    if not extrema:
        return None
    low, high = min(lo for lo, _ in extrema), max(hi for _, hi in extrema)
    if (high >> 8) - (low >> 8) + 1 >= GREY16_MIN_LEVELS:
        return None
    log.info("%s: 16-bit grey frames of levels %d..%d, %d levels once cut to their top 8 bits: read from %d (black) "
             "to %d (white) instead", source, low, high, (high >> 8) - (low >> 8) + 1, low, high)
    return low, high


def grey16_rgb(values: np.ndarray, levels: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a 16-bit grey frame's (H, W) values: their top 8 bits, or `levels` (lo, hi, the
    video's narrow_grey16_levels) stretched to black..white. The one mapping of both frame readers."""
    if levels is None:
        grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
    else:
        low, high = levels
        stretched = (values.astype(np.float64) - low) * (255 / max(high - low, 1))
        grey = np.clip(np.rint(stretched), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)  # as PIL turns grey (L) into RGB


def rgb_pixels(image: Image.Image, grey16_levels: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a frame image. 16-bit grey is read by its top 8 bits, as PIL reads a 16-bit RGB
    PNG (its own conversion clipped every value above 255: a white frame), or from `grey16_levels` (grey16_rgb);
    a frame_mode_problem is a ValueError. A palette image with transparency (pngquant's, a GIF's frames) goes
    through RGBA, to the same pixels: PIL's direct conversion printed "UserWarning: Palette images with
    Transparency expressed in bytes should be converted to RGBA images" and its source line amid the progress."""
    problem = frame_mode_problem(image)
    if problem:
        raise ValueError(problem)
    if image.mode in GREY16_MODES:
        return grey16_rgb(np.asarray(image), grey16_levels)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


@dataclass(frozen=True)
class SequenceInfo:
    name: str
    num_frames: int
    num_objects: int
    height: int
    width: int
    num_scribbles: int


def file_kinds(folder: Path) -> Counter:
    """How many files of each kind (suffix, or the name of one without) `folder` holds, hidden ones left out;
    OSError if it cannot be listed."""
    return Counter(path.suffix or path.name for path in folder.iterdir() if path.is_file() and not is_hidden(path))


def _other_files(folder: Path, rule: str) -> str:
    """': <rule> (found 12 .png, 1 .txt)' for a folder that holds files of other kinds, else '' (its frames as
    .png or .jpeg were "no frames" without a word on why)."""
    try:
        kinds = file_kinds(folder)
    except OSError:
        return ""
    found = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common(3))
    return f": {rule} (found {found})" if found else ""


def is_sequence_name(name: str) -> bool:
    """Whether `name` can name a sequence: one folder name, not a path (`JPEGImages/480p/dog`, `../x`, `dog/`)."""
    return "/" not in name and name not in (".", "..")


class DavisReader:
    def __init__(self, root: str | Path, resolution: str = "480p") -> None:
        self.root = Path(root).expanduser()
        self.resolution = resolution
        if not self.root.is_dir():
            # a file, or a loop of links, is not "missing": say what it is
            special = special_file(self.root)
            what = ("is a file, not a folder" if self.root.is_file() else f"is {special}, not a folder" if special
                    else "is a link that leads nowhere (a loop?)" if self.root.is_symlink() else "does not exist")
            raise DatasetError(
                f"DAVIS root {self.root} {what}: pass --davis-root with a DAVIS-format folder "
                "(JPEGImages/, Annotations/, Scribbles/) or leave it out to use the built-in synthetic data."
            )

    # --- paths -------------------------------------------------------------------------------
    def frames_dir(self, sequence: str) -> Path:
        return self.root / "JPEGImages" / self.resolution / sequence

    def annotations_dir(self, sequence: str) -> Path:
        return self.root / "Annotations" / self.resolution / sequence

    def scribbles_dir(self, sequence: str) -> Path:
        return self.root / "Scribbles" / sequence

    @staticmethod
    def listed(folder: Path, pattern: str) -> list[Path]:
        """The entries of `folder` matching `pattern`, sorted, hidden ones (`.name`) left out: a root macOS copied
        to a USB drive or share holds a `._00000.jpg` beside each frame (and `._00000.png`, `._001.json`), which
        was refused as "not a DAVIS frame name". Its numbering check still finds a frame that is only hidden."""
        return sorted(path for path in folder.glob(pattern) if not is_hidden(path))

    def frame_paths(self, sequence: str) -> list[Path]:
        paths = self.listed(self.frames_dir(sequence), "*.jpg")
        if not paths:
            raise DatasetError(f"no frames for sequence '{sequence}' in {self.frames_dir(sequence)}"
                               + _other_files(self.frames_dir(sequence), "frames are .jpg files"))
        return paths

    def annotation_paths(self, sequence: str) -> list[Path]:
        return self.listed(self.annotations_dir(sequence), "*.png")

    def scribble_paths(self, sequence: str) -> list[Path]:
        return self.listed(self.scribbles_dir(sequence), "[0-9][0-9][0-9].json")

    # --- listings ------------------------------------------------------------------------------
    def subset_file(self, subset: str) -> Path:
        return self.root / "ImageSets" / "2017" / f"{subset}.txt"

    def sequences(self, subset: str | None = None) -> list[str]:
        """Sequences of a subset (from ImageSets/2017/<subset>.txt), or every folder of JPEGImages."""
        if subset is not None:
            listing = self.subset_file(subset)
            if listing.exists() and not listing.is_file():  # a folder or FIFO: it was "no list ...: add it"
                raise DatasetError(f"{listing}: is {special_file(listing) or 'a folder'}, not a file (one sequence "
                                   "name per line)")
            if not listing.is_file():
                raise DatasetError(f"no list of '{subset}' sequences at {listing}: add it (one name per line)")
            try:  # utf-8-sig: a byte-order mark would otherwise become part of the first name
                text = listing.read_text(encoding="utf-8-sig")
            except (UnicodeDecodeError, OSError) as error:
                raise DatasetError(f"{listing}: cannot be read as UTF-8 text ({error})") from error
            # A line starting with `#` is a comment (a video commented out was "not in the root", an INFO line).
            names = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
            # A path (`JPEGImages/480p/dog`, `../x`) names no sequence of the root: it was "not in the root" and left
            # out with an INFO line, or read from outside the root.
            odd = next((name for name in names if not is_sequence_name(name)), None)
            if odd is not None:
                raise DatasetError(f"{listing}: {odd!r} is not a sequence name (one folder name of "
                                   f"JPEGImages/{self.resolution} per line, without a path)")
            # Every reader: a session played a repeated val video once without a word, training drew it twice as often.
            twice = repeated(names)
            if twice:
                raise DatasetError(f"{listing}: lists {', '.join(twice)} more than once")
            return names
        base = self.root / "JPEGImages" / self.resolution
        # not a hidden folder: a `.ipynb_checkpoints` Jupyter made there is no sequence
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not is_hidden(p)) if base.is_dir() else []

    def has_sequence(self, sequence: str) -> bool:
        return self.frames_dir(sequence).is_dir()

    def check_names(self, names: list[str], flag: str) -> None:
        """DatasetError naming `flag` for names given as paths: `dog/` (as a shell completes it) was measured
        under that name, `dog` counted twice with `dog,dog/`, and `../other/JPEGImages/480p/x` read another root."""
        odd = [name for name in names if not is_sequence_name(name)]
        if odd:
            raise DatasetError(f"{flag} {', '.join(odd)}: not a sequence name (a folder name of "
                               f"{self.root / 'JPEGImages' / self.resolution}, without a path)")

    # --- loading -------------------------------------------------------------------------------
    def load_frames(self, sequence: str) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB. 16-bit grey frames of a narrow range are read from the sequence's darkest level
        to its brightest, as a frame folder's are (by their top 8 bits, a thermal camera's were 6 levels)."""
        frames = [self._frame_pixels(path) for path in self.frame_paths(sequence)]
        grey16 = [(int(f.min()), int(f.max())) for f in frames if f.ndim == 2]
        levels = narrow_grey16_levels(self.frames_dir(sequence), grey16)
        frames = [grey16_rgb(f, levels) if f.ndim == 2 else f for f in frames]
        if len({f.shape for f in frames}) != 1:
            raise DatasetError(f"frames of '{sequence}' do not all have the same size")
        return np.stack(frames)

    @staticmethod
    def _frame_pixels(path: Path) -> np.ndarray:
        """(H, W, 3) uint8 RGB, or a 16-bit grey frame's (H, W) values: their mapping is the sequence's."""
        # On a root not validated first (the Python API), a float frame was rgb_pixels' bare ValueError, naming
        # no file; it is the line validation gives.
        # Closed here, not when the collector gets to it: a long video held every frame's file open.
        with open_image(path, "frame") as image:
            try:
                if image.mode in GREY16_MODES and not frame_mode_problem(image):
                    return np.asarray(image)
                return rgb_pixels(image)
            except IMAGE_ERRORS as error:
                raise DatasetError(f"{path}: {first_line(error)}") from error

    def load_annotations(self, sequence: str) -> np.ndarray:
        """(T, H, W) uint8: 0 background, 1..N objects, 255 void."""
        paths = self.annotation_paths(sequence)
        if not paths:
            raise DatasetError(f"no annotations for sequence '{sequence}' in {self.annotations_dir(sequence)}")
        masks = []
        for path in paths:
            with open_image(path, "annotation") as image:
                ids = annotation_ids(image, path)
                if ids is None:
                    raise DatasetError(f"{path} is not a palette, grey or 1-bit PNG of object ids")
                masks.append(ids)
        return np.stack(masks)

    def load_scribble(self, sequence: str, index: int) -> dict:
        """Scribble `index` (1-based, as in 001.json), validated."""
        path = self.scribbles_dir(sequence) / f"{index:03d}.json"
        if not path.is_file():
            raise DatasetError(f"scribble file {path} does not exist")
        data = read_scribble_file(path)
        validate_scribbles(data, source=str(path))
        return data

    def info(self, sequence: str) -> SequenceInfo:
        """Metadata inferred from the files (reads every annotation to count objects)."""
        frame_paths = self.frame_paths(sequence)
        with open_image(frame_paths[0], "frame") as image:
            width, height = image.size
        annotations = self.load_annotations(sequence)
        labels = np.unique(annotations)
        objects = labels[(labels > 0) & (labels != VOID_LABEL)]
        return SequenceInfo(
            name=sequence,
            num_frames=len(frame_paths),
            num_objects=int(objects.max()) if objects.size else 0,
            height=height,
            width=width,
            num_scribbles=len(self.scribble_paths(sequence)),
        )


def read_scribble_file(path: Path) -> object:
    """A scribble file's JSON (not yet validated); DatasetError `<path>: ...` for one too large to be scribbles
    (checked before it is read) or not JSON."""
    size = path.stat().st_size
    if size > MAX_SCRIBBLE_FILE_BYTES:
        raise DatasetError(f"{path}: {size / 2**20:.0f} MB, more than scribbles take (at most "
                           f"{MAX_SCRIBBLE_FILE_BYTES // 2**20} MB, {MAX_SCRIBBLE_POINTS:,} points)")
    try:
        return read_json(path)
    except ValueError as error:  # also not UTF-8, or nested too deeply
        raise DatasetError(f"{path}: not valid JSON ({error})") from error


def validate_scribbles(
    data: object, source: str = "scribbles", num_frames: int | None = None, num_objects: int | None = None
) -> None:
    """Raise DatasetError with one clear line when `data` is not a DAVIS scribble dict: one list of strokes
    per frame (`num_frames` when given), each stroke a path of finite [x, y] points in [0, 1] and an integer
    object_id in 0..num_objects (0 = background; without num_objects at most MAX_OBJECT_ID)."""
    if not isinstance(data, dict) or "scribbles" not in data or not isinstance(data["scribbles"], list):
        raise DatasetError(f"{source}: expected a dict with a 'scribbles' list (one list of strokes per frame)")
    if num_frames is not None and len(data["scribbles"]) != num_frames:
        raise DatasetError(f"{source}: has {counted(len(data['scribbles']), 'frame')} of strokes, the video has "
                           f"{num_frames}")
    highest = MAX_OBJECT_ID if num_objects is None else num_objects
    points_seen = 0
    for frame, strokes in enumerate(data["scribbles"]):
        if not isinstance(strokes, list):
            raise DatasetError(f"{source}: frame {frame} must hold a list of strokes")
        for stroke in strokes:
            if not isinstance(stroke, dict) or "path" not in stroke or "object_id" not in stroke:
                raise DatasetError(f"{source}: frame {frame} has a stroke without 'path' and 'object_id'")
            object_id = stroke["object_id"]
            # bool is an int in Python, and a float id would be truncated silently: both are refused.
            if not isinstance(object_id, numbers.Integral) or isinstance(object_id, bool | np.bool_):
                raise DatasetError(f"{source}: frame {frame} has object_id {object_id!r}: object ids are integers "
                                   "(0 = background, 1..N the objects)")
            if not 0 <= object_id <= highest:
                what = f"the video has {num_objects} object(s)" if num_objects is not None else \
                    f"object ids are 0..{MAX_OBJECT_ID} ({VOID_LABEL} is DAVIS's void label)"
                raise DatasetError(f"{source}: frame {frame} has object_id {object_id}, but {what}")
            points = stroke["path"]
            points_seen += len(points) if hasattr(points, "__len__") else 0  # counted before each is checked
            if points_seen > MAX_SCRIBBLE_POINTS:
                raise DatasetError(f"{source}: more than {MAX_SCRIBBLE_POINTS:,} points by frame {frame} (DAVIS's "
                                   "scribbles hold a few thousand; each costs time in every round)")
            try:
                # Only numbers: numpy would read "0.5" and true as coordinates.
                if not all(isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)
                           for point in points for v in point):
                    raise TypeError
                path = np.asarray(points, dtype=float)
            except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond a float's range
                path = None
            if path is not None and path.shape == (0,):  # an empty path (a click without a drag) draws nothing
                path = path.reshape(0, 2)
            if path is None or path.ndim != 2 or path.shape[1] != 2:
                raise DatasetError(f"{source}: frame {frame} has a path that is not a list of [x, y] points")
            if not np.isfinite(path).all():
                raise DatasetError(f"{source}: frame {frame} has a point that is NaN or infinite")
            if path.size and (path.min() < 0 or path.max() > 1):
                raise DatasetError(f"{source}: frame {frame} has points outside [0, 1] (coordinates are normalised)")
