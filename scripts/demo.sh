#!/usr/bin/env bash
# The quick start on a fresh machine, CPU only, under 10 minutes on 2 cores:
# install, pre-train a small SiamMAE on the embedded demo clips (checkpoints, TensorBoard logs,
# reconstruction pictures), then label propagation on a generated DAVIS-format set (prints J&F).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
OUT=${OUT:-demo_output}
EPOCHS=${EPOCHS:-40}

python main_pretrain_siam.py --model siammae_vit_tiny_patch16 --input_size 112 \
  --decoder_embed_dim 256 --decoder_depth 4 --decoder_num_heads 8 \
  --batch_size 24 --repeated_sampling 8 --epochs "$EPOCHS" --warmup_epochs 5 --blr 1e-3 \
  --num_workers 2 --print_freq 1 --vis_every 10 --save_every 20 --output_dir "$OUT/pretrain"

python visualize.py --checkpoint "$OUT/pretrain/checkpoint-last.pth" --output_dir "$OUT/pictures"

python eval/synthetic.py --out "$OUT/davis"
python eval/davis_propagate.py --checkpoint "$OUT/pretrain/checkpoint-last.pth" --davis_path "$OUT/davis" \
  --short_side 224 --output_dir "$OUT/davis_results" --save_overlays

echo "Done. Checkpoints and TensorBoard logs: $OUT/pretrain (tensorboard --logdir $OUT/pretrain);"
echo "pictures: $OUT/pictures; propagated masks, overlays and scores: $OUT/davis_results"
