"""What one sample holds in memory, and whether this machine has it.

A sample keeps every frame's backbone features (7.5 MB a frame for Lite2 at 360x640), two label maps of every
frame at its own size and the reference pool's running top-k. A video too long for the memory is refused in
`InteractiveAgent.start`, before any work, instead of the process being killed in the middle of a round: the
tools (agent.tools.segmenter) segment long videos in chunks. The tools' own copy of the video (every frame at the
working size, JPEG-encoded, and its labels PNG-encoded) is checked before it is read (`working_frames_bytes`).
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


# agent.tools.video.WorkingFrames: JPEG at quality 95 took 0.22-0.52 bytes a pixel on DAVIS's 480p frames (0.34
# typical: ~140 kB a 480x854 frame; smoother videos less); the segmenter's PNG labels take a few kB a frame.
ENCODED_FRAME_BYTES_PER_PIXEL = 0.35
ENCODED_LABELS_BYTES_PER_PIXEL = 0.02


def working_frames_bytes(num_frames: int, frame_size: tuple[int, int]) -> int:
    """About the bytes the tools hold for a whole video of `num_frames` frames of `frame_size` (H, W): each frame
    JPEG-encoded and its labels PNG-encoded (a 100,000-frame 480p video: ~15 GB)."""
    pixels = frame_size[0] * frame_size[1]
    return int(num_frames * pixels * (ENCODED_FRAME_BYTES_PER_PIXEL + ENCODED_LABELS_BYTES_PER_PIXEL))


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
