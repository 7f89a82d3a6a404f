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

import numpy as np
from PIL import Image

from . import compat  # noqa: F401  (patches davisinteractive before it is imported)
from .davis import VOID_LABEL, DatasetError, DavisReader, SequenceInfo

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
    root: str | Path, subset: str, sequences: Iterable[str] | None = None
) -> Iterator[Registration]:
    """:func:`register_dataset` for the duration of a ``with`` block, then the previous state again."""
    before = _snapshot()
    try:
        yield register_dataset(root, subset, sequences)
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


def _count_scribbles(reader: DavisReader, name: str) -> int:
    """Scribble files 001, 002, ... present without a gap (davisinteractive asks for them by index)."""
    count = 0
    while (reader.scribbles_dir(name) / f"{count + 1:03d}.json").is_file():
        count += 1
    return count


def _annotation_gap(reader: DavisReader, name: str, num_frames: int) -> str | None:
    present = {p.name for p in reader.annotation_paths(name)}
    absent = [i for i in range(num_frames) if f"{i:05d}.png" not in present]
    if absent:
        return f"{len(absent)} of {num_frames} annotations missing (first {absent[0]:05d}.png)"
    return None


def _max_object(path: Path) -> int:
    labels = np.unique(np.asarray(Image.open(path)))
    labels = labels[(labels > 0) & (labels != VOID_LABEL)]
    return int(labels.max()) if labels.size else 0


def _check_present(reader: DavisReader, name: str) -> str | None:
    if not reader.frames_dir(name).is_dir():
        return "not in the root"
    if not any(reader.frames_dir(name).glob("*.jpg")):
        return "no frames"
    if not reader.annotation_paths(name):
        return "no annotations"
    if _count_scribbles(reader, name) == 0:
        return "no scribbles"
    return None


def _check_official(reader: DavisReader, name: str, meta: dict) -> tuple[SequenceInfo | None, str | None]:
    """The sequence against the official metadata: (info, None) when it matches, else (None, reason)."""
    num_frames, num_objects = meta["num_frames"], meta["num_objects"]
    width, height = meta["image_size"]
    frames = reader.frame_paths(name)
    if len(frames) != num_frames:
        return None, f"{len(frames)} frames, official {num_frames}"
    gap = _annotation_gap(reader, name, num_frames)
    if gap:
        return None, gap
    first = reader.annotations_dir(name) / "00000.png"
    for kind, path in (("frames", frames[0]), ("annotations", first)):
        size = Image.open(path).size
        if tuple(size) != (width, height):
            return None, f"{kind} are {size[0]}x{size[1]}, official {width}x{height}"
    objects = _max_object(first)
    if objects < num_objects:
        # Objects may enter later; read the rest only in this rare case (e.g. merged masks).
        objects = max(_max_object(p) for p in reader.annotation_paths(name))
    if objects != num_objects:
        return None, f"annotations have {objects} objects, official {num_objects}"
    scribbles = min(_count_scribbles(reader, name), meta["num_scribbles"])
    info = SequenceInfo(name, num_frames, num_objects, height, width, scribbles)
    return info, None


def _check_custom(reader: DavisReader, name: str) -> tuple[SequenceInfo | None, str | None]:
    """Metadata inferred from the files, after checking davisinteractive can read them."""
    num_frames = len(reader.frame_paths(name))
    gap = _annotation_gap(reader, name, num_frames)
    if gap:
        return None, gap
    info = reader.info(name)
    size = Image.open(reader.annotations_dir(name) / "00000.png").size
    if tuple(size) != (info.width, info.height):
        return None, f"annotations are {size[0]}x{size[1]}, frames {info.width}x{info.height}"
    if info.num_objects == 0:
        return None, "no objects in the annotations"
    scribbles = _count_scribbles(reader, name)
    for index in range(1, scribbles + 1):
        try:
            data = reader.load_scribble(name, index)
        except DatasetError as error:
            return None, f"scribble {index:03d}.json is malformed ({error})"
        if data.get("sequence") != name:  # davisinteractive asserts this
            return None, f"scribble {index:03d}.json names sequence {data.get('sequence')!r}"
    return dataclasses.replace(info, num_scribbles=scribbles), None


def _check(reader: DavisReader, name: str) -> tuple[SequenceInfo | None, str | None]:
    reason = _check_present(reader, name)
    if reason:
        return None, reason
    official = _PRISTINE.dataset.get(name)
    if official is not None:
        return _check_official(reader, name, official)
    return _check_custom(reader, name)


# --- listing ---------------------------------------------------------------------------------------


def _candidates(reader: DavisReader, subset: str) -> tuple[list[str], str]:
    """Names of the subset and where they came from (a listing file, else the folders)."""
    if reader.subset_file(subset).is_file():
        return reader.sequences(subset), str(reader.subset_file(subset))
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
    return names, f"the folders of {reader.root}"


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


def register_dataset(root: str | Path, subset: str, sequences: Iterable[str] | None = None) -> Registration:
    """Make ``Davis.sets[subset]`` exactly the evaluable sequences of ``root`` (restricted to
    ``sequences`` when given), with their metadata, and make any download attempt raise DatasetError."""
    reader = DavisReader(root)  # raises DatasetError when the root does not exist
    root = reader.root.resolve()
    candidates, source = _candidates(reader, subset)
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
    for name in candidates:
        info, reason = _check(reader, name)
        if info is None:
            reasons[name] = reason or "unusable"
        else:
            infos[name] = info
    chosen = list(infos)
    is_custom = any(n not in _PRISTINE.dataset for n in candidates)
    if sequences is None and not is_custom:
        # An official root: the subset's official videos it lacks are missing too.
        for name in official_names:
            if name not in candidates:
                reasons[name] = "not in the root"
    if not chosen:
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
    if missing:
        log.info(
            "DAVIS %s at %s: using %d sequence(s); %d missing (%s)",
            subset,
            root,
            len(chosen),
            len(missing),
            _describe_missing(reasons),
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
    return Registration(root, subset, kind, chosen, missing, infos, reasons)
