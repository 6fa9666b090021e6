#!/usr/bin/env bash
# Stages of this recipe, ESPnet style:  run.sh [--stage N] [--stop-stage M] [speechllm options...]
# Extra options (--exp-dir, --set, --force, ...) are passed to every stage. recipes/tiny/run.sh is a
# link to this file: the recipe is the folder the script is called from.
set -euo pipefail
recipe_dir=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$recipe_dir/../.." && pwd)
stage=1
stop_stage=100
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -x "$root/.venv/bin/speechllm" ]; then
  export PATH="$root/.venv/bin:$PATH"
fi

step() {
  local number=$1 command=$2
  if [ "$stage" -le "$number" ] && [ "$stop_stage" -ge "$number" ]; then
    echo "== stage $number: speechllm $command" >&2
    speechllm "$command" --recipe "$recipe_dir" "${args[@]}"
  fi
}

step 1 prepare-data
step 2 prepare-text
step 3 train-encoder
step 4 calibrate
step 5 align
step 6 decode
step 7 curriculum-finetune
step 8 score
