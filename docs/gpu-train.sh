#!/bin/sh
# Train on a lent GPU machine (docs/GPU.md). Runs in the repository root there, with .gpu/
# carried: .gpu/train (from `aecodec train DATA --pack-to .gpu/train`) and .gpu/whl (compressai's
# cp312 wheel). Warm-starts from the shipped default weights, trains MINUTES, and leaves in $OUT
# the exported moving-average weights (gpu.safetensors, under the 16 MiB a returned file may
# have), the export record and the training log.
#   usage: sh docs/gpu-train.sh [MINUTES [extra aecodec train options]]
set -eu
MINUTES=${1:-7}
[ $# -gt 0 ] && shift
PY=${PYTHON:-python3}
if ! $PY -c "import importlib.util as u, sys; sys.exit(u.find_spec('compressai') is None)"; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl
fi
mkdir -p /tmp/pkg && ln -sfn "$PWD/codec" /tmp/pkg/aecodec
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
INIT=weights/$($PY -c "import json; m = json.load(open('weights/manifest.json')); print(m['models'][m['default']]['file'])")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
$PY -m aecodec.train .gpu/train --device "${DEVICE:-cuda}" --run-dir "${RUN_DIR:-/tmp/run}" --fresh \
    --init "$INIT" --batch 16 --crop 256 --minutes "$MINUTES" --ckpt-minutes 2 --val-minutes 2 --quiet "$@"
$PY -m aecodec.export "${RUN_DIR:-/tmp/run}/last.pt" "$OUT/gpu.safetensors" > "$OUT/export.json"
cp "${RUN_DIR:-/tmp/run}/log.jsonl" "$OUT/"
echo "warm start $INIT; last validation: $(grep val_ema "${RUN_DIR:-/tmp/run}/log.jsonl" | tail -n 1)"
