"""Labels moved along dense optical flow (OpenCV's DIS): a frame a round does not propagate to (between
keyframes) takes its neighbour's labels where the pixels went, not where they were. Not in the paper.

Why: round 1 propagates to every 4th frame only (the benchmark's curve rewards a fast first mask), and a
copy in place misses wherever the object moved in between; the flow costs a few milliseconds per frame
against the backbone's few hundred (measured: docs/METHOD.md).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..config import FlowConfig

MIN_SIDE = 32
PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class FlowWarper:
    """Moves per-pixel maps of one video's frames to other frames of it along DIS optical flow."""

    def __init__(self, frames: np.ndarray, config: FlowConfig) -> None:
        self.frames = frames  # (T, H, W, 3) uint8 RGB
        height, width = frames.shape[1:3]
        scale = min(1.0, config.height / height)  # never upscaled: finer than the frame adds nothing
        # ... but to MIN_SIDE: OpenCV's DIS kills the process (a segfault) on an image under 16 pixels a side, and on
        # one under 32 pixels high and 5+ times as wide (a 16x200 strip; 20x640 is a cv2.error instead).
        self._size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))  # cv2's (w, h)
        self._gray: dict[int, np.ndarray] = {}
        self._dis = cv2.DISOpticalFlow_create(PRESETS[config.preset])
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        self._grid = cols, rows

    def _gray_frame(self, frame: int) -> np.ndarray:
        if frame not in self._gray:
            gray = cv2.cvtColor(np.ascontiguousarray(self.frames[frame]), cv2.COLOR_RGB2GRAY)
            self._gray[frame] = cv2.resize(gray, self._size, interpolation=cv2.INTER_AREA)
        return self._gray[frame]

    def flow(self, target: int, origin: int) -> np.ndarray:
        """(H, W, 2) float32: for each pixel of `target`, the (x, y) offset of where it is on `origin`."""
        small = self._dis.calc(self._gray_frame(target), self._gray_frame(origin), None)
        height, width = self.frames.shape[1:3]
        flow = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= width / self._size[0]
        flow[..., 1] *= height / self._size[1]
        return flow

    def warp(self, target: int, origin: int, *maps: np.ndarray) -> list[np.ndarray]:
        """Each (H, W) map of frame `origin` (labels, masks: nearest, never blended) as it lies on `target`;
        a pixel whose match falls outside the frame takes the nearest edge's value."""
        flow = self.flow(target, origin)
        cols, rows = self._grid
        map_x, map_y = cols + flow[..., 0], rows + flow[..., 1]
        out = []
        for values in maps:
            moved = cv2.remap(values.astype(np.float32), map_x, map_y, cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_REPLICATE)
            out.append(moved.astype(values.dtype))
        return out
