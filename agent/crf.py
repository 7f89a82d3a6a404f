"""Dense CRF refinement (Kraehenbuehl & Koltun) of per-class scores with the RGB frame, via pydensecrf."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pydensecrf.densecrf as dcrf
from skimage.transform import resize

from .config import CRFConfig

log = logging.getLogger(__name__)

# Probabilities are clipped before -log so a confident softmax cannot give an infinite unary.
_MIN_PROBABILITY = 1e-8


def _check(image: np.ndarray, scores: np.ndarray, config: CRFConfig) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    if scores.ndim != 3 or scores.shape[0] < 1:
        raise ValueError(f"scores must be (C, H, W) with C >= 1, got {scores.shape}")
    if scores.shape[1:] != image.shape[:2]:
        raise ValueError(f"scores {scores.shape[1:]} and image {image.shape[:2]} differ in size")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    if config.score_temperature <= 0:
        raise ValueError(f"score_temperature must be > 0, got {config.score_temperature}")
    if config.iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {config.iterations}")
    if not 0 < config.scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {config.scale}")


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over axis 0 of (C, H, W) scores / temperature, as float32."""
    z = scores.astype(np.float32) / np.float32(temperature)
    z -= z.max(axis=0, keepdims=True)  # numerically stable
    np.exp(z, out=z)
    z /= z.sum(axis=0, keepdims=True)
    return z


def _mean_field(image: np.ndarray, prob: np.ndarray, config: CRFConfig, scale: float) -> np.ndarray:
    """Run pydensecrf on (C, h, w) probabilities; spatial kernel widths are multiplied by `scale`."""
    num_classes, height, width = prob.shape
    unary = -np.log(np.clip(prob, _MIN_PROBABILITY, 1.0)).reshape(num_classes, -1)
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    # Smoothness: nearby pixels agree regardless of colour (removes isolated noise).
    crf.addPairwiseGaussian(sxy=config.gaussian_sxy * scale, compat=config.gaussian_compat)
    # Appearance: nearby pixels of similar colour agree (snaps labels to image edges).
    crf.addPairwiseBilateral(
        sxy=config.bilateral_sxy * scale,
        srgb=config.bilateral_srgb,
        rgbim=np.ascontiguousarray(image, dtype=np.uint8),
        compat=config.bilateral_compat,
    )
    marginals = np.asarray(crf.inference(int(config.iterations)), dtype=np.float32)
    return marginals.reshape(num_classes, height, width)


def probabilities(image: np.ndarray, scores: np.ndarray, config: CRFConfig | None = None) -> np.ndarray:
    """Mean-field marginals (C, H, W) float32 of the dense CRF over `scores` on `image`."""
    config = config or CRFConfig()
    _check(image, scores, config)
    num_classes, height, width = scores.shape
    prob = softmax(scores, config.score_temperature)
    if num_classes == 1 or config.iterations == 0:
        return prob  # one label (or no inference asked): nothing for the pairwise terms to change
    if config.scale == 1:
        return _mean_field(image, prob, config, 1.0)
    small = (max(1, round(height * config.scale)), max(1, round(width * config.scale)))
    # Anti-aliased image so the bilateral term sees averaged colours, not aliasing.
    small_image = resize(image, small, order=1, anti_aliasing=True, preserve_range=True)
    small_image = np.clip(np.rint(small_image), 0, 255).astype(np.uint8)
    small_prob = resize(prob, (num_classes, *small), order=1, anti_aliasing=False).astype(np.float32)
    marginals = _mean_field(small_image, small_prob, config, small[0] / height)
    up = resize(marginals, (num_classes, height, width), order=1, anti_aliasing=False).astype(np.float32)
    return up / np.maximum(up.sum(axis=0, keepdims=True), _MIN_PROBABILITY)


def refine(image: np.ndarray, scores: np.ndarray, config: CRFConfig | None = None) -> np.ndarray:
    """CRF-refined labels (H, W) int64: the index into the C classes of `scores` (0 everywhere if C == 1)."""
    return probabilities(image, scores, config).argmax(axis=0).astype(np.int64)


def refine_frames(
    images: np.ndarray | Sequence[np.ndarray],
    scores: np.ndarray | Sequence[np.ndarray],
    config: CRFConfig | None = None,
) -> np.ndarray:
    """refine() per frame: images (T, H, W, 3) uint8, scores (T, C, H, W) -> (T, H, W) int64."""
    if len(images) != len(scores):
        raise ValueError(f"{len(images)} images but {len(scores)} score maps")
    if len(images) == 0:
        raise ValueError("refine_frames needs at least one frame")
    out = np.stack([refine(image, score, config) for image, score in zip(images, scores, strict=True)])
    log.debug("CRF refined %d frames", len(out))
    return out
