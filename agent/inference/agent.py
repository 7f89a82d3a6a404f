"""InteractiveAgent: the paper's method behind the Predictor interface, one sample at a time.

Each round: merge the new scribbles into the sample's scribble memory (round 1's dilated, later ones by
scribbles.correction_dilation: undilated; on the first round's frames also far-away background and, while no
background stroke exists, least-similar background), fine-tune decoder + head on every scribbled frame so far
for the strategy's budget, then transfer labels from all scribbled pixels to every frame (with
transfer.detail_band, off by default, again on a finer grid near the labels' boundaries: detail.py),
+ dense CRF when the plan says so.

Work is reused, not redone: rounds without fine-tuning only compare every frame with the pixels that are
new this round (ReferencePool keeps each frame's running top-k; it starts over when the model changed or
a stroke gives a pooled pixel another class), and the CRF's frames go to one worker process per core.

A round may propagate to keyframes only (RoundPlan.frame_stride: every n-th frame plus the scribbled
ones; the other frames take their nearest keyframe's labels moved along optical flow (flow.py), or after
round 1 only where those changed):
a fast first mask, with the rest of the work done by the next full round, or a round the clock lightened.

What is cached, and why the timing stays honest: the backbone is frozen on CPU, so its features of
every frame cannot change within a sample; each frame's are computed once, inside the timed window of
the first round that needs them, and reused. Decoder and head are reset to the pretrained weights at
every `start`, so nothing leaks between samples. The CRF worker processes are started when the agent is
built, and the backbone is exported to ONNX Runtime and run once per frame size in `prepare` (the session
calls it with every video's size), before any sample's clock runs.

Frames go through the backbone at `inference_scale` times the checkpoint's input size, but the transfer
grid is the checkpoint's (see AgentConfig.inference_scale): finer features at the same transfer cost.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import numbers
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..config import AgentConfig
from ..device import resolve_device
from ..errors import typed_line
from ..model.checkpoint import default_checkpoint_path, load_checkpoint
from ..model.onnx_backbone import OnnxBackbone, build_backbone_runtime
from ..model.siamese import SiameseEmbedder, embedding_size, inference_size, oriented, scaled_size
from ..paths import expand_user
from . import crf
from .budget import RoundCosts, estimate_seconds, fit_plan, reserve_seconds
from .detail import boundary_band
from .embedding_cache import Embed, EmbeddingCache
from .finetune import FinetuneStats, finetune
from .footprint import TooManyObjects, available_bytes, sample_bytes
from .plan import RoundPlan
from .predictor import Predictor, check_num_objects, check_sequence, sample_frames
from .propagate import Detail, propagate, reference_set, select_keyframes
from .reference_pool import ReferencePool
from .round_fusion import RoundFusion
from .scribbles import (
    UNLABELED,
    ScribbleMemory,
    grid_labels,
    labels_on_grid,
    narrow_stroke_cells,
    objects_on_grid,
)
from .transfer import head_affine, transfer_labels

log = logging.getLogger(__name__)


def _one_call_at_a_time(method):
    """start() and step() change one sample's state throughout: a second call from another thread while one
    runs (or from a score_observer inside it) is refused, not interleaved with it."""
    @functools.wraps(method)
    def exclusive(self, *args, **kwargs):
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(f"{method.__name__}() called while another start() or step() runs on this agent "
                               "(another thread?): an agent plays one sample at a time; build one agent per thread")
        try:
            # As the agent's own: a caller's torch.no_grad() or inference_mode() around step() left fine-tuning
            # without gradients ("element 0 of tensors does not require grad"), and tensors a round made under
            # inference_mode could not be updated by a later round outside it ("Inplace update to inference
            # tensor"): either ended the sample.
            with torch.inference_mode(False), torch.enable_grad():
                return method(self, *args, **kwargs)
        finally:
            self._busy.release()
    return exclusive


def _checkpoint_path(given) -> Path:
    """A checkpoint's path as from_pretrained is given it: `~` is the home folder, as in every command and config
    file (it was "~/m.pt does not exist"); an empty one is a ValueError (an unset variable's "" loaded the shipped
    checkpoint without a word; None is the way to ask for it), anything else but a path a TypeError."""
    if isinstance(given, bytes) or not isinstance(given, str | os.PathLike):
        raise TypeError(f"checkpoint must be a path (str or Path), or None for the shipped one, got "
                        f"{type(given).__name__}")
    if not str(given).strip():
        raise ValueError("checkpoint: an empty path (an unset variable?): name a .pt file, or pass None for the "
                         "shipped checkpoint")
    return expand_user(given)


def _frame_numbers(given, count: int) -> np.ndarray | None:
    """start()'s frame_numbers as (T,) int64, None for None; ValueError unless `count` increasing integers >= 0."""
    if given is None:
        return None
    numbers_ = np.asarray(given)
    if (numbers_.shape != (count,) or not np.issubdtype(numbers_.dtype, np.integer)
            or (numbers_ < 0).any() or (np.diff(numbers_) <= 0).any()):
        raise ValueError(f"frame_numbers must be {count} increasing integers >= 0 (each frame's number in its "
                         f"video), or None, got {given!r}"[:300])
    return numbers_.astype(np.int64)


class InteractiveAgent(Predictor):
    name = "simlearn"

    def __init__(self, model: SiameseEmbedder, config: AgentConfig | None = None,
                 pretraining_loss: str = "pairwise") -> None:
        # A checkpoint's path was "'str' object has no attribute 'parameters'".
        if not isinstance(model, SiameseEmbedder):
            raise TypeError(f"model must be a SiameseEmbedder (agent.model.siamese), got {type(model).__name__}: "
                            "InteractiveAgent.from_pretrained(path) loads a checkpoint")
        # Weights made under torch.inference_mode() can be neither fine-tuned nor reset by start(): it failed with
        # torch's "Inplace update to inference tensor outside InferenceMode", once per weight.
        if any(tensor.is_inference() for tensor in model.state_dict().values()):
            raise ValueError("model: its weights were made under torch.inference_mode(), so they cannot be fine-tuned "
                             "or reset between samples: build or load it outside inference_mode")
        # Frames go in as float32: a model built under torch.set_default_dtype(torch.float64) failed in the first
        # round, "Input type (float) and bias type (double) should be the same", and the sample with it.
        wrong = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
        if wrong:
            raise TypeError(f"model: its weights are {', '.join(wrong)}, the agent runs in float32: pass model.float()")
        self.config = config or AgentConfig()
        if not isinstance(self.config, AgentConfig):
            raise TypeError(f"config must be an AgentConfig (agent.config), got {type(self.config).__name__}")
        self.pretraining_loss = pretraining_loss
        self.device = next(model.parameters()).device
        self.model = model.eval()
        self._pretrained_state = copy.deepcopy(model.state_dict())
        self.trained_size = tuple(model.config.input_size)
        # The transfer grid follows the checkpoint's size, not the inference size: its cost stays the same
        # (turned for a portrait video in start()).
        self.grid = embedding_size(self.trained_size, self.config.transfer.grid_stride)
        self._runtimes: dict[tuple[int, int], OnnxBackbone | None] = {}
        if self.config.inference_scale != "auto":  # the one frame size is known now
            self._runtime_for(scaled_size(self.trained_size, self.config.inference_scale))
        self.last_finetune = FinetuneStats()
        self._frames: np.ndarray | None = None
        self._confidence: np.ndarray | None = None  # frame_confidence() before start() too: it was an AttributeError
        self._busy = threading.Lock()  # held by start() and step() (_one_call_at_a_time)
        # How many samples start() began: a tool sharing the agent (tools/segmenter.py) tells whether it still
        # holds the sample it started.
        self.samples = 0
        # Called with (frame indices, scores) before the CRF in every round (propagate's on_scores); None: off.
        self.score_observer = None
        # The first optimizer built in a process imports torch's compiler stack (~2 s): a one-off
        # library import, paid here rather than inside the first timed interaction.
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
        crf.warm_up(self.config.crf)  # likewise: start the CRF's worker processes now

    def __deepcopy__(self, memo: dict) -> InteractiveAgent:
        """An independent agent holding a copy of this one's sample (two corrections tried from one round): a lock of
        its own; the backbone runtimes (ONNX Runtime sessions, which hold no sample and cannot be copied) and the
        score_observer are shared. It was "cannot pickle '_thread.lock' object"."""
        if not self._busy.acquire(blocking=False):  # a sample half-way through a round is no state to copy
            raise RuntimeError("deepcopy() of an agent while a start() or step() runs on it (another thread?)")
        try:
            clone = object.__new__(type(self))
            memo[id(self)] = clone
            memo[id(self._busy)] = threading.Lock()
            for shared in [*self._runtimes.values(), self.score_observer]:
                memo[id(shared)] = shared
            for name, value in self.__dict__.items():
                setattr(clone, name, copy.deepcopy(value, memo))
            return clone
        finally:
            self._busy.release()

    def __copy__(self):
        # A shallow copy shared the sample's state (its scribbles, pool and masks) with the agent it was copied from,
        # and its lock: a round of one changed the other's without a word.
        raise TypeError("copy.copy() of an InteractiveAgent would share its sample with the original: use "
                        "copy.deepcopy(agent) for an independent one")

    def __reduce_ex__(self, protocol):
        raise TypeError("an InteractiveAgent cannot be pickled (its backbone runtime and CRF workers are this "
                        "process's): save agent.model with agent.model.checkpoint.save_checkpoint and load it with "
                        "InteractiveAgent.from_pretrained, or copy.deepcopy(agent) within the process")

    @property
    def finetune_loss(self) -> str:
        """The loss fine-tuning uses: FinetuneConfig.loss, where `pretraining` is the checkpoint's own."""
        loss = self.config.finetune.loss
        return self.pretraining_loss if loss == "pretraining" else loss

    def input_size_for(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """The backbone's input size for frames of (H, W): AgentConfig.inference_scale times the checkpoint's."""
        return inference_size(self.trained_size, frame_size, self.config.inference_scale)

    def prepare(self, frame_sizes) -> None:
        """Build the backbone runtime for each (H, W) the coming videos have (the ONNX export takes seconds),
        so that no sample's clock pays for it."""
        for size in frame_sizes:
            self._runtime_for(self.input_size_for(tuple(size)))

    def _runtime_for(self, input_size: tuple[int, int]) -> OnnxBackbone | None:
        if input_size not in self._runtimes:
            self._runtimes[input_size] = build_backbone_runtime(
                self.model.backbone, input_size, self.config.backbone_runtime, self.device)
        return self._runtimes[input_size]

    @classmethod
    def from_pretrained(
        cls, checkpoint: str | Path | None = None, config: AgentConfig | None = None,
        device: str | torch.device | None = None,
    ) -> InteractiveAgent:
        """The agent with a checkpoint's weights (default: the shipped one)."""
        config = config or AgentConfig()
        if not isinstance(config, AgentConfig):  # a dict of fields was an AttributeError deep in the build
            raise TypeError(f"config must be an AgentConfig (agent.config), got {type(config).__name__}")
        given = checkpoint if checkpoint is not None else config.checkpoint
        path = default_checkpoint_path() if given is None else _checkpoint_path(given)
        # `device or ...` took 0 and "" (an unset variable) for no device: the config's was used without a word.
        device = resolve_device(config.device if device is None else device)
        with torch.inference_mode(False):  # a caller's inference_mode() would make weights start() cannot reset
            model, model_config, extra = load_checkpoint(path, device)
        config = dataclasses.replace(config, checkpoint=path)
        agent = cls(model, config, pretraining_loss=extra.get("loss", "pairwise"))  # older checkpoints: pairwise
        log.info("agent: %s (%s, d=%d, trained at %s, inference scale %s, transfer grid %s)", path.name,
                 model_config.backbone, model_config.embedding_dim, agent.trained_size, config.inference_scale,
                 agent.grid)
        return agent

    # --- Predictor interface -----------------------------------------------------------------------
    @_one_call_at_a_time
    def start(self, frames: np.ndarray, num_objects: int | None = None, sequence: str | None = None,
              frame_numbers=None) -> None:
        """A new sample: frames (T, H, W, 3) uint8; num_objects None = learn it from the scribbles; sequence: the
        video's name, if known: step() then refuses scribbles that name another (None: any are taken);
        frame_numbers: each frame's number in its video, increasing (a chunk of a longer one with its scribbled
        frames: tools/segmenter.py), so that several objects' identity counts the frames between them (None:
        0..T-1)."""
        # Checked before they are copied: the copy of a video too long for the memory (a memory-mapped file) was
        # numpy's MemoryError, or the process was killed, before the line below that names it.
        given, frames = frames, sample_frames(frames, copy=False)
        check_num_objects(num_objects)
        frame_numbers = _frame_numbers(frame_numbers, len(frames))
        if sequence is not None and not isinstance(sequence, str):
            raise TypeError(f"sequence must be the video's name (str) or None, got {type(sequence).__name__}")
        input_size = self.input_size_for(frames.shape[1:3])
        classes = 2 if num_objects is None else num_objects + 1  # None: one object until the scribbles say more
        self._check_memory(frames.shape[:3], input_size, classes)
        if not isinstance(given, list | tuple):  # a list's frames were stacked into a new array already
            # A copy: a caller that reuses its buffer for the next video must not change this sample's frames.
            frames = frames.copy()
        self.samples += 1
        self.model.load_state_dict(self._pretrained_state)
        self.model.eval()
        self.input_size = input_size
        # A portrait video's grid is portrait too, as its frames are (model.siamese.oriented).
        self.grid = embedding_size(oriented(self.trained_size, frames.shape[1:3]), self.config.transfer.grid_stride)
        self._backbone_runtime = self._runtime_for(self.input_size)
        self._frames = frames
        self.num_objects = num_objects
        self.sequence = sequence
        self._frame_numbers = frame_numbers
        self._classes_checked = classes
        self._features: torch.Tensor | None = None  # (T, C, h, w), filled frame by frame as rounds need them
        self._have_features = np.zeros(len(frames), bool)
        self._embeddings = EmbeddingCache(self.config.embedding_cache_mb * 2**20)
        self.memory = ScribbleMemory(self.grid, self.config.scribbles, num_objects, len(frames))
        # Per-frame costs measured in this sample's rounds (inference/budget.py); public so tests can inject them.
        self.costs = RoundCosts()
        self.last_plan: RoundPlan | None = None  # the plan the last round played (lighter when time was short)
        self._confidence: np.ndarray | None = None
        self._last_labels: np.ndarray | None = None  # (T, H, W) uint8: the last round's prediction
        self._last_keyframes = np.zeros(0, np.int64)  # the frames it transferred to (the others copied them)
        self._round = 0
        self._failed: str | None = None  # why a step failed after changing the state (step refuses to go on)
        incremental = self.config.transfer.incremental and self.config.transfer.aggregation == "topk"
        self._pool = ReferencePool(len(frames), self.grid, self.config.transfer, self.config.seed) if incremental else None
        self._generator = torch.Generator().manual_seed(self.config.seed)
        decay = self.config.transfer.round_fusion_frames
        self._fusion = RoundFusion(len(frames), decay) if decay > 0 else None

    @_one_call_at_a_time
    def step(self, scribbles: dict, plan: RoundPlan | None = None) -> np.ndarray:
        if self._frames is None:
            raise RuntimeError("call start(frames) before step(scribbles)")
        plan = RoundPlan() if plan is None else plan
        if not isinstance(plan, RoundPlan):
            raise TypeError(f"plan must be a RoundPlan, got {type(plan).__name__}")
        if self._failed is not None:
            raise RuntimeError(f"the previous step failed midway ({self._failed}): this sample's state is half a "
                               "round ahead of its masks; call start(frames) again")
        check_sequence(self.sequence, scribbles)
        started = time.perf_counter()
        # Validates them first (and that an object stroke exists): a refused round leaves the sample as it was.
        stroke_frames = self.memory.add(scribbles, require_object=True, check_ids=self._check_classes)
        try:
            reach = self.config.transfer.narrow_correction_reach
            if reach > 0 and self._last_labels is not None:
                self.memory.mark_narrow(narrow_stroke_cells(scribbles, self._last_labels, self.grid, reach))
            return self._play_round(plan, stroke_frames, started)
        except BaseException as error:
            # The memory, the reference pool's top-k or the round fusion may hold part of this round (an
            # interrupt or a MemoryError while folding the new pixels in: those frames never got them, and
            # the next round's masks silently differed from any replay): nothing more from this sample.
            self._failed = typed_line(error)
            raise

    def _play_round(self, plan: RoundPlan, stroke_frames: list[int], started: float) -> np.ndarray:
        """The round after its scribbles joined the memory."""
        self._round += 1
        # Every id drawn, painted over since or not: an erased object keeps its (empty) class, as in a replay of the
        # strokes in chunks (their num_objects), and the pool's classes never shrink.
        num_classes = 1 + (self.num_objects or max(self.memory.drawn_ids | {0}))
        plan = self._fit_to_time(plan, time.perf_counter() - started)
        self.last_plan = plan
        keyframes = select_keyframes(len(self._frames), plan.frame_stride, self.memory.frames())
        features = self._backbone_features(keyframes)
        confirm = self.config.scribbles.confirm_corrected_frames
        # one-object: only a sample known to hold one (num_objects=None may grow a second later, whose place the
        # confirmed background would hold).
        if self._last_labels is not None and (confirm == "all" or (confirm == "one-object" and self.num_objects == 1)):
            for frame in stroke_frames:
                self.memory.confirm(frame, labels_on_grid(self._last_labels[frame], self.grid))
        if self.config.scribbles.check_halo:
            self._settle_halo(features)
        labels = self._scribble_labels(features)

        budget = self._finetune_budget(plan, time.perf_counter() - started)
        pseudo = self._pseudo_labels(self._last_keyframes, labels) if budget > 0 else {}
        self.last_finetune = finetune(
            self.model, {f: features[f] for f in [*labels, *pseudo]}, labels, budget, self.config.finetune,
            self.config.transfer.samples_per_class, generator=self._generator, loss=self.finetune_loss,
            topk=self.config.transfer.topk, pseudo_labels=pseudo,
        )
        if self.last_finetune.steps > 0:  # the decoder changed: every kept embedding is stale
            self._embeddings.clear()
        embed = lambda index, size: self._embed(features, index, size)  # noqa: E731

        propagation_start = time.perf_counter()
        crf_config = None
        if plan.use_crf:
            crf_config = self.config.crf
            if plan.crf_scale is not None:
                crf_config = dataclasses.replace(crf_config, scale=plan.crf_scale)
        if self._fusion is not None:
            self._fusion.begin(stroke_frames)
        if self._pool is not None:
            # The model changed if fine-tuning took a step: similarities to the old pool are stale.
            # An object stroked for the first time after round 1 lifts the derived background where it may be
            # (memory.missing_objects): the pooled pixels of that background go too.
            self._pool.update(self.model, features, labels, num_classes, rebuild=self.last_finetune.steps > 0,
                              frames=keyframes, weights=self._reference_weights(), embed=embed,
                              forget_receded=self._round > 1 and bool(self.memory.new_objects))
            refs = ref_labels = None
            scorer = lambda index: self._pool.scores(self.model, index)  # noqa: E731
        else:
            refs, ref_labels = reference_set(self.model, features, labels, self.grid, self._reference_weights())
            scorer = None
        result = propagate(
            self.model, features, refs, ref_labels, num_classes, self._frames, self.grid, self.config.transfer,
            crf_config, generator=self._generator, scorer=scorer, keyframes=keyframes,
            detail=self._detail(features, refs, ref_labels, embed), fusion=self._fusion,
            on_scores=self.score_observer, previous=self._last_labels, identity=self.config.identity,
            strokes={f: grid.numpy() for f, grid in labels.items()}, flow=self.config.flow, embed=embed,
            frame_numbers=self._frame_numbers,
        )
        propagation = time.perf_counter() - propagation_start
        self.costs.transfer = (propagation - result.crf_seconds - result.fill_seconds) / len(keyframes)
        if len(keyframes) < len(self._frames):
            self.costs.fill = result.fill_seconds / (len(self._frames) - len(keyframes))
        if crf_config is not None and result.crf_seconds > 0:
            self.costs.crf[crf_config.scale] = result.crf_seconds / len(keyframes)
        self._confidence = result.confidence
        # Its own copy (uint8: ids are at most MAX_OBJECT_ID): the masks returned are the caller's to change, and
        # changing them in place changed the next round's frames between keyframes.
        self._last_labels = result.labels.astype(np.uint8)
        self._last_keyframes = keyframes
        log.debug("round %d: %d scribbled frames, fine-tune %d steps (%.1fs), total %.1fs", self._round,
                  len(labels), self.last_finetune.steps, self.last_finetune.seconds, time.perf_counter() - started)
        return result.labels

    def _embed(self, features: torch.Tensor, index: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """Embeddings of frames whose backbone features exist (a kept embedding of a frame not yet computed would
        stay wrong for the rest of the sample)."""
        index = np.asarray(index, np.int64)
        if not self._have_features[index].all():
            raise RuntimeError(f"embeddings of frames {index[~self._have_features[index]].tolist()} were asked for "
                               "before their backbone features")
        return self._embeddings.embed(self.model, features, index, size)

    def _detail(self, features: torch.Tensor, refs: torch.Tensor | None, ref_labels: torch.Tensor | None,
                embed: Embed) -> Detail | None:
        """Boundary detail on the decoder's native grid when it is finer than the transfer grid (detail.py)."""
        fine = embedding_size(self.input_size, 4)
        if self.config.transfer.detail_band == 0 or fine[0] <= self.grid[0]:
            return None
        scale, shift = head_affine(self.model.head, self.device)
        if self._pool is not None:
            by_class = self._pool.reference_embeddings(self.model, features, embed)
        else:
            sign = 1.0 if scale >= 0 else -1.0
            by_class = {int(c): refs[ref_labels == c][:self.config.transfer.max_reference_pixels] * sign
                        for c in torch.unique(ref_labels).tolist()}
        return Detail(fine, by_class, scale, shift)

    def next_scribble_frame_candidates(self, count: int) -> list[int] | None:
        """The `count` least confident frames of the last prediction."""
        if not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        if self._confidence is None:
            return None
        return [int(i) for i in np.argsort(self._confidence)[:count]]

    def frame_confidence(self) -> np.ndarray | None:
        """(T,) the last prediction's confidence per frame (mean margin of the best class score over the
        second best; higher = surer), None before the first round."""
        return None if self._confidence is None else self._confidence.copy()

    # --- internals -----------------------------------------------------------------------------------
    def _sample_bytes(self, shape: tuple[int, int, int], input_size: tuple[int, int], num_classes: int) -> int:
        backbone = self.model.backbone
        return sample_bytes(shape[0], shape[1:3], backbone.out_channels,
                            embedding_size(input_size, backbone.output_stride), self.grid,  # the feature grid
                            self.config.transfer.topk, num_classes)

    def _check_memory(self, shape: tuple[int, int, int], input_size: tuple[int, int], num_classes: int) -> None:
        """MemoryError, before any work, when the sample would not fit in the memory available (footprint.py);
        TooManyObjects when its frames would with one object."""
        need = self._sample_bytes(shape, input_size, num_classes)
        free = available_bytes()
        if free is not None and need > free:
            if num_classes > 2 and self._sample_bytes(shape, input_size, 2) <= free:  # one object would fit
                raise TooManyObjects(f"num_objects: {num_classes - 1} objects make {num_classes} classes, each "
                                     f"holding scores of every frame: {shape[0]} frames of {shape[1]}x{shape[2]} "
                                     f"need about {need / 2**30:.1f} GiB with them, more than the "
                                     f"{free / 2**30:.1f} GiB available (one object would fit): fewer objects, or "
                                     "a shorter video or chunk")
            raise MemoryError(f"frames: {shape[0]} frames of {shape[1]}x{shape[2]} need about {need / 2**30:.1f} GiB "
                              f"in one sample, more than the {free / 2**30:.1f} GiB available: segment a long video "
                              "in chunks (agent.tools.segmenter.VideoSegmenter, or python -m agent.segment)")

    def _check_classes(self, object_ids: set[int]) -> None:
        """With num_objects=None, start() counted one object; every id up to the highest drawn is a class whose
        scores each frame keeps (an id of 254 alone made 255): TooManyObjects, before the round changes the sample,
        when the classes added do not fit in the memory available."""
        classes = 1 + max(object_ids | {1})
        if self.num_objects is not None or classes <= self._classes_checked:
            return
        shape = self._frames.shape[:3]
        more = (self._sample_bytes(shape, self.input_size, classes)
                - self._sample_bytes(shape, self.input_size, self._classes_checked))
        free = available_bytes()
        if free is not None and more > free:
            raise TooManyObjects(f"scribbles: object id {classes - 1} makes {classes} classes, each holding scores of "
                                 f"every frame: {shape[0]} frames of {shape[1]}x{shape[2]} need about "
                                 f"{more / 2**30:.1f} GiB more, beyond the {free / 2**30:.1f} GiB available: number "
                                 "the objects 1..N, or pass num_objects to start()")
        self._classes_checked = classes

    def _backbone_features(self, frames: np.ndarray) -> torch.Tensor:
        """(T, C, h, w) backbone features; those of `frames` are computed now if they were not yet (the
        others stay zero until a round needs them)."""
        missing = np.asarray(frames, np.int64)[~self._have_features[frames]]
        if len(missing):
            started = time.perf_counter()
            images = self.model.preprocess(self._frames[missing], self.input_size)
            computed = self.model.extract_features(images, backbone=self._backbone_runtime)
            if self._features is None:
                self._features = computed.new_zeros((len(self._frames), *computed.shape[1:]))
            self._features[torch.from_numpy(missing)] = computed
            self._have_features[missing] = True
            seconds = time.perf_counter() - started
            self.costs.backbone = seconds / len(missing)
            log.debug("backbone features of %d frames in %.1fs", len(missing), seconds)
        return self._features

    def _pseudo_labels(self, keyframes: np.ndarray, labelled: dict) -> dict[int, torch.Tensor]:
        """finetune.pseudo_label_frames of the last round's keyframes (its transferred frames, not its copies)
        that are not scribbled, evenly spread, with its labels on the grid, minus one cell on each side of a
        label change (the band where it was least sure)."""
        count = self.config.finetune.pseudo_label_frames
        free = [int(f) for f in keyframes if int(f) not in labelled]
        if not count or self._last_labels is None or not free:
            return {}
        chosen = [free[i] for i in np.unique(np.linspace(0, len(free) - 1, min(count, len(free))).round().astype(int))]
        pseudo = {}
        for frame in chosen:
            grid = grid_labels(self._last_labels[frame], self.grid)
            grid[boundary_band(grid[None], 1)[0]] = UNLABELED
            pseudo[frame] = grid
        return pseudo

    def _reference_weights(self) -> dict[int, np.ndarray] | None:
        """{frame: (h, w)} how many times each labelled cell counts as a reference (transfer.correction_weight
        for the cells a correction drew, but once along a narrow error strip); None when every cell counts once."""
        weight = self.config.transfer.correction_weight
        if weight == 1:
            return None
        return {f: np.where(self.memory.correction_cells(f) & ~self.memory.narrow_cells(f), weight, 1)
                for f in self.memory.frames()}

    def _scribble_labels(self, features: torch.Tensor) -> dict[int, torch.Tensor]:
        """Label maps on the embedding grid for every scribbled frame (see ScribbleMemory)."""
        frames = self.memory.frames()
        spare = self.config.scribbles.spare_predicted_objects and self._last_labels is not None
        predicted = {f: objects_on_grid(self._last_labels[f], self.grid) if spare else None for f in frames}
        if not self.memory.needs_least_similar():
            return {f: torch.from_numpy(self.memory.labels(f, predicted_objects=predicted[f])) for f in frames}
        # No background label anywhere yet: the pixels least similar to the object scribbles are.
        out = {}
        for frame in frames:
            raw = torch.from_numpy(self.memory.raw_labels(frame))
            similarity = self._object_similarity(features, frame, raw)
            out[frame] = torch.from_numpy(self.memory.labels(frame, similarity, predicted[frame]))
        return out

    @torch.no_grad()
    def _settle_halo(self, features: torch.Tensor) -> None:
        """Keep a dilation halo cell's label only where a transfer from the frame's labels without the halo (strokes,
        derived background) scores its class above every other by scribbles.halo_margin: a stroke drawn along an
        object's edge (annotators' often are) would otherwise make the background beside it the object's reference."""
        for frame in self.memory.frames():
            halo = self.memory.halo(frame)
            if not halo.any():
                continue
            raw = self.memory.raw_labels(frame)
            emb = self.model.decode(features[frame][None].float().to(self.device), self.grid)
            similarity = None
            if self.memory.needs_least_similar():
                strokes = np.where(halo, UNLABELED, raw)
                similarity = self._object_similarity(features, frame, torch.from_numpy(strokes), emb)
            labels = torch.from_numpy(self.memory.labels(frame, similarity, halo=False)).reshape(-1)
            labelled = labels != UNLABELED
            refs = emb[0].reshape(emb.shape[1], -1).t()[labelled.to(self.device)]
            num_classes = 1 + max(int(raw.max()), int(labels.max()))
            scores = transfer_labels(emb, refs, labels[labelled], self.config.transfer, self.model.head,
                                     num_classes=num_classes, generator=self._generator).scores[0].cpu().numpy()
            cls = np.clip(raw, 0, None)[None]
            own = np.take_along_axis(scores, cls, 0)[0]
            np.put_along_axis(scores, cls, -np.inf, 0)
            self.memory.settle_halo(frame, halo & (own - scores.max(0) >= self.config.scribbles.halo_margin))

    @torch.no_grad()
    def _object_similarity(self, features: torch.Tensor, frame: int, raw_labels: torch.Tensor,
                           emb: torch.Tensor | None = None) -> np.ndarray:
        """Per-pixel similarity of `frame` to the closest object's scribbles under the current model: its own, and
        those on other frames of the objects stroked there but never here (memory.missing_objects),
        which may be on this frame unstroked (`emb`: the frame's embeddings on the grid, when the caller decoded
        them already)."""
        if emb is None:
            emb = self.model.decode(features[frame][None].float().to(self.device), self.grid)
        flat_labels = raw_labels.reshape(-1).to(self.device)
        keep = flat_labels > 0
        refs, ref_labels = [emb[0].reshape(emb.shape[1], -1).t()[keep]], [flat_labels[keep]]
        missing = self.memory.missing_objects(frame)
        for other in self.memory.object_frames(missing) if missing else []:
            other_labels = torch.from_numpy(self.memory.raw_labels(other)).reshape(-1).to(self.device)
            take = torch.isin(other_labels, torch.tensor(sorted(missing), device=self.device))
            other_emb = self.model.decode(features[other][None].float().to(self.device), self.grid)
            refs.append(other_emb[0].reshape(other_emb.shape[1], -1).t()[take])
            ref_labels.append(other_labels[take])
        result = transfer_labels(emb, torch.cat(refs), torch.cat(ref_labels), self.config.transfer, self.model.head,
                                 generator=self._generator)
        return result.scores[0, 1:].amax(0).cpu().numpy()

    def _estimate(self, plan: RoundPlan) -> float | None:
        return estimate_seconds(plan, self.costs, len(self._frames), self.memory.frames(), self._have_features,
                                self.config.crf.scale)

    def _fit_to_time(self, plan: RoundPlan, spent: float) -> RoundPlan:
        """The plan, lightened when the sample's time left cannot hold it (inference/budget.py)."""
        if plan.time_left is None:
            return plan
        available = plan.time_left - spent
        fitted, estimate = fit_plan(plan, self.costs, available, len(self._frames), self.memory.frames(),
                                    self._have_features, self.config.crf.scale)
        if fitted != plan:
            log.warning("round %d: %.1f s left, the planned round needs about %.1f s: lightened to CRF %s, "
                        "frame stride %d", self._round, available, self._estimate(plan) or 0.0,
                        f"at scale {fitted.crf_scale or self.config.crf.scale}" if fitted.use_crf else "off",
                        fitted.frame_stride)
        return fitted

    def _finetune_budget(self, plan: RoundPlan, spent: float) -> float:
        """The plan's budget, cut so that propagation still fits in the sample's remaining time."""
        budget = plan.finetune_seconds
        if plan.time_left is not None:
            budget = min(budget, plan.time_left - spent - reserve_seconds(self._estimate(plan)))
        return max(0.0, budget)
