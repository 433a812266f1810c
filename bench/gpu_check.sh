#!/usr/bin/env bash
# The prepared GPU check for a session lent a device machine (issue 7): one call, at most BUDGET (540) s;
# the most important figures come first, later ones are skipped when the budget runs out.
#
# Here, once:   echo /.whl/ >> .git/info/exclude
#               pip download --no-deps --only-binary=:all: -d .whl timm==0.4.12
# Then:         run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600); give_back.
#
# The machine has torch, torchvision, opencv, pillow, scipy and tensorboard, but timm 1.x: the carried
# timm 0.4.12 wheel goes first on the path. Every figure is a JSON line in $OUT/gpu_check.jsonl.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
LOG="$OUT/gpu_check.jsonl"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"

BUDGET=${BUDGET:-540}  # seconds for the whole script: it must end inside one call's 600 s
limit() { local left=$((BUDGET - SECONDS)); echo $(( $1 < left ? $1 : left )); }
step() {
  local t; t=$(limit "$1")
  if [ "$t" -lt 20 ]; then echo "skipped (time budget): $*" | tee -a "$OUT/stderr.txt"; return; fi
  timeout "$t" python3 bench/train_step.py "${@:2}" 2>>"$OUT/stderr.txt" | grep '^{' | tee -a "$LOG"
}

# the issue's reference configuration: ViT-S/16, batch 256, 95% masking, 512x8 decoder, bf16
step 120 --model siammae_vit_small_patch16 --batch_size 256 --steps 30 --amp bf16
step 200 --model siammae_vit_small_patch16 --batch_size 256 --steps 30 --amp bf16 --compile
step 120 --model siammae_vit_small_patch8 --batch_size 128 --steps 20 --amp bf16
step 120 --model siammae_vit_base_patch16 --batch_size 256 --steps 20 --amp bf16

# the data path: pre-extracted frames, CPU decode vs --gpu_decode, against synthetic pairs
[ "$(limit 200)" -ge 200 ] && python3 - <<'PY'
import os, shutil
from datasets.frames import read_manifest, write_manifest
from datasets.synthetic import make_frames_folder
make_frames_folder('/tmp/frames', 8, 16, size=(256, 340))  # 8 distinct clips, copied to 2048 videos
rows = read_manifest('/tmp/frames/manifest.csv')
copies = []
for k in range(2048):
    src = rows[k % 8]
    rel = f"copies/video_{k:05d}"
    shutil.copytree(os.path.join('/tmp/frames', src['path']), os.path.join('/tmp/frames', rel))
    copies.append({**src, 'path': rel})
write_manifest('/tmp/frames/manifest.csv', copies)
PY
[ -f /tmp/frames/manifest.csv ] && step 150 --model siammae_vit_small_patch16 --batch_size 256 --repeated_sampling 2 \
    --steps 20 --amp bf16 --data_path /tmp/frames --num_workers 14
[ -f /tmp/frames/manifest.csv ] && step 150 --model siammae_vit_small_patch16 --batch_size 256 --repeated_sampling 2 \
    --steps 20 --amp bf16 --data_path /tmp/frames --num_workers 14 --gpu_decode

# label propagation, ViT-S/16 at 480p
t=$(limit 150)
[ "$t" -ge 20 ] && timeout "$t" python3 bench/propagation.py --devices cuda --bf16 2>>"$OUT/stderr.txt" | grep '^{' | tee -a "$LOG"
echo "gpu_check done in ${SECONDS}s"
