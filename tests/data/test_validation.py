"""agent.data.validation and davis.validate_scribbles: every bad file ends in one DatasetError line naming it."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from agent.data.davis import MAX_OBJECT_ID, DatasetError, DavisReader, draft_jpeg, validate_scribbles
from agent.data.validation import validate_sequence, validate_subset

ONE, TWO = "synth-000", "synth-001"  # tiny_synthetic_root: 1 and 2 objects, 6 frames of 96x160


@pytest.fixture
def root(tiny_synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny synthetic root, free to break."""
    return Path(shutil.copytree(tiny_synthetic_root, tmp_path / "root"))


def _frame(root: Path, sequence: str, index: int) -> Path:
    return root / "JPEGImages" / "480p" / sequence / f"{index:05d}.jpg"


def _annotation(root: Path, sequence: str, index: int) -> Path:
    return root / "Annotations" / "480p" / sequence / f"{index:05d}.png"


def _scribble(root: Path, sequence: str, index: int = 1) -> Path:
    return root / "Scribbles" / sequence / f"{index:03d}.json"


def _fails(root: Path, sequence: str, *fragments: str, **kwargs) -> str:
    """validate_sequence raises one line containing every fragment; returns it."""
    with pytest.raises(DatasetError) as error:
        validate_sequence(DavisReader(root), sequence, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _edit_scribble(root: Path, sequence: str, edit) -> Path:
    path = _scribble(root, sequence)
    data = json.loads(path.read_text())
    frame = next(i for i, strokes in enumerate(data["scribbles"]) if strokes)
    edit(data, frame)
    path.write_text(json.dumps(data))  # json writes NaN and Infinity as Python reads them back
    return path


def test_good_sequence_gives_its_metadata(root: Path) -> None:
    info = validate_sequence(DavisReader(root), TWO)
    assert (info.num_frames, info.num_objects, info.height, info.width, info.num_scribbles) == (6, 2, 96, 160, 1)


# --- frames ------------------------------------------------------------------------------------------


def test_missing_middle_frame_is_an_error_not_a_shift(root: Path) -> None:
    _frame(root, ONE, 3).unlink()
    _fails(root, ONE, f"{_frame(root, ONE, 3)}: missing", "shift every later frame")


def test_frame_with_another_name_is_an_error(root: Path) -> None:
    shutil.copy(_frame(root, ONE, 0), _frame(root, ONE, 0).with_name("cover.jpg"))
    _fails(root, ONE, "cover.jpg: not a DAVIS frame name")


def test_frame_named_in_another_scripts_digits_is_not_that_frame(root: Path) -> None:
    # str.isdigit() and int() read Arabic-Indic digits: `٠٠٠٠٥.jpg` passed as frame 5, sorted after 00004.jpg
    path = _frame(root, ONE, 5).rename(_frame(root, ONE, 5).with_name("\u0660\u0660\u0660\u0660\u0665.jpg"))
    _fails(root, ONE, f"{path}: not a DAVIS frame name (expected 00000.jpg")


@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["truncated", "zero-byte"])
def test_undecodable_frame_names_the_file(root: Path, keep: float) -> None:
    path = _frame(root, ONE, 2)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    _fails(root, ONE, f"{path}: cannot decode this frame")


def test_draft_jpeg_decodes_an_eighth_and_leaves_other_formats(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 96, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "f.jpg")
    Image.fromarray(pixels).save(tmp_path / "f.png")
    with Image.open(tmp_path / "f.jpg") as image:
        assert draft_jpeg(image)
        image.load()
        assert image.size == (12, 8)
    with Image.open(tmp_path / "f.png") as image:
        assert not draft_jpeg(image)
        assert image.size == (96, 64)


@pytest.mark.parametrize("mode", ["exif-rotated", "CMYK", "L", "progressive"])
def test_frames_are_read_as_stored_in_rgb(root: Path, mode: str) -> None:
    """DAVIS frames are upright as stored, the annotations on that grid (davisinteractive ignores EXIF too): an
    EXIF orientation (6: shown turned 90 degrees) is not applied; CMYK, grey and progressive JPEGs are RGB."""
    path = _frame(root, ONE, 2)
    image = Image.open(path)
    exif = Image.Exif()
    exif[0x0112] = 6
    {"exif-rotated": lambda: image.save(path, quality=95, exif=exif),
     "CMYK": lambda: image.convert("CMYK").save(path, quality=95),
     "L": lambda: image.convert("L").save(path, quality=95),
     "progressive": lambda: image.save(path, quality=95, progressive=True)}[mode]()
    stored = np.asarray(Image.open(path).convert("RGB"))
    reader = DavisReader(root)
    assert validate_sequence(reader, ONE).num_frames == 6
    frames = reader.load_frames(ONE)
    assert frames.shape == (6, 96, 160, 3)
    np.testing.assert_array_equal(frames[2], stored)
    assert np.abs(frames[2].astype(int) - np.asarray(image.convert("RGB"), int)).mean() < (20 if mode == "L" else 3)


def test_frames_turned_by_exif_against_annotations_drawn_as_shown_say_so(root: Path, caplog) -> None:
    """Phone frames stored 96 wide and 160 high, shown 160x96 by their EXIF orientation 6, as the annotations were
    drawn: the error was "annotation is 160x96, the frames are 96x160", a size every viewer contradicts (and a square
    video played against turned frames without a word: the warning says the orientation is not applied)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    for index in range(6):
        path = _frame(root, ONE, index)
        Image.open(path).transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    with caplog.at_level("WARNING"):
        _fails(root, ONE, f"{_annotation(root, ONE, 0)}: annotation is 160x96, the frames are 96x160 as stored; "
               "00000.jpg's EXIF orientation 6 shows it 160x96", "ImageOps.exif_transpose")
    assert "6 frames with an EXIF orientation (00000.jpg, ...), which is not applied" in caplog.text


def test_hidden_files_of_a_root_copied_by_macos_are_left_out(root: Path) -> None:
    """macOS writes a `._name` AppleDouble file beside each file it copies to a USB drive or share: `._00000.jpg`
    was "not a DAVIS frame name", `._001.json` a misnamed scribble file, a `.ipynb_checkpoints` folder a sequence."""
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)
    for path in (_frame(root, ONE, 0), _annotation(root, ONE, 0), _scribble(root, ONE)):
        path.with_name("._" + path.name).write_bytes(apple_double)
    (_frame(root, ONE, 0).parent / ".DS_Store").write_bytes(bytes(16))
    (root / "JPEGImages" / "480p" / ".ipynb_checkpoints").mkdir()
    reader = DavisReader(root)
    info = validate_sequence(reader, ONE)
    assert (info.num_frames, info.num_objects, info.num_scribbles) == (6, 1, 1)
    assert reader.load_frames(ONE).shape == (6, 96, 160, 3)
    assert ".ipynb_checkpoints" not in reader.sequences()
    _frame(root, ONE, 3).rename(_frame(root, ONE, 3).with_name(".00003.jpg"))  # hidden, yet still a frame missing
    _fails(root, ONE, f"{_frame(root, ONE, 3)}: missing")


def test_frames_of_two_sizes_are_an_error(root: Path) -> None:
    path = _frame(root, ONE, 4)
    Image.open(path).resize((80, 48)).save(path)
    _fails(root, ONE, f"{path}: frame is 80x48", "one size per sequence")


# --- annotations -------------------------------------------------------------------------------------


def test_missing_annotation_is_an_error(root: Path) -> None:
    _annotation(root, ONE, 5).unlink()
    _fails(root, ONE, f"{_annotation(root, ONE, 5)}: missing")


def test_an_upper_case_suffix_is_named_beside_the_missing_name(root: Path) -> None:
    # `00002.PNG` was passed by: "00002.png: missing" without a word of the file beside it.
    for index in (2, 5):
        path = _annotation(root, ONE, index)
        path.rename(path.with_name(f"{index:05d}.PNG"))
        _fails(root, ONE, f"{path}: missing ({index:05d}.PNG is there: DAVIS names are lower-case .png)")
        path.with_name(f"{index:05d}.PNG").rename(path)
    frame = _frame(root, ONE, 3)
    frame.rename(frame.with_name("00003.JPG"))
    _fails(root, ONE, f"{frame}: missing (00003.JPG is there: DAVIS names are lower-case .jpg)", "shift every later")


def test_frames_of_another_format_are_named_beside_no_frames(root: Path) -> None:
    # A folder of PNG frames was "no frames for sequence" without a word on the files it holds.
    for index in range(6):
        frame = _frame(root, ONE, index)
        Image.open(frame).save(frame.with_suffix(".png"))
        frame.unlink()
    _fails(root, ONE, f"no frames for sequence '{ONE}'", "frames are .jpg files (found 6 .png)")


def test_annotation_without_a_frame_is_an_error(root: Path) -> None:
    shutil.copy(_annotation(root, ONE, 5), _annotation(root, ONE, 6))
    _fails(root, ONE, f"{_annotation(root, ONE, 6)}: annotation without a frame")


def test_annotation_of_another_size_is_an_error(root: Path) -> None:
    path = _annotation(root, ONE, 1)
    Image.open(path).resize((80, 48), Image.NEAREST).save(path)
    _fails(root, ONE, f"{path}: annotation is 80x48, the frames are 160x96")


def test_rgb_annotation_is_an_error(root: Path) -> None:
    path = _annotation(root, ONE, 1)
    Image.open(path).convert("RGB").save(path)
    _fails(root, ONE, f"{path}: a RGB image, expected a palette",
           "save each mask as a palette PNG (as DAVIS's) or a grey one whose values are 0 background and 1..N")


def test_one_bit_annotations_are_read_as_ids_0_and_1(root: Path) -> None:
    """A bool mask as PIL saves it (mode "1") is a lossless mask of one object: it was refused as "a 1 image"."""
    reader = DavisReader(root)
    truth = reader.load_annotations(ONE)
    for index in range(6):
        Image.fromarray(truth[index] == 1).save(_annotation(root, ONE, index))
    assert Image.open(_annotation(root, ONE, 0)).mode == "1"
    assert validate_sequence(reader, ONE).num_objects == 1
    np.testing.assert_array_equal(reader.load_annotations(ONE), truth)


def test_16_bit_grey_annotations_are_read_as_their_ids(root: Path) -> None:
    """OpenCV's imwrite of a uint16 label map (a 16-bit grey PNG) holds the ids, as davisinteractive reads them: it
    was refused as "a I;16 image, expected a palette, grey ... PNG", a grey one. An id above 255 is no DAVIS id."""
    reader = DavisReader(root)
    truth = reader.load_annotations(TWO)
    for index in range(6):
        Image.fromarray(truth[index].astype(np.uint16)).save(_annotation(root, TWO, index))
    assert Image.open(_annotation(root, TWO, 0)).mode == "I;16"
    assert validate_sequence(reader, TWO).num_objects == 2
    np.testing.assert_array_equal(reader.load_annotations(TWO), truth)
    wide = truth[3].astype(np.uint16)
    wide[0, 0] = 300
    Image.fromarray(wide).save(_annotation(root, TWO, 3))
    path = _annotation(root, TWO, 3)
    _fails(root, TWO, f"{path}: a 16-bit grey annotation of values 0..300: object ids are 0 (background), 1..254")
    with pytest.raises(DatasetError, match="values 0..300"):
        reader.load_annotations(TWO)


def test_jpeg_annotation_is_an_error_not_an_extra_object(root: Path) -> None:
    """A 0/1 mask saved as JPEG under the .png name: its ringing left stray 2s, played as a second object."""
    for index in range(6):
        path = _annotation(root, ONE, index)
        Image.fromarray(np.asarray(Image.open(path))).save(path, format="JPEG", quality=90)
    assert 2 in np.asarray(Image.open(_annotation(root, ONE, 0))), "the JPEG should hold a stray 2"
    _fails(root, ONE, f"{_annotation(root, ONE, 0)}: a JPEG file, expected a PNG", "lossy compression")


def _paint(path: Path, label: int, size: int = 20) -> None:
    image = Image.open(path)
    mask = np.array(image)
    mask[:size, :size] = label
    painted = Image.fromarray(mask)
    painted.putpalette(image.getpalette())
    painted.save(path)


def test_stray_label_is_an_error_not_phantom_objects(root: Path) -> None:
    """The issue's worst case: a 20x20 patch of 7 on a 1-object video scored 6 empty objects at J = 1."""
    _paint(_annotation(root, ONE, 3), 7)
    _fails(root, ONE, f"{_annotation(root, ONE, 3)}: label 7", "label(s) 2-6 appear in no annotation")


def test_many_stray_labels_are_listed_as_ranges_in_a_short_line(root: Path) -> None:
    """A soft-edged mask holds most values of 1..254: every missing one was listed, a 1,000-character line."""
    path = _annotation(root, ONE, 3)
    image = Image.open(path)
    mask = np.array(image)
    mask[0, :100] = np.arange(2, 202, 2)  # labels 2, 4, ..., 200: 3, 5, ..., 199 are missing
    painted = Image.fromarray(mask)
    painted.putpalette(image.getpalette())
    painted.save(path)
    message = _fails(root, ONE, f"{path}: label 4, but label(s) 3, 5, 7, 9, 11, 13 and 93 more appear in no "
                                "annotation")
    assert len(message) < 400, message


def test_label_above_the_official_count_is_an_error(root: Path) -> None:
    _fails(root, TWO, "label 2, but synth-001 has 1 object(s) in the official metadata", num_objects=1)
    _fails(root, ONE, "annotations have 1 object(s), the official metadata 2", num_objects=2)


def test_annotations_without_objects_are_an_error(root: Path) -> None:
    for index in range(6):
        path = _annotation(root, ONE, index)
        blank = Image.fromarray(np.zeros((96, 160), np.uint8))
        blank.putpalette(Image.open(path).getpalette())
        blank.save(path)
    _fails(root, ONE, "no object in any annotation (labels 1..N are the objects)")


def test_annotations_saved_as_0_255_say_255_is_void(root: Path) -> None:
    """A binary mask as most tools write it: the user sees white objects, "no object" alone puzzled."""
    for index in range(6):
        path = _annotation(root, ONE, index)
        Image.fromarray((np.asarray(Image.open(path)) > 0).astype(np.uint8) * 255).save(path)
    _fails(root, ONE, "no object in any annotation, only background 0 and void 255", "0/255")


def test_soft_edged_masks_are_an_error_not_254_objects(root: Path) -> None:
    """A 0/255 mask with anti-aliased edges holds every value of 1..254, each a thin line along the edge: it
    passed as 254 objects (a 254-object session, its phantom objects never scribbled)."""
    from PIL import ImageFilter

    for index in range(6):
        path = _annotation(root, ONE, index)
        mask = Image.fromarray((np.asarray(Image.open(path)) > 0).astype(np.uint8) * 255)
        soft = mask.resize((640, 384), Image.NEAREST).filter(ImageFilter.GaussianBlur(8))
        soft.resize((160, 96), Image.BILINEAR).save(path)
    values = set().union(*(np.unique(np.asarray(Image.open(_annotation(root, ONE, i)))) for i in range(6)))
    assert values == set(range(256)), "the soft edges should hold every label, so no gap is found"
    _fails(root, ONE, "only ever form thin edges, never a 2x2 patch", "of 1..254", "soft-edged mask",
           "nearest-neighbour")


def test_a_small_object_is_not_taken_for_a_soft_edge(root: Path) -> None:
    """Objects of a few pixels (a 2x2 patch in one frame) are objects."""
    for index, label in ((2, 2), (4, 3)):
        _paint(_annotation(root, ONE, index), label, size=2)
    assert validate_sequence(DavisReader(root), ONE).num_objects == 3


# --- scribble files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda d, f: d["scribbles"][f][0]["path"].__setitem__(0, [math.nan, 0.5]), "NaN or infinite"),
    (lambda d, f: d["scribbles"][f][0]["path"].__setitem__(0, [math.inf, 0.5]), "NaN or infinite"),
    (lambda d, f: d["scribbles"][f][0]["path"].__setitem__(0, [1.5, 0.5]), "outside [0, 1]"),
    (lambda d, f: d["scribbles"][f][0]["path"].__setitem__(0, ["a", 0.5]), "not a list of [x, y] points"),
    (lambda d, f: d["scribbles"][f][0]["path"].__setitem__(0, ["0.5", 0.5]), "not a list of [x, y] points"),
    (lambda d, f: d["scribbles"][f][0]["path"].__setitem__(0, [True, False]), "not a list of [x, y] points"),
    (lambda d, f: d["scribbles"][f][0].__setitem__("object_id", None), "object_id None: object ids are integers"),
    (lambda d, f: d["scribbles"][f][0].__setitem__("object_id", 1.5), "object_id 1.5: object ids are integers"),
    (lambda d, f: d["scribbles"][f][0].__setitem__("object_id", True), "object_id True"),
    (lambda d, f: d["scribbles"][f][0].__setitem__("object_id", 2), "object_id 2, but the video has 1 object(s)"),
    (lambda d, f: d["scribbles"][f][0].__setitem__("object_id", -1), "object_id -1"),
    (lambda d, f: d["scribbles"].pop(), "has 5 frames of strokes, the video has 6"),
    (lambda d, f: d.__setitem__("sequence", "other"), "names sequence 'other'"),
    (lambda d, f: d["scribbles"][f][0]["path"].__setitem__(0, [10**400, 0.5]), "not a list of [x, y] points"),
    (lambda d, f: [s.__setitem__("object_id", 0) for s in d["scribbles"][f]], "no object stroke (object_id 1..1)"),
    (lambda d, f: d["scribbles"][f].clear(), "no object stroke"),
], ids=["nan", "inf", "outside", "text", "numeric-text", "bools", "null-id", "float-id", "bool-id", "id-too-high", "negative-id",
        "too-few-frames", "other-sequence", "beyond-float", "background-only", "no-strokes"])
def test_bad_scribble_file_names_itself(root: Path, edit, fragment: str) -> None:
    path = _edit_scribble(root, ONE, edit)
    _fails(root, ONE, f"{path}: ", fragment)


def test_an_empty_path_draws_nothing_and_marks_no_object(root: Path) -> None:
    """A stroke of no points (a click without a drag) is read as nothing drawn: it was refused as "a path that is
    not a list of [x, y] points", and it counts as no stroke of its object."""
    _edit_scribble(root, ONE, lambda d, f: d["scribbles"][f].append({"path": [], "object_id": 0}))
    assert validate_sequence(DavisReader(root), ONE).num_scribbles == 1
    path = _edit_scribble(root, ONE, lambda d, f: [s["path"].clear() for s in d["scribbles"][f] if s["object_id"]])
    _fails(root, ONE, f"{path}: no object stroke")


def test_scribble_file_that_is_not_json(root: Path) -> None:
    _scribble(root, ONE).write_text("{not json")
    _fails(root, ONE, f"{_scribble(root, ONE)}: not valid JSON")


def test_scribble_file_nested_too_deeply_to_parse(root: Path) -> None:
    _scribble(root, ONE).write_text("[" * 100_000 + "]" * 100_000)  # json.loads raises RecursionError on it
    _fails(root, ONE, f"{_scribble(root, ONE)}: not valid JSON (nested too deeply to parse)")


def test_scribble_file_not_named_with_three_digits_is_an_error_not_ignored(root: Path) -> None:
    shutil.copy(_scribble(root, ONE), _scribble(root, ONE).with_name("2.json"))  # meant as 002.json
    _fails(root, ONE, f"{_scribble(root, ONE).with_name('2.json')}: scribble files are named 001.json")


def test_scribble_file_named_in_another_scripts_digits_is_an_error_not_ignored(root: Path) -> None:
    # `٠٠٢.json` passed str.isdigit(), and the listing of [0-9][0-9][0-9].json left it out without a word
    path = Path(shutil.copy(_scribble(root, ONE), _scribble(root, ONE).with_name("\u0660\u0660\u0662.json")))
    _fails(root, ONE, f"{path}: scribble files are named 001.json")


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("which", ["frame", "annotation"])
def test_fifo_or_device_frame_is_an_error_not_a_hang(root: Path, which: str, kind: str) -> None:
    path = (_frame if which == "frame" else _annotation)(root, ONE, 2)
    path.unlink()
    os.mkfifo(path) if kind == "fifo" else path.symlink_to("/dev/zero")  # PIL waited for the FIFO's writer
    _fails(root, ONE, f"{path}: a {'FIFO' if kind == 'fifo' else 'character device'}", "not a regular file")


@pytest.mark.parametrize(("dtype", "image_format", "mode"), [(np.uint16, "PNG", "I;16"), (">u2", "TIFF", "I;16B"),
                                                             (np.int32, "TIFF", "I")])
def test_a_sixteen_bit_grey_frame_reads_as_its_eight_bit_version(root: Path, dtype, image_format, mode) -> None:
    # PIL's RGB conversion clips 16-bit values: the frame was played white, then refused ("frames must be 8-bit"),
    # though a 16-bit RGB PNG is read (PIL reduces it to 8 bits). By its top 8 bits it is the 8-bit frame.
    path = _frame(root, ONE, 1)  # 16 bits under a .jpg name
    grey = np.asarray(Image.open(path).convert("L"))
    Image.fromarray(grey).save(path, format="PNG")
    eight = DavisReader(root).load_frames(ONE)
    np.testing.assert_array_equal(eight[1], np.repeat(grey[..., None], 3, axis=2))
    Image.fromarray((grey.astype(np.int32) * 257).astype(dtype)).save(path, format=image_format)
    assert Image.open(path).mode == mode
    assert validate_sequence(DavisReader(root), ONE).num_frames == 6
    np.testing.assert_array_equal(DavisReader(root).load_frames(ONE), eight)


@pytest.mark.parametrize(("values", "problem"), [
    (70000, "a I image (32-bit integer) of values 70000..70000, not 16-bit (0..65535)"),
    (-1, "a I image (32-bit integer) of values -1..-1, not 16-bit (0..65535)"),
    (0.5, "a F image (32-bit float)")])
def test_a_frame_that_is_no_image_is_an_error(root: Path, values, problem) -> None:
    # A float image (a depth map) and integers beyond 16 bits: which values are black and white cannot be told.
    path = _frame(root, ONE, 1)
    Image.fromarray(np.full((96, 160), values, np.float32 if isinstance(values, float) else np.int32)).save(
        path, format="TIFF")
    _fails(root, ONE, f"{path}: {problem}; frames must be 8-bit or 16-bit RGB or grey")
    with pytest.raises(DatasetError, match=re.escape(f"{path}: {problem}")):  # unvalidated: a bare ValueError
        DavisReader(root).load_frames(ONE)


def test_a_signed_16_bit_frame_is_named_so(root: Path) -> None:
    # PIL widens a TIFF of signed 16-bit samples to mode I (32-bit): the line names what the file holds.
    path = _frame(root, ONE, 1)
    values = np.arange(-2000, -2000 + 96 * 160, dtype="<i2").reshape(96, 160)
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[339] = 2  # SampleFormat: signed integer
    Image.frombytes("I;16", (160, 96), values.tobytes()).save(path, format="TIFF", tiffinfo=tags)
    problem = f"a signed 16-bit image of values -2000..{values.max()}, not 16-bit (0..65535)"
    _fails(root, ONE, f"{path}: {problem}; frames must be 8-bit or 16-bit RGB or grey")


def test_a_multi_page_frame_is_refused(root: Path) -> None:
    # Its first page was read as the frame, the others dropped unsaid.
    path = _frame(root, ONE, 1)
    pages = [Image.fromarray(np.full((96, 160, 3), value, np.uint8)) for value in (10, 20)]
    pages[0].save(path, format="TIFF", save_all=True, append_images=pages[1:])
    _fails(root, ONE, f"{path}: 2 images in one file (a multi-page or animated TIFF); a frame must be one image")


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_scribble_file_that_is_a_fifo_or_folder_is_an_error_not_a_sequence_without_scribbles(
        root: Path, kind: str) -> None:
    path = _scribble(root, ONE, 2)  # after 001.json: it (and any later file) was left out without a word
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    _fails(root, ONE, f"{path}: {'a FIFO (named pipe)' if kind == 'fifo' else 'a folder'}, not a scribble file")


def test_scribble_file_after_a_gap_is_an_error_not_ignored(root: Path) -> None:
    shutil.copy(_scribble(root, ONE), _scribble(root, ONE, 3))  # 003.json without 002.json: never played
    _fails(root, ONE, f"{_scribble(root, ONE, 3)}: 002.json is missing")


def test_api_scribbles_without_a_count_cap_the_object_id() -> None:
    """With num_objects None an id of 10**9 would ask for 10**9 score maps: refused up front."""
    strokes = [[{"path": [[0.1, 0.1], [0.2, 0.2]], "object_id": 10**9}]]
    with pytest.raises(DatasetError, match=f"object ids are 0..{MAX_OBJECT_ID}"):
        validate_scribbles({"scribbles": strokes})
    strokes[0][0]["object_id"] = np.int64(MAX_OBJECT_ID)  # numpy integers are integers
    validate_scribbles({"scribbles": strokes})


# --- whole roots ---------------------------------------------------------------------------------------


def test_a_fifo_as_root_is_named_not_missing(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "root")  # it was "does not exist"
    with pytest.raises(DatasetError, match="root is a FIFO \\(named pipe\\), not a folder"):
        DavisReader(tmp_path / "root")


def test_empty_root_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"val.txt: add it"):
        validate_subset(tmp_path, "val")


def test_subset_listing_an_absent_sequence_is_an_error(root: Path) -> None:
    listing = root / "ImageSets" / "2017" / "val.txt"
    listing.write_text(listing.read_text() + "ghost\n")
    with pytest.raises(DatasetError, match=r"480p/ghost: missing \(listed in val.txt\)"):
        validate_subset(root, "val")


def test_subset_listing_with_a_byte_order_mark_or_not_utf8(root: Path) -> None:
    listing = root / "ImageSets" / "2017" / "val.txt"
    names = listing.read_text()
    listing.write_text(names, encoding="utf-8-sig")  # as some editors save it
    assert [info.name for info in validate_subset(root, "val")] == names.split()
    listing.write_bytes(names.encode() + b"caf\xe9\n")
    with pytest.raises(DatasetError, match=r"val.txt: cannot be read as UTF-8 text"):
        validate_subset(root, "val")


@pytest.mark.parametrize("kind", ["FIFO", "folder"])
def test_subset_listing_that_is_no_file_says_what_it_is(root: Path, kind: str) -> None:
    """agent.train's train.txt, agent.bench's val.txt and the root writers': it was "no list of 'val' sequences at
    .../val.txt: add it", the file being there."""
    listing = root / "ImageSets" / "2017" / "val.txt"
    listing.unlink()
    if kind == "FIFO":
        os.mkfifo(listing)
    else:
        listing.mkdir()
    what = "a FIFO \\(named pipe\\)" if kind == "FIFO" else "a folder"
    with pytest.raises(DatasetError, match=rf"val.txt: is {what}, not a file \(one sequence name per line\)$"):
        validate_subset(root, "val")


@pytest.mark.parametrize("name", ["JPEGImages/480p/synth-001", "../other/synth-001", "."])
def test_subset_listing_a_path_is_an_error(root: Path, name: str) -> None:
    # It was "not in the root" (left out of a session with an INFO line), or read from outside the root.
    from agent.data.registry import register_dataset, restore

    listing = root / "ImageSets" / "2017" / "val.txt"
    listing.write_text(listing.read_text() + f"{name}\n")
    with pytest.raises(DatasetError, match=f"val.txt: '{re.escape(name)}' is not a sequence name"):
        validate_subset(root, "val")
    try:
        with pytest.raises(DatasetError, match="is not a sequence name"):
            register_dataset(root, "val")
    finally:
        restore()



def test_subset_listing_a_name_twice_is_an_error_for_every_reader(root: Path) -> None:
    # agent.train refused a repeat in train.txt; a session played a repeated val video once without a word.
    from agent.data.registry import register_dataset, restore

    listing = root / "ImageSets" / "2017" / "val.txt"
    first = listing.read_text().split()[0]
    listing.write_text(listing.read_text() + f"{first}\n")
    message = f"{listing}: lists {first} more than once"
    with pytest.raises(DatasetError, match=f"^{re.escape(message)}$"):
        validate_subset(root, "val")
    try:
        with pytest.raises(DatasetError, match=re.escape(message)):
            register_dataset(root, "val")  # the session's reader
    finally:
        restore()

def test_subset_without_scribbles_for_the_benchmark(root: Path) -> None:
    shutil.rmtree(root / "Scribbles")
    infos = validate_subset(root, "val", scribbles=False)  # one-shot J reads frames and annotations only
    assert [info.num_objects for info in infos] == [1, 2, 3]
    with pytest.raises(DatasetError, match="001.json: missing"):
        validate_subset(root, "val")


def test_scribbles_with_more_points_than_any_person_draws_are_refused(root: Path, monkeypatch) -> None:
    from agent.data import davis

    # 3 million points made round 1 take a minute (rasterised one segment at a time), in every round after too
    path = _edit_scribble(root, ONE, lambda data, frame: data["scribbles"][frame].append(
        {"path": [[0.5, 0.5]] * 200, "object_id": 1}))
    monkeypatch.setattr(davis, "MAX_SCRIBBLE_POINTS", 100)
    _fails(root, ONE, f"{path}: more than 100 points by frame")
    monkeypatch.setattr(davis, "MAX_SCRIBBLE_FILE_BYTES", 10)  # a file that could hold more is not even read
    monkeypatch.setattr(davis, "read_json", lambda path: pytest.fail("read"))
    _fails(root, ONE, f"{path}: 0 MB, more than scribbles take")
