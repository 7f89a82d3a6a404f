"""The synthetic DAVIS-format dataset: deterministic, well-formed, readable, and a plausible video."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.data import synthetic
from agent.data.davis import DavisReader
from agent.data.synthetic import (
    SyntheticSpec,
    davis_palette,
    ensure_default_dataset,
    generate_sequence,
    write_dataset,
)

SPEC = SyntheticSpec(num_sequences=3, num_frames=6, height=96, width=160, subset="val", seed=0)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("synthetic")
    return root, write_dataset(root, SPEC)


@pytest.fixture(scope="module")
def reader(dataset) -> DavisReader:
    return DavisReader(dataset[0])


def test_same_spec_gives_byte_identical_files(dataset, tmp_path):
    again = write_dataset(tmp_path, SPEC)
    assert again == dataset[1]
    first, second = _tree_hashes(dataset[0]), _tree_hashes(tmp_path)
    assert first == second
    assert any(name.endswith(".jpg") for name in first) and any(name.endswith("001.json") for name in first)


def test_generate_sequence_is_deterministic_and_seed_dependent():
    frames, masks = generate_sequence(3, 4, 64, 96, 2)
    frames2, masks2 = generate_sequence(np.random.default_rng(3), 4, 64, 96, 2)
    assert frames.shape == (4, 64, 96, 3) and frames.dtype == np.uint8
    assert masks.shape == (4, 64, 96) and masks.dtype == np.uint8
    np.testing.assert_array_equal(frames, frames2)
    np.testing.assert_array_equal(masks, masks2)
    assert not np.array_equal(generate_sequence(4, 4, 64, 96, 2)[0], frames)


def test_more_objects_than_textures_is_one_value_error():
    """Each object wears a texture of its own: 15 objects were an IndexError while the sequence was drawn."""
    with pytest.raises(ValueError, match=r"num_objects: at most 10 .* got 15"):
        generate_sequence(0, 4, num_objects=15)


def test_layout_and_file_formats(dataset):
    root, names = dataset
    assert names == ["synth-000", "synth-001", "synth-002"]
    assert (root / "ImageSets" / "2017" / "val.txt").read_text().split() == names
    for index, name in enumerate(names):
        jpgs = sorted((root / "JPEGImages" / "480p" / name).glob("*.jpg"))
        pngs = sorted((root / "Annotations" / "480p" / name).glob("*.png"))
        assert [p.name for p in jpgs] == [f"{f:05d}.jpg" for f in range(SPEC.num_frames)]
        assert [p.name for p in pngs] == [f"{f:05d}.png" for f in range(SPEC.num_frames)]
        assert (root / "Scribbles" / name / "001.json").is_file()
        with Image.open(jpgs[0]) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size == (SPEC.width, SPEC.height)
        with Image.open(pngs[0]) as image:
            assert image.mode == "P" and image.size == (SPEC.width, SPEC.height)
            assert image.getpalette()[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
            ids = np.unique(np.asarray(image))
        assert set(ids.tolist()) <= set(range(index % SPEC.max_objects + 2))


def test_davis_palette():
    palette = davis_palette()
    assert len(palette) == 768
    assert palette[:15] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128]


def test_reader_reads_it_back(dataset, reader):
    root, names = dataset
    assert reader.sequences("val") == names
    for index, name in enumerate(names):
        info = reader.info(name)
        assert info.num_objects == 1 + index  # sequences cycle through 1..max_objects objects
        assert (info.num_frames, info.height, info.width) == (SPEC.num_frames, SPEC.height, SPEC.width)
        assert info.num_scribbles == 1
        assert reader.load_frames(name).shape == (SPEC.num_frames, SPEC.height, SPEC.width, 3)
        assert reader.load_annotations(name).shape == (SPEC.num_frames, SPEC.height, SPEC.width)
        assert reader.load_scribble(name, 1)["sequence"] == name


def test_every_object_is_visible_in_every_frame(dataset, reader):
    for name in dataset[1]:
        masks = reader.load_annotations(name)
        num_objects = reader.info(name).num_objects
        for frame in masks:
            assert set(np.unique(frame).tolist()) == set(range(num_objects + 1))
            counts = np.bincount(frame.ravel(), minlength=num_objects + 1)
            assert counts[1:].min() >= 20


def test_initial_scribble_strokes_every_object(dataset, reader):
    for name in dataset[1]:
        num_objects = reader.info(name).num_objects
        scribble = reader.load_scribble(name, 1)
        assert len(scribble["scribbles"]) == SPEC.num_frames
        frames_with_strokes = [f for f, strokes in enumerate(scribble["scribbles"]) if strokes]
        assert len(frames_with_strokes) == 1  # the robot annotates one frame
        strokes = scribble["scribbles"][frames_with_strokes[0]]
        assert {s["object_id"] for s in strokes} == set(range(1, num_objects + 1))  # no background stroke
        masks = reader.load_annotations(name)[frames_with_strokes[0]]
        for stroke in strokes:
            path = np.asarray(stroke["path"])
            assert path.ndim == 2 and path.shape[1] == 2 and len(path) > 1
            assert path.min() >= 0.0 and path.max() <= 1.0
            assert stroke["end_time"] > stroke["start_time"]
            # The stroke lies on its object (mostly: the robot's Bezier smoothing may cut corners).
            xy = np.minimum(np.floor(path * [SPEC.width, SPEC.height]), [SPEC.width - 1, SPEC.height - 1]).astype(int)
            assert np.mean(masks[xy[:, 1], xy[:, 0]] == stroke["object_id"]) > 0.8


def test_objects_move_and_occlude(dataset, reader):
    occluding_pixels = 0
    for name in dataset[1]:
        masks = reader.load_annotations(name)
        for k in range(1, reader.info(name).num_objects + 1):
            ys, xs = np.nonzero(masks[0] == k)
            ye, xe = np.nonzero(masks[-1] == k)
            shift = np.hypot(ys.mean() - ye.mean(), xs.mean() - xe.mean())
            assert shift > 2.0 or np.sum(masks[0] == k) != np.sum(masks[-1] == k)
        # Two different objects side by side: one occludes the other (blobs never just touch).
        left, right = masks[:, :, :-1], masks[:, :, 1:]
        up, down = masks[:, :-1], masks[:, 1:]
        occluding_pixels += int(np.sum((left > 0) & (right > 0) & (left != right)))
        occluding_pixels += int(np.sum((up > 0) & (down > 0) & (up != down)))
    assert occluding_pixels >= 10


def test_frames_look_like_video(dataset, reader):
    frames = reader.load_frames(dataset[1][0]).astype(float)
    assert frames.std() > 20  # textured, not flat colours
    consecutive = np.abs(np.diff(frames, axis=0)).mean()
    assert 0.5 < consecutive < 60  # things move, but frames stay related


def test_ensure_default_dataset_caches_atomically(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SIMLEARN_CACHE", str(tmp_path))
    spec = SyntheticSpec(num_sequences=1, num_frames=3, height=64, width=96)
    with caplog.at_level(logging.INFO, logger="agent.data.synthetic"):
        root = ensure_default_dataset(spec)
    assert root == synthetic.default_dataset_root(spec) and root.parent == tmp_path
    assert root.name == f"synthetic-{spec.short_hash()}"
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temp dir left behind
    assert DavisReader(root).sequences("val") == ["synth-000"]
    assert any(str(root) in record.getMessage() for record in caplog.records)
    assert json.loads((root / "synthetic_spec.json").read_text())["seed"] == spec.seed

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(synthetic, "write_dataset", fail)
    assert ensure_default_dataset(spec) == root
    assert SyntheticSpec(seed=1).short_hash() != SyntheticSpec().short_hash()


def test_a_cache_missing_a_file_is_generated_again(tmp_path, monkeypatch, caplog):
    # A file deleted from the cache was "<file>: missing ... --skip-bad-sequences", never that it is a cache.
    monkeypatch.setenv("SIMLEARN_CACHE", str(tmp_path))
    spec = SyntheticSpec(num_sequences=1, num_frames=3, height=64, width=96)
    root = ensure_default_dataset(spec)
    frame = root / "JPEGImages" / "480p" / "synth-000" / "00001.jpg"
    whole = frame.read_bytes()
    frame.unlink()
    with caplog.at_level(logging.WARNING, logger="agent.data.synthetic"):
        assert ensure_default_dataset(spec) == root
    assert frame.read_bytes() == whole
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # the incomplete copy is gone
    assert "lacks JPEGImages/480p/synth-000/00001.jpg: generating it again" in caplog.text


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMLEARN_CACHE", str(tmp_path))

    def interrupted(root, spec):
        (Path(root) / "JPEGImages").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_default_dataset(SyntheticSpec(num_sequences=1, num_frames=2, height=64, width=96))
    assert list(tmp_path.iterdir()) == []


def test_no_home_folder_for_the_cache_is_one_line(monkeypatch):
    """HOME unset for a user the system does not know (a container's `--user 1234`): pathlib's RuntimeError
    ("Could not determine home directory.") was a traceback in session_runner.py and agent.server."""
    import pwd

    from agent.data.davis import DatasetError

    def unknown_user(uid):
        raise KeyError(uid)

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("SIMLEARN_CACHE", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown_user)
    with pytest.raises(DatasetError, match=r"^\$SIMLEARN_CACHE: not set, and ~/.cache/simlearn-ivos has no home "
                                           r"folder .*: set SIMLEARN_CACHE to a writable folder, or pass --davis-root$"):
        ensure_default_dataset(SyntheticSpec(num_sequences=1, num_frames=2, height=64, width=96))
    monkeypatch.setenv("SIMLEARN_CACHE", "~nosuchuser-s16/cache")
    with pytest.raises(DatasetError, match="~nosuchuser-s16/cache names a home folder this system does not know"):
        synthetic.default_dataset_root()


def test_a_cache_that_is_a_file_says_so(tmp_path, monkeypatch):
    """SIMLEARN_CACHE naming a file was "cannot write the built-in synthetic dataset there (File exists)"."""
    from agent.data.davis import DatasetError

    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    for configured, why in ((cache, "a file"), (cache / "below", f"{cache} is a file")):
        monkeypatch.setenv("SIMLEARN_CACHE", str(configured))
        with pytest.raises(DatasetError, match=rf"^{configured}: cannot write the built-in synthetic dataset there "
                                               rf"\({why}, not a folder\): set SIMLEARN_CACHE"):
            ensure_default_dataset(SyntheticSpec(num_sequences=1, num_frames=2, height=64, width=96))
    assert cache.read_text() == "not a folder"


def test_robot_skips_round_objects_so_generation_redraws_them(tmp_path, monkeypatch):
    yy, xx = np.mgrid[:64, :96]
    masks = np.zeros((3, 64, 96), np.uint8)
    masks[:, ((yy - 32) / 6.0) ** 2 + ((xx - 70) / 20.0) ** 2 <= 1] = 1  # elongated: gets a stroke
    scribble = synthetic.initial_scribble("blobs", masks, 1)
    assert scribble is not None and {s["object_id"] for s in scribble["scribbles"][1]} == {1}
    masks[:, (yy - 32) ** 2 + (xx - 30) ** 2 <= 64] = 2  # small disc: point-like skeleton, no stroke
    assert synthetic.initial_scribble("blobs", masks, 2) is None

    # write_dataset redraws a sequence (next attempt seed) until the robot strokes every object.
    calls = []
    real = synthetic.initial_scribble

    def first_fails(name, masks, num_objects):
        calls.append(name)
        return None if len(calls) == 1 else real(name, masks, num_objects)

    monkeypatch.setattr(synthetic, "initial_scribble", first_fails)
    spec = SyntheticSpec(num_sequences=1, num_frames=3, height=64, width=96)
    assert write_dataset(tmp_path, spec) == ["synth-000"] and len(calls) == 2
    assert DavisReader(tmp_path).load_scribble("synth-000", 1)["scribbles"]
