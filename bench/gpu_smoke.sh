#!/usr/bin/env bash
# GPU smoke check (issue 24): every stage of the tiny recipe in one `speechllm run` on the GPU (device cuda,
# so bf16 LLMs and bf16 training through precision auto), each stage's device line checked; with two or more
# GPUs the same run again on two data-parallel processes. Exits non-zero at the first failure. About 10
# minutes on one GPU, most of it the CPU-side speech synthesis and model loading.
#
#   bench/gpu_smoke.sh [WORK_FOLDER]        # default: a new temporary folder
#   SMOKE_DEVICE=cpu bench/gpu_smoke.sh     # the same check on a CPU (what the CI machine can run; slow)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
device=${SMOKE_DEVICE:-cuda}
[ -x "$repo/.venv/bin/speechllm" ] && PATH="$repo/.venv/bin:$PATH"
mkdir -p "$work"
cd "$work"

python - <<'EOF'
import torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), GPUs seen: {torch.cuda.device_count()}")
for index in range(torch.cuda.device_count()):
    print(f"  cuda:{index} {torch.cuda.get_device_name(index)}, bf16: {torch.cuda.is_bf16_supported()}")
EOF
gpus=$(python -c 'import torch; print(torch.cuda.device_count())')

smoke() {  # smoke NAME [options of speechllm run]: the whole tiny recipe, its log checked
  local name=$1 started=$SECONDS
  shift
  echo "== $name: speechllm run --recipe tiny --exp-dir $work/$name --set device=$device $*"
  if ! speechllm run --recipe tiny --exp-dir "$work/$name" --set "device=$device" "$@" \
      >"$work/$name.out" 2>"$work/$name.err"; then
    tail -n 20 "$work/$name.err"
    echo "FAILED: $name (logs: $work/$name.out, $work/$name.err)"
    exit 1
  fi
  local expected="device $device"
  [ "$device" = cuda ] && expected="device cuda:0"
  local lines wrong
  lines=$(grep -c '^device ' "$work/$name.err" || true)
  wrong=$(grep '^device ' "$work/$name.err" | grep -vc "^$expected" || true)
  if [ "$lines" -lt 4 ] || [ "$wrong" -ne 0 ]; then
    grep '^device \|^== stage' "$work/$name.err"
    echo "FAILED: $name: expected a '$expected' line for each stage that computes ($lines lines, $wrong other)"
    exit 1
  fi
  grep '^device ' "$work/$name.err" | sort | uniq -c
  echo "ok: $name in $((SECONDS - started)) s; RESULTS: $work/$name/RESULTS.md"
}

smoke one
if [ "$device" = cuda ] && [ "$gpus" -ge 2 ]; then
  smoke two --num-processes 2
else
  echo "(one GPU or none: the 2-process run is left out)"
fi
echo "GPU smoke check passed"
