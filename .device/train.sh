#!/usr/bin/env bash
# On a lent GPU machine (the device tool), from the repo root, with .device/carry carried (.device/pack.py):
# one-shot J of raw features and the shipped checkpoint, then the whole network (backbone unfrozen, the paper's
# `full` mode) fine-tuned from the shipped checkpoint with the agent's own top-k loss for TRAIN_SECONDS, then
# one-shot J of the result. What comes back in $OUT (7 files): log.txt, one_shot_before.json,
# one_shot_after.json, model.pt (fp16), losses.csv, validation.jsonl, train_info.json.
#   device run: bash .device/train.sh          carry: [".device/carry"]          timeout_s: 600
# A dry run here: OUT=/tmp/out DEVICE=cpu SKIP_INSTALL=1 TRAIN_SECONDS=20 PYTHON=.venv/bin/python bash .device/train.sh
set -euo pipefail  # pipefail: the tee below keeps the run's exit status
: "${OUT:?OUT is set by the device tool: the folder whose files come back}"
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
export PYTHONUNBUFFERED=1

run() {
  if [ -z "${SKIP_INSTALL:-}" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --no-build-isolation \
      --target /tmp/site .device/carry/whl/*
    export PYTHONPATH=/tmp/site:$PWD
  fi
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  "$PYTHON" -m agent.bench --one-shot-only --davis-root "$ROOT" --device "$DEVICE" --output "$OUT/one_shot_before.json"
  "$PYTHON" -m agent.train --davis-root "$ROOT" --mode full --device "$DEVICE" --backbone efficientnet-lite2 \
    --pretrained none --set train.init_checkpoint="$INIT" ${SKIP_LEVEL:+--set model.skip_level="$SKIP_LEVEL"} \
    --set train.loss=topk --set train.feature_scale=1.5 --iterations "$ITERATIONS" --max-seconds "$TRAIN_SECONDS" \
    --lr-backbone "$LR_BACKBONE" --lr-decoder "$LR_DECODER" \
    --checkpoint-every 500 --validate-every 2000 --val-sequences "$HELD_OUT" --output-dir "$RUN"
  "$PYTHON" -m agent.model.checkpoint "$RUN/model.pt" "$OUT/model.pt" --half
  "$PYTHON" -m agent.bench --one-shot-only --davis-root "$ROOT" --device "$DEVICE" --checkpoint "$OUT/model.pt" \
    --output "$OUT/one_shot_after.json"
  cp "$RUN/losses.csv" "$RUN/train_info.json" "$OUT/"
  [ -f "$RUN/validation.jsonl" ] && cp "$RUN/validation.jsonl" "$OUT/"
  echo "done"
}

run 2>&1 | tee -a "$OUT/log.txt"
