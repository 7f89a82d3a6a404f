"""The Python API refuses bad input with one line, and lightens a round the time left cannot hold."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
import threading

import numpy as np
import pytest
import torch

from agent.config import AgentConfig, CRFConfig, ModelConfig
from agent.data.davis import DatasetError, DavisReader
from agent.inference.agent import InteractiveAgent
from agent.inference.budget import RoundCosts
from agent.inference.footprint import TooManyObjects
from agent.inference.plan import RoundPlan
from agent.model.checkpoint import save_checkpoint
from agent.model.onnx_backbone import OnnxBackbone
from agent.model.siamese import build_model

TINY = ModelConfig(backbone="tiny", pretrained="none", input_size=(48, 80), embedding_dim=16)
FRAMES = np.zeros((3, 32, 48, 3), np.uint8)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> InteractiveAgent:
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pt", build_model(TINY))
    # One CRF process: the test's rounds are tiny and worker processes would only cost start-up.
    return InteractiveAgent.from_pretrained(path, AgentConfig(device="cpu", crf=CRFConfig(workers=1)))


def _scribbles(object_id=1, point=(0.5, 0.5), frames=3) -> dict:
    strokes = [[] for _ in range(frames)]
    strokes[0] = [{"path": [[0.2, 0.2], list(point)], "object_id": object_id}]
    return {"scribbles": strokes}


@pytest.mark.parametrize(("num_objects", "scribbles", "fragment"), [
    (1, _scribbles(point=(math.nan, 0.5)), "NaN or infinite"),
    (1, _scribbles(point=(0.5, math.inf)), "NaN or infinite"),
    (1, _scribbles(object_id=2), "object_id 2, but the video has 1 object(s)"),
    (None, _scribbles(object_id=10**9), "object ids are 0..254"),
    (None, _scribbles(object_id=1.0), "object ids are integers"),
    (None, _scribbles(object_id=None), "object ids are integers"),
    (1, _scribbles(frames=2), "has 2 frames of strokes, the video has 3"),
    (1, _scribbles(frames=1), "has 1 frame of strokes, the video has 3"),  # it was "1 frames"
], ids=["nan", "inf", "id-above-count", "huge-id", "float-id", "null-id", "wrong-length", "one-frame-long"])
def test_bad_scribbles_are_one_line_and_leave_the_sample_as_it_was(agent, num_objects, scribbles, fragment):
    agent.start(FRAMES, num_objects)
    with pytest.raises(DatasetError) as error:
        agent.step(scribbles)
    assert fragment in str(error.value) and "\n" not in str(error.value)
    assert len(agent.memory) == 0 and agent._round == 0
    masks = agent.step(_scribbles())  # the sample goes on with good scribbles
    assert masks.shape == FRAMES.shape[:3]


def test_scribbles_of_another_sequence_are_refused_when_the_agent_knows_its_own(agent):
    """A scribble of another video with as many frames was played on this one without a word."""
    agent.start(FRAMES, 1, sequence="dog")
    with pytest.raises(ValueError, match="scribbles of sequence 'goat', but the sample was started on 'dog'"):
        agent.step({**_scribbles(), "sequence": "goat"})
    assert len(agent.memory) == 0 and agent._round == 0  # refused before anything changed
    agent.step({**_scribbles(), "sequence": "dog"})
    agent.step(_scribbles(point=(0.4, 0.4)))  # no name: taken
    agent.start(FRAMES, 1)  # started without a name (a user's own video): any name is taken
    assert agent.step({**_scribbles(), "sequence": "goat"}).shape == FRAMES.shape[:3]
    with pytest.raises(TypeError, match="sequence must be the video's name"):
        agent.start(FRAMES, 1, sequence=5)


@pytest.mark.parametrize(("frames", "num_objects", "fragment"), [
    (np.zeros((0, 32, 48, 3), np.uint8), 1, "T, H, W >= 1"),
    (np.zeros((3, 32, 48, 3), np.float32), 1, "uint8"),
    (FRAMES, 0, "num_objects must be None or an integer in 1..254"),
    (FRAMES, 10**9, "num_objects must be None or an integer in 1..254"),
    (FRAMES, 1.5, "num_objects must be None or an integer in 1..254"),
], ids=["no-frames", "float-frames", "zero-objects", "huge-count", "float-count"])
def test_bad_start_is_one_line(agent, frames, num_objects, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        agent.start(frames, num_objects)


def test_frames_of_different_sizes_and_a_config_dict_are_one_clear_line(agent, tmp_path):
    with pytest.raises(ValueError, match="a sequence of frames of different sizes cannot be one"):
        agent.start([FRAMES[0], FRAMES[1, :16]], 1)  # numpy's "inhomogeneous shape after 1 dimensions"
    with pytest.raises(TypeError, match="config must be an AgentConfig .agent.config., got dict"):
        InteractiveAgent.from_pretrained(tmp_path / "never-read.pt", {"device": "cpu"})  # an AttributeError
    with pytest.raises(TypeError, match="config must be an AgentConfig"):
        InteractiveAgent(agent.model, {"device": "cpu"})
    with pytest.raises(TypeError, match=r"model must be a SiameseEmbedder .*, got str: .*from_pretrained\(path\)"):
        InteractiveAgent(str(tmp_path / "model.pt"))  # "'str' object has no attribute 'parameters'"


@pytest.mark.usefixtures("agent")  # one built already: the first one's one-off imports are not this test's
def test_from_pretrained_reads_a_checkpoint_path_as_the_commands_do(tmp_path, monkeypatch):
    """An empty path (a script's unset variable) loaded the shipped checkpoint without a word; `~/tiny.pt` was
    "does not exist" though it was there (every command and config file reads `~` as the home folder)."""
    config = AgentConfig(device="cpu", crf=CRFConfig(workers=1))
    for empty in ("", " "):
        with pytest.raises(ValueError, match="checkpoint: an empty path .an unset variable.*pass None for the shipped"):
            InteractiveAgent.from_pretrained(empty, config)
    with pytest.raises(ValueError, match="checkpoint: an empty path"):
        InteractiveAgent.from_pretrained(config=dataclasses.replace(config, checkpoint=""))
    with pytest.raises(TypeError, match=r"checkpoint must be a path \(str or Path\), or None .*, got int"):
        InteractiveAgent.from_pretrained(5, config)  # pathlib's "expected str, bytes or os.PathLike object"
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pt", build_model(TINY))
    monkeypatch.setenv("HOME", str(tmp_path))
    agent = InteractiveAgent.from_pretrained("~/tiny.pt", config)
    assert agent.config.checkpoint == tmp_path / "tiny.pt" and agent.trained_size == (48, 80)


@pytest.mark.usefixtures("agent")
def test_from_pretrained_takes_a_torch_device_and_refuses_an_empty_or_numeric_one(tiny_checkpoint):
    """device=torch.device("cpu") was an AttributeError; "" (an unset variable) and 0 were taken for no device, the
    config's used without a word."""
    config = AgentConfig(device="cpu", crf=CRFConfig(workers=1))
    assert InteractiveAgent.from_pretrained(tiny_checkpoint, config, device=torch.device("cpu")).device.type == "cpu"
    with pytest.raises(ValueError, match="unknown device ''"):
        InteractiveAgent.from_pretrained(tiny_checkpoint, config, device="")
    with pytest.raises(TypeError, match="device must be .* or a torch.device, got int"):
        InteractiveAgent.from_pretrained(tiny_checkpoint, config, device=0)


def test_a_video_too_long_for_the_memory_is_refused_before_any_work(agent, monkeypatch):
    agent.start(FRAMES, 1)
    agent.step(_scribbles(), RoundPlan(use_crf=False))
    played = agent._last_labels.copy()
    monkeypatch.setattr("agent.inference.agent.available_bytes", lambda: 10_000)  # 3 tiny frames need more
    with pytest.raises(MemoryError, match=r"frames: 3 frames of 32x48 need about .* GiB in one sample, more than "
                                          r"the 0.0 GiB available: segment a long video in chunks"):
        agent.start(FRAMES, 1)
    assert np.array_equal(agent._last_labels, played)  # the sample before it is untouched
    monkeypatch.setattr("agent.inference.agent.available_bytes", lambda: None)  # not known: nothing refused
    agent.start(FRAMES, 1)


def test_frames_too_many_for_the_memory_are_refused_before_they_are_copied(agent, monkeypatch):
    """start() copied the frames first: a video larger than the memory (a memory-mapped file; here a broadcast view
    of 1.2 TB) was numpy's "Unable to allocate" MemoryError, or the process was killed, not the line naming it."""
    monkeypatch.setattr("agent.inference.agent.available_bytes", lambda: 10_000)
    huge = np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (10**6, 480, 854, 3))
    with pytest.raises(MemoryError, match=r"frames: 1000000 frames of 480x854 need about .* segment a long video"):
        agent.start(huge, 1)
    monkeypatch.setattr("agent.inference.agent.available_bytes", lambda: None)
    buffer = FRAMES.copy()
    agent.start(buffer, 1)
    buffer[:] = 255  # the caller reuses its buffer: the sample's frames are its own copy
    assert not agent._frames.any() and agent._frames.flags.writeable
    agent.start(list(FRAMES), 1)  # a list is stacked into an array of its own
    assert agent._frames.shape == FRAMES.shape


def test_a_high_object_id_without_num_objects_is_checked_against_the_memory(agent, monkeypatch):
    # start(frames) counted one object; an id of 254 alone made every frame's top-k hold 255 classes (8 480p
    # frames took 4 GB more, 50 frames would have been killed), unchecked.
    agent.start(FRAMES)
    need = agent._sample_bytes(FRAMES.shape[:3], agent.input_size, 2)
    more = agent._sample_bytes(FRAMES.shape[:3], agent.input_size, 255) - need
    monkeypatch.setattr("agent.inference.agent.available_bytes", lambda: more - 1)
    with pytest.raises(TooManyObjects, match=r"scribbles: object id 254 makes 255 classes, .* number the objects 1..N"):
        agent.step(_scribbles(object_id=254))
    assert len(agent.memory) == 0 and agent._round == 0  # refused before the sample changed
    assert agent.step(_scribbles(object_id=2)).shape == FRAMES.shape[:3]  # 3 classes fit
    monkeypatch.setattr("agent.inference.agent.available_bytes", lambda: more)
    assert agent.step(_scribbles(object_id=254)).shape == FRAMES.shape[:3]


def test_a_video_that_fits_with_one_object_but_not_with_num_objects_says_so(agent, monkeypatch):
    """TooManyObjects (a MemoryError) when the classes are the cause: the line blamed the video's length."""
    need = agent._sample_bytes(FRAMES.shape[:3], agent.input_size_for(FRAMES.shape[1:3]), 2)
    monkeypatch.setattr("agent.inference.agent.available_bytes", lambda: need)
    with pytest.raises(TooManyObjects, match=r"num_objects: 200 objects make 201 classes, .*one object would fit"):
        agent.start(FRAMES, 200)
    agent.start(FRAMES, 1)


def test_plan_of_the_wrong_type_is_refused(agent):
    agent.start(FRAMES, 1)
    with pytest.raises(TypeError, match="plan must be a RoundPlan, got dict"):
        agent.step(_scribbles(), {"use_crf": True})


@pytest.mark.parametrize("field", ["finetune_seconds", "crf_scale", "time_left"])
def test_a_round_plan_number_beyond_a_float_is_a_value_error_naming_its_field(field):
    """10**400 was math's OverflowError ("int too large to convert to float"), naming no field."""
    with pytest.raises(ValueError, match=f"RoundPlan.{field} must be"):
        RoundPlan(**{field: 10**400})
    assert RoundPlan(time_left=10**9).time_left == 10**9  # a large integer a float holds is a number


def test_round_without_time_for_its_crf_is_lightened(agent, tiny_synthetic_root):
    """Costs injected as if measured in earlier rounds (no clock): 1 s per frame of transfer and 10 s per frame
    of CRF at half scale (5 s at quarter scale) on 6 frames, 2 of them scribbled. A round must fit 1.5 x its
    estimate + 2 s of slack: 60 s left hold the quarter-scale CRF on every frame (36 s), 40 s only on keyframes
    (frames 0, 1, 4, 5: 24 s), 12 s no CRF at all (frames 0, 1, 5: 3 s)."""
    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[1]
    frames = reader.load_frames(sequence)
    agent.start(frames, 2)
    agent.step(reader.load_scribble(sequence, 1), RoundPlan())  # computes every frame's features
    more = _scribbles(frames=len(frames))
    for time_left, expected in ((60.0, (True, 0.25, 1)), (40.0, (True, 0.25, 4)), (12.0, (False, None, 8))):
        agent.costs = RoundCosts(backbone=5.0, transfer=1.0, crf={0.5: 10.0})
        masks = agent.step(more, RoundPlan(use_crf=True, crf_scale=0.5, time_left=time_left))
        assert masks.shape == frames.shape[:3] and masks.max() <= 2
        played = agent.last_plan
        assert (played.use_crf, played.crf_scale, played.frame_stride) == expected, played
    # With the time the round needs, the plan is played as given.
    agent.costs = RoundCosts(backbone=5.0, transfer=1.0, crf={0.5: 10.0})
    plan = RoundPlan(use_crf=True, crf_scale=0.5, time_left=1000.0)
    agent.step(more, plan)
    assert agent.last_plan == plan


@pytest.mark.parametrize("first", [{"scribbles": [[], [], []]}, _scribbles(object_id=0)], ids=["empty", "background"])
def test_a_first_round_without_an_object_stroke_is_refused_and_changes_nothing(agent, first):
    # The refused round used to count as the first, so the next one got no derived background: all object.
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 32, 48, 3), np.uint8)
    agent.start(frames, 1)
    fresh = agent.step(_scribbles())
    agent.start(frames, 1)
    with pytest.raises(DatasetError, match="no object stroke yet"):
        agent.step(first)
    assert agent.memory.rounds == 0 and agent._round == 0
    assert np.array_equal(agent.step(_scribbles()), fresh)


def test_start_keeps_its_own_copy_of_the_frames(agent):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (3, 32, 48, 3), np.uint8)
    agent.start(frames, 1)
    expected = agent.step(_scribbles())
    agent.start(frames, 1)
    frames[:] = 0  # the caller reuses its buffer
    assert np.array_equal(agent.step(_scribbles()), expected)


def test_masks_the_caller_changes_do_not_change_the_next_round(agent, tiny_synthetic_root):
    """The masks returned were the agent's own last-round labels: a caller editing them in place (dropping an
    object, `masks *= 255`) changed the next round's frames between keyframes."""
    reader = DavisReader(tiny_synthetic_root)
    sequence = reader.sequences("val")[1]
    frames, first = reader.load_frames(sequence), reader.load_scribble(sequence, 1)
    second = _scribbles(frames=len(frames))
    played = []
    for edit in (False, True):
        agent.start(frames, 2)
        masks = agent.step(first, RoundPlan(frame_stride=3))
        if edit:
            masks[~agent._have_features] = 1  # the frames the next keyframe round copies from the last one
        played.append(agent.step(second, RoundPlan(frame_stride=3)))
    assert np.array_equal(played[0], played[1])


def test_a_falsy_plan_that_is_not_a_round_plan_and_a_bad_candidate_count_are_refused(agent):
    agent.start(FRAMES, 1)
    for plan in (0, [], "", False):
        with pytest.raises(TypeError, match="plan must be a RoundPlan"):
            agent.step(_scribbles(), plan)
    agent.step(_scribbles())
    for count in (0, -1, "3", True):
        with pytest.raises(ValueError, match="count must be an integer >= 1"):
            agent.next_scribble_frame_candidates(count)
    assert len(agent.next_scribble_frame_candidates(2)) == 2


def _strokes(frames: int, frame: int, object_id: int, start: tuple, end: tuple) -> dict:
    strokes = [[] for _ in range(frames)]
    strokes[frame] = [{"path": [list(start), list(end)], "object_id": object_id}]
    return {"scribbles": strokes}


def test_a_step_that_failed_midway_is_not_followed_by_masks_from_its_half_round(agent, monkeypatch):
    # 20 frames: the reference pool folds a round's new pixels in three batches of frames.
    frames = np.random.default_rng(0).integers(0, 255, (20, 32, 48, 3), np.uint8)
    rounds = [_strokes(20, 0, 1, (0.2, 0.2), (0.5, 0.5)), _strokes(20, 10, 0, (0.6, 0.1), (0.9, 0.9)),
              _strokes(20, 15, 1, (0.1, 0.7), (0.4, 0.9))]
    agent.start(frames, 1)
    played = [agent.step(strokes) for strokes in rounds]
    agent.start(frames, 1)
    agent.step(rounds[0])
    embed, calls = agent._embeddings.embed, []

    def out_of_memory_on_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("simulated")
        return embed(*args, **kwargs)

    monkeypatch.setattr(agent._embeddings, "embed", out_of_memory_on_the_third_batch)
    with pytest.raises(MemoryError):
        agent.step(rounds[1])
    monkeypatch.setattr(agent._embeddings, "embed", embed)
    # Its pool had the new pixels in some frames only: the next round's masks matched no replay (11% of pixels).
    with pytest.raises(RuntimeError, match=r"the previous step failed midway \(MemoryError: simulated\).*"
                                           r"call start\(frames\) again"):
        agent.step(rounds[2])
    agent.start(frames, 1)  # a new sample plays as ever
    assert all(np.array_equal(agent.step(strokes), masks) for strokes, masks in zip(rounds, played, strict=True))


def test_start_or_step_while_a_step_runs_in_another_thread_is_refused(agent):
    frames = np.random.default_rng(2).integers(0, 255, (3, 32, 48, 3), np.uint8)
    agent.start(frames, 1)
    expected = agent.step(_scribbles())
    inside, release, result = threading.Event(), threading.Event(), {}

    def hold_the_round(index, scores):  # the first thread's round pauses here, half done
        inside.set()
        release.wait(30)

    def first_thread():
        result["masks"] = agent.step(_scribbles())

    agent.start(frames, 1)
    agent.score_observer = hold_the_round
    thread = threading.Thread(target=first_thread)
    try:
        thread.start()
        assert inside.wait(30)
        # A start() here replaced the sample under the running round: over 20 frames, its next batch failed with
        # "update() the pool before asking for scores" (or, timed otherwise, read the other sample's pool).
        with pytest.raises(RuntimeError, match=r"start\(\) called while another start\(\) or step\(\) runs on "
                                               "this agent .another thread..: an agent plays one sample at a time"):
            agent.start(FRAMES, 1)
        with pytest.raises(RuntimeError, match=r"step\(\) called while another"):
            agent.step(_scribbles())
    finally:
        release.set()
        thread.join(30)
        agent.score_observer = None
    assert np.array_equal(result["masks"], expected)  # the first round went on undisturbed
    assert agent.step(_scribbles()).shape == frames.shape[:3]  # and the agent is free again


def test_confidence_and_candidates_before_any_sample_are_none():
    torch.manual_seed(0)
    fresh = InteractiveAgent(build_model(TINY), AgentConfig(device="cpu", crf=CRFConfig(workers=1)))
    # "None before the first round", as documented: it was an AttributeError ('_confidence') before start()
    assert fresh.frame_confidence() is None and fresh.next_scribble_frame_candidates(3) is None


def test_a_callers_no_grad_or_inference_mode_changes_nothing(agent, tiny_checkpoint):
    frames = np.random.default_rng(3).integers(0, 255, (9, 32, 48, 3), np.uint8)
    rounds = [_strokes(9, 0, 1, (0.2, 0.2), (0.5, 0.5)), _strokes(9, 4, 0, (0.6, 0.1), (0.9, 0.9))]
    first = RoundPlan(frame_stride=4)
    agent.start(frames, 1)
    expected = [agent.step(rounds[0], first), agent.step(rounds[1])]
    agent.start(frames, 1)
    with torch.inference_mode():  # round 1's features of every 4th frame were inference tensors ...
        masks = [agent.step(rounds[0], first)]
    masks.append(agent.step(rounds[1]))  # ... which round 2 could not fill in: "Inplace update to inference tensor"
    assert all(np.array_equal(m, e) for m, e in zip(masks, expected, strict=True))
    agent.start(frames, 1)
    with torch.no_grad():  # fine-tuning had no gradients: "element 0 of tensors does not require grad"
        agent.step(rounds[0])
        agent.step(rounds[1], RoundPlan(finetune_seconds=0.2))
    assert agent.last_finetune.steps > 0
    with torch.inference_mode():  # its weights were inference tensors: start() could not reset them
        built = InteractiveAgent.from_pretrained(tiny_checkpoint, agent.config)
    built.start(frames, 1)
    built.step(rounds[0])
    built.step(rounds[1], RoundPlan(finetune_seconds=0.2))
    assert built.last_finetune.steps > 0
    with torch.inference_mode():
        model = build_model(TINY)
    with pytest.raises(ValueError, match=r"made under torch.inference_mode\(\).*outside inference_mode"):
        InteractiveAgent(model, agent.config)


def test_a_callers_default_dtype_float64_changes_nothing(agent, tiny_checkpoint):
    frames = np.random.default_rng(4).integers(0, 255, (3, 32, 48, 3), np.uint8)
    agent.start(frames, 1)
    expected = agent.step(_scribbles())
    torch.set_default_dtype(torch.float64)
    try:  # the model was float64, fed float32 frames: "Input type (float) and bias type (double)" in round 1
        built = InteractiveAgent.from_pretrained(tiny_checkpoint, agent.config)
        model = build_model(TINY)
    finally:
        torch.set_default_dtype(torch.float32)
    built.start(frames, 1)
    assert np.array_equal(built.step(_scribbles()), expected)
    # The ONNX export's example was float64 too: it fell back to PyTorch, with a warning.
    assert isinstance(built._backbone_runtime, OnnxBackbone)
    with pytest.raises(TypeError, match=r"its weights are torch.float64, the agent runs in float32: .*model.float\(\)"):
        InteractiveAgent(model, agent.config)


def test_a_deep_copy_is_an_independent_agent_and_a_shallow_copy_or_pickle_is_refused(agent):
    frames = np.random.default_rng(5).integers(0, 255, (9, 32, 48, 3), np.uint8)
    rounds = [_strokes(9, 0, 1, (0.2, 0.2), (0.5, 0.5)), _strokes(9, 2, 0, (0.6, 0.1), (0.9, 0.9)),
              _strokes(9, 5, 1, (0.3, 0.3), (0.4, 0.4))]
    first = RoundPlan(frame_stride=4)
    agent.start(frames, 1)
    expected = [agent.step(rounds[0], first), agent.step(rounds[1]), agent.step(rounds[2])]
    agent.start(frames, 1)
    agent.step(rounds[0], first)
    branch = copy.deepcopy(agent)  # "cannot pickle '_thread.lock' object"
    assert branch.memory is not agent.memory and branch._busy is not agent._busy
    # Each goes on from round 1 as the agent alone did, neither changing the other's sample.
    assert all(np.array_equal(branch.step(strokes), masks) for strokes, masks in zip(rounds[1:], expected[1:], strict=True))
    assert all(np.array_equal(agent.step(strokes), masks) for strokes, masks in zip(rounds[1:], expected[1:], strict=True))
    # A shallow copy shared the sample (and the lock) with the original: a round of one changed the other's.
    with pytest.raises(TypeError, match=r"would share its sample with the original: use copy.deepcopy\(agent\)"):
        copy.copy(agent)
    with pytest.raises(TypeError, match="an InteractiveAgent cannot be pickled .*from_pretrained"):
        pickle.dumps(agent)
