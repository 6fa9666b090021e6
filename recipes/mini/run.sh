#!/usr/bin/env bash
# This recipe's stages in order, ESPnet style: run.sh [--stage N] [--stop-stage M] [options of speechllm run].
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$here/../../.venv/bin/speechllm" ] && PATH="$here/../../.venv/bin:$PATH"
exec speechllm run --recipe "$here" "$@"
