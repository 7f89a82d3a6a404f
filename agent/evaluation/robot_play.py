"""Rounds played by the framework's robot outside a session, for studies that compare settings from the same
strokes (crf_study, finetune_study): the robot corrects the worst frame not scribbled before, as a session's
evaluator does, but without the clock."""

from __future__ import annotations

import numpy as np

from ..data import compat  # noqa: F401  (patches davisinteractive before it is imported)

from davisinteractive.metrics import batched_jaccard  # isort: skip
from davisinteractive.robot import InteractiveScribblesRobot  # isort: skip


def frame_jaccard(truth: np.ndarray, labels: np.ndarray, num_objects: int) -> np.ndarray:
    """(T,) J per frame, averaged over the objects (the framework's metric)."""
    return batched_jaccard(truth, labels, average_over_objects=True, nb_objects=num_objects)


def stroke_frames(scribble: dict) -> set[int]:
    """The frames a scribble dict draws on."""
    return {t for t, strokes in enumerate(scribble.get("scribbles", [])) if strokes}


def next_scribble(robot: InteractiveScribblesRobot, sequence: str, labels: np.ndarray, truth: np.ndarray,
                  num_objects: int, jaccard: np.ndarray, used: set[int]) -> dict:
    """The robot's correction of `labels` on the worst frame not in `used` (any frame once all were); adds
    that frame to `used`."""
    candidates = [t for t in np.argsort(jaccard, kind="stable").tolist() if t not in used] or [int(np.argmin(jaccard))]
    used.add(candidates[0])
    return robot.interact(sequence, labels, truth, nb_objects=num_objects, frame=candidates[0])
