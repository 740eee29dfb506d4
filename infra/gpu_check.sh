#!/bin/bash
# The prepared GPU check (benchmarks/gpu_check.py) on a lent machine: unpack the packages
# infra/gpu_check_pack.sh put in .gpucheck/ (carry it), then the check, its JSON under $OUT.
#   device run: command "bash infra/gpu_check.sh", carry [".gpucheck"], timeout_s 540
set -u
if [ -f .gpucheck/site.tar.xz ]; then
  mkdir -p /tmp/site && tar -xJf .gpucheck/site.tar.xz -C /tmp/site || exit 1
fi
[ -d .gpucheck/videos ] && export VIS_GPU_CHECK_VIDEOS=$PWD/.gpucheck/videos
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
python3 -m benchmarks.gpu_check --out "$OUT" 2>&1 | tee "$OUT/gpu_check.out"
