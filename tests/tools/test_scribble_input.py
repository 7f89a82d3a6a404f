"""Scribble images and JSON -> the agent's DAVIS scribble dict; the colour convention's errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from agent.data.synthetic import davis_palette
from agent.inference.scribbles import UNLABELED, rasterize_scribbles
from agent.tools.scribble_input import (
    BACKGROUND_COLOUR,
    NO_SCRIBBLE,
    colours_to_labels,
    label_strokes,
    load_rounds,
    load_scribbles,
    object_colour,
    scribbles_record,
)
from agent.tools.video import InputError, open_video


def _rgba(height=6, width=8):
    return np.zeros((height, width, 4), np.uint8)


def test_colours_follow_the_convention():
    image = _rgba()
    image[0, :] = (*object_colour(1), 255)
    image[1, :] = (*object_colour(2), 255)
    image[2, :] = (*BACKGROUND_COLOUR, 255)
    image[3, :] = (0, 0, 0, 255)  # black: nothing
    image[4, :] = (*object_colour(1), 10)  # transparent: nothing
    image[5, :] = (138, 5, 4, 255)  # near palette 1: snaps to it
    labels = colours_to_labels(image)
    assert labels[:, 0].tolist() == [1, 2, 0, NO_SCRIBBLE, NO_SCRIBBLE, 1]
    assert object_colour(1) == (128, 0, 0) and object_colour(2) == (0, 128, 0)


def test_unknown_colour_names_it_and_where():
    image = _rgba()
    image[2, 3] = (255, 105, 180, 255)
    with pytest.raises(InputError, match=r"unknown colour \(255, 105, 180\) at x=3, y=2") as error:
        colours_to_labels(image, source="s.png")
    assert "\n" not in str(error.value)
    assert "(1 pixel in 1 unknown colour)" in str(error.value)  # it said "(1 pixels in 1 unknown colours)"
    image[4, 0] = image[4, 1] = (250, 250, 5, 255)
    with pytest.raises(InputError, match=r"\(3 pixels in 2 unknown colours\)"):
        colours_to_labels(image, source="s.png")


def test_label_strokes_rasterise_back_to_the_labels():
    labels = np.full((20, 30), NO_SCRIBBLE, np.int16)
    labels[2:5, 3:12] = 1
    labels[10, 5:25] = 0
    labels[15:17, 20:28] = 2
    strokes = label_strokes(labels)
    raster = rasterize_scribbles({"scribbles": [strokes]}, labels.shape)[0]
    expected = np.where(labels == NO_SCRIBBLE, UNLABELED, labels)
    assert np.array_equal(raster, expected)
    assert [s["object_id"] for s in strokes][0] == 0  # background first, objects draw over it


def test_a_thin_stroke_survives_on_a_coarse_grid():
    labels = np.full((720, 1280), NO_SCRIBBLE, np.int16)
    labels[400:402, 100:900] = 1  # 2 pixels thick at 720p
    raster = rasterize_scribbles({"scribbles": [label_strokes(labels)]}, (60, 107))[0]
    assert (raster == 1).sum() >= 60


def _save(path, image):
    Image.fromarray(image).save(path)
    return path


def test_scribble_images_and_json_for_a_video(small_video, tmp_path):
    video = open_video(small_video.video)
    scribbles = load_scribbles(small_video.scribble_dir, video)
    assert len(scribbles["scribbles"]) == video.num_frames
    assert {s["object_id"] for s in scribbles["scribbles"][small_video.scribbled_frame]} == {0, 1, 2}
    # a DAVIS JSON shorter than the video: the frames it leaves out have no strokes
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"scribbles": scribbles["scribbles"][:5]}))
    assert load_scribbles(short, video)["scribbles"][5:] == [[], [], []]
    # a frame folder's scribble image may be named after the frame's file
    folder = open_video(small_video.folder)
    image = np.asarray(Image.open(next(small_video.scribble_dir.iterdir())))
    named = tmp_path / "named"
    named.mkdir()
    _save(named / "00003.png", image)
    assert load_scribbles(named, folder)["scribbles"][3]


def test_a_folder_holding_only_json_says_to_pass_the_file(small_video, tmp_path):
    video = open_video(small_video.video)
    (tmp_path / "scribbles.json").write_text(json.dumps({"scribbles": [[]] * 8}))  # an export's folder, given whole
    with pytest.raises(InputError, match=r"no scribble images \(.*\): pass the JSON file itself "
                                         r"\(--scribbles .*/scribbles.json\)$"):  # it said "or JSON here"
        load_scribbles(tmp_path, video)


def test_hidden_files_in_a_scribble_folder_are_left_out(small_video, tmp_path):
    video = open_video(small_video.folder)
    _save(tmp_path / "00003.png", np.asarray(Image.open(next(small_video.scribble_dir.iterdir()))))
    (tmp_path / "._00003.png").write_bytes(b"\x00\x05\x16\x07" + bytes(80))  # macOS's AppleDouble: was refused
    assert [bool(strokes) for strokes in load_scribbles(tmp_path, video)["scribbles"]] == [False] * 3 + [True] + \
        [False] * 4


@pytest.mark.parametrize("case, message", [
    ("frame beyond", "scribbles for frame 8 but the video has 8 frames"),
    ("json beyond", "scribbles for frame 9 but the video has 8 frames"),
    ("wrong size", "is 100x50 but the video is 426x240"),
    ("unknown colour", "unknown colour"),
    ("background only", "no object scribble"),
    ("no number", "name it after its frame"),
    ("fifo", "a FIFO \\(named pipe\\), not a scribble file"),  # it was "Not a directory"
    ("16-bit", "a 16-bit image; paint the scribbles in 8-bit"),  # it was "no object scribble"
    ("multi-page", "2 images in one file \\(a multi-page or animated TIFF\\)"),  # only its first page was read
    ("the video", "cannot read scribble image .*video.mp4"),  # swapped in: it was "name it after its frame"
])
def test_bad_scribbles_are_one_clear_line(small_video, tmp_path, case, message):
    video = open_video(small_video.video)
    good = np.asarray(Image.open(next(small_video.scribble_dir.iterdir())))
    if case == "frame beyond":
        path = _save(tmp_path / "00008.png", good)
    elif case == "json beyond":
        path = tmp_path / "s.json"
        strokes = [[] for _ in range(10)]
        strokes[9] = [{"path": [[0.5, 0.5]], "object_id": 1}]
        path.write_text(json.dumps({"scribbles": strokes}))
    elif case == "wrong size":
        path = _save(tmp_path / "00001.png", _rgba(50, 100))
    elif case == "unknown colour":
        image = good.copy()
        image[10, 10] = (255, 105, 180, 255)
        path = _save(tmp_path / "00001.png", image)
    elif case == "background only":
        image = _rgba(240, 426)
        image[5:8, 5:100] = (*BACKGROUND_COLOUR, 255)
        path = _save(tmp_path / "00001.png", image)
    elif case == "fifo":
        path = tmp_path / "s.json"
        os.mkfifo(path)
    elif case == "16-bit":
        grey = np.zeros((240, 426), np.uint16)
        grey[5:8, 5:100] = 40000
        path = tmp_path / "00001.png"
        Image.fromarray(grey).save(path)
        assert Image.open(path).mode.startswith("I;16")
    elif case == "multi-page":
        path = tmp_path / "00001.tif"
        Image.fromarray(good).save(path, save_all=True, append_images=[Image.fromarray(good)])
    elif case == "the video":
        path = small_video.video
    else:
        path = _save(tmp_path / "scribble.png", good)
    with pytest.raises(InputError, match=message) as error:
        load_scribbles(path, video)
    assert "\n" not in str(error.value)
    if case == "16-bit":  # not wrapped in "cannot read scribble image PATH (PATH: ...)"
        assert str(error.value).startswith(f"{path}: a 16-bit image")


def test_a_semi_transparent_brush_is_named_in_no_object_scribble(small_video, tmp_path):
    video = open_video(small_video.video)
    image = _rgba(240, 426)
    image[5:8, 5:100] = (*object_colour(1), 100)  # alpha below 128: unpainted, and the line said nothing of it
    path = _save(tmp_path / "00001.png", image)
    with pytest.raises(InputError, match=r"no object scribble .*; 285 pixels of 00001.png are semi-transparent "
                                         r"\(alpha below 128\), and such pixels count as unpainted") as error:
        load_scribbles(path, video)
    assert "\n" not in str(error.value)
    image[5:8, 5:100] = (*BACKGROUND_COLOUR, 255)  # background only, opaque: no word of transparency
    _save(tmp_path / "00001.png", image)
    with pytest.raises(InputError, match=r"no object scribble \(objects are palette colours 1..N, see docs/"
                                         r"OWN_VIDEOS.md\)$"):
        load_scribbles(tmp_path, video)


def test_a_grey_image_of_object_ids_is_refused_not_read_as_nothing(small_video, tmp_path):
    """Levels 1, 2 (ids, as a grey DAVIS annotation holds them) are within black's tolerance: a first round was "no
    object scribble" without a word of why, a correction played its white as background strokes alone."""
    video = open_video(small_video.video)
    ids = np.zeros((240, 426), np.uint8)
    ids[20:24, 10:200] = 255  # background
    _save(tmp_path / "00001.png", ids)
    assert load_rounds(tmp_path / "00001.png", video, first=False)  # white on black, grey: background strokes
    ids[50:53, 20:300], ids[60:62, 20:300] = 1, 2
    _save(tmp_path / "00001.png", ids)
    for first in (False, True):
        with pytest.raises(InputError, match=r"00001.png: a grey image holding levels 1..2 \(1400 pixels\): object "
                                             r"ids\? They read as black, nothing: .* palette PNG") as error:
            load_rounds(tmp_path / "00001.png", video, first=first)
        assert "\n" not in str(error.value)


def test_a_palette_image_of_object_ids_without_the_davis_palette_is_refused(small_video, tmp_path):
    """Ids saved as a palette PNG with PIL's grey palette (index k is (k, k, k)), or with none (numpy's
    `Image.fromarray(ids, "P")`: a 1-colour palette), read as black, nothing: a first round was "no object scribble"
    without a word of why. With the DAVIS palette they are the objects."""
    video = open_video(small_video.video)
    ids = np.zeros((240, 426), np.uint8)
    ids[20:24, 10:200] = 255  # background
    ids[50:53, 20:300], ids[60:62, 20:300] = 1, 2
    path = tmp_path / "00001.png"
    Image.fromarray(ids).convert("P").save(path)
    for first in (False, True):
        with pytest.raises(InputError, match=r"00001.png: a palette image of grey colours holding levels 1..2 "
                                             r"\(1400 pixels\): object ids\? .* DAVIS palette"):
            load_rounds(path, video, first=first)
    Image.fromarray(ids, "P").save(path)
    with pytest.raises(InputError, match=r"00001.png: a palette image whose pixels hold index 1 .* palette has 1 "
                                         r"colour: object ids saved without a palette\?"):
        load_rounds(path, video, first=True)
    image = Image.fromarray(np.where(ids == 255, 0, ids).astype(np.uint8), "P")  # 255 is DAVIS's void colour
    image.putpalette(davis_palette())
    image.save(path)
    strokes = load_scribbles(path, video)["scribbles"][1]
    assert {stroke["object_id"] for stroke in strokes} == {1, 2}


def test_a_scribble_image_saved_as_jpeg_is_told_to_be_a_png(small_video, tmp_path):
    """JPEG's compression changes the colours of every stroke at any quality: the line advised a hard-edged brush,
    though the strokes were painted with one."""
    video = open_video(small_video.video)
    image = np.zeros((240, 426, 3), np.uint8)
    image[20:24, 10:200] = object_colour(1)
    image[50:53, 20:300] = object_colour(2)
    Image.fromarray(image).save(tmp_path / "00001.png")
    assert load_scribbles(tmp_path / "00001.png", video)["scribbles"][1]  # a PNG: read as painted
    Image.fromarray(image).save(tmp_path / "00001.jpg", quality=100)
    with pytest.raises(InputError, match=r"00001.jpg: unknown colour .* unknown colours\): it is a JPEG, whose "
                                         r"compression blurs the colours of every stroke .*: save scribble images as "
                                         r"PNG$") as error:
        load_scribbles(tmp_path / "00001.jpg", video)
    assert "brush" not in str(error.value)


@pytest.mark.parametrize("make, message", [
    (lambda link: link.symlink_to("gone.png"), r"a symbolic link to a missing file \(gone.png\)"),
    (lambda link: link.symlink_to(link.name), "a loop of symbolic links"),
    (os.mkfifo, r"a FIFO \(named pipe\)"),
])
def test_a_scribble_image_that_cannot_be_read_is_not_left_out(small_video, tmp_path, make, message):
    video = open_video(small_video.video)
    good = np.asarray(Image.open(next(small_video.scribble_dir.iterdir())))
    _save(tmp_path / "00001.png", good)
    make(tmp_path / "00002.png")  # its strokes were dropped without a word
    with pytest.raises(InputError, match=f"00002.png: {message}, not a scribble image"):
        load_scribbles(tmp_path, video)


def _four_frames(tmp_path, name) -> tuple:
    """Frames 1..4 of a folder named `name(index)`, an empty scribble folder and a one-stroke scribble image."""
    frames, scribbles = tmp_path / "frames", tmp_path / "scribbles"
    frames.mkdir()
    scribbles.mkdir()
    for index in (1, 2, 3, 4):
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(frames / name(index))
    stroke = _rgba()
    stroke[2, 1:5] = (*object_colour(1), 255)
    return open_video(frames), scribbles, stroke


def test_a_scribble_number_is_refused_where_the_frames_are_numbered_from_1(tmp_path):
    video, scribbles, stroke = _four_frames(tmp_path, lambda index: f"frame{index}.jpg")
    _save(scribbles / "3.png", stroke)  # counted from 0 it was frame4.jpg: a silent off-by-one
    with pytest.raises(InputError, match=r"3.png: the frames of .* are not numbered 0, 1, 2, ... \(the first is "
                                         r"frame1.jpg\), so the number 3 is ambiguous: .*frame3.png for frame3.jpg"):
        load_scribbles(scribbles, video)
    (scribbles / "3.png").rename(scribbles / "frame3.png")  # its frame's own name is not ambiguous
    assert [bool(strokes) for strokes in load_scribbles(scribbles, video)["scribbles"]] == [False, False, True, False]


def test_a_scribble_named_after_its_frame_in_another_case_is_that_frame(tmp_path):
    # A camera's IMG_0001.JPG, ... saved as img_0003.png by an editor (macOS and Windows ignore the case).
    video, scribbles, stroke = _four_frames(tmp_path, lambda index: f"IMG_{index:04d}.JPG")
    _save(scribbles / "img_0003.png", stroke)  # it was "the number 3 is ambiguous: ... IMG_0003.png for IMG_0003.JPG"
    assert [bool(strokes) for strokes in load_scribbles(scribbles, video)["scribbles"]] == [False, False, True, False]


@pytest.mark.parametrize("name", ["00002 (1).png", "00002 copy 3.png", "00002 - Copy (3).png", "00002 copy.png"])
def test_a_second_copys_suffix_is_no_frame_number(tmp_path, name):
    """A browser's second download, `00002 (1).png`, or a Finder or Explorer copy, `00002 copy 3.png`: the last number
    was the copy's, and the strokes went to frame 1 or 3 without a word."""
    video, scribbles, stroke = _four_frames(tmp_path, lambda index: f"{index - 1:05d}.jpg")
    _save(scribbles / name, stroke)
    assert [bool(strokes) for strokes in load_scribbles(scribbles, video)["scribbles"]] == [False, False, True, False]
    (tmp_path / "from-1").mkdir()
    numbered, other, _ = _four_frames(tmp_path / "from-1", lambda index: f"frame{index}.jpg")
    _save(other / "frame3 (1).png", stroke)  # its frame's own name once the suffix is left out
    assert [bool(strokes) for strokes in load_scribbles(other, numbered)["scribbles"]] == [False, False, True, False]


def test_a_scribble_named_in_another_scripts_digits_is_not_read_as_that_frame(tmp_path):
    # re's \d and int() read Arabic-Indic digits: `٠٠٠٠٢.png` was frame 2 (00002.jpg)
    video, scribbles, stroke = _four_frames(tmp_path, lambda index: f"{index - 1:05d}.jpg")
    _save(scribbles / "\u0660\u0660\u0660\u0660\u0662.png", stroke)
    with pytest.raises(InputError, match=r"\u0662.png: name it after its frame \(e.g. 00012.png"):
        load_scribbles(scribbles, video)


@pytest.mark.parametrize("copy", ["00002 (1).png", "00002 copy.png", "2.png"])
def test_two_scribble_images_of_one_frame_are_refused(tmp_path, copy):
    """A stale and a fresh download, `00002.png` and `00002 (1).png`, were merged without a word, the later file's
    strokes winning where they overlapped."""
    video, scribbles, stroke = _four_frames(tmp_path, lambda index: f"{index - 1:05d}.jpg")
    _save(scribbles / "00002.png", stroke)
    _save(scribbles / copy, stroke)
    with pytest.raises(InputError) as error:
        load_scribbles(scribbles, video)
    assert str(error.value) == (f"{scribbles / copy}: a second scribble image for frame 2 (00002.jpg) beside "
                                f"{scribbles / '00002.png'}: keep one")
    (tmp_path / "from-1").mkdir()  # frames numbered from 1: the frame's own name and its copy
    numbered, other, _ = _four_frames(tmp_path / "from-1", lambda index: f"frame{index}.jpg")
    _save(other / "frame3.png", stroke)
    _save(other / "frame3 (1).png", stroke)
    with pytest.raises(InputError, match=r"frame3 \(1\).png: a second scribble image for frame 2 \(frame3.jpg\) "
                                         r"beside .*frame3.png: keep one"):
        load_scribbles(other, numbered)


def _save_turned(path, pixels, orientation=6):
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation  # "rotate 90 degrees clockwise to view", as a phone writes it
    image.save(path, exif=exif)


def test_scribbles_and_frames_are_read_as_their_exif_orientation_shows_them(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(2):  # stored 6 rows x 8, shown (and painted on) 8 rows x 6
        _save_turned(frames / f"{index:05d}.png", np.zeros((6, 8, 3), np.uint8))
    video = open_video(frames)
    painted = _rgba(8, 6)  # the upright view, as an image editor shows the frame
    painted[6, 1:5] = (*object_colour(1), 255)  # near the bottom of what the person saw
    _save(tmp_path / "00001.png", painted)  # it was "is 6x8 but the video is 8x6"
    (stroke,) = load_scribbles(tmp_path / "00001.png", video)["scribbles"][1]
    assert stroke["object_id"] == 1 and all(y == pytest.approx(6.5 / 8) for _, y in stroke["path"])  # row 6 of 8
    _save_turned(tmp_path / "00001.png", np.rot90(painted, 1))  # stored turned too: read upright, the same
    (turned,) = load_scribbles(tmp_path / "00001.png", video)["scribbles"][1]
    assert turned["path"] == stroke["path"]


def test_an_anti_aliased_stroke_on_black_is_refused_not_read_as_extra_objects():
    """Every level of a channel is within the tolerance of some palette colour: the soft edge of an object-1 stroke
    on black (128 -> 64 -> 0 in red) passed as object 8 beside it, an extra object the user never painted."""
    image = _rgba(9, 12)
    image[..., 3] = 255  # a black canvas
    image[4, 1:11, :3] = object_colour(1)
    image[3, 1:11, :3] = image[5, 1:11, :3] = object_colour(8)  # (64, 0, 0): half of (128, 0, 0)
    with pytest.raises(InputError, match=r"s.png: object 8's colour \(64, 0, 0\) at x=1, y=3 lies along the edge "
                                         "between black and object 1's colour.*hard-edged brush") as error:
        colours_to_labels(image, source="s.png")
    assert "\n" not in str(error.value)
    image[3, 1:11, :3] = image[5, 1:11, :3] = 0  # hard-edged: object 1 alone
    image[0:9, 6, :3] = object_colour(8)  # object 8 painted across it, hard-edged too: both kept
    assert np.unique(colours_to_labels(image)).tolist() == [NO_SCRIBBLE, 1, 8]


def test_every_palette_colour_is_read_as_its_object_by_the_packed_colour_lookup():
    """Colours are looked up as one packed integer each (np.unique over a 4K image's 8 million (r, g, b) rows took
    23 s, before the model loaded): every object colour, white and black must still map to their labels."""
    image = np.zeros((2, 512, 4), np.uint8)
    image[..., 3] = 255  # a black canvas; the colours a pixel apart (side by side some are blends of neighbours)
    image[0, 0, :3] = (255, 255, 255)
    for k in range(1, 255):
        image[0, 2 * k, :3] = object_colour(k)
    labels = colours_to_labels(image)
    assert labels[0, 0] == 0 and labels[0, 1] == NO_SCRIBBLE and (labels[1] == NO_SCRIBBLE).all()
    assert labels[0, 2:510:2].tolist() == list(range(1, 255))


def test_the_rounds_record_reads_back_as_its_rounds(small_video, tmp_path):
    """scribbles.json keeps DAVIS's "scribbles" (every stroke) and adds "rounds", which load_rounds plays back."""
    video = open_video(small_video.folder)
    first = load_scribbles(small_video.scribble_dir, video)
    fix = {"scribbles": [[] for _ in range(8)]}
    fix["scribbles"][1] = [{"path": [[0.1, 0.1], [0.2, 0.1]], "object_id": 0}]
    record = scribbles_record([first, fix], 8)
    assert record["rounds"] == [first["scribbles"], fix["scribbles"]]
    assert record["scribbles"][1] == fix["scribbles"][1] and record["scribbles"][4] == first["scribbles"][4]
    path = tmp_path / "scribbles.json"
    path.write_text(json.dumps(record))
    assert load_rounds(path, video) == [first, fix]
    assert load_scribbles(path, video) == {"scribbles": record["scribbles"]}  # every stroke, as DAVIS tools read it
    # Corrections (a later --scribbles) may be background strokes only; the first round needs an object stroke.
    background = tmp_path / "background.json"
    background.write_text(json.dumps(fix))
    assert load_rounds(background, video, first=False) == [fix]
    with pytest.raises(InputError, match="no object scribble"):
        load_rounds(background, video)


def test_scribble_images_in_subfolders_are_not_left_out_without_a_word(small_video, tmp_path):
    # Only the images directly in a scribble folder are read, as one round: a subfolder's (round2/) were left out
    # without a word, and a folder of subfolders alone was "no scribble images ... or JSON here".
    video = open_video(small_video.folder)
    image = np.asarray(Image.open(next(small_video.scribble_dir.iterdir())))
    folder = tmp_path / "strokes"
    for sub in ("round1", "round2", ".thumbs"):
        (folder / sub).mkdir(parents=True)
    _save(folder / "round1" / "00003.png", image)
    _save(folder / "round2" / "00005.png", image)
    _save(folder / ".thumbs" / "00001.png", image)  # hidden: left out as hidden files are
    with pytest.raises(InputError, match=r"no scribble images directly in it, but its subfolder\(s\) round1/, round2/ "
                                         r"hold some: pass each subfolder as a --scribbles of its own"):
        load_scribbles(folder, video)
    _save(folder / "00003.png", image)
    with pytest.raises(InputError, match=r"subfolder\(s\) round1/, round2/ hold scribble images too, which would be "
                                         "left out"):
        load_scribbles(folder, video)
    assert load_scribbles(folder / "round2", video)["scribbles"][5]  # a subfolder given itself is a round
    (folder / "notes").mkdir()  # a subfolder of no image says nothing
    for sub in ("round1", "round2"):
        for image_path in (folder / sub).iterdir():
            image_path.unlink()
    assert load_scribbles(folder, video)["scribbles"][3]
