"""Pretraining of the Siamese model: python -m agent.train (torchrun for several processes).

Each iteration draws a random training video and a random pair of its frames, augments both, pools K
pixels per class in each and minimises the pairwise "same object?" loss (the paper's recipe: SGD,
momentum 0.9, weight decay 5e-4, lr 2.5e-4 backbone / 5e-4 decoder and head, polynomial decay 0.9).

Two modes:
  full             the paper's: the whole network trains on augmented images (flip, scale, crop,
                   colour jitter). Meant for a GPU.
  frozen-backbone  the backbone stays at its ImageNet weights; its features of every training frame are
                   computed once and the decoder + head train on them with flip/scale/rotation applied
                   to features and labels alike (the same machinery the interactive fine-tuning uses).
                   Hundreds of times cheaper per step, which is what makes training on a CPU possible.
Validation videos are never used for training; validation is one-shot J on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .checkpoint import CheckpointError, save_checkpoint
from .config import ModelConfig, TrainConfig, TransferConfig, from_dict, to_dict
from .data.davis import DatasetError, DavisReader
from .device import resolve_device
from .model.siamese import SiameseEmbedder, build_model
from .model.similarity import pairwise_loss, sample_pixels
from .training_data import load_training_set

log = logging.getLogger("agent.train")
MODES = ("frozen-backbone", "full")


class PairLoss(nn.Module):
    """The Siamese step as one module (so DistributedDataParallel can wrap it): two views -> loss."""

    def __init__(self, model: SiameseEmbedder, frozen_backbone: bool) -> None:
        super().__init__()
        self.model = model
        self.frozen_backbone = frozen_backbone

    def forward(self, inputs: torch.Tensor, labels: list[torch.Tensor], samples_per_class: int,
                generator: torch.Generator) -> torch.Tensor:
        out_size = tuple(labels[0].shape)
        if self.frozen_backbone:
            embeddings = self.model.decode(inputs, out_size)
        else:
            embeddings = self.model.decode(self.model.backbone_features(inputs), out_size)
        pooled = [sample_pixels(lab, samples_per_class, generator) for lab in labels]
        return pairwise_loss(embeddings[0], pooled[0], embeddings[1], pooled[1], self.model.head)


def make_optimizer(model: SiameseEmbedder, config: TrainConfig, frozen_backbone: bool) -> torch.optim.SGD:
    groups = [{"params": list(model.decoder.parameters()) + list(model.head.parameters()),
               "lr": config.lr_decoder}]
    if not frozen_backbone:
        groups.append({"params": list(model.backbone.parameters()), "lr": config.lr_backbone})
    return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay)


def poly_factor(iteration: int, total: int, power: float) -> float:
    return (1 - min(iteration, total) / total) ** power


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train(config: TrainConfig, model_config: ModelConfig, mode: str, transfer: TransferConfig,
          resume: bool = False, val_sequences: list[str] | None = None, max_frames_per_video: int = 0) -> Path:
    """Run pretraining; returns the path of the final model checkpoint (output_dir/model.pt)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
    rank, world = _distributed()
    device = resolve_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(config.seed + rank)
    generator = torch.Generator().manual_seed(config.seed + 1000 * rank)
    frozen = mode == "frozen-backbone"
    output_dir = Path(config.output_dir)
    state_path, model_path = output_dir / "last.pt", output_dir / "model.pt"

    model = build_model(model_config).to(device)
    optimizer = make_optimizer(model, config, frozen)
    start_iteration = 0
    if resume and state_path.is_file():
        start_iteration = _load_training_state(state_path, model, optimizer, device)
        log.info("resumed from %s at iteration %d", state_path, start_iteration)
    if frozen:
        model.backbone.requires_grad_(False)
    data = load_training_set(config, model, frozen, max_frames_per_video, rank=rank)
    step = PairLoss(model, frozen).to(device)
    if world > 1:
        step = nn.parallel.DistributedDataParallel(step, find_unused_parameters=False)
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_config.json").write_text(json.dumps(
            {"train": to_dict(config), "model": to_dict(model.config), "mode": mode, "world_size": world,
             "training_videos": data.names, "command": " ".join(sys.argv)}, indent=2, default=str))
    progress = tqdm(range(start_iteration, config.iterations), initial=start_iteration,
                    total=config.iterations, desc="train", disable=rank != 0)
    history: list[dict] = []
    running = None
    model.train()
    if frozen:
        model.backbone.eval()  # frozen BN statistics
    for iteration in progress:
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * poly_factor(iteration, config.iterations, config.poly_power)
        inputs, labels = data.sample_pair(generator)
        loss = step(inputs.to(device), [lab.to(device) for lab in labels],
                    transfer.samples_per_class, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        progress.set_postfix(loss=f"{running:.4f}")
        done = iteration + 1
        if rank == 0 and (done % config.checkpoint_every == 0 or done == config.iterations):
            _save_training_state(state_path, model, optimizer, done, config)
            save_checkpoint(model_path, model, extra={"iterations": done, "mode": mode})
        if rank == 0 and config.validate_every and (done % config.validate_every == 0 or done == config.iterations):
            record = {"iteration": done, "loss": running, **_validate(model, config, transfer, val_sequences)}
            history.append(record)
            log.info("validation at %d: %s", done, json.dumps(record))
            with (output_dir / "validation.jsonl").open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            model.train()
            if frozen:
                model.backbone.eval()
    progress.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return model_path


def _validate(model: SiameseEmbedder, config: TrainConfig, transfer: TransferConfig,
              sequences: list[str] | None) -> dict:
    from .evaluate import one_shot_benchmark

    if config.davis_root is None:
        return {}
    reader = DavisReader(config.davis_root)
    sequences = sequences or reader.sequences("val")
    results = one_shot_benchmark(model, reader, sequences, transfer, stride=3, seed=config.seed)
    return {"one_shot_J": float(np.mean(list(results.values()))), "per_sequence": results}


def _save_training_state(path: Path, model: SiameseEmbedder, optimizer, iteration: int,
                         config: TrainConfig) -> None:
    payload = {"model_config": dataclasses.asdict(model.config), "state_dict": model.state_dict(),
               "optimizer": optimizer.state_dict(), "iteration": iteration,
               "train_config": json.loads(json.dumps(to_dict(config), default=str))}
    payload["model_config"] = json.loads(json.dumps(payload["model_config"]))
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_training_state(path: Path, model: SiameseEmbedder, optimizer, device: torch.device) -> int:
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
        saved = from_dict(ModelConfig, payload["model_config"])
        if (saved.backbone, saved.embedding_dim) != (model.config.backbone, model.config.embedding_dim):
            raise CheckpointError(f"{path} was trained with {saved.backbone} d={saved.embedding_dim}, "
                                  f"not {model.config.backbone} d={model.config.embedding_dim}")
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        return int(payload["iteration"])
    except CheckpointError:
        raise
    except Exception as error:  # corrupt file, wrong format
        raise CheckpointError(f"cannot resume from {path}: {error}; delete it or pick another --output-dir") from error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults, model_defaults = TrainConfig(), ModelConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis-root", type=Path, default=None, help="DAVIS-format root with ImageSets/2017/train.txt")
    parser.add_argument("--synthetic-sequences", type=int, default=defaults.synthetic_sequences)
    parser.add_argument("--mode", choices=MODES, default="frozen-backbone")
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--backbone", default=model_defaults.backbone)
    parser.add_argument("--pretrained", default=model_defaults.pretrained)
    parser.add_argument("--output-stride", type=int, default=model_defaults.output_stride)
    parser.add_argument("--feature-levels", default=None, help="comma-separated backbone stages, e.g. 2,3,4")
    parser.add_argument("--embedding-dim", type=int, default=model_defaults.embedding_dim)
    parser.add_argument("--input-size", default="x".join(map(str, model_defaults.input_size)), help="HxW")
    parser.add_argument("--normalize-embeddings", action="store_true")
    parser.add_argument("--samples-per-class", type=int, default=TransferConfig().samples_per_class)
    parser.add_argument("--max-frames-per-video", type=int, default=0, help="0: all frames")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--validate-every", type=int, default=defaults.validate_every)
    parser.add_argument("--val-sequences", default=None, help="comma-separated (default: the root's val.txt)")
    parser.add_argument("--output-dir", type=Path, default=defaults.output_dir)
    parser.add_argument("--resume", action="store_true", help="continue from output-dir/last.pt")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    height, width = (int(v) for v in args.input_size.lower().split("x"))
    model_config = ModelConfig(
        backbone=args.backbone, pretrained=args.pretrained, output_stride=args.output_stride,
        embedding_dim=args.embedding_dim, input_size=(height, width),
        feature_levels=tuple(int(v) for v in args.feature_levels.split(",")) if args.feature_levels else None,
        normalize_embeddings=args.normalize_embeddings,
    )
    config = TrainConfig(
        davis_root=args.davis_root, synthetic_sequences=args.synthetic_sequences, iterations=args.iterations,
        checkpoint_every=args.checkpoint_every, validate_every=args.validate_every, seed=args.seed,
        device=args.device, output_dir=args.output_dir,
    )
    transfer = TransferConfig(samples_per_class=args.samples_per_class)
    val = [s.strip() for s in args.val_sequences.split(",")] if args.val_sequences else None
    try:
        path = train(config, model_config, args.mode, transfer, args.resume, val, args.max_frames_per_video)
    except (DatasetError, CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: the last checkpoint is in {args.output_dir}", file=sys.stderr)
        return 130
    print(f"model: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

