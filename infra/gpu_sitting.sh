#!/bin/bash
# One GPU sitting on a lent machine (the `device` tool): make a fresh synthetic training
# split there (too large to carry), train for SECONDS_BUDGET with infra/device_train.py,
# write model.vis.pt, sitting.json and train.log under $OUT; then train each online head
# of HEADS alone on the new detector for HEAD_SECONDS (its model file, carrying every
# head, under $OUT/<head>/; the last one is the sitting's full model); then the GPU tests.
#
#   INIT_MODEL=.device/init.vis.pt SEED=300 SECONDS_BUDGET=420 bash infra/gpu_sitting.sh
#   HEADS="querytrack hitf l2g" HEAD_SECONDS=60 INIT_MODEL=... bash infra/gpu_sitting.sh
#
# Wheels the machine lacks (PyAV, pycocotools) can travel in .whl/ (git-ignored).
set -u
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
D=/tmp/data
python3 -m jobs.cli synth --out $D/train --split train --videos ${VIDEOS:-1500} \
  --seed ${SEED:-300} --coco-images 2000 --workers 15 2>&1 | tail -1
VAL=()
if [ "${WITH_VAL:-1}" = 1 ]; then
  python3 -m jobs.cli synth --out $D/val --split val --videos 100 --seed 0 --workers 15 | tail -1
  VAL=(--val $D/val/annotations.json)
fi
set -o pipefail
python3 -m infra.device_train --init-model "${INIT_MODEL}" --train $D/train/annotations.json \
  --coco $D/train/coco/annotations.json "${VAL[@]}" --out "$OUT" --lr ${LR:-5e-4} \
  --seconds ${SECONDS_BUDGET:-420} --decay-at ${DECAY_AT:-0.6} --warmup 50 \
  --seed ${SEED:-300} --loader-workers 14 2>&1 | tee "$OUT/train.log" | grep -v '^{"loss'
MODEL="$OUT/model.vis.pt"
for HEAD in ${HEADS:-}; do
  python3 -m infra.device_train --init-model "$MODEL" --method $HEAD --freeze-detector \
    --train $D/train/annotations.json --coco $D/train/coco/annotations.json "${VAL[@]}" \
    --out "$OUT/$HEAD" --lr ${HEAD_LR:-3e-4} --seconds ${HEAD_SECONDS:-60} --decay-at 0.8 \
    --warmup 50 --seed ${SEED:-300} --loader-workers 14 2>&1 | tee "$OUT/$HEAD.log" \
    | grep -v '^{"loss'
  MODEL="$OUT/$HEAD/model.vis.pt"
done
timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_pixel_decoder.py \
  tests/test_mask_upsampling.py > "$OUT/gpu_tests.log" 2>&1; tail -2 "$OUT/gpu_tests.log"
