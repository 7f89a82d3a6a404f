"""agent.data.registry: registering DAVIS-format roots with davisinteractive, never downloading."""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.data import registry
from agent.data.davis import DatasetError

from davisinteractive.dataset.davis import Davis  # isort: skip  (after agent.* patched it)

DAVIS = Path(__file__).resolve().parents[2].parent / "shared" / "davis"
needs_davis = pytest.mark.skipif(not DAVIS.is_dir(), reason=f"real DAVIS not found at {DAVIS}")
HEIGHT, WIDTH = 24, 32
OFFICIAL_VAL = list(Davis.sets["val"])  # as shipped, before any registration


@pytest.fixture(autouse=True)
def _restore_davisinteractive():
    yield
    registry.restore()


def make_sequence(
    root: Path, name: str, num_frames: int = 3, num_objects: int = 2, num_scribbles: int = 1
) -> None:
    """A tiny DAVIS-format sequence: JPEG frames, palette annotations, normalised scribbles."""
    frames = root / "JPEGImages" / "480p" / name
    annotations = root / "Annotations" / "480p" / name
    scribbles = root / "Scribbles" / name
    for folder in (frames, annotations, scribbles):
        folder.mkdir(parents=True, exist_ok=True)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)
    for t in range(num_frames):
        rgb = np.full((HEIGHT, WIDTH, 3), 40 * t, dtype=np.uint8)
        Image.fromarray(rgb).save(frames / f"{t:05d}.jpg")
        mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        mask[4:12, 4 + t : 14 + t] = 1
        if num_objects > 1:
            mask[14:20, 18:28] = 2
        image = Image.frombytes("P", (WIDTH, HEIGHT), mask.tobytes())
        image.putpalette(palette)
        image.save(annotations / f"{t:05d}.png")
    for index in range(1, num_scribbles + 1):
        strokes: list[list[dict]] = [[] for _ in range(num_frames)]
        strokes[0] = [{"path": [[0.2, 0.3], [0.3, 0.3], [0.4, 0.35]], "object_id": 1}]
        data = {"sequence": name, "scribbles": strokes}
        (scribbles / f"{index:03d}.json").write_text(json.dumps(data))


def write_listing(root: Path, subset: str, names: list[str]) -> None:
    listing = root / "ImageSets" / "2017" / f"{subset}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{n}\n" for n in names))


@pytest.fixture
def custom_root(tmp_path: Path) -> Path:
    root = tmp_path / "DAVIS"
    make_sequence(root, "alpha", num_frames=3, num_objects=2, num_scribbles=2)
    make_sequence(root, "beta", num_frames=4, num_objects=1, num_scribbles=1)
    write_listing(root, "val", ["alpha", "beta"])
    return root


# --- custom roots ----------------------------------------------------------------------------------


def test_custom_root_gets_metadata_from_the_files(custom_root: Path) -> None:
    reg = registry.register_dataset(custom_root, "val")
    assert reg.kind == "custom"
    assert reg.sequences == ["alpha", "beta"] and reg.missing == []
    assert reg.root == custom_root.resolve()
    alpha = reg.infos["alpha"]
    assert (alpha.num_frames, alpha.num_objects, alpha.height, alpha.width, alpha.num_scribbles) == (
        3,
        2,
        HEIGHT,
        WIDTH,
        2,
    )
    assert Davis.sets["val"] == ["alpha", "beta"]
    entry = Davis.dataset["beta"]
    assert entry["num_frames"] == 4 and entry["num_objects"] == 1
    assert entry["image_size"] == [WIDTH, HEIGHT] and entry["num_scribbles"] == 1 and entry["set"] == "val"


def test_restore_undoes_everything(custom_root: Path) -> None:
    original_init = Davis.__dict__["__init__"]
    registry.register_dataset(custom_root, "val")
    registry.restore()
    assert Davis.sets["val"] == OFFICIAL_VAL
    assert "alpha" not in Davis.dataset
    assert Davis.__dict__["__init__"] is original_init


def test_registered_context_manager_restores(custom_root: Path) -> None:
    with registry.registered(custom_root, "val", ["beta"]) as reg:
        assert reg.sequences == ["beta"] and Davis.sets["val"] == ["beta"]
    assert Davis.sets["val"] == OFFICIAL_VAL and "beta" not in Davis.dataset


def test_without_listing_uses_complete_folders(tmp_path: Path) -> None:
    make_sequence(tmp_path, "beta")
    make_sequence(tmp_path, "alpha")
    make_sequence(tmp_path, "noscribble", num_scribbles=0)
    reg = registry.register_dataset(tmp_path, "train")
    assert reg.kind == "custom"
    assert reg.sequences == ["alpha", "beta"] and Davis.sets["train"] == ["alpha", "beta"]


def test_without_listing_the_folders_leave_out_the_other_subsets_listing(tmp_path: Path) -> None:
    """A root with val.txt alone played val's videos as `--subset train` (and train.txt's as val) without a word."""
    make_sequence(tmp_path, "alpha")
    make_sequence(tmp_path, "beta")
    write_listing(tmp_path, "val", ["alpha"])
    assert registry.register_dataset(tmp_path, "train").sequences == ["beta"]
    write_listing(tmp_path, "val", ["alpha", "beta"])
    with pytest.raises(DatasetError, match=r"ImageSets/2017/train.txt: missing, and every sequence folder of the "
                                           r"root is listed in val.txt \(another subset\): no 'train' sequence$"):
        registry.register_dataset(tmp_path, "train")


def test_a_listing_that_is_a_folder_is_an_error_not_replaced_by_the_folders(tmp_path: Path) -> None:
    make_sequence(tmp_path, "alpha")
    (tmp_path / "ImageSets" / "2017" / "train.txt").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"train.txt: is a folder, not a file \(one sequence name per line\)"):
        registry.register_dataset(tmp_path, "train")


def test_sequences_restrict_the_subset(custom_root: Path) -> None:
    reg = registry.register_dataset(custom_root, "val", sequences=["beta"])
    assert reg.sequences == ["beta"] and list(reg.infos) == ["beta"]
    assert Davis.sets["val"] == ["beta"]


def test_unknown_sequence_is_one_clear_line(custom_root: Path) -> None:
    with pytest.raises(DatasetError) as error:
        registry.register_dataset(custom_root, "val", sequences=["beta", "gamma"])
    message = str(error.value)
    assert "\n" not in message
    assert "gamma" in message and "alpha, beta" in message


def test_missing_root_is_an_error_and_not_created(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="does not exist"):
        registry.register_dataset(root, "val")
    assert not root.exists()


def test_empty_root_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Scribbles/<seq>/001.json"):
        registry.register_dataset(tmp_path, "val")


def test_an_empty_listing_is_named_not_expected(tmp_path: Path) -> None:
    """A val.txt of blank lines said "expected ImageSets/2017/val.txt or folders ...", beside the file itself."""
    make_sequence(tmp_path, "alpha")
    write_listing(tmp_path, "val", [])
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("\n\r\n  \n")
    with pytest.raises(DatasetError, match=r"ImageSets/2017/val.txt: lists no sequence \(one folder name of "
                                           r"JPEGImages/480p per line\)$"):
        registry.register_dataset(tmp_path, "val")


def test_a_root_of_another_resolution_names_the_missing_480p_folder(custom_root: Path) -> None:
    """Only Full-Resolution folders: the line listed every official val video as "not in the root"."""
    for kind in ("JPEGImages", "Annotations"):
        (custom_root / kind / "480p").rename(custom_root / kind / "Full-Resolution")
    with pytest.raises(DatasetError, match=r"JPEGImages/480p: no such folder \(the root's frames are in "
                                           r"JPEGImages/Full-Resolution\): the benchmark plays 480p frames"):
        registry.register_dataset(custom_root, "val")


def test_sequence_without_scribbles_is_missing(custom_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_sequence(custom_root, "gamma", num_scribbles=0)
    write_listing(custom_root, "val", ["alpha", "beta", "gamma"])
    with caplog.at_level(logging.INFO, logger=registry.__name__):
        reg = registry.register_dataset(custom_root, "val")
    assert reg.sequences == ["alpha", "beta"]
    assert reg.missing == ["gamma"] and reg.reasons["gamma"] == "no scribbles"
    assert "gamma" not in Davis.sets["val"]
    lines = [
        r.getMessage() for r in caplog.records if r.name == registry.__name__ and "missing" in r.getMessage()
    ]
    assert len(lines) == 1 and "1 missing" in lines[0] and "gamma" in lines[0]


def test_frames_in_another_format_or_an_empty_annotation_folder_are_errors(custom_root: Path) -> None:
    # The files are there but wrong: not a sequence the root lacks, which would be left out with an INFO line.
    frames = custom_root / "JPEGImages" / "480p" / "beta"
    for jpg in frames.glob("*.jpg"):
        Image.open(jpg).save(jpg.with_suffix(".png"))
        jpg.unlink()
    with pytest.raises(DatasetError, match=r"480p/beta: no .jpg frame \(it holds .png files\)"):
        registry.register_dataset(custom_root, "val")
    for png in frames.glob("*.png"):
        Image.open(png).save(png.with_suffix(".jpg"))
        png.unlink()
    for annotation in (custom_root / "Annotations" / "480p" / "beta").glob("*.png"):
        annotation.unlink()
    with pytest.raises(DatasetError, match=r"Annotations/480p/beta: no .png annotation"):
        registry.register_dataset(custom_root, "val")
    assert registry.register_dataset(custom_root, "val", skip_bad=True).sequences == ["alpha"]


def test_comment_lines_in_a_listing_are_no_names(custom_root: Path) -> None:
    # `# beta` (a video commented out) was a sequence name the root lacks: "1 missing (# beta: not in the root)".
    write_listing(custom_root, "val", ["# videos we play", "alpha", "  # beta"])
    reg = registry.register_dataset(custom_root, "val")
    assert reg.sequences == ["alpha"] and reg.missing == [] and reg.reasons == {}


def test_a_listed_name_whose_folder_is_there_in_another_case_is_an_error(custom_root: Path) -> None:
    # `Beta` listed, `beta/` there: left out as "not in the root" with an INFO line, the run went on without it.
    write_listing(custom_root, "val", ["alpha", "Beta"])
    with pytest.raises(DatasetError, match=r"480p/Beta: missing \(beta is there: sequence names are case-sensitive\)"):
        registry.register_dataset(custom_root, "val")
    assert registry.register_dataset(custom_root, "val", skip_bad=True).sequences == ["alpha"]


@pytest.mark.parametrize(("kind", "make", "what"), [
    ("JPEGImages/480p", lambda path: path.symlink_to("/nonexistent/beta"), "a symbolic link to a missing file"),
    ("Annotations/480p", lambda path: path.symlink_to(path), "a loop of symbolic links"),
    ("Scribbles", lambda path: path.write_text("beta"), "a file"),
])
def test_a_sequence_folder_that_leads_nowhere_is_an_error_not_a_sequence_the_root_lacks(
        custom_root: Path, kind: str, make, what: str) -> None:
    # A link to an unmounted disk was "not in the root": the run went on without the video and exited 0.
    import shutil

    folder = custom_root / kind / "beta"
    shutil.rmtree(folder)
    make(folder)
    with pytest.raises(DatasetError, match=f"{kind}/beta: is {what}.*, not the sequence's folder"):
        registry.register_dataset(custom_root, "val")
    assert registry.register_dataset(custom_root, "val", skip_bad=True).sequences == ["alpha"]


def test_nothing_usable_is_an_error(tmp_path: Path) -> None:
    make_sequence(tmp_path, "gamma", num_scribbles=0)
    write_listing(tmp_path, "val", ["gamma"])
    with pytest.raises(DatasetError, match="no sequence of subset 'val'.*no scribbles: gamma"):
        registry.register_dataset(tmp_path, "val")


def test_annotation_gap_is_an_error_naming_the_file(custom_root: Path) -> None:
    (custom_root / "Annotations" / "480p" / "alpha" / "00001.png").unlink()
    with pytest.raises(DatasetError, match=r"alpha/00001.png: missing") as error:
        registry.register_dataset(custom_root, "val")
    assert "\n" not in str(error.value) and "--skip-bad-sequences" in str(error.value)
    reg = registry.register_dataset(custom_root, "val", skip_bad=True)
    assert reg.sequences == ["beta"] and "00001.png" in reg.reasons["alpha"] and reg.bad == ["alpha"]


def test_a_root_annotated_on_frame_0_only_points_to_a_server_not_to_skipping(custom_root: Path) -> None:
    # DAVIS test-dev's layout: every sequence unusable here, so skipping them would leave nothing to evaluate.
    for path in (custom_root / "Annotations" / "480p").rglob("*.png"):
        if path.name != "00000.png":
            path.unlink()
    with pytest.raises(DatasetError, match=r"alpha/00001.png: missing .*evaluation server: session_runner.py --host") as error:
        registry.register_dataset(custom_root, "val")
    assert "\n" not in str(error.value) and "--skip-bad-sequences" not in str(error.value)


def test_scribble_naming_another_sequence_is_an_error(custom_root: Path) -> None:
    path = custom_root / "Scribbles" / "beta" / "001.json"
    path.write_text(path.read_text().replace('"beta"', '"other"'))
    with pytest.raises(DatasetError, match=r"beta/001.json: names sequence 'other'"):
        registry.register_dataset(custom_root, "val")
    reg = registry.register_dataset(custom_root, "val", skip_bad=True)
    assert reg.sequences == ["alpha"] and "other" in reg.reasons["beta"]


def test_named_sequence_that_cannot_be_used_is_an_error(custom_root: Path) -> None:
    make_sequence(custom_root, "gamma", num_scribbles=0)
    write_listing(custom_root, "val", ["alpha", "beta", "gamma"])
    with pytest.raises(DatasetError, match=r"sequence 'gamma' cannot be evaluated \(no scribbles\)"):
        registry.register_dataset(custom_root, "val", sequences=["alpha", "gamma"])
    reg = registry.register_dataset(custom_root, "val", sequences=["alpha", "gamma"], skip_bad=True)
    assert reg.sequences == ["alpha"] and reg.reasons == {"gamma": "no scribbles"} and reg.bad == ["gamma"]


def test_download_methods_refuse(custom_root: Path) -> None:
    registry.register_dataset(custom_root, "val")
    davis = Davis(str(custom_root))
    for method in (davis._download_scribbles, davis._download_annotations):
        with pytest.raises(DatasetError, match="this project never downloads: check the root"):
            method()
    # A file that disappears after registration: davisinteractive would download, we refuse.
    (custom_root / "Annotations" / "480p" / "beta" / "00003.png").unlink()
    with pytest.raises(DatasetError, match="would need to download the DAVIS annotations"):
        davis.check_files(["beta"])


def test_davis_does_not_create_a_missing_root(custom_root: Path, tmp_path: Path) -> None:
    registry.register_dataset(custom_root, "val")
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(DatasetError, match="does not exist"):
        Davis(str(elsewhere))
    assert not elsewhere.exists()


@pytest.fixture
def fake_official(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """Pretend davisinteractive shipped metadata for the tiny 'alpha' and 'beta' (subset val)."""
    meta = {
        "alpha": {"name": "alpha", "num_frames": 3, "num_objects": 2, "num_scribbles": 3},
        "beta": {"name": "beta", "num_frames": 4, "num_objects": 1, "num_scribbles": 1},
    }
    for entry in meta.values():
        entry.update(
            {"set": "val", "image_size": [WIDTH, HEIGHT], "year": 2017, "attributes": [], "eval_t": True}
        )
    fake = dataclasses.replace(registry._PRISTINE, sets={"val": ["alpha", "beta"]}, dataset=meta)
    monkeypatch.setattr(registry, "_PRISTINE", fake)
    return meta


def test_official_root_keeps_official_metadata(
    custom_root: Path, fake_official: dict[str, dict], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=registry.__name__):
        reg = registry.register_dataset(custom_root, "val")
    assert reg.kind == "official" and reg.sequences == ["alpha", "beta"] and reg.missing == []
    # alpha has 2 of the 3 official scribble files: registered with 2, and said so.
    assert reg.infos["alpha"].num_scribbles == 2
    assert Davis.dataset["alpha"] == {**fake_official["alpha"], "num_scribbles": 2}
    assert Davis.dataset["beta"] == fake_official["beta"]
    assert any("alpha (2 of 3)" in r.getMessage() for r in caplog.records)


def test_official_names_that_do_not_match_are_errors(
    custom_root: Path, fake_official: dict[str, dict]
) -> None:
    fake_official["beta"]["num_objects"] = 2  # e.g. a multi-object video whose masks were merged
    with pytest.raises(DatasetError, match="beta: annotations have 1 object.s., the official metadata 2"):
        registry.register_dataset(custom_root, "val")
    reg = registry.register_dataset(custom_root, "val", skip_bad=True)
    assert reg.kind == "partial" and reg.sequences == ["alpha"] and reg.bad == ["beta"]
    fake_official["alpha"]["image_size"] = [854, 480]
    fake_official["beta"]["num_objects"] = 1
    reg = registry.register_dataset(custom_root, "val", skip_bad=True)
    assert reg.sequences == ["beta"]
    assert reg.reasons["alpha"].endswith(f"alpha/00000.jpg: frames are {WIDTH}x{HEIGHT}, official 854x480")
    fake_official["alpha"]["image_size"] = [WIDTH, HEIGHT]
    fake_official["alpha"]["num_objects"] = 1  # its annotations have label 2 too
    with pytest.raises(DatasetError, match="alpha/00000.png: label 2, but alpha has 1 object.s. in the official"):
        registry.register_dataset(custom_root, "val")


# --- the real (partial) DAVIS ---------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlretrieve", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.mark.data
@needs_davis
def test_partial_official_val(caplog: pytest.LogCaptureFixture) -> None:
    official = {name: dict(Davis.dataset[name]) for name in OFFICIAL_VAL}
    with caplog.at_level(logging.INFO, logger=registry.__name__):
        reg = registry.register_dataset(DAVIS, "val")
    names = ["blackswan", "car-shadow", "dog", "goat", "libby"]
    assert reg.kind == "partial" and reg.sequences == names
    assert Davis.sets["val"] == names
    assert sorted(reg.missing) == sorted(set(OFFICIAL_VAL) - set(names)) and len(reg.missing) == 25
    for name in names:
        assert Davis.dataset[name] == official[name]  # official metadata, all 3 scribbles present
        info = reg.infos[name]
        assert info.num_scribbles == 3 and (info.width, info.height) == tuple(official[name]["image_size"])
    records = [r for r in caplog.records if r.name == registry.__name__ and r.levelno == logging.INFO]
    assert len(records) == 1
    line = records[0].getMessage()
    assert "\n" not in line and "25 missing" in line and "bike-packing" in line


@pytest.mark.data
@needs_davis
def test_official_train_with_one_scribble() -> None:
    reg = registry.register_dataset(DAVIS, "train")
    assert reg.kind == "partial" and reg.sequences == ["bear"]
    assert reg.infos["bear"].num_scribbles == 1 and Davis.dataset["bear"]["num_scribbles"] == 1
    assert reg.reasons["boat"] == "no scribbles"


@pytest.mark.data
@needs_davis
def test_val_service_checks_files_without_download(no_network: None) -> None:
    from davisinteractive.evaluation import EvaluationService

    registry.register_dataset(DAVIS, "val")
    service = EvaluationService("val", davis_root=str(DAVIS), max_i=1)  # runs Davis.check_files
    samples, _, _ = service.get_samples()
    assert len(samples) == 15


@pytest.mark.data
@needs_davis
def test_real_session_runs_without_download(no_network: None, tmp_path: Path) -> None:
    from davisinteractive.session import DavisInteractiveSession

    from agent.data.davis import DavisReader

    # train: only bear (1 scribble of 3) can be evaluated; one sample keeps this test short.
    registry.register_dataset(DAVIS, "train")
    reader = DavisReader(DAVIS)
    session = DavisInteractiveSession(
        davis_root=str(DAVIS),
        subset="train",
        max_nb_interactions=1,
        metric_to_optimize="J",
        report_save_dir=str(tmp_path),
    )
    played = []
    with session:
        while session.next():
            sequence, _, _ = session.get_scribbles(only_last=True)
            masks = reader.load_annotations(sequence).astype(np.int64)
            masks[masks == 255] = 0
            session.submit_masks(masks)
            played.append(sequence)
    assert played == ["bear"]
    summary = session.get_global_summary()
    assert summary["metric_at_threshold"]["J"] == pytest.approx(1.0)
    assert len(list(tmp_path.glob("*.csv"))) == 1


def test_an_unreadable_annotation_folder_says_so(custom_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # glob finds nothing in a folder it may not list: it read "no .png annotation" (tests run as root, so the
    # folder's refusal is simulated)
    folder = custom_root / "Annotations" / "480p" / "beta"
    listing = Path.iterdir

    def iterdir(path: Path):
        if path == folder:
            raise PermissionError(13, "Permission denied", str(folder))
        return listing(path)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(PermissionError, match="Permission denied"):
        registry.register_dataset(custom_root, "val")
