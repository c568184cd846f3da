#!/bin/sh
# Train on a lent GPU machine (docs/GPU.md). Runs in the repository root there, with .gpu/
# carried: .gpu/train (from `aecodec train DATA --pack-to .gpu/train`) and .gpu/whl (compressai's
# cp312 wheel). Warm-starts from the shipped default weights (or INIT) and trains:
#   0. (BATCH=auto, the default) a probe of the batch sizes in PROBE (a few seconds each);
#   1. CONST minutes at a constant learning rate (LR, default 2e-4), then DECAY minutes of cosine
#      decay to 5 % of it, its length in steps measured from the run's speed: one process
#      (aecodec train --minutes CONST+DECAY --decay-minutes DECAY), no resume in between.
# Leaves in $OUT: the raw weights and their moving average at the end (raw.safetensors,
# ema.safetensors, each under the 16 MiB a returned file may have, with their export records),
# the moving average when the decay began (const-ema.safetensors) and the training log.
# AMP=bf16: the transforms' convolutions in bfloat16 (untried on a GPU, and its gradients measured
# far off float32's on the CPU: docs/EXPERIMENTS.md); AMP=auto: probe both.
# COMPILE=1: the training pass through torch.compile (aecodec train --compile; falls back to
# eager mode if the compiler fails on the first step); a MORE=1 call keeps call 1's choice.
# MORE=1: a follow-up call on the still-warm machine: resumes the run in RUN_DIR at call 1's batch,
# ramps back up to half of call 1's learning rate (--rewarm) for CONST minutes, then decays over
# DECAY minutes, in one process again.
#   usage: sh docs/gpu-train.sh [CONST [DECAY [extra aecodec train options]]]
set -eu
CONST=${1:-4.5}
DECAY=${2:-3}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
PY=${PYTHON:-python3}
RUN=${RUN_DIR:-/tmp/run}
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT"
t0=$(date +%s)
say() { echo "[gpu-train +$(( $(date +%s) - t0 ))s] $*"; }
if ! $PY -c "import importlib.util as u, sys; sys.exit(u.find_spec('compressai') is None)"; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl
fi
PKG=${PKG_DIR:-/tmp/pkg}  # codec/ as the package aecodec, without installing it
mkdir -p "$PKG" && ln -sfn "$PWD/codec" "$PKG/aecodec"
export PYTHONPATH="$PKG:/tmp/site" PYTHONUNBUFFERED=1
# INIT: the weights to start from (default: the shipped default model); a file to carry in .gpu/
if [ "${MORE:-0}" = 1 ]; then  # a follow-up call: resume $RUN with call 1's batch and rate
    [ -f "$RUN/gpu-train.env" ] || { echo "gpu-train: MORE=1 needs the run of an earlier call in $RUN" >&2; exit 2; }
    COMPILE_ASKED=${COMPILE:-}  # COMPILE=0 or 1 given to this call wins over call 1's
    . "$RUN/gpu-train.env"
    [ -n "$COMPILE_ASKED" ] && COMPILE=$COMPILE_ASKED
fi
INIT=${INIT:-weights/$($PY -c "import json; m = json.load(open('weights/manifest.json')); print(m['models'][m['default']]['file'])")}
[ -f "$INIT" ] || { echo "gpu-train: no such weights file: $INIT" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
# BATCH=auto (the default): time a few steps at each batch of PROBE (default 16,32,64) and take
# the largest reached through doublings that each add >= 20 % crops/s. The learning rate stays
# 2e-4 whatever the batch (4e-4 at batch 64 blew up once in session 9).
# AMP=auto probes float32 (TF32) and bf16 in the same process and takes bf16 only if its best
# batch gives >= 1.3x the crops/s of float32's (batch probe only: BATCH=auto).
BATCH=${BATCH:-auto}
if [ "$BATCH" = auto ]; then
    say "probing batch sizes ${PROBE:-16,32,64}, amp ${AMP:-off}"
    PICK=$($PY -m aecodec.train .gpu/train --device "${DEVICE:-cuda}" --run-dir /tmp/probe --fresh \
        --init "$INIT" --crop 256 --threads "${THREADS:-8}" --sampler "${SAMPLER:-auto}" --amp "${AMP:-off}" \
        --quiet --probe-batches "${PROBE:-16,32,64}" | tee "$OUT/probe.json" | $PY -c "import json, sys
r = json.loads(sys.stdin.read().splitlines()[-1]); print(r['recommended_amp'], r['recommended_batch'])") || PICK=
    if [ -n "$PICK" ]; then
        AMP=${PICK% *}
        BATCH=${PICK#* }
    else
        say "the probe failed: batch 16, float32, crops cut on the host"; BATCH=16; AMP=off; SAMPLER=${SAMPLER:-host}
    fi
fi
[ "${AMP:-off}" = auto ] && AMP=off  # a fixed BATCH: no probe, float32
LR=${LR:-2e-4}  # at batch 64, 4e-4 (the square-root rule from 2e-4 at 16) blew up once (docs/GPU.md)
set -- --device "${DEVICE:-cuda}" --run-dir "$RUN" --batch "$BATCH" --crop 256 --sampler "${SAMPLER:-auto}" --amp "${AMP:-off}" \
    --ckpt-minutes 2 --val-minutes 2 --threads "${THREADS:-8}" --quiet "$@"
[ "${COMPILE:-0}" = 1 ] && set -- "$@" --compile
TOTAL=$($PY -c "print($CONST + $DECAY)")
# One process per call: the constant rate, then (--decay-minutes) a cosine decay over the last DECAY
# minutes, its length in steps measured from the run's own speed. A new process resuming straight
# into a high rate spiked on the H100 in session 9 (docs/GPU.md; the cause, a stale auxiliary
# gradient in the clipped norm, was fixed in session 11); a --rewarm ramp did not.
rm -f "$RUN/decay-start.pt"  # a previous call's would pass for this one's
rc=0
if [ "${MORE:-0}" = 1 ]; then
    LR2=$($PY -c "print(f'{$LR / 2:.3g}')")
    say "more: $CONST min back up to lr $LR2 (half of call 1's) at batch $BATCH, then a $DECAY-min decay, resuming $RUN"
    $PY -m aecodec.train .gpu/train "$@" --rewarm --lr "$LR2" --minutes "$TOTAL" --decay-minutes "$DECAY" || rc=$?
else
    say "$CONST min at batch $BATCH, lr $LR from $INIT, then a $DECAY-min decay"
    $PY -m aecodec.train .gpu/train "$@" --fresh --init "$INIT" --lr "$LR" --minutes "$TOTAL" --decay-minutes "$DECAY" || rc=$?
    [ -f "$RUN/last.pt" ] && printf 'BATCH=%s\nLR=%s\nINIT=%s\nSAMPLER=%s\nAMP=%s\nCOMPILE=%s\n' "$BATCH" "$LR" "$INIT" \
        "${SAMPLER:-auto}" "${AMP:-off}" "${COMPILE:-0}" > "$RUN/gpu-train.env"
fi
# whatever the run left, even when it was stopped (SIGTERM: a checkpoint, exit 143): export it
[ "$rc" = 0 ] || say "aecodec train exited $rc; exporting what it left"
if [ -f "$RUN/decay-start.pt" ]; then  # the average at the end of the constant rate, for comparison
    $PY -m aecodec.export "$RUN/decay-start.pt" "$OUT/const-ema.safetensors" --weights ema > "$OUT/const-ema.json"
fi
[ -f "$RUN/last.pt" ] || exit "$rc"
for w in raw ema; do
    $PY -m aecodec.export "$RUN/last.pt" "$OUT/$w.safetensors" --weights "$w" > "$OUT/$w.json"
done
cp "$RUN/log.jsonl" "$OUT/"
say "done; last validations:"
grep '"val' "$RUN/log.jsonl" | tail -n 2 | cut -c1-400
exit "$rc"
