"""One-shot label transfer (no fine-tuning, no scribbles): the ground truth of frame 0 -> every k-th
frame, scored with the DAVIS Jaccard. Validation during pretraining and the benchmark both use it."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TransferConfig
from ..data import compat  # noqa: F401
from ..data.davis import VOID_LABEL, DatasetError, DavisReader, SequenceInfo, open_image
from ..inference.scribbles import grid_labels
from ..inference.transfer import transfer_labels
from ..model.onnx_backbone import build_backbone_runtime
from ..model.siamese import SiameseEmbedder, inference_size, oriented

from davisinteractive.metrics import batched_jaccard  # isort: skip  (after compat)

log = logging.getLogger(__name__)


def check_one_shot_videos(reader: DavisReader, infos: list[SequenceInfo]) -> None:
    """DatasetError for a checked video one-shot J cannot score: with one frame, it scored frame 0's annotation
    transferred to itself (about 0.9) into the mean without a word; without an object in frame 0's annotation (all
    background or void) there is nothing to transfer."""
    single = next((info.name for info in infos if info.num_frames < 2), None)
    if single is not None:
        raise DatasetError(f"{reader.frames_dir(single)}: one frame: one-shot J transfers frame 0's annotation to "
                           "later frames, and this video has none")
    for info in infos:  # all void: "label transfer needs at least one labelled reference pixel", at validation
        path = reader.annotation_paths(info.name)[0]
        with open_image(path, "annotation") as image:
            labels = np.asarray(image, dtype=np.uint8)
        if not ((labels > 0) & (labels != VOID_LABEL)).any():
            raise DatasetError(f"{path}: no object in frame 0's annotation: one-shot J transfers frame 0's objects to "
                               "later frames (objects that appear later would score 0)")


@torch.no_grad()
def one_shot_j(
    model: SiameseEmbedder,
    frames: np.ndarray,
    masks: np.ndarray,
    transfer_config: TransferConfig,
    stride: int = 3,
    generator: torch.Generator | None = None,
    raw_features: bool = False,
    inference_scale: float | str = "auto",
    runtimes: dict | None = None,
) -> float:
    """Mean J (over objects and the frames stride, 2*stride, ...) of transferring frame 0's ground truth, as
    the agent transfers: frames at its inference size (AgentConfig.inference_scale), on its grid.

    raw_features: compare the backbone's features directly (no decoder): ImageNet without Siamese training.
    runtimes: {input size: backbone runtime} reused across calls with the same weights (built when missing).
    """
    model.eval()
    device = next(model.parameters()).device
    num_objects = int(masks[(masks != VOID_LABEL)].max())
    query_ids = list(range(stride, len(frames), stride)) or [len(frames) - 1]
    grid = model.embedding_size(oriented(tuple(model.config.input_size), frames.shape[1:3]), transfer_config.grid_stride)
    embed = model.feature_embeddings if raw_features else model.decode

    size = inference_size(tuple(model.config.input_size), frames.shape[1:3], inference_scale)
    runtimes = {} if runtimes is None else runtimes
    if size not in runtimes:  # the agent's backbone runtime (ONNX Runtime on a CPU), for these weights
        runtimes[size] = build_backbone_runtime(model.backbone, size, "auto", device)
    runtime = runtimes[size]

    def embeddings(ids: list[int]) -> torch.Tensor:
        return embed(model.extract_features(model.preprocess(frames[ids], size), backbone=runtime).to(device), grid)

    reference = embeddings([0])[0]
    ref_labels = grid_labels(masks[0], grid).to(device)
    keep = ref_labels.reshape(-1) >= 0
    refs = reference.reshape(reference.shape[0], -1).t()[keep]
    ref_classes = ref_labels.reshape(-1)[keep]
    predictions = []
    for start in range(0, len(query_ids), 4):
        ids = query_ids[start : start + 4]
        query = embeddings(ids)
        result = transfer_labels(query, refs, ref_classes, transfer_config, model.head,
                                 num_classes=num_objects + 1, generator=generator)
        full = F.interpolate(result.scores, size=masks.shape[1:], mode="bilinear", align_corners=False)
        predictions.append(full.argmax(1).cpu().numpy())
    prediction = np.concatenate(predictions)
    truth = masks[query_ids].astype(np.int64)
    return float(np.mean(batched_jaccard(truth, prediction, average_over_objects=True, nb_objects=num_objects)))


def one_shot_benchmark(
    model: SiameseEmbedder,
    reader: DavisReader,
    sequences: list[str],
    transfer_config: TransferConfig,
    stride: int = 3,
    seed: int = 0,
    raw_features: bool = False,
    inference_scale: float | str = "auto",
) -> dict[str, float]:
    """One-shot J per sequence of a DAVIS-format root."""
    results = {}
    runtimes: dict = {}  # one export per frame size for this call: the weights may change between calls
    for sequence in sequences:
        frames, masks = reader.load_frames(sequence), reader.load_annotations(sequence)
        results[sequence] = one_shot_j(model, frames, masks, transfer_config, stride,
                                       torch.Generator().manual_seed(seed), raw_features, inference_scale, runtimes)
        log.info("one-shot J %s: %.3f", sequence, results[sequence])
    return results
