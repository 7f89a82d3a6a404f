"""Dense CRF refinement (Kraehenbuehl & Koltun) of per-class scores with the RGB frame, via pydensecrf."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from functools import partial

import cv2
import numpy as np
import pydensecrf.densecrf as dcrf

from ..config import CRFConfig

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


def _resize_channels(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (C, h, w) float maps to (C, *size) float32."""
    return np.stack([
        cv2.resize(np.ascontiguousarray(m, dtype=np.float32), size[::-1], interpolation=cv2.INTER_LINEAR)
        for m in maps
    ])


def _crf_inputs(image: np.ndarray, scores: np.ndarray, config: CRFConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """(image, probabilities, kernel scale) at the CRF's resolution. OpenCV resizes (~100x faster than
    skimage's here, which cost as much as the CRF itself): area averaging for the image so the bilateral
    term sees averaged colours, bilinear for probabilities."""
    num_classes, height, width = scores.shape
    prob = softmax(scores, config.score_temperature)
    if config.scale == 1:
        return image, prob, 1.0
    small = (max(1, round(height * config.scale)), max(1, round(width * config.scale)))
    small_image = cv2.resize(np.ascontiguousarray(image, dtype=np.uint8), small[::-1], interpolation=cv2.INTER_AREA)
    return small_image, _resize_channels(prob, small), small[0] / height


def _full_size(marginals: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if marginals.shape[1:] == size:
        return marginals
    up = _resize_channels(marginals, size)
    return up / np.maximum(up.sum(axis=0, keepdims=True), _MIN_PROBABILITY)


def _runs_mean_field(num_classes: int, config: CRFConfig) -> bool:
    """False when there is nothing for the pairwise terms to change (one label, or no inference asked)."""
    return num_classes > 1 and config.iterations > 0


def _labels(marginals: np.ndarray) -> np.ndarray:
    return marginals.argmax(axis=0).astype(np.int64)


def probabilities(image: np.ndarray, scores: np.ndarray, config: CRFConfig | None = None) -> np.ndarray:
    """Mean-field marginals (C, H, W) float32 of the dense CRF over `scores` on `image`."""
    config = config or CRFConfig()
    _check(image, scores, config)
    if not _runs_mean_field(scores.shape[0], config):
        return softmax(scores, config.score_temperature)
    small_image, small_prob, kernel_scale = _crf_inputs(image, scores, config)
    return _full_size(_mean_field(small_image, small_prob, config, kernel_scale), scores.shape[1:])


def refine(image: np.ndarray, scores: np.ndarray, config: CRFConfig | None = None) -> np.ndarray:
    """CRF-refined labels (H, W) int64: the index into the C classes of `scores` (0 everywhere if C == 1)."""
    return _labels(probabilities(image, scores, config))


def worker_count(config: CRFConfig) -> int:
    """Processes refine_frames uses: config.workers, 0 = one per CPU core."""
    return config.workers if config.workers > 0 else (os.cpu_count() or 1)


_POOLS: dict[int, ProcessPoolExecutor] = {}
_PARENT_POLL_SECONDS = 1.0  # how soon a worker notices that its main process is gone
_in_process_only = False  # a worker was killed: the rest of the run refines in this process (_pool_map)
# How a process ends when its own code faults (pydensecrf): the same frames in this process would end the run.
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT}


class CRFWorkerError(RuntimeError):
    """A CRF worker process crashed (a fault in pydensecrf), where this process would crash on the same frames."""


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool kept for the whole run: pydensecrf holds the GIL, so frames go to processes.

    fork where the platform has it: forkserver and spawn re-run the user's `__main__`, which breaks any
    script without an `if __name__ == "__main__"` guard. The workers never touch torch or OpenMP, so
    forking after torch has started its threads is safe for them; they only run pydensecrf and numpy
    (never OpenCV, whose thread pool does not survive a fork)."""
    if workers not in _POOLS:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=context, initializer=_quiet_worker)
    return _POOLS[workers]


def _quiet_worker() -> None:
    """Ctrl-C reaches every process of the terminal's group: the workers leave it to the main process (which
    writes the results and then stops them) instead of each printing a KeyboardInterrupt traceback. SIGTERM
    gets its default action back (a fork inherits the CLI's handler, which would raise): a quiet exit. And a
    worker ends when the main process is gone without stopping it (killed, out of memory, a crash)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A forked worker holds both ends of the pool's queue, so it never sees the end of it and waited for work
    for ever once its parent died; it ends when its parent changes (it was adopted). Polled: Linux's
    PR_SET_PDEATHSIG fires when the forking *thread* ends, and the browser app's jobs run in threads."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)


def shutdown_workers() -> None:
    """Stop the worker processes now, dropping queued frames (after Ctrl-C: no need to finish them)."""
    for pool in list(_POOLS.values()):
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:  # a worker busy with a long chunk would keep the exit waiting
            if process.is_alive():
                process.terminate()
    _POOLS.clear()


def _worker_marginals(image: np.ndarray, prob: np.ndarray, scale: float, config: CRFConfig) -> np.ndarray:
    return _mean_field(image, prob, config, scale)


def _pool_map(workers: int, function, *iterables, chunksize: int = 1) -> list | None:
    """worker_pool(workers).map(...) as a list, or None for the caller to run in this process: once a worker was
    killed (the out-of-memory killer, a `kill`), this call and every later one, with one warning (the pool's
    BrokenProcessPool was a traceback that lost the round and ended the run). CRFWorkerError when a worker
    crashed: the same frames in this process would end the run without writing its results."""
    global _in_process_only
    if _in_process_only:
        return None
    pool = worker_pool(workers)
    try:
        return list(pool.map(function, *iterables, chunksize=chunksize))
    except BrokenProcessPool:
        ends = _worker_ends(pool)
        _POOLS.pop(workers, None)
        pool.shutdown(wait=False, cancel_futures=True)
        crashed = [end for end in ends if end in _CRASH_SIGNALS]
        if crashed:
            raise CRFWorkerError(f"a CRF worker process crashed ({crashed[0].name}: a fault in pydensecrf), which in "
                                 "this process would end the run: set agent.crf nearer its defaults, or turn the CRF "
                                 "off") from None
        _in_process_only = True
        how = next((end.name for end in ends if end != signal.SIGTERM), "terminated")  # the others get SIGTERM
        log.warning("a CRF worker process was killed (%s: out of memory?): the CRF runs in this process from now on, "
                    "one frame at a time", how)
        return None


def _worker_ends(pool: ProcessPoolExecutor) -> list[signal.Signals]:
    """The signals that ended `pool`'s workers (a kill or a crash; the pool terminates the others): the exit codes
    -N of the processes it holds."""
    ends, deadline = [], time.monotonic() + 5.0
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        # Its pipe closes before its exit status is there to read, and the pool's own thread reaps the workers too:
        # a join that lost that race read no status (a crash taken for a kill), so the status is polled.
        process.join(max(0.0, deadline - time.monotonic()))
        code = process.exitcode
        while code is None and time.monotonic() < deadline:
            time.sleep(0.01)
            code = process.exitcode
        with suppress(ValueError):  # not a signal this platform names
            if code is not None and code < 0:
                ends.append(signal.Signals(-code))
    return ends


def warm_up(config: CRFConfig | None = None) -> None:
    """Start the worker processes and import pydensecrf in each (a one-off cost, kept out of timed work)."""
    config = config or CRFConfig()
    workers = worker_count(config)
    if workers > 1:
        image = np.zeros((8, 8, 3), np.uint8)
        prob = np.full((2, 8, 8), 0.5, np.float32)
        _pool_map(workers, partial(_worker_marginals, config=config), [image] * workers, [prob] * workers,
                  [1.0] * workers)


def refine_frames(
    images: np.ndarray | Sequence[np.ndarray],
    scores: np.ndarray | Sequence[np.ndarray],
    config: CRFConfig | None = None,
) -> np.ndarray:
    """refine() per frame: images (T, H, W, 3) uint8, scores (T, C, H, W) -> (T, H, W) int64.
    Frames are spread over worker_count(config) processes (1: in this process)."""
    config = config or CRFConfig()
    if len(images) != len(scores):
        raise ValueError(f"{len(images)} images but {len(scores)} score maps")
    if len(images) == 0:
        raise ValueError("refine_frames needs at least one frame")
    workers = min(worker_count(config), len(images))
    marginals = None
    if workers > 1 and _runs_mean_field(scores[0].shape[0], config) and not _in_process_only:
        # Resizing stays here and only pydensecrf runs in the workers: OpenCV's thread pool does not
        # survive a fork (a forked child that touches it can hang), so the workers never call OpenCV.
        inputs = []
        for image, score in zip(images, scores, strict=True):
            _check(image, score, config)  # fail here with one clear line, not inside a worker
            inputs.append(_crf_inputs(image, score, config))
        small_images, small_probs, kernel_scales = zip(*inputs, strict=True)
        chunk = math.ceil(len(images) / workers)
        marginals = _pool_map(worker_count(config), partial(_worker_marginals, config=config), small_images,
                              small_probs, kernel_scales, chunksize=chunk)
    if marginals is not None:
        size = scores[0].shape[1:]
        out = np.stack([_labels(_full_size(m, size)) for m in marginals])
    else:  # one worker, nothing to refine, or a worker was killed (_pool_map)
        out = np.stack([refine(image, score, config) for image, score in zip(images, scores, strict=True)])
    log.debug("CRF refined %d frames", len(out))
    return out
