"""Dense CRF refinement: cleans a noisy mask on a synthetic image; shapes, dtypes, C == 1."""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.config import CRFConfig
from agent.inference.crf import probabilities, refine, refine_frames

H, W = 72, 96


def jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
    return float((pred & truth).sum() / (pred | truth).sum())


def synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright textured disk on a dark textured background; scores = one-hot truth + strong noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:H, :W]
    truth = (rows - 36) ** 2 + (cols - 50) ** 2 < 22**2
    image = np.where(truth[..., None], 190, 50) + rng.integers(-20, 21, (H, W, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    onehot = np.stack([~truth, truth]).astype(np.float32)
    scores = 2.0 * onehot + rng.normal(0.0, 2.0, (2, H, W)).astype(np.float32)
    return image, scores, truth


def test_crf_improves_noisy_mask() -> None:
    image, scores, truth = synthetic()
    noisy = jaccard(scores.argmax(0) == 1, truth)
    labels = refine(image, scores, CRFConfig())
    refined = jaccard(labels == 1, truth)
    assert noisy < 0.75
    assert refined > 0.95 and refined > noisy + 0.2
    assert labels.shape == (H, W) and labels.dtype == np.int64


def test_crf_downscaled_also_improves() -> None:
    image, scores, truth = synthetic(1)
    noisy = jaccard(scores.argmax(0) == 1, truth)
    assert jaccard(refine(image, scores, CRFConfig(scale=0.5)) == 1, truth) > noisy + 0.15


def test_probabilities_are_normalised_and_deterministic() -> None:
    image, scores, _ = synthetic()
    first = probabilities(image, scores)
    assert first.shape == (2, H, W) and first.dtype == np.float32
    np.testing.assert_allclose(first.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(first, probabilities(image, scores))


def test_single_class_is_all_zero_labels() -> None:
    image, scores, _ = synthetic()
    labels = refine(image, scores[:1])
    assert labels.shape == (H, W) and labels.dtype == np.int64 and not labels.any()
    np.testing.assert_allclose(probabilities(image, scores[:1]), 1.0)


def test_more_classes_and_batched_frames() -> None:
    image, scores, truth = synthetic()
    three = np.concatenate([scores, np.full((1, H, W), -10.0, np.float32)])  # a class nobody wants
    out = refine_frames(np.stack([image, image]), np.stack([three, three]))
    assert out.shape == (2, H, W) and out.dtype == np.int64
    assert not (out == 2).any()
    assert jaccard(out[0] == 1, truth) > 0.9
    np.testing.assert_array_equal(out[0], out[1])


def test_bad_inputs_raise() -> None:
    image, scores, _ = synthetic()
    with pytest.raises(ValueError):
        refine(image, scores[:, :10])
    with pytest.raises(ValueError):
        refine(image[..., :2], scores)
    with pytest.raises(ValueError):
        refine(image, np.full_like(scores, np.nan))
    with pytest.raises(ValueError):
        refine(image, scores, CRFConfig(score_temperature=0.0))
    with pytest.raises(ValueError):
        refine_frames([image], [scores, scores])


def test_worker_processes_give_the_in_process_labels() -> None:
    frames = [synthetic(seed) for seed in range(3)]
    images = np.stack([f[0] for f in frames])
    scores = np.stack([f[1] for f in frames])
    serial = refine_frames(images, scores, CRFConfig(scale=0.5, workers=1))
    parallel = refine_frames(images, scores, CRFConfig(scale=0.5, workers=2))
    np.testing.assert_array_equal(parallel, serial)
    with pytest.raises(ValueError, match="NaN"):  # checked before any worker sees it
        refine_frames(images, np.full_like(scores, np.nan), CRFConfig(workers=2))


@pytest.fixture
def dying_workers(monkeypatch):
    """A fresh pool whose workers end themselves by the signal set in the list it yields, as the out-of-memory killer
    (SIGKILL) or a fault (SIGSEGV) would end them; the main process runs the CRF as before."""
    from agent.inference import crf

    monkeypatch.setattr(crf, "_POOLS", {})  # forked after the patch below: an earlier test's pool has not got it
    monkeypatch.setattr(crf, "_in_process_only", False, raising=False)
    parent, mean_field, how = os.getpid(), crf._mean_field, []

    def dying(*args, **kwargs):
        if os.getpid() != parent:
            faulthandler.disable()  # pytest's handler dumped every thread and module of the dying worker into the log
            os.kill(os.getpid(), how[0])
        return mean_field(*args, **kwargs)

    monkeypatch.setattr(crf, "_mean_field", dying)
    try:
        yield how
    finally:
        crf.shutdown_workers()  # this test's pools only


def test_a_killed_worker_leaves_the_crf_to_this_process_for_the_rest_of_the_run(dying_workers, caplog):
    """A worker killed (out of memory) was concurrent.futures' BrokenProcessPool: a traceback, the round lost and
    the run ended. Its frames, and every later call's, are refined here, with one warning."""
    from agent.inference import crf

    dying_workers.append(signal.SIGKILL)
    frames = [synthetic(seed) for seed in range(4)]
    images, scores = np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])
    serial = refine_frames(images, scores, CRFConfig(scale=0.5, workers=1))
    with caplog.at_level("WARNING", logger="agent.inference.crf"):
        np.testing.assert_array_equal(refine_frames(images, scores, CRFConfig(scale=0.5, workers=2)), serial)
        np.testing.assert_array_equal(refine_frames(images, scores, CRFConfig(scale=0.5, workers=2)), serial)
        crf.warm_up(CRFConfig(workers=2))
    assert [record.getMessage() for record in caplog.records] == [
        "a CRF worker process was killed (SIGKILL: out of memory?): the CRF runs in this process from now on, one "
        "frame at a time"]
    assert crf._in_process_only and crf._POOLS == {}  # the broken pool dropped, no other started


def test_a_crashed_worker_ends_the_call_with_one_error(dying_workers):
    """A worker that faulted (SIGSEGV in pydensecrf) would fault this process on the same frames, ending the run
    without its results: one error instead, which the commands print as one line."""
    from agent.inference import crf

    dying_workers.append(signal.SIGSEGV)
    image, scores, _ = synthetic()
    with pytest.raises(crf.CRFWorkerError, match=r"a CRF worker process crashed \(SIGSEGV: a fault in pydensecrf\)"):
        refine_frames(np.stack([image, image]), np.stack([scores, scores]), CRFConfig(scale=0.5, workers=2))
    assert not crf._in_process_only and crf._POOLS == {}


def test_workers_leave_ctrl_c_to_the_main_process():
    """Ctrl-C reaches the whole process group: workers ignore it (no traceback from each), SIGTERM ends them."""
    import signal

    from agent.inference.crf import worker_pool

    pool = worker_pool(2)
    assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN
    assert pool.submit(signal.getsignal, signal.SIGTERM).result() == signal.SIG_DFL


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_workers_end_when_the_main_process_is_killed(tmp_path: Path):
    """A main process killed outright (SIGKILL, out of memory, a crash) stopped no worker: they waited for work for
    ever, each holding a forked copy of its memory. They now notice that it is gone and end."""
    script = tmp_path / "killed.py"
    script.write_text(
        "import os, signal\n"
        "from agent.inference import crf\n"
        "crf._PARENT_POLL_SECONDS = 0.05\n"
        "pool = crf.worker_pool(2)\n"
        "pool.submit(os.getpid).result()\n"
        "print(' '.join(str(pid) for pid in pool._processes), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    printed = tmp_path / "pids.txt"  # a file, not a pipe: workers left alive would hold a pipe open
    with printed.open("w") as out:
        done = subprocess.run([sys.executable, str(script)], stdout=out, timeout=120,
                              cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == -signal.SIGKILL
    workers = [int(pid) for pid in printed.read_text().split()]
    assert len(workers) == 2

    def alive(pid: int) -> bool:  # an exited worker may stay a zombie until its new parent reaps it
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    deadline = time.monotonic() + 30  # a bound on waiting, not a speed check: they end within a poll or two
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left
