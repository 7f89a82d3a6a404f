"""What one sample holds in memory, and whether this machine has it.

A sample keeps every frame's backbone features (7.5 MB a frame for Lite2 at 360x640), two label maps of every
frame at its own size and the reference pool's running top-k. A video too long for the memory is refused in
`InteractiveAgent.start`, before any work, instead of the process being killed in the middle of a round: the
tools (agent.tools.segmenter) segment long videos in chunks.
"""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")


class TooManyObjects(MemoryError):
    """A sample that does not fit because of its object classes (every object id up to the highest is one): its
    frames alone, with one object, would fit."""


def sample_bytes(num_frames: int, frame_size: tuple[int, int], feature_channels: int, feature_size: tuple[int, int],
                 grid: tuple[int, int], topk: int, num_classes: int) -> int:
    """Bytes a sample of `num_frames` frames of `frame_size` (H, W) holds once every frame has been played; the
    embedding cache is not counted (it has its own cap, agent.embedding_cache_mb)."""
    height, width = frame_size
    per_frame = (3 * height * width  # the frames (start copies them)
                 + 2 * 8 * height * width  # int64 labels: the round's and the last round's
                 + 4 * feature_channels * feature_size[0] * feature_size[1]  # float32 backbone features
                 + 4 * num_classes * topk * grid[0] * grid[1])  # the reference pool's running top-k
    return num_frames * per_frame


def available_bytes(meminfo: Path = MEMINFO) -> int | None:
    """The memory the kernel says new work can have without swapping (MemAvailable), None where it is not known
    (not Linux, or an unreadable file): then nothing is refused."""
    try:
        for line in meminfo.read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                number, _, unit = value.strip().partition(" ")
                return int(number) * (1024 if unit.strip().lower() == "kb" else 1)
    except (OSError, ValueError):
        return None
    return None
