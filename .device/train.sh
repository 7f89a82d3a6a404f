#!/usr/bin/env bash
# On a lent GPU machine (the device tool), from the repo root, with .device/carry carried (.device/pack.py):
# one-shot J of raw features and the shipped checkpoint, then the whole network (backbone unfrozen, the paper's
# `full` mode) fine-tuned from the shipped checkpoint with the agent's own top-k loss for TRAIN_SECONDS, then
# one-shot J of the result. What comes back in $OUT (6-7 files): log.txt, one_shot_before.json,
# one_shot_after.json, model.pt (fp16), losses.csv, validation.jsonl (after 2000 iterations), train_info.json.
#   device run: bash .device/train.sh          carry: [".device/carry"]          timeout_s: 600
# A dry run here: OUT=/tmp/out DEVICE=cpu SKIP_INSTALL=1 TRAIN_SECONDS=20 PYTHON=.venv/bin/python bash .device/train.sh
set -euo pipefail  # pipefail: the tee below keeps the run's exit status
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
TRAIN_SECONDS=${TRAIN_SECONDS:-360}   # the rest of a 600-s call: install ~60 s, one-shot J before and after
ITERATIONS=${ITERATIONS:-20000}       # the poly schedule's length (the run stops at TRAIN_SECONDS before it ends)
# Where the weights start. last.pt (with the optimiser's state) is too large to come back, so a later session
# goes on from a returned model.pt copied into the carry: INIT=.device/carry/init.pt
INIT=${INIT:-agent/checkpoints/default.pt}
LR_BACKBONE=${LR_BACKBONE:-2.5e-4}   # the paper's rates (TrainConfig)
LR_DECODER=${LR_DECODER:-5e-4}
RUN=${RUN:-/tmp/run}
ROOT=${ROOT:-.device/carry/davis}
HELD_OUT=${HELD_OUT:-breakdance-flare,car-turn,dance-jump,horsejump-low,mallard-fly,rhino}  # TrainConfig.holdout
# 1: add the backbone's stride-4 stage to the decoder (model.skip_level; not better with a frozen backbone,
# docs/TRAINING.md); empty: the shipped decoder.
SKIP_LEVEL=${SKIP_LEVEL:-}
# The whole script's own limit, under the device call's 600 s: training gets what is left of it after the install
# and the first one-shot J, less the time that one took (the second) and 45 s (loading the videos, saving), at most
# TRAIN_SECONDS. (A slow install used to leave the call killed before one_shot_after.json.)
SCRIPT_SECONDS=${SCRIPT_SECONDS:-540}
# 1: go on from $RUN/last.pt (a rerun on the same, still warm, machine); unset, $RUN must hold no earlier run.
RESUME=${RESUME:-}
SITE=${SITE:-/tmp/site}  # where the carried packages are installed
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}  # a progress line every 10 s: log.txt stays short

fail() { echo "error: $1" >&2; exit 2; }

# Checked before the install and the first one-shot J (a minute or two of the device's time).
preflight() {
  [ -d "$OUT" ] && [ -w "$OUT" ] || fail "OUT=$OUT: not a folder this script can write in"
  [ -f "$ROOT/ImageSets/2017/train.txt" ] || fail "ROOT=$ROOT: no ImageSets/2017/train.txt (run python .device/pack.py --davis-root ../shared/davis here, then carry [\".device/carry\"])"
  if [ -z "${SKIP_INSTALL:-}" ] && ! compgen -G ".device/carry/whl/dacite-*" >/dev/null; then
    fail ".device/carry/whl: no packages (or an old pack without dacite): run python .device/pack.py --davis-root ../shared/davis --overwrite here"
  fi
  [ -f "$INIT" ] || fail "INIT=$INIT: no such checkpoint (copy it into .device/carry, which travels)"
  if [ -z "$RESUME" ] && { [ -e "$RUN/model.pt" ] || [ -e "$RUN/last.pt" ]; }; then
    fail "RUN=$RUN: holds an earlier run: RESUME=1 goes on from its last.pt, or name another RUN"
  fi
  case "$SCRIPT_SECONDS,$TRAIN_SECONDS" in *[!0-9,]*) fail "SCRIPT_SECONDS=$SCRIPT_SECONDS, TRAIN_SECONDS=$TRAIN_SECONDS: whole seconds";; esac
}

run() {
  set -E
  trap 'rc=$?; echo "error: .device/train.sh: exit $rc after ${SECONDS} s (what it wrote is in \$OUT) from: $BASH_COMMAND" >&2; exit $rc' ERR
  if [ -z "${SKIP_INSTALL:-}" ]; then
    if [ ! -f "$SITE/.installed" ]; then  # once per machine: a rerun on the warm one skips the build (about a minute)
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --no-build-isolation \
        --target "$SITE" .device/carry/whl/*
      touch "$SITE/.installed"
    fi
    export PYTHONPATH=$SITE:$PWD
  fi
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  local before=$SECONDS
  "$PYTHON" -m agent.bench --one-shot-only --davis-root "$ROOT" --device "$DEVICE" --output "$OUT/one_shot_before.json"
  local seconds=$(( SCRIPT_SECONDS - SECONDS - (SECONDS - before) - 45 ))
  [ "$seconds" -ge 30 ] || fail "SCRIPT_SECONDS=$SCRIPT_SECONDS: only ${seconds} s would be left for training after ${SECONDS} s of install and one-shot J"
  [ "$seconds" -le "$TRAIN_SECONDS" ] || seconds=$TRAIN_SECONDS
  echo "training for ${seconds} s (${SECONDS} s so far; SCRIPT_SECONDS=$SCRIPT_SECONDS)"
  "$PYTHON" -m agent.train --davis-root "$ROOT" --mode full --device "$DEVICE" --backbone efficientnet-lite2 \
    --pretrained none --set train.init_checkpoint="$INIT" ${SKIP_LEVEL:+--set model.skip_level="$SKIP_LEVEL"} \
    ${RESUME:+--resume} \
    --set train.loss=topk --set train.feature_scale=1.5 --iterations "$ITERATIONS" --max-seconds "$seconds" \
    --lr-backbone "$LR_BACKBONE" --lr-decoder "$LR_DECODER" \
    --checkpoint-every 500 --validate-every 2000 --val-sequences "$HELD_OUT" --output-dir "$RUN"
  "$PYTHON" -m agent.model.checkpoint "$RUN/model.pt" "$OUT/model.pt" --half
  "$PYTHON" -m agent.bench --one-shot-only --davis-root "$ROOT" --device "$DEVICE" --checkpoint "$OUT/model.pt" \
    --output "$OUT/one_shot_after.json"
  cp "$RUN/losses.csv" "$RUN/train_info.json" "$OUT/"
  if [ -f "$RUN/validation.jsonl" ]; then cp "$RUN/validation.jsonl" "$OUT/"; fi
  echo "done in ${SECONDS} s"
}

: "${OUT:?OUT is set by the device tool: the folder whose files come back}"
preflight
run 2>&1 | tee -a "$OUT/log.txt"
