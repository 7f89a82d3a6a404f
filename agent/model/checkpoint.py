"""Save and load the Siamese model with its ModelConfig, as plain types loadable with weights_only=True.

File layout (a dict): format, model_config (plain dict, mean/std filled in), state_dict, extra, half.
Any problem loading raises CheckpointError with one line saying what is wrong.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, ModelConfig, from_dict, to_dict
from ..errors import CommandParser, first_line
from ..paths import output_file_problem, path_arg, special_file
from .backbones import available_backbones
from .siamese import SiameseEmbedder, build_model

log = logging.getLogger(__name__)

FORMAT = "simlearn-ivos/siamese-v1"
# Tensors smaller than this stay float32 in half checkpoints: BN statistics and biases are tiny and
# lose the most from fp16 rounding.
HALF_MIN_NUMEL = 1024
_PLAIN = (str, int, float, bool, type(None))


class CheckpointError(RuntimeError):
    """A missing, corrupt or mismatched checkpoint."""


def _plain(value: Any, where: str = "extra") -> Any:
    """Tuples -> lists, and refuse anything torch.load(weights_only=True) would reject later."""
    if isinstance(value, _PLAIN) or torch.is_tensor(value):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, where) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return str(value)
    raise ValueError(f"{where}: {type(value).__name__} cannot be stored in a checkpoint (use plain types)")


def save_atomic(payload: Any, path: Path) -> None:
    """torch.save `payload` to a temporary file beside `path`, renamed over it once whole: a crash or signal
    mid-save never leaves a truncated file, and a failed save leaves no stray temporary file. A write the file
    system refuses (a full disk, a file-size limit) raises OSError naming `path`: torch wraps it in a
    RuntimeError ("unexpected pos ..."), a traceback in every command that saves, and left a half-written
    `.tmp` behind."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: two savers of one path never mix
    try:
        with open(tmp, "wb") as handle:  # torch's own open raised RuntimeError, not OSError (a traceback)
            torch.save(payload, handle)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as error:
        cause = error if isinstance(error, OSError) else error.__cause__ or error.__context__
        if isinstance(cause, OSError) and cause.filename in (None, tmp, str(tmp)):  # a write's names no file
            raise OSError(cause.errno, cause.strerror or first_line(cause), str(path)) from error
        raise
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(
    path: str | Path,
    model: SiameseEmbedder,
    model_config: ModelConfig | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write model weights + config (+ plain `extra`, e.g. training step); half=True stores fp16 weights."""
    path = Path(path)
    config = model_config or model.config
    if config.mean is None or config.std is None:  # store the normalisation actually used
        config = model.config
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point() and tensor.numel() >= HALF_MIN_NUMEL:
            rounded = tensor.half()
            if not torch.isfinite(rounded).all() and torch.isfinite(tensor).all():  # a checkpoint no command loads
                raise CheckpointError(f"{path}: {key} holds weights up to {float(tensor.abs().max()):.4g}, beyond "
                                      f"fp16's {torch.finfo(torch.float16).max:g}: save it without half")
            tensor = rounded
        state[key] = tensor.clone()
    payload = {
        "format": FORMAT,
        "model_config": _plain(to_dict(config), "model_config"),
        "state_dict": state,
        "extra": _plain(extra or {}),
        "half": bool(half),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(payload, path)
    log.info("saved checkpoint %s (%.1f MB%s)", path, path.stat().st_size / 1e6, ", fp16" if half else "")
    return path


def truncated_why(error: BaseException) -> str | None:
    """For torch's error on a truncated or damaged archive (a copy or save cut short), its zip reader's first
    sentence, not the four of advice after it (a 400-character line); None for any other error."""
    text = first_line(error)
    return f"truncated or damaged: {text.split('. ')[0]}" if text.startswith("PytorchStreamReader failed") else None


def load_plain(path: Path, map_location: Any = "cpu") -> Any:
    """torch.load(weights_only=True): tensors and plain values, never code. A pickle of other objects raises
    UnpicklingError saying so in one line: torch's own message advised `weights_only=False`, which would run
    whatever the file holds, and its "Detected pickle protocol" warning came before the error line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            if "weights only load failed" not in str(error).lower():
                raise
            found = re.search(r"GLOBAL ([\w.]+)|Unsupported operand (\d+)", str(error))
            what = (found.group(1) or f"pickle opcode {found.group(2)}") if found else "it"
            raise pickle.UnpicklingError(f"the weights-only loader refuses {what}: only tensors and plain values "
                                         "are read, never other Python objects, whose unpickling could run any "
                                         "code") from None


def _what_instead(path: Path, payload: Any) -> str:
    """What a .pt that is not a checkpoint holds, when it is one of the usual mix-ups (both were only "not a
    simlearn-ivos/siamese-v1 checkpoint"): agent.train's last.pt, or a model's bare torch state_dict."""
    if isinstance(payload, dict) and {"state_dict", "optimizer", "iteration"} <= payload.keys():
        return (f": it is agent.train's training state (for --resume), pass the model.pt beside it "
                f"({path.parent / 'model.pt'})")
    if isinstance(payload, dict) and payload and all(torch.is_tensor(v) for v in payload.values()):
        return (": it holds bare weights (a torch state_dict), without the model settings they fit; save the model "
                "with agent.model.checkpoint.save_checkpoint(path, model)")
    return ""


def _folder_advice(folder: Path) -> str:
    """What to pass for a folder given as a checkpoint: its model.pt when there is one. A training run's folder
    before its first save was told to pass that model.pt, which did not exist."""
    if (folder / "model.pt").is_file():
        return f": name its .pt file (e.g. {folder / 'model.pt'})"
    if any((folder / name).exists() for name in ("last.pt", "losses.csv", "train_config.json")):
        return ": a training run's folder that holds no model.pt (training has not saved one yet)"
    return ": name a .pt file (it holds no model.pt)"


def _read(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory{_folder_advice(path)}")
    special = special_file(path)
    if special:  # it was "does not exist"
        raise CheckpointError(f"checkpoint {path} is {special}, not a .pt file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:  # it was "corrupt or not a checkpoint (EOFError)": a save that never ran, a touch
        raise CheckpointError(f"checkpoint {path} is an empty file (0 bytes), not a saved model")
    try:
        payload = load_plain(path)
    except PermissionError as error:  # it was "corrupt or not a checkpoint"
        raise CheckpointError(f"checkpoint {path} cannot be read ({error.strerror})") from error
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint ({truncated_why(error) or first_line(error)})") from error
    except Exception as error:  # noqa: BLE001  (the weights-only unpickler fails on text with e.g. a KeyError)
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint ({type(error).__name__} while "
                              "unpickling)") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a {FORMAT} checkpoint{_what_instead(path, payload)}")
    for key in ("model_config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"checkpoint {path} has no '{key}'")
    odd = [k for k, v in payload["state_dict"].items() if not torch.is_tensor(v)]
    if odd:
        raise CheckpointError(f"checkpoint {path}: state_dict entry {odd[0]!r} is not a tensor")
    # Read anyway: checked here, before any model is built (NaN weights would make every mask one class).
    bad = [k for k, v in payload["state_dict"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path}: {bad[0]} holds NaN or infinite weights")
    return payload


def read_checkpoint_config(path: str | Path) -> ModelConfig:
    """Only the ModelConfig stored in a checkpoint."""
    path = Path(path)
    return _model_config(path, _read(path))


def _model_config(path: Path, payload: dict[str, Any]) -> ModelConfig:
    # Unknown keys are ignored (a newer version's checkpoint); a wrong value is an error.
    try:
        config = from_dict(ModelConfig, payload["model_config"], strict=False, where="model_config")
    except ConfigError as error:
        raise CheckpointError(f"checkpoint {path} has an invalid {error}") from error
    if config.backbone not in available_backbones():  # known before the model is built
        raise CheckpointError(f"checkpoint {path}: unknown backbone '{config.backbone}' (this version has "
                              f"{', '.join(available_backbones())})")
    return config


def check_expected(path: Path, config: ModelConfig, expected: ModelConfig) -> None:
    """CheckpointError unless a checkpoint's `config` has the backbone, output stride, d, feature levels and skip
    level of `expected`."""
    for name in ("backbone", "output_stride", "embedding_dim", "feature_levels", "skip_level"):
        have, want = getattr(config, name), getattr(expected, name)
        if have != want:
            raise CheckpointError(f"checkpoint {path} has {name}={have!r}, expected {want!r}")


def check_checkpoint_fits(path: str | Path) -> ModelConfig:
    """Read a checkpoint and check its weights fit the model it names (keys, shapes, floating-point where
    the model's are) without loading them; its ModelConfig. Building the bare model takes well under a second:
    a preflight can afford it, where loading the agent takes 10-15 s."""
    return _fitted(Path(path), quiet=True)[1]


def _fitted(path: Path, expected: ModelConfig | None = None, quiet: bool = False):
    """(bare model, its config, the float32 state that fits it, the payload), or CheckpointError."""
    payload = _read(path)
    config = _model_config(path, payload)
    if expected is not None:
        check_expected(path, config, expected)
    try:
        model = build_model(config, load_pretrained=False, quiet=quiet)
    except (ValueError, KeyError, IndexError, TypeError) as error:  # a stored value the builder cannot take
        raise CheckpointError(f"checkpoint {path}: cannot build its model ({first_line(error)})") from error
    current = model.state_dict()
    stored = payload["state_dict"]
    missing = sorted(set(current) - set(stored))
    unexpected = sorted(set(stored) - set(current))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit its {config.backbone} model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    for key, tensor in stored.items():
        if tensor.shape != current[key].shape:
            raise CheckpointError(
                f"checkpoint {path}: {key} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(current[key].shape)}"
            )
        # load_state_dict would cast integers into float weights silently (masks of one class)
        if current[key].is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(f"checkpoint {path}: {key} is {str(tensor.dtype).removeprefix('torch.')}, the "
                                  "model's weights are floating point")
    state = {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
    return model, config, state, payload


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", expected: ModelConfig | None = None
) -> tuple[SiameseEmbedder, ModelConfig, dict[str, Any]]:
    """Rebuild the model from the stored config (no ImageNet download) and load its float32 weights.

    expected: when given, the checkpoint's backbone / output stride / d / feature levels must match it.
    Returns (model in eval mode on `device`, its ModelConfig, extra).
    """
    path = Path(path)
    model, config, state, payload = _fitted(path, expected)
    model.load_state_dict(state)
    # float32 whatever torch.set_default_dtype() a caller set: a float64 model (built in float64, the weights cast to
    # it) met float32 frames, "Input type (float) and bias type (double) should be the same" in the first round.
    model.to(device=device, dtype=torch.float32).eval()
    log.info("loaded checkpoint %s (%s, d=%d)", path, config.backbone, config.embedding_dim)
    return model, model.config, payload.get("extra") or {}


# The shipped default model (trained by the command in agent/checkpoints/README.md).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "default.pt"


def default_checkpoint_path() -> Path:
    if not DEFAULT_CHECKPOINT.is_file():
        raise CheckpointError(
            f"the shipped checkpoint {DEFAULT_CHECKPOINT} is missing: reinstall the package or pass --checkpoint"
        )
    return DEFAULT_CHECKPOINT


def main(argv: list[str] | None = None) -> int:
    """python -m agent.model.checkpoint SRC DST [--half] [--overwrite]: re-save a checkpoint (e.g. fp16 for
    shipping)."""

    parser = CommandParser(prog="python -m agent.model.checkpoint", description=main.__doc__)
    parser.add_argument("source", type=path_arg, help="the checkpoint to read")
    parser.add_argument("destination", type=path_arg, help="the .pt file to write (an existing one only with --overwrite)")
    parser.add_argument("--half", action="store_true", help="store weights as fp16 (half the size)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing destination file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    destination = args.destination
    try:
        # Checked before the source is read: a finished checkpoint is never replaced silently.
        problem = output_file_problem(destination, "name the .pt file to write")
        if problem:
            parser.exit(2, f"error: {problem}\n")
        if destination.exists() and not args.overwrite:
            parser.exit(2, f"error: {destination}: exists (an earlier checkpoint?): pass --overwrite or another "
                           "destination\n")
        # `SRC SRC --half --overwrite` replaced the trained fp32 weights with their fp16 rounding, for good.
        if destination.exists() and args.source.exists() and os.path.samefile(destination, args.source):
            parser.exit(2, f"error: {destination}: is the checkpoint it reads (--overwrite would replace it): name "
                           "another destination\n")
        model, config, extra = load_checkpoint(args.source)
        save_checkpoint(destination, model, config, extra, half=args.half)
    except CheckpointError as error:
        parser.exit(2, f"error: {error}\n")
    except OSError as error:  # a full disk, no permission, a name too long
        parser.exit(2, f"error: {destination}: cannot write it ({error.strerror or first_line(error)})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
