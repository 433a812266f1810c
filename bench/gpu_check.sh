#!/usr/bin/env bash
# The prepared GPU check for a session lent a device machine (issue 7): one call, at most BUDGET (520) s;
# the most important figures come first, later ones are skipped when the budget runs out.
#
# Here, once:   echo /.whl/ >> .git/info/exclude
#               pip download --no-deps --only-binary=:all: -d .whl timm==0.4.12
# Then:         run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=590); give_back.
# Smoke test on the CPU (tiny sizes, same commands):  SMOKE=1 bash bench/gpu_check.sh
#
# The machine has torch, torchvision, opencv, pillow, scipy and tensorboard, but timm 1.x: the carried
# timm 0.4.12 wheel goes first on the path. Every figure is a JSON line in $OUT/gpu_check.jsonl; the
# costliest kernels of the eager and compiled steps go to $OUT/top_*.txt.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
LOG="$OUT/gpu_check.jsonl"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"

BUDGET=${BUDGET:-520}  # seconds for the whole script: it must end inside one call's limit
if [ -n "${SMOKE:-}" ]; then  # the same commands at tiny sizes, on the CPU
  TINY=(--device cpu --input_size 64 --batch_size 4 --steps 1 --warmup_steps 1 --num_workers 2)
  FRAMES_COPIES=16; PROP=(--devices cpu --model vit_tiny_patch16 --height 120 --width 160 --short_side 120 --frames 4)
  BUDGET=100000
else
  TINY=(); FRAMES_COPIES=2048; PROP=(--devices cuda --bf16)
fi
limit() { local left=$((BUDGET - SECONDS)); echo $(( $1 < left ? $1 : left )); }
step() {
  local t; t=$(limit "$1")
  if [ "$t" -lt 20 ]; then echo "skipped (time budget): $*" | tee -a "$OUT/stderr.txt"; return; fi
  echo "== ${*:2}" >> "$OUT/stderr.txt"
  timeout "$t" python3 bench/train_step.py "${@:2}" "${TINY[@]}" 2>>"$OUT/stderr.txt" | grep '^{' | tee -a "$LOG"
}
S16=(--model siammae_vit_small_patch16 --batch_size 256 --amp bf16)  # the issue's reference configuration

step 90 "${S16[@]}" --steps 30 --profile "$OUT/top_eager.txt"
step 200 "${S16[@]}" --steps 30 --compile --profile "$OUT/top_compiled.txt"

# the data path: pre-extracted frames, CPU decode vs --gpu_decode, against synthetic pairs (eager step)
[ "$(limit 150)" -ge 150 ] && python3 - "$FRAMES_COPIES" <<'PY'
import os, shutil, sys
from datasets.frames import read_manifest, write_manifest
from datasets.synthetic import make_frames_folder
make_frames_folder('/tmp/frames', 8, 16, size=(256, 340))  # 8 distinct clips, copied to many videos
rows = read_manifest('/tmp/frames/manifest.csv')
copies = []
for k in range(int(sys.argv[1])):
    src = rows[k % 8]
    rel = f"copies/video_{k:05d}"
    shutil.copytree(os.path.join('/tmp/frames', src['path']), os.path.join('/tmp/frames', rel))
    copies.append({**src, 'path': rel})
write_manifest('/tmp/frames/manifest.csv', copies)
PY
DATA=(--repeated_sampling 2 --steps 20 --data_path /tmp/frames --num_workers 14)
[ -f /tmp/frames/manifest.csv ] && step 100 "${S16[@]}" "${DATA[@]}"
[ -f /tmp/frames/manifest.csv ] && step 100 "${S16[@]}" "${DATA[@]}" --gpu_decode

step 60 --model siammae_vit_base_patch16 --batch_size 256 --amp bf16 --steps 15
step 60 --model siammae_vit_small_patch8 --batch_size 128 --amp bf16 --steps 15
step 200 "${S16[@]}" --steps 30 --compile --compile_mode reduce-overhead

# label propagation, ViT-S/16 at 480p
t=$(limit 100)
[ "$t" -ge 20 ] && timeout "$t" python3 bench/propagation.py "${PROP[@]}" 2>>"$OUT/stderr.txt" | grep '^{' | tee -a "$LOG"
echo "gpu_check done in ${SECONDS}s"
