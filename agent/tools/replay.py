"""What an export recorded of its video and settings ("segmented" in scribbles.json), against the video and
settings it is replayed with: a video of other content is refused (`check_drawn_on`), other settings are warned
about (`replay_warnings`). The frame count and shape are checked as the scribbles are read
(scribble_input._check_segmented)."""

from __future__ import annotations

import cv2
import numpy as np

from ..inference.plan import RoundPlan
from .video import InputError, WorkingFrames


def segmenting_settings(num_frames: int, size: tuple[int, int], chunk_frames: int, plan: RoundPlan) -> dict:
    """What the masks depend on besides the strokes and the agent's config, recorded in scribbles.json ("segmented"):
    a replay on another video (another frame count or shape) is refused, one with other settings warned about."""
    return {"num_frames": num_frames, "working_size": list(size), "in_chunks": num_frames > chunk_frames,
            "crf_scale": (plan.crf_scale or "config") if plan.use_crf else 0}


def replay_warnings(sources: list, now: dict) -> list[str]:
    """A line for each export among `sources` (ScribbleSource) whose recorded settings ("segmented") differ from
    `now` (segmenting_settings): its rounds are replayed, but to other masks than that export's (it said nothing,
    and the masks differed)."""
    lines = []
    for source in sources:
        path, then = source.path, source.settings or {}
        what = []
        if then.get("working_size", now["working_size"]) != now["working_size"]:
            what.append("--working-size (frames of {1}x{0} then, {3}x{2} now)".format(*then["working_size"],
                                                                                   *now["working_size"]))
        if then.get("in_chunks", now["in_chunks"]) != now["in_chunks"]:
            how = {True: "in chunks", False: "in one agent"}
            what.append(f"--chunk-frames ({how[then['in_chunks']]} then, {how[now['in_chunks']]} now)")
        if then.get("crf_scale", now["crf_scale"]) != now["crf_scale"]:
            what.append(f"--crf-scale ({then['crf_scale']} then, {now['crf_scale']} now)")
        if what:
            lines.append(f"{path} was segmented with another {', '.join(what)}: its rounds are replayed, but its "
                         "masks will not come back exactly; give the export's settings for them")
    return lines


# The video's content in "segmented" ("content"): the mean colour of each cell of a CONTENT_GRID x CONTENT_GRID grid
# on the first, middle and last working frame. An export fed to another video of the same frame count and shape
# played its strokes on other content without a word; re-encoding or JPEG-compressing the video moves a cell's
# mean by a level or two, another video by tens (docs/OWN_VIDEOS.md).
CONTENT_GRID = 4
# Same video (measured on the synthetic video and 3 DAVIS sequences: PNG or JPEG frames vs JPEG quality 50..10,
# H.264 or MPEG-4 re-encodes, working sizes 120..480): up to 2.6, 4.7 at H.264's lowest quality. Another video
# of the same size (33 DAVIS sequences, pairwise): 20 or more, median 52.
CONTENT_TOLERANCE = 8.0


def content_frames(num_frames: int) -> list[int]:
    """The frames whose content "segmented" records: first, middle and last (fewer when they coincide)."""
    return sorted({0, num_frames // 2, num_frames - 1})


def video_content(frames: WorkingFrames, at: list[int] | None = None) -> dict:
    """The content record of `frames` (CONTENT_GRID): {"frames": [indices], "means": one list per frame of the
    cells' mean R, G, B, row by row, as integers}."""
    at = content_frames(len(frames)) if at is None else at
    grid = (CONTENT_GRID, CONTENT_GRID)
    means = [cv2.resize(frames.frame(index).astype(np.float32), grid, interpolation=cv2.INTER_AREA) for index in at]
    return {"frames": list(at), "means": [[int(v) for v in np.rint(m).reshape(-1)] for m in means]}


def content_difference(recorded: dict, frames: WorkingFrames) -> float:
    """The largest, over the frames `recorded` (video_content, validated) names, of the mean absolute difference
    between its cell colours and those of `frames`."""
    now = video_content(frames, recorded["frames"])["means"]
    return max(float(np.mean(np.abs(np.subtract(a, b)))) for a, b in zip(recorded["means"], now, strict=True))


def check_drawn_on(sources: list, frames: WorkingFrames, video) -> None:
    """InputError for the first source (ScribbleSource) whose "segmented" records content other than `frames'`
    (another video of the same frame count and shape: its strokes were played on other content), or records it
    in another form than video_content's. A source without "content" (DAVIS's files, older exports) passes."""
    for source in sources:
        recorded = (source.settings or {}).get("content")
        if recorded is None:
            continue
        if not _is_content(recorded, len(frames)):
            raise InputError(f"{source.path}: 'segmented' 'content' must be what an export writes ({{\"frames\": "
                             f"[0, 4, 8], \"means\": [[{3 * CONTENT_GRID ** 2} integers] per frame]}}), got "
                             f"{str(recorded)[:80]}: remove 'segmented' to play its strokes on any video")
        if content_difference(recorded, frames) > CONTENT_TOLERANCE:
            raise InputError(f"{source.path}: was drawn on another video (its frames differ from those of "
                             f"{video.path}): remove 'segmented' from it to play its strokes anyway")


def _is_content(recorded: object, num_frames: int) -> bool:
    """Whether `recorded` has video_content's form for a video of `num_frames` frames."""
    def integer(value, low, high):
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    if not isinstance(recorded, dict) or set(recorded) != {"frames", "means"}:
        return False
    at, means = recorded["frames"], recorded["means"]
    return (isinstance(at, list) and isinstance(means, list) and 0 < len(at) == len(means)
            and all(integer(index, 0, num_frames - 1) for index in at)
            and all(isinstance(cells, list) and len(cells) == 3 * CONTENT_GRID ** 2
                    and all(integer(v, 0, 255) for v in cells) for cells in means))
