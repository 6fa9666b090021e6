"""What a Whisper encoder's frozen front costs, side by side: the work ``train-encoder`` caches once per
utterance and ``calibrate`` and ``decode`` repeat on their splits.

Builds each named ``whisper-ctc`` encoder (the head is never run) and times ``front`` over the same utterances
of a prepared split, in batches as ``train-encoder`` makes them. Runs alternate between the encoders for
``--rounds`` rounds and the fastest run of each counts, since on a shared CPU noise only ever adds time.
Prints seconds per hour of audio and each encoder's ratio to the first. Nothing is written. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from speechllm_cli.core.encoders import build_encoder
from speechllm_cli.core.features import pad_waveforms
from speechllm_cli.data.cut_audio import CutAudio
from speechllm_cli.stages.inputs import load_cuts
from speechllm_cli.stages.recipe import load_recipe
from speechllm_cli.stages.runner import Context


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="recipe name or folder, as for speechllm")
    parser.add_argument("--exp-dir", type=Path, required=True, help="experiment that has run prepare-data")
    parser.add_argument("--split", default="train", help="prepared split whose audio to encode")
    parser.add_argument("--limit", type=int, default=200, help="first N utterances of the split")
    parser.add_argument("--whisper", action="append", default=[], help="Whisper name, folder or hub id "
                        "(repeatable; default whisper-tiny.en and whisper-base)")
    parser.add_argument("--batch-size", type=int, default=16, help="utterances per front pass")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the fastest of each counts")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    context = Context(load_recipe(args.recipe, []).config, args.exp_dir)
    audio = CutAudio(load_cuts(context, args.split).subset(first=args.limit))
    batches = [pad_waveforms([audio.load(i) for i in batch]) for batch in audio.batches(args.batch_size)]
    hours = sum(audio.seconds) / 3600
    names = args.whisper or ["whisper-tiny.en", "whisper-base"]
    encoders = {name: build_encoder("whisper-ctc", {"whisper": name, "vocab_size": 8}).eval() for name in names}
    best = dict.fromkeys(names, float("inf"))
    for _ in range(args.rounds):
        for name, encoder in encoders.items():
            started = time.perf_counter()
            with torch.no_grad():
                for waves, lengths in batches:
                    encoder.front(waves, lengths)
            best[name] = min(best[name], time.perf_counter() - started)
    print(f"{len(audio)} utterances of {args.split}, {hours * 60:.1f} min of audio, {args.threads} threads")
    print("| encoder | front s per audio hour | ratio |\n| --- | ---: | ---: |")
    for name in names:
        print(f"| {name} | {best[name] / hours:.0f} | {best[name] / best[names[0]]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
