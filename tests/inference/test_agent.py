"""The interactive agent: time-budgeted fine-tuning, early stop, and full rounds on synthetic data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agent.config import AgentConfig, FinetuneConfig, FlowConfig
from agent.data.davis import DatasetError, DavisReader
from agent.inference.agent import InteractiveAgent
from agent.inference.finetune import EARLY_STOP_WINDOW, finetune
from agent.inference.flow import FlowWarper
from agent.inference.propagate import fill_between_keyframes, nearest_keyframe
from agent.inference.scribbles import ScribbleMemory
from agent.model.checkpoint import save_checkpoint
from strategies.base import RoundPlan
from tests.conftest import TINY_MODEL

TINY = TINY_MODEL


def _scribbled_frame(model):
    features = model.extract_features(torch.randn(1, 3, *TINY.input_size))[0]
    labels = torch.full(model.embedding_size(), -1, dtype=torch.long)
    labels[2:6, 2:10] = 1
    labels[16:20, 20:36] = 0
    return {0: features}, {0: labels}


def test_the_budget_bounds_the_steps(tiny_model):
    """A fake clock that advances 0.3 s per reading: a 1 s budget allows the steps that start before 1 s."""
    features, labels = _scribbled_frame(tiny_model)
    ticks = iter(0.3 * i for i in range(1000))
    stats = finetune(tiny_model, features, labels, 1.0, FinetuneConfig(), samples_per_class=20, early_stop_loss=0.0,
                     clock=lambda: next(ticks))
    assert stats.steps == 3 and not stats.stopped_early  # readings at 0.3, 0.6 and 0.9 s start a step
    assert stats.seconds == pytest.approx(1.5)  # the reading after the loop ends (1.2 s stopped it)


def test_max_steps_bounds_the_steps_whatever_the_clock(tiny_model):
    """finetune.max_steps: a machine-independent budget; the seconds still bound it when they end first."""
    features, labels = _scribbled_frame(tiny_model)
    config = FinetuneConfig(max_steps=4)
    stats = finetune(tiny_model, features, labels, 1e6, config, samples_per_class=20, early_stop_loss=0.0,
                     clock=lambda: 0.0)  # a clock that never moves: only the cap ends the loop
    assert stats.steps == 4 and not stats.stopped_early
    ticks = iter(0.3 * i for i in range(1000))
    stats = finetune(tiny_model, features, labels, 1.0, config, samples_per_class=20, early_stop_loss=0.0,
                     clock=lambda: next(ticks))
    assert stats.steps == 3


def test_a_step_whose_views_keep_one_labelled_pixel_each_is_skipped(tiny_model):
    """Two labelled cells side by side: a transform that keeps one of them in both views gave the head's batch norm
    a single score, torch's "Expected more than 1 value per channel when training" (finetune_study.py --steps 10**9
    met it on the synthetic videos)."""
    features, labels = _scribbled_frame(tiny_model)
    labels[0][:] = -1
    labels[0][5, 5], labels[0][6, 6] = 1, 0
    stats = finetune(tiny_model, features, labels, 1e6, FinetuneConfig(max_steps=50), samples_per_class=20,
                     early_stop_loss=0.0, clock=lambda: 0.0)
    assert stats.steps == 50


def test_pseudo_labelled_frames_are_only_ever_a_steps_second_view(tiny_model, monkeypatch):
    """finetune.pseudo_label_frames: every step pairs a scribbled frame (first view) with any labelled frame."""
    import agent.inference.finetune as finetune_module

    features, labels = _scribbled_frame(tiny_model)
    features[1] = tiny_model.extract_features(torch.randn(1, 3, *TINY.input_size))[0]
    pseudo = {1: torch.zeros_like(labels[0])}  # one class only: it can still be a second view
    pseudo[1][:4] = 1
    seen = []
    real_augment = finetune_module.augment

    def spy(feats, labs, *args, **kwargs):
        seen.append(0 if feats is features[0] else 1)
        return real_augment(feats, labs, *args, **kwargs)

    monkeypatch.setattr(finetune_module, "augment", spy)
    stats = finetune(tiny_model, features, labels, 1e6, FinetuneConfig(max_steps=30), samples_per_class=20,
                     early_stop_loss=0.0, clock=lambda: 0.0, loss="topk", topk=5, pseudo_labels=pseudo)
    assert stats.steps == 30
    firsts, seconds = seen[0::2], seen[1::2]
    assert set(firsts) == {0} and set(seconds) == {0, 1}


def test_pseudo_labels_are_the_last_rounds_inside_its_borders(tiny_agent, tiny_synthetic_root):
    import dataclasses

    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[0]
    frames = reader.load_frames(sequence)
    tiny_agent.config = dataclasses.replace(tiny_agent.config, finetune=FinetuneConfig(pseudo_label_frames=2))
    tiny_agent.start(frames, reader.info(sequence).num_objects)
    assert tiny_agent._pseudo_labels(np.arange(len(frames)), {}) == {}  # no round yet: nothing to copy
    scribble = reader.load_scribble(sequence, 1)
    predicted = tiny_agent.step(scribble, RoundPlan(frame_stride=2))
    scribbled = {t for t, strokes in enumerate(scribble["scribbles"]) if strokes}
    transferred = set(tiny_agent._last_keyframes.tolist())
    assert transferred < set(range(len(frames)))  # frames between keyframes copied their labels: not used
    pseudo = tiny_agent._pseudo_labels(tiny_agent._last_keyframes, dict.fromkeys(scribbled))
    assert len(pseudo) == 2 and not scribbled & set(pseudo) and set(pseudo) <= transferred
    from agent.inference.scribbles import grid_labels

    for frame, grid in pseudo.items():
        full = grid_labels(predicted[frame], tiny_agent.grid)
        kept = grid >= 0
        assert torch.equal(grid[kept], full[kept])  # copied where kept
        assert (~kept).any() == (full.unique().numel() > 1)  # a band is left out wherever the labels change


def test_a_round_fine_tunes_with_pseudo_labels(tiny_agent, tiny_synthetic_root, monkeypatch):
    import dataclasses

    import agent.inference.agent as agent_module

    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[0]
    frames = reader.load_frames(sequence)
    tiny_agent.config = dataclasses.replace(
        tiny_agent.config, finetune=FinetuneConfig(pseudo_label_frames=2, max_steps=3, early_stop_loss=0.0))
    given = {}
    real = agent_module.finetune

    def spy(*args, **kwargs):
        given.update(kwargs.get("pseudo_labels") or {})
        return real(*args, **kwargs)

    monkeypatch.setattr(agent_module, "finetune", spy)
    tiny_agent.start(frames, reader.info(sequence).num_objects)
    scribble = reader.load_scribble(sequence, 1)
    tiny_agent.step(scribble, RoundPlan(finetune_seconds=60.0))
    assert not given and tiny_agent.last_finetune.steps == 3  # round 1: no earlier round to take labels from
    labels = tiny_agent.step(scribble, RoundPlan(finetune_seconds=60.0))
    assert len(given) == 2 and tiny_agent.last_finetune.steps == 3
    assert labels.shape == frames.shape[:3]


def test_the_loss_follows_the_config(tiny_agent):
    """`pretraining` is the checkpoint's own loss; a config swapped in later is honoured (the fine-tuning study)."""
    import dataclasses

    assert tiny_agent.finetune_loss == tiny_agent.pretraining_loss
    tiny_agent.config = dataclasses.replace(tiny_agent.config, finetune=FinetuneConfig(loss="topk"))
    assert tiny_agent.finetune_loss == "topk"


@pytest.mark.parametrize("loss", ["pairwise", "topk"])
def test_finetuning_lowers_its_loss(tiny_model, loss):
    features, labels = _scribbled_frame(tiny_model)
    ticks = iter(range(10_000))  # one "second" per clock reading: 40 steps in a 40 s budget
    stats = finetune(tiny_model, features, labels, 40.0, FinetuneConfig(lr=0.05), samples_per_class=20,
                     early_stop_loss=0.0, clock=lambda: float(next(ticks)), loss=loss, topk=5)
    assert stats.steps == 39 and stats.last_loss < stats.first_loss


def test_topk_finetuning_keeps_the_heads_calibration(tiny_model):
    """The topk loss uses the head's eval-mode affine: its BatchNorm statistics never move."""
    before = tiny_model.head.bn.running_var.clone(), tiny_model.head.bn.running_mean.clone()
    features, labels = _scribbled_frame(tiny_model)
    ticks = iter(range(10_000))
    finetune(tiny_model, features, labels, 10.0, FinetuneConfig(), samples_per_class=20, early_stop_loss=0.0,
             clock=lambda: float(next(ticks)), loss="topk")
    assert torch.equal(tiny_model.head.bn.running_var, before[0])
    assert torch.equal(tiny_model.head.bn.running_mean, before[1])


def test_finetuning_keeps_the_decoder_adapters_statistics():
    """model.decoder_hidden > 0: its BatchNorms keep pretraining's statistics (a round has a frame or two)."""
    import dataclasses

    from agent.model.siamese import build_model

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(TINY, decoder_hidden=8)).eval()
    norms = [m for m in model.decoder.adapter if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    features, labels = _scribbled_frame(model)
    ticks = iter(range(10_000))
    stats = finetune(model, features, labels, 10.0, FinetuneConfig(lr=0.05), samples_per_class=20,
                     early_stop_loss=0.0, clock=lambda: float(next(ticks)), loss="topk", topk=5)
    assert stats.steps > 0 and not model.training
    assert any(p.grad is not None for p in model.decoder.adapter.parameters())  # its weights did train
    for m, (mean, var) in zip(norms, before, strict=True):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)


def test_early_stop_fires(tiny_model):
    features, labels = _scribbled_frame(tiny_model)
    stats = finetune(tiny_model, features, labels, 30.0, FinetuneConfig(), samples_per_class=20, early_stop_loss=10.0)
    assert stats.stopped_early and stats.steps == EARLY_STOP_WINDOW and stats.seconds < 30


def test_single_class_does_not_train(tiny_model):
    features, labels = _scribbled_frame(tiny_model)
    labels[0][labels[0] == 0] = 1
    assert finetune(tiny_model, features, labels, 5.0, FinetuneConfig(), samples_per_class=20).steps == 0


@pytest.fixture
def tiny_agent(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "tiny.pt", tiny_model)
    return InteractiveAgent.from_pretrained(path, AgentConfig(device="cpu"))


def test_agent_round_gives_valid_labels_and_resets_between_samples(tiny_agent, tiny_synthetic_root):
    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[1]
    info = reader.info(sequence)
    frames, scribbles = reader.load_frames(sequence), reader.load_scribble(sequence, 1)
    pristine = {k: v.clone() for k, v in tiny_agent.model.state_dict().items()}

    tiny_agent.start(frames, info.num_objects)
    masks = tiny_agent.step(scribbles, RoundPlan(finetune_seconds=0.5))
    assert masks.shape == frames.shape[:3] and masks.dtype == np.int64
    assert masks.min() >= 0 and masks.max() <= info.num_objects
    assert tiny_agent.last_finetune.steps > 0
    candidates = tiny_agent.next_scribble_frame_candidates(2)
    assert len(candidates) == 2 and all(0 <= c < len(frames) for c in candidates)

    tiny_agent.start(frames, info.num_objects)  # a new sample starts from the checkpoint again
    for key, value in tiny_agent.model.state_dict().items():
        assert torch.equal(value, pristine[key]), key


def test_agent_respects_time_left(tiny_agent, tiny_synthetic_root):
    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[0]
    tiny_agent.start(reader.load_frames(sequence), 1)
    tiny_agent.step(reader.load_scribble(sequence, 1), RoundPlan(finetune_seconds=30.0, time_left=1.0))
    assert tiny_agent.last_finetune.seconds < 0.5  # the 2 s reserve for propagation leaves nothing


def test_step_before_start_and_bad_scribbles(tiny_agent):
    with pytest.raises(RuntimeError, match="start"):
        tiny_agent.step({"scribbles": []})
    tiny_agent.start(np.zeros((2, 32, 48, 3), np.uint8), 1)
    with pytest.raises(DatasetError):
        tiny_agent.step({"scribbles": [[{"path": [[2.0, 0.5]], "object_id": 1}], []]})


@pytest.mark.parametrize("flow", [False, True])
def test_keyframe_round_fills_from_nearest_keyframe_and_later_rounds_catch_up(tiny_agent, tiny_synthetic_root, flow):
    """A round with frame_stride computes features and labels of keyframes only, the other frames take their
    nearest keyframe's labels (moved along the optical flow, or copied); the next full round gives exactly what
    two full rounds give (the left-out frames are built against the whole pool)."""
    tiny_agent.config = dataclasses.replace(tiny_agent.config, flow=FlowConfig(enabled=flow))
    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[1]
    info = reader.info(sequence)
    frames = reader.load_frames(sequence)
    first = reader.load_scribble(sequence, 1)
    # a second round: the first round's strokes moved to the middle frame, plus a background stroke
    strokes = [stroke for frame_strokes in first["scribbles"] for stroke in frame_strokes]
    second = {"scribbles": [[] for _ in frames]}
    second["scribbles"][len(frames) // 2] = strokes + [{"path": [[0.02, 0.02], [0.98, 0.03]], "object_id": 0}]

    tiny_agent.start(frames, info.num_objects)
    sparse = tiny_agent.step(first, RoundPlan(frame_stride=3))
    keyframes = np.flatnonzero(tiny_agent._have_features)
    assert len(keyframes) < len(frames) and {0, len(frames) - 1} <= set(keyframes.tolist())
    others = np.setdiff1d(np.arange(len(frames)), keyframes)
    expected = sparse.copy()
    fill_between_keyframes(expected, others, keyframes[nearest_keyframe(keyframes, len(frames))][others],
                           warper=FlowWarper(frames, FlowConfig()) if flow else None)
    assert np.array_equal(sparse, expected)
    if not flow:
        for frame in range(len(frames)):
            assert np.array_equal(sparse[frame], sparse[keyframes[np.abs(keyframes - frame).argmin()]])
    caught_up = tiny_agent.step(second, RoundPlan())
    assert tiny_agent._have_features.all()

    tiny_agent.start(frames, info.num_objects)
    full = tiny_agent.step(first, RoundPlan())
    assert all(np.array_equal(full[f], sparse[f]) for f in keyframes)
    assert np.array_equal(tiny_agent.step(second, RoundPlan()), caught_up)


def test_frames_at_the_inference_scale_and_transfer_on_the_checkpoint_grid(tmp_path, tiny_model, tiny_synthetic_root):
    path = save_checkpoint(tmp_path / "tiny.pt", tiny_model)
    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[0]
    frames = reader.load_frames(sequence)
    masks = {}
    for scale, runtime in ((1.0, "torch"), (1.5, "torch"), (1.5, "onnxruntime")):
        agent = InteractiveAgent.from_pretrained(path, AgentConfig(device="cpu", inference_scale=scale,
                                                                   backbone_runtime=runtime))
        assert agent.grid == (12, 20)  # the checkpoint's 48x80 at grid stride 4, whatever the frame size
        agent.start(frames, 1)
        assert agent.input_size == ((48, 80) if scale == 1.0 else (72, 120))
        masks[scale, runtime] = agent.step(reader.load_scribble(sequence, 1), RoundPlan())
        assert agent._features.shape[-2:] == (agent.input_size[0] // 8, agent.input_size[1] // 8)
    assert masks[1.5, "torch"].shape == masks[1.0, "torch"].shape == frames.shape[:3]
    # ONNX Runtime's features differ from PyTorch's by ~1e-5: nearly every pixel gets the same label.
    assert (masks[1.5, "torch"] == masks[1.5, "onnxruntime"]).mean() > 0.99
    with pytest.raises(ValueError, match=r"inference_scale must be 'auto' or a number in \[0.125, 8\]"):
        AgentConfig(device="cpu", inference_scale=0.0)


def test_a_portrait_video_runs_upright(tmp_path, tiny_model, tiny_synthetic_root):
    """The synthetic video turned upright (frames and strokes transposed): its frames go to the backbone at the
    checkpoint's size turned upright and transfer on a turned grid, not squeezed into the landscape ones."""
    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[0]
    frames = np.ascontiguousarray(reader.load_frames(sequence).transpose(0, 2, 1, 3))
    scribbles = reader.load_scribble(sequence, 1)
    for strokes in scribbles["scribbles"]:
        for stroke in strokes:
            stroke["path"] = [[y, x] for x, y in stroke["path"]]
    agent = InteractiveAgent.from_pretrained(save_checkpoint(tmp_path / "tiny.pt", tiny_model),
                                             AgentConfig(device="cpu", inference_scale=1.5))
    agent.start(frames, 1)
    assert agent.input_size == (120, 72) and agent.grid == (20, 12)
    masks = agent.step(scribbles, RoundPlan())
    assert masks.shape == frames.shape[:3]
    assert agent._features.shape[-2:] == (15, 9)
    agent.start(np.ascontiguousarray(frames.transpose(0, 2, 1, 3)), 1)  # the next sample, landscape again
    assert agent.input_size == (72, 120) and agent.grid == (12, 20)


def test_auto_inference_scale_follows_the_video_height(tmp_path, tiny_model):
    """auto: the frames' height over the checkpoint's (48), clipped to [1, 1.5]; the runtime is built by prepare()."""
    agent = InteractiveAgent.from_pretrained(save_checkpoint(tmp_path / "tiny.pt", tiny_model),
                                             AgentConfig(device="cpu", backbone_runtime="onnxruntime"))
    assert agent.config.inference_scale == "auto"
    assert agent.input_size_for((96, 160)) == (72, 120)  # 2x the checkpoint: capped at 1.5
    assert agent.input_size_for((60, 100)) == (60, 100)  # 1.25x
    assert agent.input_size_for((24, 40)) == (48, 80)  # smaller videos run at the checkpoint's size
    assert not agent._runtimes
    agent.prepare([(96, 160), (60, 100)])
    assert set(agent._runtimes) == {(72, 120), (60, 100)}


def test_least_similar_background_measures_objects_stroked_on_other_frames(tiny_agent, monkeypatch):
    """Object 1 stroked on frame 0, object 2 on frame 1, the frames alike: on frame 1 the least-similar background
    is measured against object 1's strokes too (frame 0's), so object 1's pixels there are as similar to an object
    as on frame 0; they were measured against object 2 alone and became background."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    similarities = {}
    labels = ScribbleMemory.labels

    def spy(memory, index, object_similarity=None, *args, **kwargs):
        similarities[index] = object_similarity
        return labels(memory, index, object_similarity, *args, **kwargs)

    monkeypatch.setattr(ScribbleMemory, "labels", spy)
    tiny_agent.start(np.stack([frame, frame]), 2)
    strokes = {"scribbles": [[{"path": [[0.1, 0.2], [0.3, 0.2]], "object_id": 1}],
                             [{"path": [[0.7, 0.8], [0.9, 0.8]], "object_id": 2}]]}
    tiny_agent.step(strokes, RoundPlan())
    object_1 = tiny_agent.memory.raw_labels(0) == 1
    assert similarities[0] is not None and similarities[1] is not None
    np.testing.assert_allclose(similarities[1][object_1], similarities[0][object_1], atol=1e-5)


def test_an_object_added_in_a_later_round_drops_the_background_pooled_where_it_may_be(tiny_agent):
    """Object 2 stroked first in round 2: round 1's far-away background on frame 0 (where object 2 may be,
    unstroked) leaves the labels and the reference pool; it stayed pooled, and object 2 never showed."""
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    tiny_agent.start(frames, 2)
    tiny_agent.step({"scribbles": [[{"path": [[0.1, 0.2], [0.3, 0.2]], "object_id": 1}], []]}, RoundPlan())
    background = tiny_agent._pool.references(0)
    assert background > 0 and tiny_agent._pool.rebuilds == 0
    tiny_agent.step({"scribbles": [[], [{"path": [[0.7, 0.8], [0.9, 0.8]], "object_id": 2}]]}, RoundPlan())
    assert tiny_agent._pool.rebuilds == 1 and tiny_agent._pool.references(0) < background


def test_an_object_whose_strokes_a_correction_paints_over_leaves_the_reference_pool(tiny_agent):
    """Objects 1 and 2 stroked in round 1, background painted over object 2's stroke in round 2: no reference of
    object 2 is left, as when the strokes are one round. Its round-1 halo stayed pooled as object 2 (the page and
    agent.segment keep one agent for a video of up to 50 frames; a longer one, in chunks, replays every stroke),
    and object 2 kept the cells around its erased stroke."""
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    two = {"scribbles": [[{"path": [[0.1, 0.2], [0.3, 0.2]], "object_id": 1},
                          {"path": [[0.6, 0.7], [0.8, 0.7]], "object_id": 2}], []]}
    erase = {"scribbles": [[{"path": [[0.6, 0.7], [0.8, 0.7]], "object_id": 0}], []]}
    tiny_agent.start(frames)
    tiny_agent.step(two, RoundPlan())
    assert tiny_agent._pool.references(2) > 0
    masks = tiny_agent.step(erase, RoundPlan())
    assert tiny_agent._pool.references(2) == 0 and not (tiny_agent.memory.raw_labels(0) == 2).any()
    assert masks.shape == frames.shape[:3] and masks.max() <= 2
