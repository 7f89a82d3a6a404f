"""Register the sequences a remote evaluation server asks for, from the frames of a local DAVIS-format root.

Against a server (test-dev) the client has frames only: the ground truth and the scribbles stay on the
server. The framework's client still needs ``Davis.dataset[sequence]['num_objects']`` (it encodes the
masks per object and times each sample by its objects), and the agent needs each video's size. Those
come from the official metadata bundled with davisinteractive for official sequences (checked against
the frames), else from the root's annotations when it has them (a custom server root, e.g. the local
server's). ``agent.data.registry.restore`` undoes the registration like any other.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from . import compat  # noqa: F401  (patches davisinteractive before it is imported)
from .davis import VOID_LABEL, DatasetError, DavisReader, SequenceInfo, open_image
from .registry import Registration

import davisinteractive.dataset.davis as davis_module  # isort: skip  (must come after compat)

log = logging.getLogger(__name__)


def official_metadata() -> dict[str, dict]:
    """The sequences of davisinteractive's bundled davis.json, as shipped (Davis.dataset may be changed)."""
    path = Path(davis_module.__file__).with_name("davis.json")
    return json.loads(path.read_text())["sequences"]


def _objects_in_annotations(reader: DavisReader, name: str) -> int:
    count = 0
    for path in reader.annotation_paths(name):
        with open_image(path, "annotation") as image:
            labels = np.unique(np.asarray(image))
        labels = labels[(labels > 0) & (labels != VOID_LABEL)]
        count = max(count, int(labels.max()) if labels.size else 0)
    return count


def _info(reader: DavisReader, name: str, num_scribbles: int, official: dict | None) -> SequenceInfo:
    if not reader.has_sequence(name):
        raise DatasetError(f"no frames of '{name}' in {reader.frames_dir(name)}")
    frames = reader.frame_paths(name)
    with open_image(frames[0], "frame") as image:
        width, height = image.size
    if official is not None:
        expected = (official["num_frames"], *official["image_size"])
        if (len(frames), width, height) != expected:
            raise DatasetError(f"{reader.frames_dir(name)}: {len(frames)} frames of {width}x{height}, official "
                               f"{expected[0]} of {expected[1]}x{expected[2]}")
        objects = official["num_objects"]
    else:
        objects = _objects_in_annotations(reader, name)
        if objects == 0:
            raise DatasetError(f"'{name}' is not an official DAVIS sequence and {reader.annotations_dir(name)} "
                               "has no object to count: the client cannot know its number of objects")
    return SequenceInfo(name, len(frames), objects, height, width, num_scribbles)


def register_remote(root: str | Path, subset: str, samples: list) -> Registration:
    """Make the sequences of a server's `samples` ([sequence, scribble_idx] pairs) known to davisinteractive
    from the frames in `root`; DatasetError lists every sequence the root cannot serve."""
    reader = DavisReader(root)
    root = reader.root.resolve()
    scribbles: dict[str, int] = {}
    for sequence, index in samples:
        scribbles[sequence] = max(scribbles.get(sequence, 0), int(index))
    official = official_metadata()
    infos, reasons = {}, {}
    for name, count in scribbles.items():
        try:
            infos[name] = _info(reader, name, count, official.get(name))
        except DatasetError as error:
            reasons[name] = str(error)
    if reasons:
        listed = "; ".join(reasons.values()) if len(reasons) <= 3 else ", ".join(reasons)
        raise DatasetError(f"the server asks for {len(reasons)} sequence(s) that {root} cannot serve ({listed}): "
                           "pass --davis-root with their frames (JPEGImages/480p/<seq>)")
    Davis = davis_module.Davis
    Davis.sets[subset] = list(infos)
    for name, info in infos.items():
        Davis.dataset[name] = {**official.get(name, {}), "name": name, "num_frames": info.num_frames,
                               "num_objects": info.num_objects, "image_size": [info.width, info.height],
                               "num_scribbles": info.num_scribbles, "set": subset}
    log.info("remote samples: %d sequence(s) with frames from %s", len(infos), root)
    return Registration(root, subset, "remote", list(infos), [], infos)
