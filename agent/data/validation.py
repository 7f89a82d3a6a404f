"""Check every file a sequence's evaluation reads, before any model is built or clock runs.

Each check raises DatasetError with one line, `<file>: <what is wrong>`. What is checked, and why:
- frames: named 00000.jpg, 00001.jpg, ... without a gap (a missing frame would shift every later frame
  against its ground truth), each decodable (a truncated JPEG fails only when read), one size per sequence;
- annotations: one per frame and none more, palette, grey or 1-bit PNGs of the frames' size, object ids 1..N
  without a gap (a stray label 7 on a 1-object video would otherwise count as 6 more objects, each empty
  in truth and prediction, each J = 1), not mostly thin edges (a soft-edged mask's in-between values), N equal
  to the official count when there is one;
- scribble files 001.json, 002.json, ...: the sequence's name, one list of strokes per frame, finite
  points in [0, 1], integer object ids in 0..N (davis.validate_scribbles).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ascii_digits, counted, first_line
from ..paths import special_file
from .davis import (
    IMAGE_ERRORS,
    TRANSPOSING_ORIENTATIONS,
    VOID_LABEL,
    DatasetError,
    DavisReader,
    SequenceInfo,
    annotation_ids,
    draft_jpeg,
    exif_orientation,
    frame_mode_problem,
    read_scribble_file,
    refuse_special_file,
    validate_scribbles,
)

log = logging.getLogger(__name__)

# Image formats whose compression is lossy (MPO: a camera's multi-picture JPEG).
LOSSY_FORMATS = ("JPEG", "MPO")


def _frame_number(path: Path) -> int | None:
    return int(path.stem) if ascii_digits(path.stem) and len(path.stem) == 5 else None  # `٠٠٠٠١` is no frame 1


def _missing(path: Path) -> str:
    """'missing', naming the file beside it whose name differs only in case (`00002.PNG`: the glob of `*.png` passes
    it by, and the line said only that 00002.png was missing)."""
    try:
        twins = sorted(p.name for p in path.parent.iterdir() if p.name != path.name and p.name.lower() == path.name.lower())
    except OSError:
        twins = []
    return f"missing ({twins[0]} is there: DAVIS names are lower-case {path.suffix})" if twins else "missing"


def check_numbering(folder: Path, paths: list[Path], suffix: str, why: str) -> None:
    """Files 00000<suffix>, 00001<suffix>, ... without a gap, and no other name; `why` ends the gap's message."""
    numbers = []
    for path in paths:
        number = _frame_number(path)
        if number is None:
            raise DatasetError(f"{path}: not a DAVIS frame name (expected 00000{suffix}, 00001{suffix}, ...)")
        numbers.append(number)
    present = set(numbers)
    absent = [i for i in range(max(numbers) + 1) if i not in present] if numbers else []
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        first = folder / f"{absent[0]:05d}{suffix}"
        raise DatasetError(f"{first}: {_missing(first)}{more}: files must be numbered "
                           f"00000{suffix} to {max(numbers):05d}{suffix} without a gap ({why})")


def _decode(path: Path, what: str) -> tuple[tuple[int, int], np.ndarray | None, int]:
    """(width, height) from the header, for annotations the pixels, and the EXIF orientation (1: none); every byte
    is decoded (a truncated or empty file fails here, not inside the session)."""
    refuse_special_file(path)  # a FIFO hung the run here
    try:
        with Image.open(path) as image:
            size = image.size
            if what == "annotation":
                # Lossy compression turns the ids at every edge into neighbouring values: a 0/1 mask saved as
                # JPEG (under a .png name) held stray 2s, played as a second object.
                if image.format in LOSSY_FORMATS:
                    raise DatasetError(f"{path}: a {image.format} file, expected a PNG: lossy compression changes "
                                       "the object ids at every edge (save annotations as palette PNGs)")
                ids = annotation_ids(image, path)  # 16-bit grey too (it was refused as "a I;16 image")
                if ids is None:
                    # A colour is no object id (which colour is which object, and whether an edge's blend is
                    # one, cannot be told): say how to save the masks instead.
                    raise DatasetError(f"{path}: a {image.mode} image, expected a palette, grey or 1-bit PNG of "
                                       "object ids: save each mask as a palette PNG (as DAVIS's) or a grey one whose "
                                       "values are 0 background and 1..N the objects")
                return size, ids, 1
            orientation = exif_orientation(image)
            draft_jpeg(image)
            image.load()
            problem = frame_mode_problem(image)  # a float image; 16-bit grey is read (a PNG named .jpg too)
            if problem:
                raise DatasetError(f"{path}: {problem}")
            return size, None, orientation
    except IMAGE_ERRORS as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot decode this {what} ({first_line(error)})") from error


def check_frames(reader: DavisReader, sequence: str) -> tuple[int, int, int]:
    """(number of frames, height, width) after decoding every frame of `sequence`."""
    folder = reader.frames_dir(sequence)
    paths = reader.frame_paths(sequence)
    check_numbering(folder, paths, ".jpg", "a gap would shift every later frame against its ground truth")
    first_size = None
    turned = []
    for path in paths:
        size, _, orientation = _decode(path, "frame")
        if orientation != 1:
            turned.append(path)
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise DatasetError(f"{path}: frame is {size[0]}x{size[1]}, but {paths[0].name} is "
                               f"{first_size[0]}x{first_size[1]} (one size per sequence)")
    if turned:  # a DAVIS root's frames are read as stored; annotations drawn on the shown frames would not fit them
        log.warning("%s: %s with an EXIF orientation (%s%s), which is not applied: a DAVIS root's frames are read as "
                    "stored, and its annotations must be on that grid, not turned as viewers show the frames (if they "
                    "are, save the frames turned, e.g. with PIL's ImageOps.exif_transpose)", folder,
                    counted(len(turned), "frame"), turned[0].name, ", ..." if turned[1:] else "")
    width, height = first_size
    return len(paths), height, width


def _turned_by_exif(reader: DavisReader, sequence: str, size: tuple[int, int]) -> str:
    """' as stored; 00000.jpg's EXIF orientation 6 shows it WxH, ...' when the frames' stored size, transposed, is
    `size` (an annotation's): it was drawn on the frame as viewers show it; '' otherwise."""
    first = reader.frame_paths(sequence)[0]
    with Image.open(first) as image:
        stored, orientation = image.size, exif_orientation(image)
    if orientation not in TRANSPOSING_ORIENTATIONS or stored[::-1] != size:
        return ""
    return (f" as stored; {first.name}'s EXIF orientation {orientation} shows it {size[0]}x{size[1]}, as this "
            "annotation is, but a DAVIS root's frames are read as stored (the annotations' grid, as davisinteractive "
            "reads them): save the frames turned as shown, e.g. with PIL's ImageOps.exif_transpose")


def check_annotations(
    reader: DavisReader, sequence: str, num_frames: int, size: tuple[int, int], num_objects: int | None = None
) -> int:
    """The number of objects after reading every annotation of `sequence`: one PNG per frame of `size`
    (width, height), object ids 1..N without a gap, N == num_objects when that is known (official)."""
    folder = reader.annotations_dir(sequence)
    paths = reader.annotation_paths(sequence)
    if not paths:
        raise DatasetError(f"{folder}: no annotations (00000.png, ... one palette PNG per frame)")
    check_numbering(folder, paths, ".png", "one annotation per frame")
    if len(paths) < num_frames:
        first = folder / f"{len(paths):05d}.png"
        test_dev = ("; annotated on frame 0 only, as DAVIS test-dev, which is scored on an evaluation server: "
                    "session_runner.py --host URL --user-key KEY") if len(paths) == 1 else ""
        raise DatasetError(f"{first}: {_missing(first)} ({num_frames} frames, {len(paths)} annotations; every frame "
                           f"needs one{test_dev})")
    if len(paths) > num_frames:
        raise DatasetError(f"{paths[num_frames]}: annotation without a frame (the sequence has {num_frames} frames)")
    first_seen: dict[int, Path] = {}
    filled = np.zeros(256, bool)  # labels that fill a 2x2 patch somewhere (every DAVIS object does)
    void_seen = False
    for path in paths:
        image_size, pixels, _ = _decode(path, "annotation")
        if image_size != size:
            raise DatasetError(f"{path}: annotation is {image_size[0]}x{image_size[1]}, the frames are "
                               f"{size[0]}x{size[1]}{_turned_by_exif(reader, sequence, image_size)}")
        counts = np.bincount(pixels.ravel(), minlength=256)
        void_seen = void_seen or bool(counts[VOID_LABEL])
        filled |= _labels_filling_a_patch(pixels)
        for label in np.flatnonzero(counts):
            if label not in (0, VOID_LABEL):
                first_seen.setdefault(int(label), path)
    labels = sorted(first_seen)
    if not labels:
        # A binary mask saved as 0/255 (what most tools write) is all background and void: say so, the user sees
        # white objects.
        what = (f", only background 0 and void {VOID_LABEL} (DAVIS's void label: a mask saved as 0/{VOID_LABEL} "
                "marks no object; labels 1..N are the objects)") if void_seen else " (labels 1..N are the objects)"
        raise DatasetError(f"{folder}: no object in any annotation{what}")
    if num_objects is not None and labels[-1] > num_objects:
        label = next(x for x in labels if x > num_objects)
        raise DatasetError(f"{first_seen[label]}: label {label}, but {sequence} has {num_objects} object(s) "
                           "in the official metadata")
    gaps = [i for i in range(1, labels[-1] + 1) if i not in first_seen]
    if gaps:
        label = next(x for x in labels if x > gaps[0])
        missing = _label_ranges(gaps)
        raise DatasetError(f"{first_seen[label]}: label {label}, but label(s) {missing} appear in no annotation of "
                           f"{sequence}: object ids must be 1..N without a gap (a stray label would count as "
                           "extra objects)")
    # A soft-edged mask (anti-aliased, blurred or resized 0/255) holds every value of 1..254 along its edges, each
    # a thin line: it passed as 254 objects. Most of its labels never fill a 2x2 patch; a real object does.
    thin = [label for label in labels if not filled[label]]
    if len(thin) >= 2 and 2 * len(thin) > len(labels):
        raise DatasetError(f"{first_seen[thin[0]]}: label(s) {_label_ranges(thin)} of 1..{labels[-1]} only ever "
                           f"form thin edges, never a 2x2 patch in any annotation of {sequence}: a soft-edged mask "
                           "(anti-aliased, blurred or resized) whose in-between values would count as objects; save "
                           "masks with hard edges (nearest-neighbour resizing, no anti-aliasing)")
    if num_objects is not None and labels[-1] < num_objects:
        raise DatasetError(f"{folder}: annotations have {labels[-1]} object(s), the official metadata "
                           f"{num_objects}")
    return labels[-1]


def _labels_filling_a_patch(pixels: np.ndarray) -> np.ndarray:
    """(256,) bool: the labels that cover some 2x2 block of `pixels` entirely."""
    corner = pixels[:-1, :-1]
    block = (corner == pixels[1:, :-1]) & (corner == pixels[:-1, 1:]) & (corner == pixels[1:, 1:])
    return np.bincount(corner[block], minlength=256) > 0


def _label_ranges(labels: list[int], most: int = 6) -> str:
    """Sorted labels as ranges, `2-6, 9`; past `most` ranges the rest counted: a soft-edged (resized or
    JPEG-compressed) 0/255 mask holds most values of 1..254, and listed them one by one in a 1,000-character line."""
    ranges: list[list[int]] = []
    for label in labels:
        if ranges and label == ranges[-1][1] + 1:
            ranges[-1][1] = label
        else:
            ranges.append([label, label])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:most])
    rest = sum(b - a + 1 for a, b in ranges[most:])
    return f"{text} and {rest} more" if rest else text


def count_scribble_files(reader: DavisReader, sequence: str) -> int:
    """Scribble files 001, 002, ... present without a gap (davisinteractive asks for them by index)."""
    count = 0
    while (reader.scribbles_dir(sequence) / f"{count + 1:03d}.json").is_file():
        count += 1
    folder = reader.scribbles_dir(sequence)
    after = folder / f"{count + 1:03d}.json"
    if after.is_dir() or special_file(after):  # it and every later file were left out without a word
        raise DatasetError(f"{after}: {special_file(after) or 'a folder'}, not a scribble file")
    misnamed = [p for p in reader.listed(folder, "*.json") if not (len(p.stem) == 3 and ascii_digits(p.stem))]
    if misnamed:  # e.g. 1.json for 001.json: it would never be played
        raise DatasetError(f"{misnamed[0]}: scribble files are named 001.json, 002.json, ... (three digits)")
    after_gap = [p for p in reader.scribble_paths(sequence) if int(p.stem) > count + 1]
    if after_gap:  # it would never be played (nor read): nothing is dropped silently
        raise DatasetError(f"{after_gap[0]}: {count + 1:03d}.json is missing: scribble files must be numbered 001.json, "
                           "002.json, ... without a gap")
    return count


def check_scribble_file(path: Path, sequence: str, num_frames: int, num_objects: int) -> dict:
    """One scribble file, parsed and checked against the sequence (see davis.validate_scribbles)."""
    data = read_scribble_file(path)
    validate_scribbles(data, source=str(path), num_frames=num_frames, num_objects=num_objects)
    if data.get("sequence") != sequence:  # davisinteractive asserts this
        raise DatasetError(f"{path}: names sequence {data.get('sequence')!r}, expected {sequence!r}")
    strokes = {stroke["object_id"] for frame in data["scribbles"] for stroke in frame if len(stroke["path"])}
    if not strokes - {0}:  # each file is one sample's first scribble, and the agent starts from an object
        raise DatasetError(f"{path}: no object stroke (object_id 1..{num_objects}): a sample's first scribble "
                           "must mark an object")
    without = [i for i in range(1, num_objects + 1) if i not in strokes]
    if without and path.name == "001.json":
        # Not an error (a user may scribble objects later), but the usual sign of a stray annotation label.
        log.warning("%s: no stroke for object(s) %s of %s", path, ", ".join(map(str, without)), sequence)
    return data


def validate_sequence(
    reader: DavisReader, sequence: str, num_objects: int | None = None, scribbles: bool = True
) -> SequenceInfo:
    """Every frame, annotation and (with `scribbles`) scribble file of `sequence`; num_objects: the official
    count, if any. Returns the metadata read from the files; raises DatasetError naming the first bad file."""
    num_frames, height, width = check_frames(reader, sequence)
    objects = check_annotations(reader, sequence, num_frames, (width, height), num_objects)
    count = count_scribble_files(reader, sequence)
    if scribbles:
        if count == 0:
            raise DatasetError(f"{reader.scribbles_dir(sequence) / '001.json'}: missing (every sequence needs a "
                               "scribble)")
        for index in range(1, count + 1):
            check_scribble_file(reader.scribbles_dir(sequence) / f"{index:03d}.json", sequence, num_frames, objects)
    return SequenceInfo(name=sequence, num_frames=num_frames, num_objects=objects, height=height, width=width,
                        num_scribbles=count)


def validate_subset(root: str | Path, subset: str, scribbles: bool = True) -> list[SequenceInfo]:
    """Every sequence listed in the root's ImageSets/2017/<subset>.txt, validated (at least one)."""
    reader = DavisReader(root)
    names = reader.sequences(subset)
    if not names:
        raise DatasetError(f"{reader.subset_file(subset)}: lists no sequence")
    infos = []
    for name in names:
        if not reader.frames_dir(name).is_dir():
            raise DatasetError(f"{reader.frames_dir(name)}: missing (listed in {reader.subset_file(subset).name})")
        infos.append(validate_sequence(reader, name, scribbles=scribbles))
    return infos
