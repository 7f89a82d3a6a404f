"""Deterministic synthetic videos in the DAVIS-2017 layout: the built-in dataset, CI data, pretraining data.

Each sequence has 1..3 smooth random blobs textured with crops of the photographs bundled with
scikit-image, moving over a panning photographic background with scale change, rotation, z-order
occlusion, soft shadows and a mild brightness drift. Written as (see agent/data/davis.py)::

    <root>/JPEGImages/480p/<seq>/00000.jpg        (the folder name is the layout, not the size)
    <root>/Annotations/480p/<seq>/00000.png       palette PNG, 0 background, 1..N objects
    <root>/Scribbles/<seq>/001.json               davisinteractive robot scribble on one frame
    <root>/ImageSets/2017/<subset>.txt

Same arguments -> byte-identical files (seeded generators only, fixed stroke timestamps).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..paths import cache_dir, file_in_the_way
from .davis import DatasetError

log = logging.getLogger(__name__)

# Bump when the generator's output changes, so cached default datasets are regenerated.
GENERATOR_VERSION = 1
# Photographs / textures bundled in skimage/data (no download needed); grey ones are tinted.
BACKGROUND_SOURCES = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
                      "brick.png", "grass.png", "gravel.png")
OBJECT_SOURCES = ("ihc.png", "retina.jpg", "hubble_deep_field.jpg", "chelsea.png", "coffee.png",
                  "astronaut.png", "motorcycle_right.png", "brick.png", "gravel.png", "coins.png", "moon.png")
MIN_VISIBLE_FRACTION = 0.25  # of an object's full area, in every frame (partial occlusion only)
MAX_ATTEMPTS = 64
# The robot settings of the DAVIS Interactive benchmark.
ROBOT_KWARGS = {"kernel_size": 0.2, "max_kernel_radius": 16, "min_nb_nodes": 4, "nb_points": 1000}


@dataclass
class SyntheticSpec:
    num_sequences: int = 3
    num_frames: int = 16
    height: int = 240
    width: int = 427
    max_objects: int = 3  # sequence i has 1 + i % max_objects objects
    subset: str = "val"
    seed: int = 0

    def short_hash(self) -> str:
        payload = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:10]


def davis_palette() -> list[int]:
    """The DAVIS/PASCAL palette (768 ints): 0 black, 1 (128,0,0), 2 (0,128,0), 3 (128,128,0), ..."""
    palette = []
    for index in range(256):
        rgb, value = [0, 0, 0], index
        for bit in range(8):  # spread the index's bits over the channels, high bits first
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        palette.extend(rgb)
    return palette


# --- textures ----------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _load_source(name: str) -> np.ndarray:
    import skimage  # only for the path of its bundled images

    image = Image.open(Path(skimage.__file__).parent / "data" / name)
    grey = image.mode in ("L", "I", "I;16")
    array = np.asarray(image.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
    return array if not grey else array[..., None]  # (h, w, 1) grey -> tinted later


def _texture(rng: np.random.Generator, name: str, size: tuple[int, int]) -> np.ndarray:
    """A random crop of a bundled image, resized to `size` (h, w), tinted/colour-jittered, float [0, 1]."""
    source = _load_source(name)
    h, w = source.shape[:2]
    aspect = size[1] / size[0]
    crop_h = int(min(h, w / aspect) * rng.uniform(0.45, 0.9))
    crop_w = max(8, int(crop_h * aspect))
    y0, x0 = int(rng.integers(0, h - crop_h + 1)), int(rng.integers(0, w - crop_w + 1))
    crop = source[y0:y0 + crop_h, x0:x0 + crop_w]
    channels = [Image.fromarray(crop[..., c]).resize((size[1], size[0]), Image.Resampling.BICUBIC)
                for c in range(crop.shape[2])]
    out = np.stack([np.asarray(c) for c in channels], axis=-1)
    if out.shape[2] == 1:  # grey texture: tint with a random colour
        tint = rng.uniform(0.35, 1.0, size=3)
        out = out * (tint / tint.max())
    else:
        out = out * rng.uniform(0.85, 1.15, size=3)  # mild colour jitter
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _bilinear_window(image: np.ndarray, top: float, left: float, height: int, width: int) -> np.ndarray:
    """A (height, width) window at a sub-pixel offset: smooth camera pan without resampling blur."""
    iy, ix = int(np.floor(top)), int(np.floor(left))
    fy, fx = top - iy, left - ix
    win = image[iy:iy + height + 1, ix:ix + width + 1]
    return ((1 - fy) * (1 - fx) * win[:-1, :-1] + (1 - fy) * fx * win[:-1, 1:]
            + fy * (1 - fx) * win[1:, :-1] + fy * fx * win[1:, 1:])


# --- scene -------------------------------------------------------------------------------------
@dataclass
class _Blob:
    """One object: a star-shaped blob (ellipse radius x low harmonics) and its pose at each frame."""

    semi_major: float
    aspect: float
    harmonics: np.ndarray  # (n, 3): order, amplitude, phase
    texture: np.ndarray  # (S, S, 3), centred on the blob's origin
    centers: np.ndarray  # (T, 2) x, y in pixels
    scales: np.ndarray  # (T,)
    angles: np.ndarray  # (T,) radians

    def radius(self, phi: np.ndarray) -> np.ndarray:
        a, b = self.semi_major, self.semi_major / self.aspect
        r = a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)
        wobble = sum(amp * np.cos(order * phi + phase) for order, amp, phase in self.harmonics)
        return r * (1.0 + wobble)

    def max_radius(self) -> float:
        return float(self.radius(np.linspace(0, 2 * np.pi, 360)).max())

    def area(self) -> float:
        """Area at scale 1 (polar integral), to measure visibility including off-frame parts."""
        phi = np.linspace(0, 2 * np.pi, 720, endpoint=False)
        return float(0.5 * np.mean(self.radius(phi) ** 2) * 2 * np.pi)


def _smooth_clip(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Squash into [low, high] with tanh: keeps trajectories smooth where a hard clip would kink."""
    mid, half = (low + high) / 2, (high - low) / 2
    return mid + half * np.tanh((values - mid) / half)


def _make_blobs(rng: np.random.Generator, num_frames: int, height: int, width: int,
                num_objects: int, sources: list[str]) -> list[_Blob]:
    unit = min(height, width)
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    size_range = (0.26, 0.38) if num_objects == 1 else (0.19, 0.29)
    semi_majors = unit * rng.uniform(*size_range, size=num_objects)
    # Objects pass close to a common meeting point at a common time, so they partially occlude.
    meet = np.array([width, height]) * (0.5 + rng.uniform(-0.15, 0.15, size=2))
    meet_time = rng.uniform(0.3, 0.7)
    spread = rng.uniform(0.5, 0.9) * semi_majors.mean() * (num_objects > 1)
    start_angle = rng.uniform(0, 2 * np.pi)
    blobs = []
    for k in range(num_objects):
        angle_k = start_angle + 2 * np.pi * k / num_objects + rng.uniform(-0.4, 0.4)
        offset = spread * np.array([np.cos(angle_k), np.sin(angle_k)])
        heading = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(heading), np.sin(heading)])
        travel = rng.uniform(0.2, 0.45) * width
        sway = rng.uniform(0.0, 0.05) * unit * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 6.3))
        centers = (meet + offset)[None] + (t - meet_time)[:, None] * travel * direction[None]
        centers += sway[:, None] * np.array([-direction[1], direction[0]])[None]
        centers[:, 0] = _smooth_clip(centers[:, 0], 0.06 * width, 0.94 * width)
        centers[:, 1] = _smooth_clip(centers[:, 1], 0.08 * height, 0.92 * height)
        orders = np.arange(2, 6)
        harmonics = np.stack([orders, rng.uniform(-0.1, 0.1, size=4) / np.sqrt(orders - 1),
                              rng.uniform(0, 2 * np.pi, size=4)], axis=1)
        scales = np.exp(rng.uniform(-0.4, 0.4) * (t - 0.5))
        angles = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.6, 0.6) * t
        blob = _Blob(float(semi_majors[k]), float(rng.uniform(1.5, 2.4)), harmonics,
                     np.zeros((1, 1, 3), np.float32), centers, scales, angles)
        side = int(np.ceil(2 * blob.max_radius())) + 4
        blob.texture = _texture(rng, sources[k], (side, side))
        blobs.append(blob)
    return blobs


def _render_blob(blob: _Blob, frame: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Soft alpha (H, W) and shaded colour (H, W, 3) of one blob at one frame (zero outside its box)."""
    cx, cy = blob.centers[frame]
    scale, angle = blob.scales[frame], blob.angles[frame]
    reach = blob.max_radius() * scale + 2
    y0, y1 = max(0, int(cy - reach)), min(height, int(np.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(cx - reach)), min(width, int(np.ceil(cx + reach)) + 1)
    alpha = np.zeros((height, width), np.float32)
    colour = np.zeros((height, width, 3), np.float32)
    if y0 >= y1 or x0 >= x1:
        return alpha, colour
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dx, dy = xs - cx, ys - cy
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = (cos * dx + sin * dy) / scale, (-sin * dx + cos * dy) / scale  # blob coordinates
    rho, r = np.hypot(u, v), blob.radius(np.arctan2(v, u))
    a = np.clip((r - rho) * scale + 0.5, 0.0, 1.0)  # ~1 px anti-aliased edge
    centre = (blob.texture.shape[0] - 1) / 2
    coords = [v + centre, u + centre]
    tex = np.stack([ndimage.map_coordinates(blob.texture[..., c], coords, order=1, mode="reflect")
                    for c in range(3)], axis=-1)
    shade = 0.75 + 0.25 * np.sqrt(np.clip(1.0 - (rho / np.maximum(r, 1e-6)) ** 2, 0.0, 1.0))  # dome light
    alpha[y0:y1, x0:x1] = a
    colour[y0:y1, x0:x1] = tex * shade[..., None]
    return alpha, colour


def _try_sequence(rng: np.random.Generator, num_frames: int, height: int, width: int,
                  num_objects: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """One random draw; returns frames, masks and whether it meets the visibility/occlusion rules."""
    unit = min(height, width)
    names = list(rng.permutation(BACKGROUND_SOURCES))
    background_name = str(names[0])
    sources = [str(s) for s in rng.permutation([s for s in OBJECT_SOURCES if s != background_name])]
    # Camera pan: the frame is a window moving over a larger background.
    pan = rng.uniform(0.05, 0.15) * width * np.array([1.0, rng.uniform(-0.4, 0.4)]) * rng.choice([-1, 1])
    margin = np.abs(pan) + 4
    background = _texture(rng, background_name, (height + int(margin[1]), width + int(margin[0])))
    start = np.where(pan < 0, margin - 2, 2.0)  # so that start + pan stays inside the image
    blobs = _make_blobs(rng, num_frames, height, width, num_objects, sources)
    z_order = rng.permutation(num_objects)  # painting order; ids are 1 + blob index
    brightness = rng.uniform(0.0, 0.06)
    phase = rng.uniform(0, 2 * np.pi)
    dy, dx = max(1, int(0.03 * unit)), max(1, int(0.04 * unit))  # shadow offset

    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    masks = np.zeros((num_frames, height, width), np.uint8)
    ok, occluded = True, False
    for f in range(num_frames):
        progress = f / max(1, num_frames - 1)
        left, top = start + pan * progress
        canvas = _bilinear_window(background, top, left, height, width)
        labels = np.zeros((height, width), np.uint8)
        full = {}
        for k in z_order:
            alpha, colour = _render_blob(blobs[k], f, height, width)
            shadow = np.zeros_like(alpha)  # cast down-right, not wrapped around the frame
            shadow[dy:, dx:] = alpha[:height - dy, :width - dx]
            shadow = ndimage.gaussian_filter(shadow, 0.02 * unit)
            canvas = canvas * (1.0 - 0.35 * shadow[..., None])
            canvas = canvas * (1.0 - alpha[..., None]) + colour * alpha[..., None]
            labels[alpha >= 0.5] = k + 1
            full[k] = alpha >= 0.5
        for k, blob in enumerate(blobs):
            visible = int((labels == k + 1).sum())
            occluded |= int((full[k] & (labels != k + 1)).sum()) > 0.05 * full[k].sum()
            ok &= visible >= max(MIN_VISIBLE_FRACTION * blob.area() * blob.scales[f] ** 2, 20)
        gain = 1.0 + brightness * np.sin(2 * np.pi * progress + phase)  # mild lighting drift
        frames[f] = np.clip(np.rint(canvas * gain * 255.0), 0, 255).astype(np.uint8)
        masks[f] = labels
    return frames, masks, ok and (occluded or num_objects == 1)


def generate_sequence(rng_or_seed: np.random.Generator | int, num_frames: int = 16, height: int = 240,
                      width: int = 427, num_objects: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A random video in memory: frames (T, H, W, 3) uint8 and masks (T, H, W) uint8 (0 bg, 1..N).

    Every object is at least MIN_VISIBLE_FRACTION visible in every frame; with 2+ objects some
    partial occlusion happens. Redraws (from the same generator) until both hold.
    """
    if num_objects < 1 or num_frames < 1:
        raise ValueError("need at least one object and one frame")
    if num_objects > len(OBJECT_SOURCES) - 1:  # 15 objects were an IndexError deep in the drawing
        raise ValueError(f"num_objects: at most {len(OBJECT_SOURCES) - 1} (one photograph's texture each, none the "
                         f"background's), got {num_objects}")
    rng = np.random.default_rng(rng_or_seed)
    for _ in range(MAX_ATTEMPTS):
        frames, masks, ok = _try_sequence(rng, num_frames, height, width, num_objects)
        if ok:
            return frames, masks
    raise RuntimeError(f"no valid synthetic sequence after {MAX_ATTEMPTS} draws ({height}x{width}, "
                       f"{num_objects} objects): the frame is too small for the objects")


# --- robot scribble ----------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """The robot logs one info line per call through absl; keep generation output to our own line."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def initial_scribble(sequence: str, masks: np.ndarray, num_objects: int, max_frames: int = 4,
                     near: float | None = None) -> dict | None:
    """The robot's first scribble (all-zero prediction) on the frame where objects are most visible, or
    with `near` (a position in the video, 0..1) on the frame nearest to it where every object shows at
    least half of its largest area.

    Tries the `max_frames` best frames; returns None if none gives every object a stroke (the robot
    drops error regions whose skeleton is too short, e.g. round ones).
    """
    from . import compat as davis_compat

    davis_compat.apply()  # numpy-2 fixes and a seeded skeleton, before davisinteractive is imported
    from davisinteractive.robot import InteractiveScribblesRobot

    robot = InteractiveScribblesRobot(**ROBOT_KWARGS)
    counts = np.stack([(masks == k).reshape(len(masks), -1).sum(1) for k in range(1, num_objects + 1)], 1)
    middle = (len(masks) - 1) / 2
    if near is None:
        ranked = sorted(range(len(masks)), key=lambda f: (-counts[f].min(), abs(f - middle), f))
    else:
        target = near * (len(masks) - 1)
        visible = (counts >= 0.5 * counts.max(0)).all(1)
        ranked = sorted(range(len(masks)), key=lambda f: (not visible[f], abs(f - target), f))
    zeros = np.zeros_like(masks)
    for frame in ranked[:max_frames]:
        with _quiet_absl():
            scribble = robot.interact(sequence, pred_masks=zeros, gt_masks=masks,
                                      nb_objects=num_objects, frame=frame)
        stroked = {s["object_id"] for s in scribble["scribbles"][frame]}
        if stroked >= set(range(1, num_objects + 1)):
            for index, stroke in enumerate(scribble["scribbles"][frame]):
                # Wall-clock times would break byte-identical output: use a fixed 1 s per stroke.
                stroke["start_time"], stroke["end_time"] = float(index), float(index + 1)
            return scribble
        log.debug("%s: frame %d leaves objects %s without a stroke", sequence, frame,
                  sorted(set(range(1, num_objects + 1)) - stroked))
    return None


# --- writing -----------------------------------------------------------------------------------
def sequence_names(spec: SyntheticSpec) -> list[str]:
    return [f"synth-{i:03d}" for i in range(spec.num_sequences)]


def _write_sequence(root: Path, name: str, frames: np.ndarray, masks: np.ndarray, scribble: dict) -> None:
    image_dir = root / "JPEGImages" / "480p" / name
    mask_dir = root / "Annotations" / "480p" / name
    scribble_dir = root / "Scribbles" / name
    write_frames(image_dir, mask_dir, frames, masks, quality=92)
    scribble_dir.mkdir(parents=True, exist_ok=True)
    (scribble_dir / "001.json").write_text(json.dumps(scribble))


def write_frames(image_dir: Path, mask_dir: Path, frames: np.ndarray, masks: np.ndarray, quality: int) -> None:
    """00000.jpg, ... (JPEG at `quality`) and 00000.png, ... (DAVIS palette PNGs of the uint8 ids)."""
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    palette = davis_palette()
    for f, (frame, mask) in enumerate(zip(frames, masks, strict=True)):
        Image.fromarray(frame).save(image_dir / f"{f:05d}.jpg", quality=quality)
        png = Image.fromarray(mask)  # "L" with the ids as values; putpalette turns it into "P" as is
        png.putpalette(palette)
        png.save(mask_dir / f"{f:05d}.png")


def write_dataset(root: str | Path, spec: SyntheticSpec | None = None) -> list[str]:
    """Write the spec's sequences under `root` (DAVIS-2017 layout); returns the sequence names."""
    spec = spec or SyntheticSpec()
    root = Path(root)
    names = sequence_names(spec)
    for index, name in enumerate(names):
        num_objects = 1 + index % spec.max_objects
        for attempt in range(MAX_ATTEMPTS):
            rng = np.random.default_rng(np.random.SeedSequence([spec.seed, index, attempt]))
            frames, masks = generate_sequence(rng, spec.num_frames, spec.height, spec.width, num_objects)
            scribble = initial_scribble(name, masks, num_objects)
            if scribble is not None:
                break
        else:
            raise RuntimeError(f"{name}: the robot left an object without a stroke in {MAX_ATTEMPTS} draws")
        _write_sequence(root, name, frames, masks, scribble)
    listing = root / "ImageSets" / "2017" / f"{spec.subset}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{name}\n" for name in names))
    spec_file = {**asdict(spec), "version": GENERATOR_VERSION, "sequences": names}
    (root / "synthetic_spec.json").write_text(json.dumps(spec_file, indent=1, sort_keys=True))
    return names


def default_dataset_root(spec: SyntheticSpec | None = None) -> Path:
    """Cache folder of the built-in dataset: $SIMLEARN_CACHE or ~/.cache/simlearn-ivos, per spec hash."""
    try:
        base = cache_dir()
    except ValueError as error:
        raise DatasetError(f"{error}, or pass --davis-root") from None
    return base / f"synthetic-{(spec or SyntheticSpec()).short_hash()}"


def _missing_file(root: Path, spec: SyntheticSpec) -> Path | None:
    """The first file of `spec`'s dataset that `root` lacks (a cache someone pruned), or None."""
    expected = [root / "synthetic_spec.json", root / "ImageSets" / "2017" / f"{spec.subset}.txt"]
    for name in sequence_names(spec):
        expected.append(root / "Scribbles" / name / "001.json")
        for f in range(spec.num_frames):
            expected += [root / "JPEGImages" / "480p" / name / f"{f:05d}.jpg",
                         root / "Annotations" / "480p" / name / f"{f:05d}.png"]
    return next((path for path in expected if not path.is_file()), None)


def _set_aside(root: Path, missing: Path) -> None:
    """Remove an incomplete cached dataset: renamed first (atomic: a reader sees it whole, as it was, or not at all;
    another process that set it aside first is no error), then deleted."""
    trash = None
    try:
        trash = Path(tempfile.mkdtemp(prefix=f".{root.name}-incomplete-", dir=root.parent))
        os.rename(root, trash)  # onto the empty folder just made
    except FileNotFoundError:
        pass
    except OSError as error:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        raise DatasetError(f"{root}: the built-in synthetic dataset lacks {missing.relative_to(root)} and cannot be "
                           f"regenerated ({error.strerror or error}): delete that folder, set SIMLEARN_CACHE to a "
                           "writable folder, or pass --davis-root") from error
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def ensure_default_dataset(spec: SyntheticSpec | None = None) -> Path:
    """The built-in synthetic dataset, generated on first use into a temp dir then renamed atomically."""
    spec = spec or SyntheticSpec()
    root = default_dataset_root(spec)
    if root.is_dir():
        missing = _missing_file(root, spec)
        if missing is None:
            log.info("Using the built-in synthetic dataset (%d sequences, %d frames, %dx%d) at %s",
                     spec.num_sequences, spec.num_frames, spec.height, spec.width, root)
            return root
        # A file deleted from the cache was "<file>: missing ... --skip-bad-sequences", never that it is a cache
        log.warning("%s: the built-in synthetic dataset lacks %s: generating it again", root, missing.relative_to(root))
        _set_aside(root, missing)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    except OSError as error:
        blocker = file_in_the_way(root.parent)  # a $SIMLEARN_CACHE that is a file was "(File exists)"
        why = (error.strerror or error if blocker is None else "a file, not a folder" if blocker == root.parent
               else f"{blocker} is a file, not a folder")
        raise DatasetError(f"{root.parent}: cannot write the built-in synthetic dataset there ({why}): set "
                           "SIMLEARN_CACHE to a writable folder, or pass --davis-root") from error
    try:
        started = time.perf_counter()
        write_dataset(tmp, spec)
        try:
            os.rename(tmp, root)  # atomic: readers see no dataset or a whole one
        except OSError:
            if not root.is_dir():  # not a concurrent generation that won the race
                raise
    except OSError as error:  # e.g. a full disk
        raise DatasetError(f"{root}: cannot write the built-in synthetic dataset ({error.strerror or error}): "
                           "set SIMLEARN_CACHE to a writable folder, or pass --davis-root") from error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Using the built-in synthetic dataset (%d sequences, %d frames, %dx%d) at %s "
             "(generated in %.1f s)", spec.num_sequences, spec.num_frames, spec.height, spec.width,
             root, time.perf_counter() - started)
    return root
