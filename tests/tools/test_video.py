"""Reading videos and frame folders; working-size frames."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.tools.video import InputError, WorkingFrames, open_video, working_size


def test_mp4_and_frame_folder_read_the_same_frames(small_video):
    from_file, from_folder = open_video(small_video.video), open_video(small_video.folder)
    assert (from_file.num_frames, from_file.height, from_file.width) == (8, 240, 426)
    assert from_file.fps == pytest.approx(10)
    assert from_folder.frame_names == [f"{i:05d}" for i in range(8)]
    file_frames, folder_frames = list(from_file.frames()), list(from_folder.frames())
    assert len(file_frames) == len(folder_frames) == 8
    assert np.array_equal(np.stack(folder_frames), small_video.frames)
    # H.264 is lossy: close, not equal
    assert np.abs(np.stack(file_frames).astype(int) - small_video.frames).mean() < 8


def test_frame_folder_is_in_natural_order(tmp_path):
    for index in (10, 2, 1):
        Image.fromarray(np.full((4, 6, 3), index, np.uint8)).save(tmp_path / f"frame{index}.png")
    video = open_video(tmp_path)
    assert video.frame_names == ["frame1", "frame2", "frame10"]
    assert [int(f[0, 0, 0]) for f in video.frames()] == [1, 2, 10]
    Image.fromarray(np.full((4, 6, 3), 3, np.uint8)).save(tmp_path / "①3.png")  # a ValueError: int("①")
    Image.fromarray(np.full((4, 6, 3), 4, np.uint8)).save(tmp_path / "frame٤.png")  # Arabic-Indic 4: a number
    assert open_video(tmp_path).frame_names == ["frame1", "frame2", "frame٤", "frame10", "①3"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.mp4", "no such video"),
    (lambda p: p, "no frame images"),
    (lambda p: (p / "junk.mp4").write_bytes(b"not a video at all") and p / "junk.mp4", "not a video FFmpeg can read"),
])
def test_unreadable_or_empty_video_is_one_clear_line(tmp_path, make, message):
    with pytest.raises(InputError, match=message) as error:
        open_video(make(tmp_path))
    assert "\n" not in str(error.value)


def test_an_empty_or_audio_only_file_says_so(tmp_path):
    import wave

    # Both were "not a video FFmpeg can read (Could not load meta information)", as a file in no known format.
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(InputError, match=f"^{tmp_path / 'empty.mp4'}: an empty file \\(0 bytes\\), not a video$"):
        open_video(tmp_path / "empty.mp4")
    with wave.open(str(tmp_path / "sound.wav"), "wb") as sound:  # a second of silence, renamed as a video
        sound.setnchannels(1), sound.setsampwidth(2), sound.setframerate(8000)
        sound.writeframes(bytes(16000))
    (tmp_path / "sound.wav").rename(tmp_path / "clip.mp4")
    with pytest.raises(InputError, match=f"^{tmp_path / 'clip.mp4'}: holds no video stream \\(only audio\\), not a "):
        open_video(tmp_path / "clip.mp4")


def test_a_fifo_as_video_or_frame_is_one_clear_line(tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)  # FFmpeg waited 10 s for a writer, then called it "not a video"
    with pytest.raises(InputError, match=f"{fifo}: a FIFO \\(named pipe\\), not a video file"):
        open_video(fifo)
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in (0, 2):
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(folder / f"{index:05d}.png")
    (folder / "00001.png").symlink_to("/dev/zero")  # it was left out: a 2-frame video, masks shifted
    with pytest.raises(InputError, match="00001.png: a character device, not a frame image"):
        open_video(folder)


def test_a_video_that_decodes_fewer_frames_than_declared_says_so(tmp_path, monkeypatch, caplog):
    from agent.tools import video as video_module
    from tests.tools.conftest import write_mp4

    path = write_mp4(tmp_path / "clip.mp4", np.zeros((12, 16, 16, 3), np.uint8))
    assert open_video(path).num_frames == 12 and "header declares" not in caplog.text
    # a truncated file (moov first): FFmpeg decodes the frames before the cut, the rest went unmentioned
    monkeypatch.setattr(video_module, "decode_pass", lambda path: video_module.DecodePass(4, [(16, 16)], 10.0))
    assert open_video(path).num_frames == 4
    assert "FFmpeg decodes 4 of the 12 frames its header declares (truncated or damaged?)" in caplog.text


def test_a_video_file_moved_or_replaced_since_it_was_opened_is_one_line(small_video, tmp_path):
    """The export reads the video again: a deleted file was "export failed: OSError", one of another size numpy's
    "cannot reshape array"."""
    import shutil

    from tests.tools.conftest import write_mp4

    path = tmp_path / "clip.mp4"
    shutil.copy(small_video.video, path)
    video = open_video(path)
    write_mp4(path, np.zeros((3, 60, 80, 3), np.uint8))
    with pytest.raises(InputError, match="changed since it was opened: its frames are 80x60 now, not 426x240"):
        list(video.frames())
    path.unlink()
    with pytest.raises(InputError, match="clip.mp4: removed since it was opened"):
        list(video.frames())


def test_a_video_file_whose_frames_change_size_is_refused(tmp_path):
    """FFmpeg scales every frame to the first one's size: the frames after the change were stretched (4:3 to 3:2
    here), and their masks with them, without a word. A frame folder of two sizes was refused already."""
    from tests.tools.conftest import write_mp4

    first = write_mp4(tmp_path / "a.ts", np.zeros((3, 24, 32, 3), np.uint8)).read_bytes()
    second = write_mp4(tmp_path / "b.ts", np.zeros((3, 32, 48, 3), np.uint8)).read_bytes()
    (tmp_path / "clip.ts").write_bytes(first + second)  # MPEG-TS parts joined, as a download of a stream may be
    with pytest.raises(InputError, match=r"clip.ts: its frames change size \(32x24, then 48x32\): FFmpeg would "
                                         r"stretch .* scale=48:32"):
        open_video(tmp_path / "clip.ts")
    assert open_video(tmp_path / "a.ts").num_frames == 3  # one size: as before


def test_frames_of_different_sizes_are_refused(tmp_path):
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "0.png")
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "1.png")
    with pytest.raises(InputError, match="differ in size"):
        open_video(tmp_path)


def _grey_frames(folder: Path, grey: np.ndarray, dtype, suffix: str) -> Path:
    """One frame per image of `grey` (uint8), saved as `dtype` (16-bit: each value x 257, as 8 bits scale to 16)."""
    folder.mkdir()
    for index, frame in enumerate(grey):
        values = frame if dtype == np.uint8 else (frame.astype(np.int32) * 257).astype(dtype)
        Image.fromarray(values).save(folder / f"{index}{suffix}")
    return folder


@pytest.mark.parametrize(("dtype", "suffix", "mode"), [(np.uint16, ".png", "I;16"), (">u2", ".tif", "I;16B"),
                                                       (np.int32, ".tif", "I")])
def test_16_bit_grey_frames_read_as_their_8_bit_version(tmp_path, dtype, suffix, mode):
    # PIL's RGB conversion clips 16-bit values, so every frame was white; then they were refused ("frames must be
    # 8-bit"), though 16-bit RGB PNGs were read (PIL reduces those to 8 bits). Read by their top 8 bits, they
    # are the 8-bit frames.
    grey = np.random.default_rng(0).integers(0, 256, (2, 8, 10), np.uint8)
    eight = _grey_frames(tmp_path / "eight", grey, np.uint8, ".png")
    wide = _grey_frames(tmp_path / "wide", grey, dtype, suffix)
    assert Image.open(wide / f"0{suffix}").mode == mode
    expected = list(open_video(eight).frames())
    np.testing.assert_array_equal(expected[1], np.repeat(grey[1][..., None], 3, axis=2))
    for frame, same in zip(open_video(wide).frames(), expected, strict=True):
        np.testing.assert_array_equal(frame, same)


@pytest.mark.parametrize(("dtype", "suffix"), [(np.uint16, ".png"), (">u2", ".tif"), (np.int32, ".tif")])
def test_16_bit_grey_frames_of_a_narrow_range_are_read_from_its_darkest_to_its_brightest(tmp_path, dtype, suffix):
    """A thermal camera's raw values (7000..8400 of 65535) are levels 27..32 by their top 8 bits: the warm object,
    5 levels off its surroundings, was segmented as nothing without a word. The video's own range is read instead,
    the same for every frame; a range its top 8 bits span well is read by them, as before."""
    folder = tmp_path / "thermal"
    folder.mkdir()
    raw = np.full((2, 8, 10), 7000, np.int32)
    raw[0, 2:5, 3:7], raw[1, 4:7, 3:7], raw[1, 0, 0] = 8400, 8400, 7700
    for index, frame in enumerate(raw):
        Image.fromarray(frame.astype(dtype)).save(folder / f"{index}{suffix}")
    video = open_video(folder)
    assert video.grey16_levels == (7000, 8400)
    frames = list(video.frames())
    np.testing.assert_array_equal(frames[0][..., 0], np.where(raw[0] == 8400, 255, 0))
    assert frames[1][0, 0, 0] == 128 and (frames[1][..., 0] == frames[1][..., 2]).all()
    raw[1, 0, 0] = 7000 + 32 * 256  # 32 levels of the top 8 bits: read by them
    Image.fromarray(raw[1].astype(dtype)).save(folder / f"1{suffix}")
    video = open_video(folder)
    assert video.grey16_levels is None and next(iter(video.frames()))[0, 0, 0] == 7000 >> 8


@pytest.mark.parametrize(("values", "problem"), [
    (np.full((8, 8), 70000, np.int32), r"a I image \(32-bit integer\) of values 70000..70000, not 16-bit \(0..65535\)"),
    (np.full((8, 8), 0.5, np.float32), r"a F image \(32-bit float\)")])
def test_frames_that_are_no_image_are_refused(tmp_path, values, problem):
    # A float image (a depth map) and integers beyond 16 bits: which values are black and white cannot be told.
    Image.fromarray(values).save(tmp_path / "00000.tif")
    with pytest.raises(InputError, match=rf"00000.tif: {problem}; frames must be 8-bit or 16-bit RGB or grey"):
        open_video(tmp_path)


def _pages(count: int) -> list[Image.Image]:
    return [Image.fromarray(np.full((16, 24, 3), 40 * page, np.uint8)) for page in range(count)]


def test_a_multi_page_tiff_video_is_refused_not_cut_to_its_first_page(tmp_path):
    # FFmpeg reads a TIFF's first page only: a 6-page stack gave 1 mask, without a word.
    first, *rest = _pages(6)
    first.save(tmp_path / "stack.tif", save_all=True, append_images=rest)
    with pytest.raises(InputError, match=r"stack.tif: a multi-page TIFF \(6 pages\), read as a video of its first page "
                                         r"only: save its pages as a folder of frames"):
        open_video(tmp_path / "stack.tif")
    first.save(tmp_path / "one.tif")
    assert open_video(tmp_path / "one.tif").num_frames == 1


@pytest.mark.parametrize(("name", "kind"), [("00001.tif", "TIFF"), ("00001.png", "PNG"), ("00001.webp", "WEBP")])
def test_a_frame_of_several_images_is_refused(tmp_path, name, kind):
    # Only its first image was read as the frame.
    _pages(1)[0].save(tmp_path / "00000.png")
    first, *rest = _pages(3)
    first.save(tmp_path / name, save_all=True, append_images=rest)
    with pytest.raises(InputError, match=rf"{name}: 3 images in one file \(a multi-page or animated {kind}\); a "
                                         "frame must be one image"):
        open_video(tmp_path)


def test_oversized_headers_are_refused(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(plain / "00000.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels now look like a decompression bomb
    with pytest.raises(InputError, match="cannot read image .*00000.png"):
        open_video(plain)


def test_working_size_caps_the_short_side_and_never_upscales():
    assert working_size(720, 1280) == (480, 853)
    assert working_size(1920, 1080) == (853, 480)  # portrait: the short side is the width
    assert working_size(240, 426) == (240, 426)


def test_a_video_too_long_for_the_memory_is_refused_before_a_frame_is_read(tmp_path, monkeypatch):
    """WorkingFrames keeps every frame (JPEG-encoded): a 100,000-frame 480p video (~15 GB) was read for ~17 minutes,
    then a MemoryError blamed on --chunk-frames, or the process was killed. Estimated, not made: a fake source."""
    from agent.inference import footprint
    from agent.tools.video import VideoSource

    class NeverRead(VideoSource):
        def frames(self):
            assert self.num_frames < 100_000, "a frame of the long video was read"
            return iter(())

    monkeypatch.setattr(footprint, "available_bytes", lambda: 8 * 2**30)
    long = NeverRead(tmp_path / "long.mp4", 100_000, 1080, 1920, 30.0)
    with pytest.raises(InputError, match=r"long.mp4: 100000 frames need about 14\.\d GiB in memory at the working "
                                         r"size 853x480 .* more than the 8\.0 GiB available: cut the video"):
        WorkingFrames.read(long)
    assert len(WorkingFrames.read(NeverRead(tmp_path / "long.mp4", 10_000, 1080, 1920, 30.0))) == 0  # ~1.5 GB fit


def test_working_frames_keep_every_frame_at_the_working_size(small_video):
    frames = WorkingFrames.read(open_video(small_video.folder), short_side=120)
    assert len(frames) == 8 and frames.size == (120, 213)
    batch = frames.stack([0, 7])
    assert batch.shape == (2, 120, 213, 3) and batch.dtype == np.uint8
    assert abs(float(batch[1].mean()) - float(small_video.frames[7].mean())) < 3


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".tif"])
def test_truncated_frame_is_found_when_the_folder_is_opened(tmp_path, suffix):
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / f"{index:05d}{suffix}")
    broken = tmp_path / f"00001{suffix}"
    broken.write_bytes(broken.read_bytes()[:-200])  # before the model loads, not while frames are read
    with pytest.raises(InputError, match=f"cannot read image .*00001{suffix}"):
        open_video(tmp_path)


@pytest.mark.parametrize("link", [False, True])
def test_a_folder_named_as_a_frame_is_one_clear_line(tmp_path, link):
    # It was left out without a word: the frames after it shifted by one, and so did the scribbles' frame numbers.
    for index in (0, 2):
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / f"{index:05d}.png")
    (tmp_path / "sub").mkdir()
    if link:
        (tmp_path / "00001.png").symlink_to(tmp_path / "sub")
    else:
        (tmp_path / "00001.png").mkdir()
    with pytest.raises(InputError, match="00001.png: a folder, not a frame image"):
        open_video(tmp_path)


@pytest.mark.parametrize("target, message", [("gone.png", r"a symbolic link to a missing file \(gone.png\)"),
                                             ("00001.png", "a loop of symbolic links")])
def test_a_broken_link_as_frame_is_one_clear_line(tmp_path, target, message):
    for index in (0, 2):
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / f"{index:05d}.png")
    (tmp_path / "00001.png").symlink_to(target)  # it was left out: a 2-frame video, every later mask shifted
    with pytest.raises(InputError, match=f"00001.png: {message}, not a frame image"):
        open_video(tmp_path)


def _save_turned(path, pixels, orientation=6):
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation  # a phone's "rotate 90 degrees clockwise to view"
    image.save(path, exif=exif)


def test_frames_are_read_as_their_exif_orientation_shows_them(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 6, 8, 3), np.uint8)
    for index, frame in enumerate(pixels):
        _save_turned(tmp_path / f"{index:05d}.png", frame)
    video = open_video(tmp_path)  # it was read as stored: masks and scribbles turned against what viewers show
    assert (video.height, video.width) == (8, 6)
    assert all(np.array_equal(read, np.rot90(frame, -1)) for read, frame in zip(video.frames(), pixels, strict=True))
    _save_turned(tmp_path / "00001.png", pixels[1], orientation=1)  # one frame upright among turned ones
    with pytest.raises(InputError, match=r"00001.png is 8x6, 00000.png 6x8"):
        open_video(tmp_path)
    _save_turned(tmp_path / "00001.png", pixels[1], orientation=8)
    _save_turned(tmp_path / "00000.png", pixels[0], orientation=1)
    with pytest.raises(InputError, match=r"00001.png is 6x8 once turned by its EXIF orientation, 00000.png 8x6"):
        open_video(tmp_path)


def test_two_frames_with_the_same_number_are_refused(tmp_path):
    for name in ("frame1.png", "frame3.png", "frame03.png", "frame10.png"):  # frame3 / frame03: order undefined
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / name)
    with pytest.raises(InputError, match=r"frame0?3.png and frame0?3.png have the same number"):
        open_video(tmp_path)


def test_two_frames_that_would_write_one_mask_are_refused(tmp_path):
    for name in ("00000.jpg", "00001.jpg", "00001.png"):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / name)
    with pytest.raises(InputError, match=r"00001.jpg and 00001.png would write the same mask \(00001.png\)"):
        open_video(tmp_path)


def test_hidden_files_in_a_frame_folder_are_not_frames(tmp_path, caplog):
    for index in range(3):
        Image.fromarray(np.full((4, 6, 3), index, np.uint8)).save(tmp_path / f"{index:05d}.jpg")
    (tmp_path / "._00000.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(80))  # macOS's AppleDouble: refused
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / ".thumb.jpg")  # was a 4th frame, unseen
    with caplog.at_level("INFO"):
        video = open_video(tmp_path)
    assert video.frame_names == ["00000", "00001", "00002"] and len(list(video.frames())) == 3
    assert "left out 2 hidden file(s) (._00000.jpg, ...)" in caplog.text


def test_a_frame_in_a_format_that_is_not_read_is_not_left_out(tmp_path):
    """A JPEG saved as .jfif (Windows browsers do) is a frame; a HEIC among the frames (an iPhone's) is refused: both
    were left out without a word, the video a frame short, its mask missing and JSON strokes shifted."""
    for index, suffix in enumerate((".jpg", ".jfif", ".jpg")):
        Image.fromarray(np.full((4, 6, 3), 40 * index, np.uint8)).save(tmp_path / f"{index:05d}{suffix}", "JPEG")
    (tmp_path / "notes.txt").write_text("not an image: left out")
    video = open_video(tmp_path)
    assert video.frame_names == ["00000", "00001", "00002"]
    assert [int(frame.mean()) // 10 for frame in video.frames()] == [0, 4, 8]
    (tmp_path / "00003.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    with pytest.raises(InputError, match=r"00003.HEIC: a HEIC image, which is not read as a frame \(.jpg, "):
        open_video(tmp_path)


def test_palette_frames_with_transparency_are_read_without_a_warning(tmp_path):
    """pngquant's frames: PIL's conversion printed "UserWarning: Palette images with Transparency expressed in
    bytes should be converted to RGBA images" with its source line; the pixels are the palette's colours."""
    pixels = np.random.default_rng(0).integers(0, 4, (8, 10), np.uint8)
    image = Image.fromarray(pixels, "P")
    image.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0, 0, 0, 200])
    image.save(tmp_path / "00000.png", transparency=bytes([0, 128, 255, 255]))  # not one index alone: bytes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = next(open_video(tmp_path).frames())
    np.testing.assert_array_equal(frame, np.asarray(image.convert("RGBA"))[..., :3])


def test_a_frame_folder_given_as_dot_is_named_as_its_folder(tmp_path, monkeypatch):
    """`agent.app .` in the frame folder: its name was '' and the page offered `-masks` as the export folder."""
    folder = tmp_path / "clip"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(folder / "00000.jpg")
    monkeypatch.chdir(folder)
    assert open_video(".").name == "clip"
    assert open_video(Path("..") / "clip" / ".").name == "clip"
    (folder / "sub").mkdir()
    assert open_video(Path("sub") / "..").name == "clip"


def test_a_variable_frame_rate_video_yields_each_frame_once(tmp_path):
    """Decoded to raw video at a constant rate, a VFR video's gaps were filled with repeated frames and the first
    N (of the N counted) taken: the frames after the gap were never segmented."""
    import subprocess

    import imageio_ffmpeg

    from tests.tools.conftest import write_mp4

    frames = np.zeros((8, 16, 16, 3), np.uint8)
    for index in range(8):
        frames[index, :, :] = 30 * index
    constant = write_mp4(tmp_path / "cfr.mp4", frames)
    variable = tmp_path / "vfr.mp4"  # frames 4.. shown three times as long: a 2.1 s gap after frame 3
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(constant), "-vf",
                    "setpts='if(lt(N,4),PTS,PTS*4)'", "-fps_mode", "vfr", str(variable)], check=True)
    video = open_video(variable)
    assert video.num_frames == 8
    levels = [int(round(frame.mean() / 30)) for frame in video.frames()]
    assert levels == list(range(8))


def test_a_relative_video_name_with_a_colon_is_read(tmp_path, monkeypatch):
    """FFmpeg read `take:2.mp4` as the protocol `take:`: "not a video FFmpeg can read"."""
    from tests.tools.conftest import write_mp4

    write_mp4(tmp_path / "take:2.mp4", np.zeros((3, 16, 16, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    video = open_video("take:2.mp4")
    assert video.num_frames == 3 and len(list(video.frames())) == 3


def test_a_video_whose_first_stream_is_a_picture_is_read_whole(tmp_path):
    """An mkv whose first video stream is a cover picture (one frame) before the video: the frames were counted
    in that first stream (1), so one frame of the video was read and segmented, with a "truncated or damaged?"
    warning, and its frame rate was the picture's (25 fps: the overlay played at 2.5 times the speed)."""
    import subprocess

    import imageio_ffmpeg

    from tests.tools.conftest import write_mp4

    frames = np.zeros((12, 16, 16, 3), np.uint8)
    for index in range(12):
        frames[index] = 20 * index
    clip = write_mp4(tmp_path / "clip.mp4", frames)
    Image.fromarray(np.full((24, 32, 3), 200, np.uint8)).save(tmp_path / "cover.png")
    covered = tmp_path / "covered.mkv"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(tmp_path / "cover.png"), "-i",
                    str(clip), "-map", "0", "-map", "1", "-c:v:0", "mjpeg", "-c:v:1", "copy", str(covered)], check=True)
    video = open_video(covered)
    assert (video.num_frames, video.width, video.height, video.fps) == (12, 16, 16, pytest.approx(10))
    levels = [int(round(frame.mean() / 20)) for frame in video.frames()]
    assert levels == list(range(12))


def test_a_phone_video_with_rotation_metadata_is_read_as_players_show_it_without_a_size_warning(tmp_path, caplog):
    """A portrait phone video is stored landscape with a rotation to apply: FFmpeg turns it (the masks and the
    scribbles are in the orientation the user sees), and imageio-ffmpeg warned "The frame size for reading (16, 32)
    is different from the source frame size (32, 16)" three times a run, as if the frames had been resized."""
    import logging
    import subprocess

    import imageio_ffmpeg

    from tests.tools.conftest import write_mp4

    frames = np.zeros((4, 16, 32, 3), np.uint8)
    frames[:, :, 16:] = 250  # stored: dark left half, bright right half
    stored = write_mp4(tmp_path / "stored.mp4", frames)
    phone = tmp_path / "phone.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-display_rotation", "90", "-i",
                    str(stored), "-c", "copy", str(phone)], check=True)
    with caplog.at_level(logging.INFO):
        video = open_video(phone)
        shown = np.stack(list(video.frames()))
    assert (video.width, video.height) == (16, 32) and shown.shape == (4, 32, 16, 3)
    assert np.abs(shown.astype(int) - np.rot90(frames, 1, axes=(1, 2))).mean() < 8  # turned a quarter to the left
    assert "different from the source frame size" not in caplog.text
    assert "(stored 32x16: turned as its rotation metadata says, as players show it)" in caplog.text
