"""Rounds and chunks with the tiny test model: long videos in chunks give what one agent gives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.inference.plan import RoundPlan
from agent.tools.scribble_input import empty_scribbles, load_scribbles
from agent.tools.segmenter import VideoSegmenter
from agent.tools.video import InputError, WorkingFrames, open_video

PLAN = RoundPlan()  # no CRF: fast, and the chunks' equality does not depend on it


@pytest.fixture(scope="module")
def inputs(small_video):
    video = open_video(small_video.folder)
    return WorkingFrames.read(video, short_side=120), load_scribbles(small_video.scribble_dir, video)


def test_chunks_give_the_labels_one_agent_gives(tiny_agent, inputs):
    frames, scribbles = inputs
    whole = VideoSegmenter(tiny_agent, frames, chunk_frames=100, plan=PLAN)
    chunked = VideoSegmenter(tiny_agent, frames, chunk_frames=3, plan=PLAN)
    assert whole.persistent and not chunked.persistent
    seen = []
    whole.segment(scribbles)
    chunked.segment(scribbles, progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert seen[-1] == ("segment", 8, 8) and len(seen) == 4  # 0, 3, 6 and the end
    for frame in range(8):
        assert whole.labels(frame).shape == frames.size
        assert np.array_equal(whole.labels(frame), chunked.labels(frame)), frame
    assert {int(v) for f in range(8) for v in np.unique(whole.labels(f))} <= {0, 1, 2}


def test_rounds_keep_the_agent_and_add_strokes(tiny_agent, inputs):
    frames, scribbles = inputs
    segmenter = VideoSegmenter(tiny_agent, frames, plan=PLAN)
    with pytest.raises(InputError, match="segment first"):
        segmenter.suggest_frame()
    segmenter.segment(scribbles)
    suggested = segmenter.suggest_frame()
    assert 0 <= suggested < 8 and suggested not in (4,)  # frame 4 has strokes already
    correction = empty_scribbles(8)
    correction["scribbles"][suggested] = [{"path": [[0.1, 0.1], [0.3, 0.1]], "object_id": 0}]
    memory = tiny_agent.memory
    segmenter.segment(correction)
    assert tiny_agent.memory is memory and memory.rounds == 2  # the same agent, one more round
    assert segmenter.rounds == 2 and segmenter.scribbles["scribbles"][suggested] == correction["scribbles"][suggested]


def test_no_object_stroke_and_frames_the_video_lacks(tiny_agent, inputs):
    frames, _ = inputs
    segmenter = VideoSegmenter(tiny_agent, frames, plan=PLAN)
    background = empty_scribbles(8)
    background["scribbles"][0] = [{"path": [[0.1, 0.1]], "object_id": 0}]
    with pytest.raises(InputError, match="no object stroke yet"):
        segmenter.segment(background)
    with pytest.raises(InputError, match="the video has 8"):
        segmenter.segment(empty_scribbles(9))
    assert segmenter.rounds == 0 and not segmenter.has_result


def test_strokes_given_as_numpy_values_are_recorded_as_plain_copies(tiny_agent, inputs):
    frames, _ = inputs
    segmenter = VideoSegmenter(tiny_agent, frames, plan=PLAN)
    stroke = {"path": np.array([[0.4, 0.5], [0.5, 0.5]]), "object_id": np.int64(1), "end_time": np.float32(2)}
    scribbles = empty_scribbles(8)
    scribbles["scribbles"][4] = [stroke]
    segmenter.segment(scribbles)
    stroke["object_id"] = np.int64(2)  # the caller reuses its dict: the record keeps what was segmented
    # scribbles.json of the export: "ndarray is not JSON serializable" once every mask was written
    assert json.loads(json.dumps(segmenter.scribbles))["scribbles"][4] == [
        {"path": [[0.4, 0.5], [0.5, 0.5]], "object_id": 1, "end_time": 2.0}]


def test_a_stroke_value_scribbles_json_cannot_hold_is_refused_before_the_round(tiny_agent, inputs):
    """A datetime (or a torch number) under another key of a stroke failed the export's scribbles.json write
    ("Object of type datetime is not JSON serializable") once every mask was computed."""
    import datetime

    frames, _ = inputs
    segmenter = VideoSegmenter(tiny_agent, frames, plan=PLAN)
    scribbles = empty_scribbles(8)
    scribbles["scribbles"][4] = [{"path": [[0.4, 0.5], [0.5, 0.5]], "object_id": 1,
                                  "start_time": datetime.datetime(2024, 1, 1)}]
    with pytest.raises(InputError, match=r"scribbles: a stroke holds a value scribbles.json cannot hold \(a datetime "
                                         r"is no JSON value\): give finite numbers"):
        segmenter.segment(scribbles)
    assert segmenter.rounds == 0 and segmenter.scribbles == empty_scribbles(8)
    scribbles["scribbles"][4][0]["start_time"] = float("nan")  # json.dumps wrote it: no JSON number
    with pytest.raises(InputError, match=r"cannot hold \(Out of range float values are not JSON compliant"):
        segmenter.segment(scribbles)
    assert segmenter.rounds == 0
    scribbles["scribbles"][4][0]["start_time"] = [np.float32(1.5)]  # numpy inside a list: a plain copy
    segmenter.segment(scribbles)
    assert json.loads(json.dumps(segmenter.scribbles))["scribbles"][4][0]["start_time"] == [1.5]


def test_constructor_arguments_and_frame_indices_are_checked(tiny_agent, inputs):
    frames, scribbles = inputs
    for chunk in (0, 1.5, "8", True):
        with pytest.raises(ValueError, match="chunk_frames must be an integer >= 1"):
            VideoSegmenter(tiny_agent, frames, chunk_frames=chunk)
    with pytest.raises(TypeError, match="plan must be a RoundPlan, got dict"):
        VideoSegmenter(tiny_agent, frames, plan={"use_crf": False})
    with pytest.raises(TypeError, match=r"frames must be WorkingFrames .*, got ndarray"):  # 'int' not iterable
        VideoSegmenter(tiny_agent, frames.stack(range(len(frames))))
    segmenter = VideoSegmenter(tiny_agent, frames, plan=PLAN)
    segmenter.segment(scribbles)
    for frame in (8, -1, True):  # -1 would have been the last frame, True frame 1
        with pytest.raises(InputError, match=rf"frame {frame} is not in 0..7"):
            segmenter.labels(frame)



def test_segmenters_sharing_one_agent_each_segment_their_own_video(tiny_agent, inputs):
    frames, scribbles = inputs
    other = WorkingFrames(frames.encoded[::-1], frames.size)  # another video of the same length
    correction = empty_scribbles(8)
    correction["scribbles"][1] = [{"path": [[0.1, 0.1], [0.3, 0.1]], "object_id": 0}]
    both = {"scribbles": [old + new for old, new in zip(scribbles["scribbles"], correction["scribbles"], strict=True)]}
    alone = VideoSegmenter(tiny_agent, frames, plan=PLAN)  # what a segmenter starting over with every stroke gives
    alone.segment(both)
    expected = [alone.labels(frame) for frame in range(8)], alone.suggest_frame(), tiny_agent.frame_confidence()
    first, second = VideoSegmenter(tiny_agent, frames, plan=PLAN), VideoSegmenter(tiny_agent, other, plan=PLAN)
    first.segment(scribbles)
    suggested = first.suggest_frame()
    second.segment(scribbles)  # the agent now holds the other video
    assert first.suggest_frame() == suggested  # it was the other video's least confident frame
    # The correction went to the other video's sample (its strokes, its frames), and its masks came back.
    first.segment(correction)
    assert np.array_equal(tiny_agent.frame_confidence(), expected[2]) and first.suggest_frame() == expected[1]
    assert all(np.array_equal(first.labels(frame), expected[0][frame]) for frame in range(8))


def test_a_chunk_that_fails_keeps_the_last_rounds_labels_on_every_frame(tiny_agent, inputs, monkeypatch):
    frames, scribbles = inputs
    segmenter = VideoSegmenter(tiny_agent, frames, chunk_frames=3, plan=PLAN)
    segmenter.segment(scribbles)
    before = [segmenter.labels(frame) for frame in range(8)]
    correction = empty_scribbles(8)
    correction["scribbles"][4] = [{"path": [[0.0, 0.5], [1.0, 0.5]], "object_id": 1}]  # changes every frame
    step, calls = tiny_agent.step, []

    def second_chunk_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("no memory for chunk 2")
        return step(*args, **kwargs)
    monkeypatch.setattr(tiny_agent, "step", second_chunk_fails)
    with pytest.raises(MemoryError):
        segmenter.segment(correction)
    # Frames 0-2 had this round's labels, the rest the last round's, with the last round's strokes recorded.
    assert segmenter.rounds == 1 and segmenter.scribbles["scribbles"][4] == scribbles["scribbles"][4]
    assert all(np.array_equal(segmenter.labels(frame), before[frame]) for frame in range(8))


def test_a_round_interrupted_with_ctrl_c_lets_the_next_round_start_over(tiny_agent, inputs, monkeypatch):
    frames, scribbles = inputs
    segmenter = VideoSegmenter(tiny_agent, frames, plan=PLAN)
    segmenter.segment(scribbles)
    correction = empty_scribbles(8)
    correction["scribbles"][1] = [{"path": [[0.1, 0.1], [0.3, 0.1]], "object_id": 0}]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(tiny_agent, "_play_round", interrupted)
        with pytest.raises(KeyboardInterrupt):
            segmenter.segment(correction)
    # It was "RuntimeError: the previous step failed midway (KeyboardInterrupt) ... call start(frames) again",
    # every round after, though the segmenter is what starts the agent.
    segmenter.segment(correction)
    assert segmenter.rounds == 2 and tiny_agent.memory.rounds == 1  # started over with every stroke so far


def _correction(frame=1, object_id=1):
    correction = empty_scribbles(8)
    correction["scribbles"][frame] = [{"path": [[0.0, 0.3], [1.0, 0.3]], "object_id": object_id}]
    return correction


@pytest.mark.parametrize("chunk_frames", [100, 3])
def test_segment_rounds_gives_what_a_segment_per_round_gives(tiny_agent, inputs, monkeypatch, chunk_frames):
    """Rounds replayed (an export's scribbles.json, several --scribbles) are the rounds played one by one; a video in
    chunks is segmented once for all of them (each of its rounds starts every chunk over with all strokes)."""
    frames, scribbles = inputs
    one_by_one = VideoSegmenter(tiny_agent, frames, chunk_frames=chunk_frames, plan=PLAN)
    one_by_one.segment(scribbles)
    one_by_one.segment(_correction())
    expected = [one_by_one.labels(frame) for frame in range(8)]
    step, calls = tiny_agent.step, []
    monkeypatch.setattr(tiny_agent, "step", lambda *args, **kwargs: calls.append(1) or step(*args, **kwargs))
    replayed = VideoSegmenter(tiny_agent, frames, chunk_frames=chunk_frames, plan=PLAN)
    replayed.segment_rounds([scribbles, _correction()])
    assert len(calls) == (2 if replayed.persistent else 3)  # two rounds, or the three chunks once
    assert all(np.array_equal(replayed.labels(frame), expected[frame]) for frame in range(8))
    assert replayed.rounds == 2 and replayed.record == one_by_one.record
    assert replayed.record["rounds"][1][1] == _correction()["scribbles"][1]
    assert replayed.record["scribbles"] == replayed.scribbles["scribbles"]


def test_segment_rounds_checks_every_round_first_and_counts_all_or_none(tiny_agent, inputs):
    frames, scribbles = inputs
    segmenter = VideoSegmenter(tiny_agent, frames, plan=PLAN)
    with pytest.raises(InputError, match="scribbles: round 2: has 9 frames of strokes, the video has 8"):
        segmenter.segment_rounds([scribbles, empty_scribbles(9)])
    with pytest.raises(InputError, match="no object stroke yet"):  # round 1 alone is background
        segmenter.segment_rounds([_correction(object_id=0), scribbles])
    assert segmenter.rounds == 0 and segmenter.record == {"scribbles": empty_scribbles(8)["scribbles"], "rounds": [],
                                                     "segmented": segmenter.settings}
    segmenter.segment_rounds([scribbles, _correction(object_id=0)])  # a background-only correction is a round
    assert segmenter.rounds == 2 and tiny_agent.memory.rounds == 2


def test_segment_rounds_refuses_no_round_and_rounds_that_draw_nothing(tiny_agent, inputs):
    """segment_rounds([]) did nothing without a word, and a round of no stroke or of empty paths only (clicks
    without a drag) was played as a round that drew nothing; a dict (one round) was taken for its keys."""
    frames, scribbles = inputs
    segmenter = VideoSegmenter(tiny_agent, frames, plan=PLAN)
    with pytest.raises(InputError, match="segment_rounds got no round"):
        segmenter.segment_rounds([])
    with pytest.raises(InputError, match="got one dict: segment"):
        segmenter.segment_rounds(scribbles)
    clicks = empty_scribbles(8)
    clicks["scribbles"][2] = [{"path": [], "object_id": 1}, {"path": [], "object_id": 0}]
    for nothing in (empty_scribbles(8), clicks):
        with pytest.raises(InputError, match="round 2: no stroke that draws"):
            segmenter.segment_rounds([scribbles, nothing])
        with pytest.raises(InputError, match="no stroke that draws"):
            segmenter.segment(nothing)
    assert segmenter.rounds == 0 and not segmenter.has_result
    first_clicks = empty_scribbles(8)  # an object's empty path marks no object: round 1 has none
    first_clicks["scribbles"][3] = [{"path": [], "object_id": 1},
                                    {"path": [[0.1, 0.1], [0.2, 0.1]], "object_id": 0}]
    with pytest.raises(InputError, match="no object stroke yet"):
        segmenter.segment(first_clicks)
    segmenter.segment_rounds((scribbles, _correction(object_id=0)))  # a tuple (any sequence) of rounds
    assert segmenter.rounds == 2 and segmenter.num_objects() == max(
        s["object_id"] for strokes in scribbles["scribbles"] for s in strokes)


def test_chunks_give_the_identity_step_the_videos_frame_numbers(tiny_agent, inputs, monkeypatch):
    """Two objects, the scribble on frame 4, chunks of 3: each chunk's identity step sweeps over the video's frame
    numbers (chunk 0..2 with frame 4, 4 beside 2: two frames away). They were the chunk's rows, frame 4 next to 2
    and, in the last chunk, next to 6 (a position a frame away where it was two)."""
    from agent.inference import propagate as propagate_module

    seen, separate = [], propagate_module.separate_objects

    def spy(scores, keyframes, strokes, config):
        seen.append((np.asarray(keyframes).tolist(), sorted(strokes)))
        return separate(scores, keyframes, strokes, config)

    monkeypatch.setattr(propagate_module, "separate_objects", spy)
    frames, scribbles = inputs
    VideoSegmenter(tiny_agent, frames, chunk_frames=3, plan=PLAN).segment(scribbles)
    assert seen == [([0, 1, 2, 4], [4]), ([3, 4, 5], [4]), ([4, 6, 7], [4])]
    with pytest.raises(ValueError, match="frame_numbers must be 2 increasing integers"):
        tiny_agent.start(frames.stack([0, 1]), frame_numbers=[3, 3])
