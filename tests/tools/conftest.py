"""A synthetic video as a person would bring it: an mp4 (and a folder of frames), its ground truth, and a
scribble image painted from the ground truth in the documented colours."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.morphology import skeletonize

from agent.config import AgentConfig
from agent.data.synthetic import generate_sequence
from agent.tools.scribble_input import BACKGROUND_COLOUR, object_colour


@dataclass
class SyntheticVideo:
    video: Path  # mp4
    folder: Path  # the same frames as PNGs
    frames: np.ndarray
    masks: np.ndarray
    scribble_dir: Path  # one scribble image on `scribbled_frame`
    scribbled_frame: int


def write_mp4(path: Path, frames: np.ndarray, fps: float = 10) -> Path:
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec="libx264", quality=9,
                                         macro_block_size=2, ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def scribble_image(mask: np.ndarray, erode: int = 6) -> np.ndarray:
    """RGBA: each region's eroded skeleton in its colour (white background, palette objects), rest transparent."""
    image = np.zeros((*mask.shape, 4), np.uint8)
    regions = [(mask == 0, BACKGROUND_COLOUR)] + [(mask == k, object_colour(k)) for k in range(1, mask.max() + 1)]
    for region, colour in regions:
        stroke = ndimage.binary_dilation(skeletonize(ndimage.binary_erosion(region, iterations=erode)))
        image[stroke] = (*colour, 255)
    return image


def make_video(root: Path, num_frames: int, height: int, width: int, num_objects: int, seed: int = 7) -> SyntheticVideo:
    frames, masks = generate_sequence(seed, num_frames, height, width, num_objects)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / "frames"
    folder.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:05d}.png")
    frame = num_frames // 2
    scribble_dir = root / "scribbles"
    scribble_dir.mkdir()
    Image.fromarray(scribble_image(masks[frame])).save(scribble_dir / f"{frame:05d}.png")
    return SyntheticVideo(write_mp4(root / "video.mp4", frames), folder, frames, masks, scribble_dir, frame)


@pytest.fixture(scope="session")
def small_video(tmp_path_factory) -> SyntheticVideo:
    """8 frames of 240x426 (the checkpoint's size, even for H.264), two objects."""
    return make_video(tmp_path_factory.mktemp("video"), 8, 240, 426, 2)


@pytest.fixture
def tiny_agent(tiny_checkpoint):
    from agent.inference.agent import InteractiveAgent

    return InteractiveAgent.from_pretrained(tiny_checkpoint, AgentConfig(device="cpu", crf=_one_worker()))


@pytest.fixture
def tiny_page(tiny_agent):
    """The page's server on the tiny agent (every round with the CRF), its URL: what the page tests drive."""
    from agent.inference.plan import RoundPlan
    from agent.tools.segmenter import VideoSegmenter
    from agent.tools.webapp import AppState, create_app

    from .server import serve

    state = AppState(lambda: tiny_agent, working_side=120,
                     segmenter_factory=lambda agent, frames: VideoSegmenter(agent, frames, plan=RoundPlan()))
    with serve(create_app(state)) as url:
        yield url


def _one_worker():
    from agent.config import CRFConfig

    return CRFConfig(workers=1)


def mean_j(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean Jaccard over objects and frames (DAVIS's J)."""
    scores = []
    for k in range(1, int(truth.max()) + 1):
        for pred, gt in zip(prediction == k, truth == k, strict=True):
            union = (pred | gt).sum()
            scores.append((pred & gt).sum() / union if union else 1.0)
    return float(np.mean(scores))
