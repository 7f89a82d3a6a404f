"""Register a DAVIS-format root with davisinteractive for a local session, never downloading.

davisinteractive keeps its dataset description in class attributes of ``Davis`` (``Davis.sets``:
subset -> names, ``Davis.dataset``: name -> metadata), loaded from its bundled davis.json, and
``Davis.check_files`` downloads the whole DAVIS when one file is missing. A session on a partial
DAVIS (our shared copy has 5 of the 30 val videos) or on a custom DAVIS-format root would therefore
fail or start a download. :func:`register_dataset` checks the root, points ``Davis.sets[subset]`` at
exactly the sequences that can be evaluated, adds their metadata, and replaces the download methods
by ones that raise :class:`DatasetError`. :func:`restore` (or the :func:`registered` context manager)
undoes it all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..paths import broken_link
from . import compat  # noqa: F401  (patches davisinteractive before it is imported)
from .davis import DatasetError, DavisReader, SequenceInfo, file_kinds
from .validation import count_scribble_files, validate_sequence

from davisinteractive.dataset.davis import Davis  # isort: skip  (must come after compat)

log = logging.getLogger(__name__)

KINDS = ("official", "partial", "custom")
_PATCHED_METHODS = ("__init__", "_download_scribbles", "_download_annotations")


@dataclass
class Registration:
    root: Path
    subset: str
    kind: str  # official | partial | custom
    sequences: list[str]  # exactly Davis.sets[subset] after registration
    missing: list[str]  # sequences of the subset that cannot be evaluated from this root
    infos: dict[str, SequenceInfo]
    reasons: dict[str, str] = field(default_factory=dict)  # missing name -> why
    bad: list[str] = field(default_factory=list)  # missing ones whose files are there but wrong (skip_bad)


# --- global state of davisinteractive: snapshot, apply, restore -------------------------------------


@dataclass
class _State:
    sets: dict[str, list[str]]
    dataset: dict[str, dict]
    methods: dict[str, Callable]


def _snapshot() -> _State:
    return _State(
        sets={name: list(seqs) for name, seqs in Davis.sets.items()},
        dataset={name: dict(meta) for name, meta in Davis.dataset.items()},
        methods={name: Davis.__dict__[name] for name in _PATCHED_METHODS},
    )


def _apply_state(state: _State) -> None:
    # Mutate in place: davisinteractive's module globals (_SETS, _DATASET) alias these dicts.
    Davis.sets.clear()
    Davis.sets.update({name: list(seqs) for name, seqs in state.sets.items()})
    Davis.dataset.clear()
    Davis.dataset.update({name: dict(meta) for name, meta in state.dataset.items()})
    for name, method in state.methods.items():
        setattr(Davis, name, method)


# What davisinteractive shipped with: the official metadata every check compares against.
_PRISTINE = _snapshot()


def restore() -> None:
    """Put davisinteractive back as it was imported (official metadata, its own download methods)."""
    _apply_state(_PRISTINE)


@contextlib.contextmanager
def registered(
    root: str | Path, subset: str, sequences: Iterable[str] | None = None, skip_bad: bool = False
) -> Iterator[Registration]:
    """:func:`register_dataset` for the duration of a ``with`` block, then the previous state again."""
    before = _snapshot()
    try:
        yield register_dataset(root, subset, sequences, skip_bad)
    finally:
        _apply_state(before)


def _refuse_download(what: str) -> Callable:
    def download(self: Davis) -> None:
        raise DatasetError(
            f"davisinteractive would need to download the DAVIS {what} into {self.davis_root} "
            "(a file of a registered sequence is missing); this project never downloads: check the root"
        )

    return download


def _guard_init(original: Callable) -> Callable:
    @functools.wraps(original)
    def __init__(self: Davis, davis_root: str | None = None) -> None:
        root = davis_root or os.environ.get("DATASET_DAVIS")
        # davisinteractive would create the folder and then download into it.
        if root is not None and not Path(root).expanduser().exists():
            raise DatasetError(f"DAVIS root {root} does not exist: pass an existing DAVIS-format root")
        original(self, davis_root)

    return __init__


def _install_guards() -> None:
    Davis.__init__ = _guard_init(_PRISTINE.methods["__init__"])
    Davis._download_scribbles = _refuse_download("scribbles")
    Davis._download_annotations = _refuse_download("annotations")


# --- checking sequences --------------------------------------------------------------------------------
# A sequence the root lacks (or lacks files of: a partial DAVIS) is *unavailable*; one whose files are there
# but wrong is *bad*. Unavailable ones are skipped unless named; bad ones are an error unless skipped on purpose.


def _count_scribbles(reader: DavisReader, name: str) -> int:
    return count_scribble_files(reader, name)


def _check_present(reader: DavisReader, name: str) -> str | None:
    if not reader.frames_dir(name).is_dir():
        return "not in the root"
    if not reader.listed(reader.frames_dir(name), "*.jpg"):
        return "no frames"
    if not reader.annotation_paths(name):
        return "no annotations"
    if _count_scribbles(reader, name) == 0:
        return "no scribbles"
    return None


def _check_official(reader: DavisReader, name: str, meta: dict) -> SequenceInfo:
    """Every file (validation.validate_sequence), then the official metadata; DatasetError names the file."""
    info = validate_sequence(reader, name, num_objects=meta["num_objects"])
    if info.num_frames != meta["num_frames"]:
        raise DatasetError(f"{reader.frames_dir(name)}: {info.num_frames} frames, official {meta['num_frames']}")
    width, height = meta["image_size"]
    if (info.width, info.height) != (width, height):
        raise DatasetError(f"{reader.frames_dir(name) / '00000.jpg'}: frames are {info.width}x{info.height}, "
                           f"official {width}x{height}")
    return dataclasses.replace(info, num_scribbles=min(info.num_scribbles, meta["num_scribbles"]))


def _misfiled(reader: DavisReader, name: str) -> str | None:
    """A frame folder holding files but no .jpg frame, an empty annotation folder, or a sequence folder that is a
    link leading nowhere or a file: files that are there but wrong (an error), not a sequence the root lacks (left
    out quietly)."""
    for folder in (reader.frames_dir(name), reader.annotations_dir(name), reader.scribbles_dir(name)):
        # A link to an unmounted disk or a moved dataset: the run went on without the video, exit 0.
        odd = broken_link(folder) or ("a file" if folder.is_file() else None)
        if odd:
            return f"{folder}: is {odd}, not the sequence's folder"
    frames = reader.frames_dir(name)
    if not frames.exists() and frames.parent.is_dir():  # `Dog` listed, `dog/` there: left out with an INFO line
        other = next((p for p in frames.parent.iterdir() if p.name.lower() == name.lower() and p.is_dir()), None)
        if other is not None:
            return f"{frames}: missing ({other.name} is there: sequence names are case-sensitive)"
    if frames.is_dir() and not reader.listed(frames, "*.jpg"):
        others = sorted(file_kinds(frames))
        if others:
            return (f"{frames}: no .jpg frame (it holds {', '.join(others)} files): frames must be 00000.jpg, "
                    "00001.jpg, ...")
    annotations = reader.annotations_dir(name)
    if annotations.is_dir():
        next(annotations.iterdir(), None)  # an unreadable folder: PermissionError (glob would find it empty)
    if frames.is_dir() and annotations.is_dir() and not reader.annotation_paths(name):
        return f"{annotations}: no .png annotation: annotations must be 00000.png, 00001.png, ..."
    return None


def _check(reader: DavisReader, name: str) -> tuple[SequenceInfo | None, str | None, bool]:
    """(info, None, False) for a usable sequence, else (None, reason, bad)."""
    misfiled = _misfiled(reader, name)
    if misfiled:
        return None, misfiled, True
    reason = _check_present(reader, name)
    if reason:
        return None, reason, False
    official = _PRISTINE.dataset.get(name)
    try:
        if official is not None:
            return _check_official(reader, name, official), None, False
        return validate_sequence(reader, name), None, False
    except DatasetError as error:
        return None, str(error), True


# --- listing ---------------------------------------------------------------------------------------


def _candidates(reader: DavisReader, subset: str) -> tuple[list[str], str]:
    """Names of the subset and where they came from (a listing file, else the folders)."""
    listing = reader.subset_file(subset)
    if listing.exists():  # one that is no file (a folder, a FIFO) is refused: the folders would stand in for it silently
        return reader.sequences(subset), str(listing)
    parts = ("train", "val")
    if subset == "trainval" and all(reader.subset_file(p).is_file() for p in parts):
        names = [n for p in parts for n in reader.sequences(p)]
        return list(dict.fromkeys(names)), f"{reader.subset_file('train')} + val.txt"
    names = [
        n
        for n in reader.sequences()
        if reader.annotations_dir(n).is_dir() and _count_scribbles(reader, n) > 0
    ]
    official = set(_PRISTINE.sets.get(subset, []))
    if official & set(names):
        # A full DAVIS without ImageSets: official videos of the other subsets do not belong here.
        names = [n for n in names if n in official or n not in _PRISTINE.dataset]
    source = f"the folders of {reader.root}"
    other = {"train": "val", "val": "train"}.get(subset)
    if other is not None and reader.subset_file(other).is_file():
        # The other subset's videos are not this one's: a root with val.txt alone played them as `--subset train`.
        listed = set(reader.sequences(other))
        if names and all(n in listed for n in names):
            raise DatasetError(f"{listing}: missing, and every sequence folder of the root is listed in "
                               f"{reader.subset_file(other).name} (another subset): no '{subset}' sequence")
        names = [n for n in names if n not in listed]
        source += f" not in {reader.subset_file(other).name}"
    return names, source


def _entry(info: SequenceInfo, subset: str) -> dict:
    """A Davis.dataset entry: the official one with the scribble count present, or one from the files."""
    official = _PRISTINE.dataset.get(info.name)
    if official is not None:
        return {**official, "num_scribbles": info.num_scribbles}
    return {
        "name": info.name,
        "num_frames": info.num_frames,
        "num_objects": info.num_objects,
        "set": subset,
        "image_size": [info.width, info.height],
        "num_scribbles": info.num_scribbles,
        "year": 2017,
        "attributes": [],
        "eval_t": True,
    }


def _describe_missing(reasons: dict[str, str]) -> str:
    by_reason: dict[str, list[str]] = {}
    for name, reason in reasons.items():
        by_reason.setdefault(reason, []).append(name)
    return "; ".join(f"{reason}: {', '.join(names)}" for reason, names in by_reason.items())


# --- the entry point ---------------------------------------------------------------------------------


def register_dataset(
    root: str | Path, subset: str, sequences: Iterable[str] | None = None, skip_bad: bool = False
) -> Registration:
    """Make ``Davis.sets[subset]`` exactly the evaluable sequences of ``root`` (restricted to
    ``sequences`` when given), with their metadata, and make any download attempt raise DatasetError.

    Every file of every candidate is checked first (validation.validate_sequence). A sequence whose files
    are wrong, or one named in ``sequences`` that cannot be evaluated, raises DatasetError naming the file,
    unless ``skip_bad``: then it is left out, and listed in ``Registration.reasons`` like the sequences a
    partial root lacks (those are left out either way, unless named)."""
    reader = DavisReader(root)  # raises DatasetError when the root does not exist
    root = reader.root.resolve()
    candidates, source = _candidates(reader, subset)
    if not candidates and reader.subset_file(subset).is_file():  # it was "expected ImageSets/2017/<subset>.txt"
        raise DatasetError(f"{reader.subset_file(subset)}: lists no sequence (one folder name of "
                           f"JPEGImages/{reader.resolution} per line)")
    if not candidates:
        raise DatasetError(
            f"no DAVIS sequences for subset '{subset}' in {root}: expected ImageSets/2017/{subset}.txt "
            "or folders JPEGImages/480p/<seq>, Annotations/480p/<seq> and Scribbles/<seq>/001.json"
        )
    official_names = list(_PRISTINE.sets.get(subset, []))
    if sequences is not None:
        wanted = list(dict.fromkeys([sequences] if isinstance(sequences, str) else sequences))
        unknown = [n for n in wanted if n not in candidates]
        if unknown:
            raise DatasetError(
                f"unknown sequence(s) {', '.join(unknown)} for subset '{subset}' in {root}; "
                f"available (from {source}): {', '.join(candidates)}"
            )
        candidates = wanted

    infos: dict[str, SequenceInfo] = {}
    reasons: dict[str, str] = {}
    bad: list[str] = []
    broken: set[str] = set()  # reasons that are validation's `<file>: <what>` lines
    for name in candidates:
        info, reason, is_broken = _check(reader, name)
        if info is None:
            reasons[name] = reason or "unusable"
            if is_broken:
                broken.add(name)
            if is_broken or sequences is not None:  # nothing the user named or gave broken is dropped quietly
                bad.append(name)
        else:
            infos[name] = info
    if bad and not skip_bad:
        first = bad[0]
        message = reasons[first] if first in broken else \
            f"{reader.frames_dir(first)}: sequence '{first}' cannot be evaluated ({reasons[first]})"
        others = f"; {len(bad) - 1} more unusable: {', '.join(bad[1:])}" if len(bad) > 1 else ""
        skip = "; --skip-bad-sequences evaluates the others without it" if infos else ""  # none to evaluate
        raise DatasetError(f"{message}{others}{skip}")
    if bad:
        log.warning("skipping %d unusable sequence(s) as asked: %s", len(bad),
                    _describe_missing({n: reasons[n] for n in bad}))
    chosen = list(infos)
    is_custom = any(n not in _PRISTINE.dataset for n in candidates)
    if sequences is None and not is_custom:
        # An official root: the subset's official videos it lacks are missing too.
        for name in official_names:
            if name not in candidates:
                reasons[name] = "not in the root"
    if not chosen:
        frames = reader.root / "JPEGImages"
        others = sorted(p.name for p in frames.iterdir() if p.is_dir()) if frames.is_dir() else []
        if reader.resolution not in others and others:  # it listed every official video as "not in the root"
            raise DatasetError(f"{frames / reader.resolution}: no such folder (the root's frames are in JPEGImages/"
                               f"{', JPEGImages/'.join(others)}): the benchmark plays {reader.resolution} frames, "
                               f"annotations and scribbles (DAVIS's {reader.resolution} download)")
        raise DatasetError(
            f"no sequence of subset '{subset}' in {root} can be evaluated ({_describe_missing(reasons)}): "
            "each needs JPEGImages/480p/<seq>, Annotations/480p/<seq>/00000.png... and Scribbles/<seq>/001.json"
        )

    if is_custom:
        kind = "custom"
    elif official_names and set(chosen) == set(official_names):
        kind = "official"
    else:
        kind = "partial"
    missing = list(reasons)
    unavailable = {n: r for n, r in reasons.items() if n not in bad}
    if unavailable:
        log.info(
            "DAVIS %s at %s: using %d sequence(s); %d missing (%s)",
            subset,
            root,
            len(chosen),
            len(unavailable),
            _describe_missing(unavailable),
        )
    fewer = [
        f"{n} ({infos[n].num_scribbles} of {_PRISTINE.dataset[n]['num_scribbles']})"
        for n in chosen
        if n in _PRISTINE.dataset and infos[n].num_scribbles < _PRISTINE.dataset[n]["num_scribbles"]
    ]
    if fewer:
        log.info(
            "fewer scribble files than the official metadata, registered with those present: %s",
            ", ".join(fewer),
        )

    _install_guards()
    Davis.sets[subset] = list(chosen)
    for name in chosen:
        Davis.dataset[name] = _entry(infos[name], subset)
    log.debug("registered %s DAVIS %s at %s: %s", kind, subset, root, ", ".join(chosen))
    return Registration(root, subset, kind, chosen, missing, infos, reasons, bad)
