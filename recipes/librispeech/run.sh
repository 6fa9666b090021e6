#!/usr/bin/env bash
# This recipe's stages in order, ESPnet style: run.sh [--stage N] [--stop-stage M] [options of speechllm run].
#   1 prepare-data  2 prepare-text  3 train-encoder  4 calibrate  5 align  6 decode  8 score
# LibriSpeech has no SLU task, so stage 7 (curriculum-finetune) has no section here and is passed over.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$here/../../.venv/bin/speechllm" ] && PATH="$here/../../.venv/bin:$PATH"
stage=1 stop_stage=8 options=()
while [ $# -gt 0 ]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --stage=*) stage=${1#*=}; shift ;;
    --stop-stage=*) stop_stage=${1#*=}; shift ;;
    *) options+=("$1"); shift ;;
  esac
done
if [ "$stage" -le 6 ] && [ "$stop_stage" -ge "$stage" ]; then
  speechllm run --recipe "$here" --stage "$stage" --stop-stage $((stop_stage < 6 ? stop_stage : 6)) ${options[@]+"${options[@]}"}
fi
if [ "$stop_stage" -ge 8 ] && [ "$stage" -le 8 ]; then
  speechllm run --recipe "$here" --stage 8 --stop-stage 8 ${options[@]+"${options[@]}"}
fi
