"""Speed, memory and one-shot quality figures: python -m agent.bench [--davis-root ../shared/davis].

Prints (and writes as JSON): backbone milliseconds per frame at 240x427 and 480x854, and at the agent's
frame size in PyTorch against ONNX Runtime (the agent's CPU runtime); label-transfer
time per frame and its GFLOP/s beside this machine's matmul GFLOP/s measured in the same run; the
decoder's time per frame; what a later round costs per frame (the incremental reference pool's update
against a full transfer, and the dense CRF at quarter, half and full resolution, in one process and on
every core); peak memory; and, with a DAVIS root, one-shot J on its val videos and its held-out training
videos (--holdout) for ImageNet features without Siamese training versus the checkpoint. A
backbone without ImageNet weights (the tiny test backbone; ResNet offline) is compared with its random
initialisation instead, reported as "random_features" with the reason in "one_shot_baseline".
Times depend on the machine: compare the ratios printed beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data as skimage_data

from ..config import HOLDOUT, AgentConfig, CRFConfig, ModelConfig, TransferConfig, comma_names
from ..data.davis import DatasetError, DavisReader
from ..data.validation import validate_sequence, validate_subset
from ..device import resolve_device
from ..errors import CommandParser, first_line, os_error_line
from ..inference.crf import refine_frames, warm_up, worker_count
from ..inference.reference_pool import ReferencePool
from ..inference.transfer import transfer_labels
from ..model.backbones import WeightsUnavailableError
from ..model.checkpoint import CheckpointError, default_checkpoint_path, load_checkpoint
from ..model.onnx_backbone import OnnxBackbone, onnxruntime_available
from ..model.siamese import SiameseEmbedder, build_model, inference_size
from ..paths import output_file_problem, path_arg
from .one_shot import check_one_shot_videos, one_shot_benchmark
from .outputs import OutputDirError, atomic_write_text

log = logging.getLogger("agent.bench")
# Each repeat times every speed figure once more: a typo such as 10**8 would measure for ever.
MAX_REPEATS = 100


def _timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    seconds = _timed(lambda: (a @ b, torch.cuda.synchronize() if device.type == "cuda" else None), repeats)
    return 2 * size**3 / seconds / 1e9


@torch.no_grad()
def backbone_ms(model: SiameseEmbedder, size: tuple[int, int], repeats: int) -> float:
    device = next(model.parameters()).device
    images = torch.randn(1, 3, *size, device=device)
    return 1000 * _timed(lambda: model.backbone_features(images), repeats)


@torch.no_grad()
def transfer_figures(model: SiameseEmbedder, transfer: TransferConfig, num_classes: int,
                     references_per_class: int, repeats: int) -> dict:
    """Seconds per frame and GFLOP/s of the similarity matmuls for one embedding-grid frame."""
    device = next(model.parameters()).device
    height, width = model.embedding_size(stride=transfer.grid_stride)
    d = model.embedding_dim
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, d, height, width, device=device)
    refs = torch.randn(num_classes * references_per_class, d, device=device)
    labels = torch.arange(num_classes, device=device).repeat_interleave(references_per_class)
    seconds = _timed(lambda: transfer_labels(query, refs, labels, transfer, model.head, num_classes,
                                             generator), repeats)
    per_class = transfer.samples_per_class if transfer.aggregation == "eq3" else transfer.max_reference_pixels
    compared = num_classes if transfer.aggregation == "eq3" else num_classes * min(per_class, references_per_class)
    flops = 2.0 * height * width * compared * d
    features = model.extract_features(torch.randn(4, 3, *model.config.input_size, device=device))
    decode = _timed(lambda: model.decode(features.to(device), (height, width)), repeats) / 4
    return {"transfer_seconds_per_frame": seconds, "transfer_gflops": flops / seconds / 1e9,
            "decode_seconds_per_frame": decode, "references": int(len(refs)), "grid": [height, width]}


@torch.no_grad()
def incremental_figures(model: SiameseEmbedder, transfer: TransferConfig, repeats: int, frames: int = 4) -> dict:
    """Seconds per frame of a later round's reference-pool update: every frame's running top-k against
    max_new_reference_pixels new pixels per class, after a first round that pooled up to
    max_reference_pixels per class (two fully labelled frames, two classes)."""
    device = next(model.parameters()).device
    features = model.extract_features(torch.randn(frames, 3, *model.config.input_size, device=device))
    grid = model.embedding_size(stride=transfer.grid_stride)
    rng = np.random.default_rng(0)
    labels = {f: rng.integers(0, 2, grid) for f in range(3)}
    times = []
    for _ in range(repeats):
        pool = ReferencePool(frames, grid, transfer)
        pool.update(model, features, {0: labels[0], 1: labels[1]}, 2)
        started = time.perf_counter()
        pool.update(model, features, labels, 2)
        times.append(time.perf_counter() - started)
    return {"update_seconds_per_frame": float(np.median(times)) / frames,
            "new_references_per_class": transfer.max_new_reference_pixels}


@torch.no_grad()
def backbone_runtime_figures(model: SiameseEmbedder, size: tuple[int, int], repeats: int) -> dict:
    """Backbone ms/frame at the agent's frame size in eager PyTorch and in ONNX Runtime (CPU only: the
    agent's `auto` runtime), and the largest feature difference between the two."""
    device = next(model.parameters()).device
    if device.type != "cpu" or not onnxruntime_available():
        return {"size": list(size), "onnxruntime": None}
    images = torch.randn(1, 3, *size)
    runtime = OnnxBackbone(model.backbone, size)
    difference = float((runtime(images) - model.backbone_features(images)).abs().max())
    torch_ms = 1000 * _timed(lambda: model.backbone_features(images), repeats)
    onnx_ms = 1000 * _timed(lambda: runtime(images), repeats)
    return {"size": list(size), "onnxruntime": True, "torch_ms": torch_ms, "onnxruntime_ms": onnx_ms,
            "max_feature_difference": difference}


CRF_SCALES = (0.25, 0.5, 1.0)  # cpu's round 1, cpu's later rounds, paper / no-finetune


def crf_figures(size: tuple[int, int], repeats: int, frames: int = 8) -> dict:
    """Seconds per frame of the dense CRF on a size (H, W) photograph with soft two-class scores, at the
    scales the strategies use (quarter, half, full), in this process and on worker_count() processes."""
    image = cv2.resize(skimage_data.chelsea(), size[::-1], interpolation=cv2.INTER_AREA)
    rows, cols = np.mgrid[: size[0], : size[1]]
    blob = np.exp(-(((rows - size[0] / 2) / (size[0] / 4)) ** 2 + ((cols - size[1] / 2) / (size[1] / 4)) ** 2))
    noise = np.random.default_rng(0).normal(0, 0.3, size)
    scores = np.stack([np.zeros(size), 4 * blob - 2 + noise]).astype(np.float32)
    images, score_maps = np.stack([image] * frames), np.stack([scores] * frames)
    out = {"frames": frames, "size": list(size), "workers": worker_count(CRFConfig())}
    for scale in CRF_SCALES:
        for workers in (1, 0):
            config = CRFConfig(scale=scale, workers=workers)
            warm_up(config)
            seconds = _timed(lambda config=config: refine_frames(images, score_maps, config), repeats)
            out[f"scale_{scale}_{'one_process' if workers == 1 else 'workers'}_seconds_per_frame"] = seconds / frames
    return out


def untrained_baseline(config: ModelConfig, device: torch.device) -> tuple[str, SiameseEmbedder, str | None]:
    """The checkpoint's architecture without Siamese training: (name, model in eval mode, why not ImageNet).

    ImageNet weights when the backbone has them ("imagenet_features"); otherwise its random initialisation
    ("random_features", seeded), with the reason.
    """
    reason = None
    try:
        model = build_model(replace(config, pretrained="imagenet"))
        if model.backbone.weights != "imagenet":
            reason = f"{config.backbone} has no ImageNet weights"
    except WeightsUnavailableError as error:
        reason = f"ImageNet weights for {config.backbone} unavailable ({error})"
    if reason is None:
        return "imagenet_features", model.to(device).eval(), None
    log.warning("one-shot baseline: %s; comparing with random backbone weights instead", reason)
    torch.manual_seed(0)
    return "random_features", build_model(replace(config, pretrained="none")).to(device).eval(), reason


def peak_memory_mb(device: torch.device) -> dict:
    out = {"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m agent.bench", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=path_arg, default=None, help="default: the shipped checkpoint")
    parser.add_argument("--davis-root", type=path_arg, default=None,
                        help="for one-shot J on its val videos and the held-out training videos (TrainConfig.holdout)")
    parser.add_argument("--holdout", default=None,
                        help="comma-separated held-out training videos measured beside val (default: those of "
                             "TrainConfig.holdout the root has; '' for none): the --holdout you trained with")
    parser.add_argument("--one-shot-only", action="store_true", help="skip the speed figures")
    parser.add_argument("--aggregation", default=None, help="override the transfer aggregation (eq3|topk)")
    parser.add_argument("--stride", type=int, default=3, help="one-shot: every k-th frame (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls per speed figure, their median (default %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--output", type=path_arg, default=Path("outputs/bench.json"),
                        help="JSON of every figure (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    torch.manual_seed(0)
    # Everything the benchmark reads or writes is checked before its minutes of work, one line if wrong.
    try:
        if args.stride < 1 or args.repeats < 1:
            raise ValueError(f"--stride and --repeats must be >= 1, got {args.stride} and {args.repeats}")
        if args.repeats > MAX_REPEATS:
            raise ValueError(f"--repeats {args.repeats}: at most {MAX_REPEATS}")
        transfer = TransferConfig(**({"aggregation": args.aggregation} if args.aggregation else {}))
        if args.one_shot_only and args.davis_root is None:  # it measured nothing and replaced --output with that
            raise ValueError("--one-shot-only: one-shot J is measured on --davis-root, and none was given")
        if args.davis_root is not None:
            # one-shot J reads frames and annotations
            infos = validate_subset(args.davis_root, "val", scribbles=False)
            val = [info.name for info in infos]
            reader = DavisReader(args.davis_root)
            held_out = held_out_videos(reader, args.holdout, val)
            for sequence in held_out:  # measured too (one_shot_figures)
                infos.append(validate_sequence(reader, sequence, scribbles=False))
            check_one_shot_videos(reader, infos)
        elif args.holdout is not None:
            raise ValueError("--holdout: held-out videos are measured on --davis-root, and none was given")
        problem = output_file_problem(args.output, "--output is the JSON file to write")  # an earlier one is replaced
        if problem:
            raise OutputDirError(problem)
        path = args.checkpoint or default_checkpoint_path()
        if args.output.resolve() == path.resolve():  # the figures would replace the model they measure
            raise OutputDirError(f"{args.output}: is the checkpoint it measures (--checkpoint {path}): name the JSON "
                                 "file to write")
        device = resolve_device(args.device)
        model, config, extra = load_checkpoint(path, device)
        # Made once the checkpoint loads: a bad one left a new empty folder.
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=args.output.parent):
                pass  # a writable place; an earlier --output stays as it is until the new figures replace it
        except OSError as error:  # it named the probe's temporary file, or none: the --output is what to change
            raise OutputDirError(f"{args.output}: cannot write it ({error.strerror or first_line(error)})") from error
    except (DatasetError, CheckpointError, OutputDirError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # it was Python's own text, "[Errno 13] Permission denied: '...'"
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2
    report: dict = {"device": str(device), "threads": torch.get_num_threads(), "checkpoint": str(path),
                    "model": {"backbone": config.backbone, "output_stride": config.output_stride,
                              "feature_levels": config.feature_levels, "skip_level": config.skip_level,
                              "input_size": list(config.input_size)},
                    "aggregation": transfer.aggregation}

    if not args.one_shot_only:
        report.update(speed_figures(model, config, transfer, args.repeats, device))
    if args.davis_root is not None:
        report.update(one_shot_figures(model, config, transfer, args.davis_root, args.stride, device, val, held_out))
    report["peak_memory"] = peak_memory_mb(device)

    _print(report)
    try:
        atomic_write_text(args.output, json.dumps(report, indent=2))
    except OSError as error:  # a full disk after minutes of measuring: a traceback; the figures are printed above
        print(f"error: {args.output}: cannot write it ({error.strerror or error}); the figures are printed above",
              file=sys.stderr)
        return 2
    print(f"written: {args.output}")
    return 0


def speed_figures(model: SiameseEmbedder, config: ModelConfig, transfer: TransferConfig, repeats: int,
                  device: torch.device) -> dict:
    report: dict = {"matmul_gflops": matmul_gflops(device)}
    for size in ((240, 427), (480, 854)):
        report[f"backbone_ms_{size[0]}x{size[1]}"] = backbone_ms(model, size, repeats)
    agent_size = inference_size(tuple(config.input_size), (480, 854), AgentConfig().inference_scale)
    report["backbone_runtime"] = backbone_runtime_figures(model, agent_size, repeats)
    report["transfer"] = transfer_figures(model, transfer, num_classes=2, references_per_class=4096, repeats=repeats)
    report["transfer"]["fraction_of_matmul_peak"] = report["transfer"]["transfer_gflops"] / report["matmul_gflops"]
    if transfer.aggregation == "topk":
        report["incremental"] = incremental_figures(model, transfer, repeats)
    input_size = tuple(config.input_size)
    report["crf"] = crf_figures((2 * input_size[0], 2 * input_size[1]), repeats)  # frames at 2x the input
    return report


def held_out_videos(reader: DavisReader, given: str | None, val: list[str]) -> list[str]:
    """The held-out training videos one-shot J is measured on: `given` (comma-separated, each in the root and not
    one of the `val` videos; '' for none), or by default those of TrainConfig.holdout the root has (a partial root
    has some)."""
    if given is None:
        return [s for s in HOLDOUT if reader.has_sequence(s)]
    names = comma_names(given, "--holdout")
    reader.check_names(names, "--holdout")  # a path was measured under that name
    missing = [name for name in names if not reader.has_sequence(name)]
    if missing:  # a typo measured nothing in its place, without a word
        raise DatasetError(f"--holdout {', '.join(missing)}: not in {reader.root / 'JPEGImages' / reader.resolution}")
    listed = set(val)
    both = [name for name in names if name in listed]
    if both:  # measured twice, its val J counted into the held-out mean without a word
        raise DatasetError(f"--holdout {', '.join(both)}: a val video ({reader.subset_file('val')}), measured as val "
                           "already: held-out videos are the training videos agent.train --holdout left out")
    return list(dict.fromkeys(names))


def one_shot_figures(model: SiameseEmbedder, config: ModelConfig, transfer: TransferConfig, root: Path, stride: int,
                     device: torch.device, val: list[str], held_out: list[str]) -> dict:
    """One-shot J of the checkpoint and of the backbone's features without Siamese training, on the root's `val`
    videos and on `held_out` (held_out_videos), at the agent's frame size."""
    reader = DavisReader(root)
    splits = {"val": val}
    if held_out:
        splits["held_out"] = held_out
    name, baseline, reason = untrained_baseline(config, device)
    figures: dict = {name: {}, "checkpoint": {}}
    for split, sequences in splits.items():
        for label, net, raw in ((name, baseline, True), ("checkpoint", model, False)):
            values = one_shot_benchmark(net, reader, sequences, transfer, stride, raw_features=raw)
            figures[label][split] = {**values, "mean": float(np.mean(list(values.values())))}
    return {"one_shot_baseline": {"features": name, "reason": reason}, "one_shot_J": figures}


def _print(report: dict) -> None:
    print(f"device {report['device']} ({report['threads']} threads); model {report['model']}")
    if "transfer" in report:
        _print_speed(report)
    if "one_shot_J" in report:
        for name, splits in report["one_shot_J"].items():
            for split, values in splits.items():
                per = ", ".join(f"{k} {v:.3f}" for k, v in values.items() if k != "mean")
                print(f"one-shot J, {name}, {split}: mean {values['mean']:.3f} ({per})")
        if report["one_shot_baseline"]["reason"]:
            print(f"(no ImageNet baseline: {report['one_shot_baseline']['reason']})")
    print(f"peak memory: {report['peak_memory']}")


def _print_speed(report: dict) -> None:
    t = report["transfer"]
    print(f"matmul: {report['matmul_gflops']:.1f} GFLOP/s")
    print(f"backbone: {report['backbone_ms_240x427']:.0f} ms/frame at 240x427, "
          f"{report['backbone_ms_480x854']:.0f} ms/frame at 480x854 "
          f"(ratio {report['backbone_ms_480x854'] / report['backbone_ms_240x427']:.2f})")
    r = report["backbone_runtime"]
    if r["onnxruntime"]:
        print(f"backbone at the agent's frame size {r['size'][0]}x{r['size'][1]}: {r['torch_ms']:.0f} ms/frame in "
              f"PyTorch, {r['onnxruntime_ms']:.0f} ms/frame in ONNX Runtime ({r['torch_ms'] / r['onnxruntime_ms']:.2f}x; "
              f"features within {r['max_feature_difference']:.1e})")
    print(f"label transfer ({report['aggregation']}, {t['references']} reference pixels, grid {t['grid']}): "
          f"{1000 * t['transfer_seconds_per_frame']:.1f} ms/frame, {t['transfer_gflops']:.1f} GFLOP/s "
          f"= {100 * t['fraction_of_matmul_peak']:.0f}% of matmul; decode {1000 * t['decode_seconds_per_frame']:.1f} ms/frame")
    if "incremental" in report:
        inc = report["incremental"]
        print(f"later round, incremental pool (+{inc['new_references_per_class']} pixels per class): "
              f"{1000 * inc['update_seconds_per_frame']:.1f} ms/frame, "
              f"{t['transfer_seconds_per_frame'] / inc['update_seconds_per_frame']:.1f}x faster than the full transfer")
    c = report["crf"]
    for scale in CRF_SCALES:
        one, many = (c[f"scale_{scale}_{k}_seconds_per_frame"] for k in ("one_process", "workers"))
        print(f"dense CRF at scale {scale} of {c['size'][0]}x{c['size'][1]}: {1000 * one:.0f} ms/frame in one "
              f"process, {1000 * many:.0f} ms/frame on {c['workers']} workers ({one / many:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
