"""Scribbles from a person: DAVIS scribble JSON, or scribble images painted in any image editor, turned into
the agent's input (a DAVIS scribble dict with one list of strokes per frame of the video).

Colour convention of scribble images (PNG; same size as the video's frames):
  - object k: DAVIS palette colour k (1 (128, 0, 0) dark red, 2 (0, 128, 0) green, 3 (128, 128, 0) olive,
    4 (0, 0, 128) navy, 5 (128, 0, 128) purple, ... see `object_colour`);
  - background: white (255, 255, 255);
  - no scribble: transparent (alpha < 128) or black (0, 0, 0), so a transparent layer or a black canvas works.
Colours within COLOUR_TOLERANCE per channel snap to the nearest of these (the palette's levels are 32 apart);
anything else is an error, so a mistake in the colour never silently becomes background.

An image's frame is the frame of the same name in a frame folder (00012.png for 00012.jpg), else the last
number in its name, counted from 0 (12.png, frame_0012.png); in a folder whose frames are numbered otherwise
(frame1.jpg, ...), only the frame's own name. A second copy's suffix (`00012 (1).png`, `00012 copy 2.png`) is left out;
two images of one frame in a folder are refused (`_refuse_second_image`).

Rounds: an export's scribbles.json keeps DAVIS's "scribbles" (every stroke segmented, per frame) and adds
"rounds", one such list per round in the order they were segmented (`scribbles_record`); `load_rounds` plays
them back in that order. A source without "rounds" is one round. Its "segmented" (VideoSegmenter.settings) says
what the masks were made for: a video of another frame count or shape is refused (`_check_segmented`), one of
other content once its frames are read (`replay.check_drawn_on`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.davis import (
    IMAGE_ERRORS,
    WIDE_MODES,
    DatasetError,
    image_count,
    read_scribble_file,
    validate_scribbles,
)
from ..data.synthetic import davis_palette
from ..errors import counted
from ..paths import first_non_finite, odd_entry, special_file
from .video import IMAGE_SUFFIXES, InputError, VideoSource, image_entries, natural_key, upright, user_path

NO_SCRIBBLE = -1
BACKGROUND_COLOUR = (255, 255, 255)
COLOUR_TOLERANCE = 15
MAX_OBJECTS = 254  # palette 255 is DAVIS's void colour
# Image strokes are sent at no more than this many rows: the agent rasterises them on its embedding grid
# (~60 rows for the shipped checkpoint), so finer rows only cost time.
STROKE_ROWS = 240
# Formats whose compression changes colours (every stroke's edge, and its colour throughout at JPEG's halved chroma):
# the colour errors blamed the brush, and the user had painted with a hard-edged one and saved as JPEG.
LOSSY_FORMATS = ("JPEG", "MPO")  # MPO: a phone camera's JPEG
LOSSY_ADVICE = ("it is a JPEG, whose compression blurs the colours of every stroke (at any quality): save scribble "
                "images as PNG")


def object_colour(object_id: int) -> tuple[int, int, int]:
    palette = davis_palette()
    return tuple(palette[3 * object_id: 3 * object_id + 3])


def empty_scribbles(num_frames: int) -> dict:
    return {"scribbles": [[] for _ in range(num_frames)]}


def _draws(stroke: dict) -> bool:
    """Whether a stroke draws anything: an empty path (a click without a drag) draws nothing and marks no object."""
    return len(stroke["path"]) > 0


def object_ids(scribbles: dict) -> set[int]:
    return {int(s["object_id"]) for strokes in scribbles["scribbles"] for s in strokes
            if int(s["object_id"]) > 0 and _draws(s)}


def scribbled_frames(scribbles: dict) -> list[int]:
    return [f for f, strokes in enumerate(scribbles["scribbles"]) if any(map(_draws, strokes))]


def draws(scribbles: dict) -> bool:
    """Whether any stroke draws something (a round of empty paths only segments nothing new)."""
    return bool(scribbled_frames(scribbles))


def union_of_rounds(rounds: list[dict], num_frames: int) -> dict:
    """Every round's strokes in one DAVIS scribble dict, each frame's in the order they were segmented."""
    return {"scribbles": [[stroke for round_ in rounds for stroke in round_["scribbles"][frame]]
                          for frame in range(num_frames)]}


def scribbles_record(rounds: list[dict], num_frames: int) -> dict:
    """What an export writes as scribbles.json: DAVIS's "scribbles" (all strokes, which DAVIS tools read) and
    "rounds", each round's own list per frame (what `load_rounds` replays)."""
    return {**union_of_rounds(rounds, num_frames), "rounds": [round_["scribbles"] for round_ in rounds]}


def load_scribbles(path: str | Path, video: VideoSource) -> dict:
    """A DAVIS scribble dict for `video` from a JSON file, one scribble image or a folder of them: every stroke
    of every round it holds."""
    return union_of_rounds(load_rounds(path, video), video.num_frames)


@dataclass
class ScribbleSource:
    """One --scribbles, read once: its rounds and, for an export's scribbles.json, the settings it recorded."""

    path: str | Path  # as given
    rounds: list[dict]
    settings: dict | None  # an export's "segmented" (replay.segmenting_settings), else None


def drawn_objects(sources: list[ScribbleSource], num_frames: int) -> tuple[set[int], str | Path | None]:
    """The object ids the sources' strokes draw, and the first source that draws the highest (None: no object)."""
    ids = [object_ids(union_of_rounds(source.rounds, num_frames)) for source in sources]
    drawn = set().union(*ids)
    if not drawn:
        return drawn, None
    return drawn, next(source.path for source, objects in zip(sources, ids, strict=True) if max(drawn) in objects)


def id_gap_warning(sources: list[ScribbleSource], num_frames: int) -> str | None:
    """A warning when the sources' object ids skip some (1 and 5: objects 2-4 would be empty masks of every frame,
    each a class the agent scores), else None. Not an error: an object may be left for a later round."""
    drawn, named = drawn_objects(sources, num_frames)
    missing = sorted(set(range(1, max(drawn, default=0))) - drawn)
    if not missing:
        return None
    shown = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if missing[5:] else "")
    return (f"{named}: object {max(drawn)} is drawn but no stroke has object {shown}: {len(missing)} empty "
            f"{'mask' if len(missing) == 1 else 'masks'} on every frame (objects are numbered 1..N; a scribble "
            "image's colour is its object's)")


def load_rounds(path: str | Path, video: VideoSource, first: bool = True) -> list[dict]:
    """The rounds a scribble source holds, in order, each a DAVIS scribble dict for `video`: a JSON file's
    "rounds" (an export's), else one round. `first`: the source opens the run, so its first round needs an
    object stroke; a later one (corrections) may hold background strokes only, but some stroke."""
    return load_source(path, video, first).rounds


def load_source(given: str | Path, video: VideoSource, first: bool = True) -> ScribbleSource:
    """load_rounds' rounds with the settings an export recorded (replay.check_drawn_on compares its content
    with the video's frames once they are read)."""
    path = user_path(given)
    if not path.exists():
        raise InputError(f"{path}: no such scribble file or folder")
    if special_file(path):
        raise InputError(f"{path}: {special_file(path)}, not a scribble file or folder")
    images: list[Path] = []
    settings = None
    if path.is_file() and path.suffix.lower() == ".json":
        rounds, settings = _load_json(path, video)
    else:
        images = [path] if path.is_file() else _scribble_images(path)
        json_files = sorted(p.name for p in path.glob("*.json") if p.is_file() and not p.name.startswith(".")) \
            if path.is_dir() and not images else []
        if not images and json_files:
            # An export's folder holds its scribbles.json: the message said "no ... JSON here" beside it.
            raise InputError(f"{path}: no scribble images ({', '.join(IMAGE_SUFFIXES)}): pass the JSON file itself "
                             f"(--scribbles {path / json_files[0]})")
        _refuse_nested_images(path, bool(images))
        if not images:
            raise InputError(f"{path}: no scribble images ({', '.join(IMAGE_SUFFIXES)}) or JSON here")
        scribbles = empty_scribbles(video.num_frames)
        read: dict[int, Path] = {}
        for image_path in images:  # read first: a file that is no image (the video, swapped in) is "cannot read"
            labels = read_scribble_image(image_path, video)
            frame = frame_of(image_path, video)
            if frame in read:
                _refuse_second_image(frame, read[frame], image_path, video)
            read[frame] = image_path
            scribbles["scribbles"][frame].extend(label_strokes(labels))
        rounds = [scribbles]
    if len(rounds) > 1 and first and not object_ids(rounds[0]):
        raise InputError(f"{path}: round 1 has no object stroke, and the first round needs one (background strokes "
                         "alone say nothing)")
    if first and not object_ids(rounds[0]) or not draws(rounds[0]):  # a correction: any stroke that draws
        what = "object scribble" if first else "scribble"
        raise InputError(f"{path}: no {what} (objects are palette colours 1..N, see docs/OWN_VIDEOS.md)"
                         f"{_translucent(images)}")
    return ScribbleSource(given, rounds, settings)


def load_sources(paths: list[str | Path], video: VideoSource) -> list[ScribbleSource]:
    """Each --scribbles read (`load_rounds`, the first opening the run), in order; InputError when one repeats
    rounds of an earlier one stroke for stroke: the same file given twice, or an earlier export beside the export
    that continued it, played the strokes twice without a word."""
    sources: list[ScribbleSource] = []
    for index, path in enumerate(paths):
        source = load_source(path, video, first=index == 0)
        rounds = source.rounds
        for earlier_path, earlier in ((before.path, before.rounds) for before in sources):
            repeat = repeated_round(rounds, earlier)
            if repeat is None:
                continue
            if user_path(path).resolve() == user_path(earlier_path).resolve():
                raise InputError(f"{path}: given twice: its rounds would be played twice (each --scribbles is "
                                 "played after the ones before it)")
            if rounds[:len(earlier)] == earlier:
                raise InputError(f"{path}: begins with the {counted(len(earlier), 'round')} of {earlier_path} (an export that "
                                 f"continued it): they would be played twice; pass {path} alone")
            raise InputError(f"{path}: round {repeat[0]} repeats round {repeat[1]} of {earlier_path} stroke for "
                             "stroke: its strokes would be played twice")
        sources.append(source)
    return sources


def repeated_round(rounds: list[dict], earlier: list[dict]) -> tuple[int, int] | None:
    """(i, j), counted from 1, for the first of `rounds` that is round j of `earlier`, stroke for stroke; None
    when there is none."""
    for i, round_ in enumerate(rounds, 1):
        for j, before in enumerate(earlier, 1):
            if round_["scribbles"] == before["scribbles"]:
                return i, j
    return None


def _translucent(images: list[Path]) -> str:
    """'; N pixels of <image> ...' when an image holds semi-transparent pixels (alpha 1..127), which count as
    unpainted: a stroke painted with a semi-transparent brush was "no object scribble" without a word of why."""
    for image_path in images:
        try:  # read once already: again on this error path only
            with Image.open(image_path) as image:
                alpha = np.asarray(image.convert("RGBA"))[..., 3]
        except IMAGE_ERRORS:  # replaced since: the line stays as it was
            continue
        faint = int(np.count_nonzero((alpha > 0) & (alpha < 128)))
        if faint:
            return (f"; {faint} pixels of {image_path.name} are semi-transparent (alpha below 128), and such pixels "
                    "count as unpainted: paint with an opaque brush")
    return ""


def _refuse_nested_images(folder: Path, beside: bool) -> None:
    """InputError when subfolders of a scribble folder hold scribble images: only the images directly in the folder are
    read, as one round, so a subfolder's (`round2/`, a folder per frame) were left out without a word, or the folder
    was "no scribble images" though its subfolders held them."""
    if not folder.is_dir():
        return
    def holds_images(entry: Path) -> bool:
        try:
            return entry.is_dir() and not entry.name.startswith(".") and any(
                image.suffix.lower() in IMAGE_SUFFIXES and not image.name.startswith(".") and image.is_file()
                for image in entry.iterdir())
        except OSError:  # a subfolder it may not list: nothing to say it holds
            return False

    nested = sorted((entry for entry in folder.iterdir() if holds_images(entry)), key=natural_key)
    if not nested:
        return
    names = ", ".join(f"{entry.name}/" for entry in nested[:5]) + (", ..." if nested[5:] else "")
    if beside:
        raise InputError(f"{folder}: its subfolder(s) {names} hold scribble images too, which would be left out: only "
                         "the images directly in the folder are read, as one round; pass a subfolder as a --scribbles "
                         "of its own (each is a round, played in order) or move its images up")
    raise InputError(f"{folder}: no scribble images directly in it, but its subfolder(s) {names} hold some: pass "
                     "each subfolder as a --scribbles of its own (each is a round, played in order)")


def _refuse_second_image(frame: int, first: Path, second: Path, video: VideoSource) -> None:
    """InputError for two images of one frame in a scribble folder (`00002.png` and `00002 (1).png`, a stale and a
    fresh download): their strokes were merged without a word, the later file's winning where they overlapped.
    The copy (a second copy's suffix) is named as the second, whatever order the folder listed them in."""
    first, second = sorted((first, second), key=lambda path: (bool(COPY_SUFFIX.search(path.stem)), natural_key(path),
                                                              path.name))
    named = f" ({video.frame_paths[frame].name})" if video.frame_paths is not None else ""
    raise InputError(f"{second}: a second scribble image for frame {frame}{named} beside {first}: keep one")


def _scribble_images(folder: Path) -> list[Path]:
    """The scribble images in `folder`, in natural order; InputError for an image name that is a FIFO, a
    device or a broken link (left out, its strokes would have been lost without a word)."""
    images = []
    for entry in image_entries(folder, "scribble image"):
        if entry.is_dir():
            continue
        problem = odd_entry(entry)
        if problem:
            raise InputError(f"{entry}: {problem}, not a scribble image")
        images.append(entry)
    return sorted(images, key=natural_key)


def _load_json(path: Path, video: VideoSource) -> tuple[list[dict], dict | None]:
    """The rounds of a scribble JSON: its "rounds" when it has them (each checked as "scribbles" is, none
    without a stroke, all of them together exactly its "scribbles"), else its "scribbles" as one round; an
    export's, for a video of its frame count and shape, with the settings it recorded ("segmented")."""
    num_frames = video.num_frames
    try:
        data = read_scribble_file(path)
        validate_scribbles(data, source=str(path))
    except DatasetError as error:
        raise InputError(str(error)) from error
    _refuse_non_finite(path, data)
    settings = data.get("segmented")
    _check_segmented(path, settings, video)
    union = _fit_frames(data["scribbles"], num_frames, str(path))
    if "rounds" not in data:
        return [union], settings
    listed = data["rounds"]
    if not isinstance(listed, list) or not listed:
        raise InputError(f"{path}: 'rounds' must be a list of rounds, each a list of strokes per frame as in "
                         f"'scribbles' (got {_json_kind(listed)}); remove 'rounds' to play every stroke as one round")
    rounds = []
    for number, frames in enumerate(listed, 1):
        source = f"{path}: round {number}"
        if not isinstance(frames, list):
            raise InputError(f"{source} must be a list of strokes per frame as in 'scribbles', got "
                             f"{_json_kind(frames)}")
        try:
            validate_scribbles({"scribbles": frames}, source=source)
        except DatasetError as error:
            raise InputError(str(error)) from error
        round_ = _fit_frames(frames, num_frames, source)
        if not draws(round_):  # strokes of empty paths only draw nothing either
            raise InputError(f"{source} has no stroke that draws (a path of points): every round segments some; "
                             "remove it from 'rounds'")
        rounds.append(round_)
    played = union_of_rounds(rounds, num_frames)["scribbles"]
    for frame, (strokes, expected) in enumerate(zip(played, union["scribbles"], strict=True)):
        if strokes != expected:
            raise InputError(f"{path}: the strokes of 'rounds' on frame {frame} are not those of 'scribbles' (an "
                             "export writes every round's strokes, in order, in both): edit both alike, or remove "
                             "'rounds' to play every stroke of 'scribbles' as one round")
    return rounds, settings


def _refuse_non_finite(path: Path, data: dict) -> None:
    """InputError for a NaN or Infinity anywhere in a stroke (a "start_time": NaN): Python's JSON reads them, but they
    are no JSON numbers, and the export's scribbles.json would carry them to readers that refuse it."""
    for key in ("scribbles", "rounds"):
        found = first_non_finite(data.get(key), key)
        if found:
            raise InputError(f"{path}: {found[0]} is {found[1]}, which JSON does not allow (NaN and Infinity are no "
                             "JSON numbers): give a finite number or remove it")


def _check_segmented(path: Path, settings: object, video: VideoSource) -> None:
    """InputError unless an export's "segmented" (absent: a DAVIS file, an older export) fits `video`: its strokes
    are per frame and normalised to the frame, so another frame count or shape put them on other frames or
    elsewhere in them without a word."""
    if settings is None:
        return
    hint = "remove 'segmented' to play its strokes on any video"
    known = settings if isinstance(settings, dict) else {}
    size, frames = known.get("working_size"), known.get("num_frames")
    # in_chunks and crf_scale are compared and named in replay.replay_warnings: null or "yes" was a KeyError traceback
    chunks, crf = known.get("in_chunks", False), known.get("crf_scale", 0)
    if (not isinstance(settings, dict) or not isinstance(frames, int) or isinstance(frames, bool) or frames < 1
            or not isinstance(size, list)
            or len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
            or not isinstance(chunks, bool)
            or not (crf == "config" or isinstance(crf, int | float) and not isinstance(crf, bool) and 0 <= crf <= 1)):
        raise InputError(f"{path}: 'segmented' must be what an export writes ({{\"num_frames\": 100, "
                         f"\"working_size\": [240, 426], ...}}), got {str(settings)[:80]}: {hint}")
    if frames != video.num_frames:
        raise InputError(f"{path}: exported for a video of {counted(frames, 'frame')}, but {video.path} has {video.num_frames}: "
                         f"it is another video (or another cut), and its strokes would land on other frames; {hint}")
    height, width = size
    ratio, expected = width / height, video.width / video.height
    # the working size rounds each side to a pixel: within a pixel of the video's shape
    if abs(ratio - expected) > expected * (1 / min(height, width) + 0.01):
        raise InputError(f"{path}: exported for frames of {width}x{height} at the working size (aspect "
                         f"{ratio:.3f}), but {video.path} is {video.width}x{video.height} (aspect {expected:.3f}): "
                         f"another video, its strokes would land elsewhere in the frame; {hint}")


def _fit_frames(frames: list, num_frames: int, source: str) -> dict:
    """A validated list of strokes per frame as a scribble dict of the video's length; InputError for strokes on
    a frame the video does not have. A list shorter than the video means no strokes on the frames it leaves out."""
    beyond = [f for f in range(num_frames, len(frames)) if frames[f]]
    if beyond:
        raise InputError(f"{source}: scribbles for frame {beyond[0]} but the video has {counted(num_frames, 'frame')} "
                         f"(0..{num_frames - 1})")
    return {"scribbles": [list(frames[f]) if f < len(frames) else [] for f in range(num_frames)]}


def _json_kind(value: object) -> str:
    return "an empty list" if value == [] else "null" if value is None else f"a {type(value).__name__}"


# What a browser, Finder or Explorer appends to a file's name for a second copy: `00012 (1).png`, `00012 copy 2.png`,
# `00012 - Copy (3).png`. Its number is no frame's: the last number of `00012 (1)` put the strokes on frame 1.
COPY_SUFFIX = re.compile(r"(?: - copy(?: \([0-9]+\))?| copy(?: [0-9]+)?| \([0-9]+\))$", re.IGNORECASE)
# [0-9], not \d: \d matches other scripts' digits, which int() reads (`٠٠٠٠٣.png` was frame 3).
NUMBER = re.compile(r"[0-9]+")


def frame_of(image_path: Path, video: VideoSource) -> int:
    """The frame a scribble image belongs to (see the module doc)."""
    stem = image_path.stem
    if video.frame_paths is None or stem not in video.frame_names:
        stem = COPY_SUFFIX.sub("", stem) or stem
    if video.frame_paths is not None and stem in video.frame_names:
        return video.frame_names.index(stem)
    if video.frame_paths is not None:  # img_0003.png for IMG_0003.JPG: one name where the file system ignores case
        folded = [name.casefold() for name in video.frame_names]
        if folded.count(stem.casefold()) == 1:
            return folded.index(stem.casefold())
    numbers = NUMBER.findall(stem)
    if not numbers:
        raise InputError(f"{image_path}: name it after its frame (e.g. 00012.png for frame 12, counted from 0)")
    frame = int(numbers[-1])
    if video.frame_paths is not None:  # frame1.jpg, frame2.jpg, ...: is 3.png the third frame or the fourth?
        numbers_of_frames = [int(n[-1]) if n else None for n in map(NUMBER.findall, video.frame_names)]
        if any(n is not None for n in numbers_of_frames) and numbers_of_frames != list(range(video.num_frames)):
            example = video.frame_paths[numbers_of_frames.index(frame) if frame in numbers_of_frames
                                        else min(frame, video.num_frames - 1)]
            raise InputError(f"{image_path}: the frames of {video.path} are not numbered 0, 1, 2, ... (the first is "
                             f"{video.frame_paths[0].name}), so the number {frame} is ambiguous: name the image "
                             f"after its frame (e.g. {example.stem}.png for {example.name})")
    if frame >= video.num_frames:
        raise InputError(f"{image_path}: scribbles for frame {frame} but the video has {counted(video.num_frames, 'frame')} "
                         f"(0..{video.num_frames - 1})")
    return frame


def read_scribble_image(path: Path, video: VideoSource) -> np.ndarray:
    """(H, W) int labels: NO_SCRIBBLE, 0 background, k object k; InputError for a wrong size or colour."""
    try:
        with Image.open(path) as image:
            if image.mode in WIDE_MODES:  # PIL clips them to white: every stroke read as no scribble at all
                raise InputError(f"{path}: a {WIDE_MODES[image.mode]} image; paint the scribbles in 8-bit RGB or "
                                 "RGBA colours (docs/OWN_VIDEOS.md)")
            pages = image_count(image)
            if pages > 1:  # only the first was read, the others' strokes dropped without a word
                raise InputError(f"{path}: {pages} images in one file (a multi-page or animated {image.format}); a "
                                 "scribble image is one frame's: save each as its own file, named after its frame")
            rgba = np.asarray(upright(image).convert("RGBA"))
            lossy = image.format in LOSSY_FORMATS
            grey = "grey image" if image.mode in ("L", "LA") else None
            if image.mode == "P":
                _refuse_indices_past_the_palette(path, image)
            if image.mode in ("P", "PA") and _all_grey(rgba):
                # Ids saved as a palette PNG without the DAVIS palette (PIL's default is grey, index k (k, k, k)):
                # they read as nothing just as a grey image's do.
                grey = "palette image of grey colours"
    except InputError:  # a ValueError too: it was wrapped as "cannot read scribble image PATH (PATH: ...)"
        raise
    except IMAGE_ERRORS as error:
        raise InputError(f"cannot read scribble image {path} ({error})") from error
    if rgba.shape[:2] != (video.height, video.width):
        raise InputError(f"{path} is {rgba.shape[1]}x{rgba.shape[0]} but the video is {video.width}x{video.height}:"
                         " paint the scribbles on a frame of the video at its own size")
    if grey and not lossy:
        _refuse_grey_ids(path, rgba, grey)
    return colours_to_labels(rgba, source=str(path), lossy=lossy)


def _refuse_indices_past_the_palette(path: Path, image: Image.Image) -> None:
    """InputError for a palette image whose pixels use indices its palette lacks (ids saved with numpy's
    `Image.fromarray(ids, "P")` and no palette: PIL writes a 1-colour one), which every reader shows black, nothing."""
    colours = len(image.getpalette() or []) // 3
    indices = np.asarray(image)
    past = indices >= colours
    if past.any():
        used = np.unique(indices[past])
        held = f"index {used[0]}" if used.size == 1 else f"indices {used[0]}..{used[-1]}"
        raise InputError(f"{path}: a palette image whose pixels hold {held} ({int(past.sum())} pixels) but whose "
                         f"palette has {counted(colours, 'colour')}: object ids saved without a palette? They read as "
                         "black, nothing: save the ids as a palette PNG with the DAVIS palette, as DAVIS annotations "
                         "are (docs/OWN_VIDEOS.md)")


def _all_grey(rgba: np.ndarray) -> bool:
    """Whether every opaque pixel of `rgba` is grey (R == G == B)."""
    opaque = rgba[rgba[..., 3] >= 128]
    return bool(((opaque[:, 0] == opaque[:, 1]) & (opaque[:, 1] == opaque[:, 2])).all())


def _refuse_grey_ids(path: Path, rgba: np.ndarray, what: str = "grey image") -> None:
    """InputError for a grey image holding levels 1..COLOUR_TOLERANCE: object ids (a grey mask of ids, as DAVIS
    annotations may be saved), which read as black, nothing. A first round was "no object scribble" without a word
    of why; a later one played its white (255) as background strokes alone, its objects dropped without a word."""
    levels = rgba[..., 0][rgba[..., 3] >= 128]
    ids = np.unique(levels[(levels >= 1) & (levels <= COLOUR_TOLERANCE)])
    if ids.size:
        count = int(np.count_nonzero((levels >= 1) & (levels <= COLOUR_TOLERANCE)))
        held = f"level {ids[0]}" if ids.size == 1 else f"levels {ids[0]}..{ids[-1]}"
        raise InputError(f"{path}: a {what} holding {held} ({count} pixels): object ids? They "
                         f"read as black, nothing: a scribble image gives object k its palette colour (object 1 "
                         f"{object_colour(1)}, 2 {object_colour(2)}, ...): save the ids as a palette PNG with the "
                         "DAVIS palette, as DAVIS annotations are (docs/OWN_VIDEOS.md)")


def colours_to_labels(rgba: np.ndarray, source: str = "scribble image", lossy: bool = False) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W) int16 labels by the colour convention. lossy: the image was saved as JPEG, whose
    compression makes the colours an error names (the advice is then to save it as PNG, not to change the brush)."""
    advice = (LOSSY_ADVICE if lossy else
              "use palette colour k for object k, white for background, transparent or black for nothing, with a "
              "hard-edged (not anti-aliased) brush")
    labels = np.full(rgba.shape[:2], NO_SCRIBBLE, np.int16)
    opaque = rgba[..., 3] >= 128
    # One integer per colour, and their order found by a sort without its argsort: np.unique over (N, 3) rows took
    # 23 s for a 4K image (a black canvas is all opaque), the palette built for each of its 254 colours 0.6 s more.
    packed = rgba[..., :3][opaque].astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
    codes = np.unique(packed)
    inverse = np.searchsorted(codes, packed)
    colours = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], 1).astype(np.uint8)
    palette = np.array(davis_palette(), np.int16).reshape(256, 3)
    known = np.concatenate([np.array([(0, 0, 0), BACKGROUND_COLOUR], np.int16), palette[1:MAX_OBJECTS + 1]])
    known_labels = np.array([NO_SCRIBBLE, 0, *range(1, MAX_OBJECTS + 1)], np.int16)
    distance = np.abs(colours[:, None, :].astype(np.int16) - known[None]).max(-1)  # (colours, known)
    nearest = distance.argmin(1)
    unknown = distance[np.arange(len(colours)), nearest] > COLOUR_TOLERANCE
    if unknown.any():
        bad = np.flatnonzero(unknown)
        counts = np.bincount(inverse.ravel(), minlength=len(colours))[bad]
        worst = bad[counts.argmax()]
        rows, cols = np.nonzero(opaque)
        where = np.flatnonzero(inverse.ravel() == worst)[0]
        raise InputError(
            f"{source}: unknown colour {tuple(int(c) for c in colours[worst])} at x={cols[where]}, y={rows[where]} "
            f"({counted(int(counts.sum()), 'pixel')} in {counted(len(bad), 'unknown colour')}): {advice}")
    labels[opaque] = known_labels[nearest][inverse.ravel()]
    blend = _soft_edge(labels, opaque)
    if blend is not None:
        k, i, j, x, y = blend
        raise InputError(
            f"{source}: object {k}'s colour {object_colour(k)} at x={x}, y={y} lies along the edge between "
            f"{_colour_name(i)} and {_colour_name(j)}, a blend of the two: " + (LOSSY_ADVICE if lossy else
            "an anti-aliased or soft brush (or a resized image) makes extra objects of its in-between colours; paint "
            "with a hard-edged brush (pencil tool), or on a transparent layer"))
    return labels


def _colour_name(label: int) -> str:
    return "black" if label == NO_SCRIBBLE else "white" if label == 0 else f"object {label}'s colour"


def _label_colour(label: int) -> np.ndarray:
    return np.array((0, 0, 0) if label == NO_SCRIBBLE else BACKGROUND_COLOUR if label == 0 else object_colour(label))


def _soft_edge(labels: np.ndarray, opaque: np.ndarray) -> tuple[int, int, int, int, int] | None:
    """(k, i, j, x, y) for an object k whose colour is a blend of two labels' it touches (i, j; opaque black counts)
    and at least half of whose pixels touch another painted label, at (x, y); None when there is none. Every
    level of a channel is within COLOUR_TOLERANCE of a palette colour, so the edge of a stroke painted with an
    anti-aliased brush on black (128 -> 96 -> 64 -> 32 -> 0 in red) passed as objects 72, 8 and 64 beside object 1."""
    kinds = np.where(opaque, labels, NO_SCRIBBLE - 1)  # transparent: no colour to blend
    height, width = kinds.shape
    padded = np.pad(kinds, 1, constant_values=NO_SCRIBBLE - 1)
    contact = np.zeros(kinds.shape, bool)  # object pixels beside another painted label
    pairs = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            other = padded[1 + dy: 1 + dy + height, 1 + dx: 1 + dx + width]
            touching = (kinds >= 1) & (other != kinds) & (other >= NO_SCRIBBLE)
            contact |= touching & (other >= 0)
            pairs.append(np.stack([kinds[touching], other[touching]], 1))
    touches = np.unique(np.concatenate(pairs), axis=0)
    for k in np.unique(kinds[kinds >= 1]).tolist():
        pixels = kinds == k
        if 2 * np.count_nonzero(contact & pixels) < np.count_nonzero(pixels):
            continue
        others = touches[touches[:, 0] == k, 1].tolist()
        for a, i in enumerate(others):
            for j in others[a + 1:]:
                if _is_blend(_label_colour(k), _label_colour(i), _label_colour(j)):
                    y, x = (int(v[0]) for v in np.nonzero(contact & pixels))
                    return k, i, j, x, y
    return None


def _is_blend(colour: np.ndarray, first: np.ndarray, second: np.ndarray) -> bool:
    """Whether `colour` is a mix of the two others (on the segment between them, up to the snapping's tolerance):
    black and white blend to greys only, black and (128, 0, 0) to dark reds only."""
    span = (second - first).astype(float)
    t = float(np.dot(colour - first, span) / np.dot(span, span))
    return 0 < t < 1 and float(np.linalg.norm(colour - first - t * span)) <= 2 * COLOUR_TOLERANCE


def label_strokes(labels: np.ndarray, max_rows: int = STROKE_ROWS) -> list[dict]:
    """(H, W) labels -> DAVIS strokes: one horizontal stroke per run of a label in each row, background
    first so that objects win where both land on the same cell of the agent's grid. Rows are pooled in
    blocks (any pixel of a label marks the block), so a thin stroke survives the reduction."""
    height, width = labels.shape
    factor = max(1, -(-height // max_rows))
    rows, cols = -(-height // factor), -(-width // factor)
    padded = np.full((rows * factor, cols * factor), NO_SCRIBBLE, np.int16)
    padded[:height, :width] = labels
    blocks = padded.reshape(rows, factor, cols, factor)
    pooled = np.full((rows, cols), NO_SCRIBBLE, np.int16)
    present = [int(v) for v in np.unique(labels) if v != NO_SCRIBBLE]
    for label in present:  # ascending: background (0) first, then objects in id order
        pooled[(blocks == label).any(axis=(1, 3))] = label
    # Block centres in normalised frame coordinates (as DAVIS paths are: pixel p of n spans [p / n, (p + 1) / n)).
    xs = np.minimum((np.arange(cols) + 0.5) * factor / width, 1.0)
    ys = np.minimum((np.arange(rows) + 0.5) * factor / height, 1.0)
    strokes: dict[int, list[dict]] = {label: [] for label in present}
    for row in range(rows):
        line = pooled[row]
        edges = np.flatnonzero(np.diff(line)) + 1
        for start, stop in zip(np.r_[0, edges], np.r_[edges, cols], strict=True):
            label = int(line[start])
            if label != NO_SCRIBBLE:
                path = [[float(xs[start]), float(ys[row])], [float(xs[stop - 1]), float(ys[row])]]
                strokes[label].append({"path": path, "object_id": label, "start_time": 0.0, "end_time": 0.0})
    return [stroke for label in present for stroke in strokes[label]]
