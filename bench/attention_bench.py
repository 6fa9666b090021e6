"""Eager against fused (sdpa) attention in the ``whisper-tokens`` front end, side by side in one process.

Loads the recipe's saved front end (``exp-dir/encoder``), encodes the same batches of a prepared split once
with each attention (after a warm-up batch), and prints the seconds, their ratio, whether every decoded piece
is the same and the largest posterior difference. Nothing is written. See bench/README.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from speechllm_cli.stages.front_end import BATCH_SIZE, SpeechFrontEnd
from speechllm_cli.stages.recipe import load_recipe
from speechllm_cli.stages.runner import Context
from speechllm_cli.stages.systems import split_utterances


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="mini", help="Recipe whose front end is whisper-tokens.")
    parser.add_argument("--exp-dir", type=Path, default=Path("exp/mini"), help="Folder with data/ and encoder/.")
    parser.add_argument("--split", default="test_xdomain", help="Prepared split to encode.")
    parser.add_argument("--batches", type=int, default=3, help=f"Batches of {BATCH_SIZE} timed per attention.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    front = SpeechFrontEnd(Context(load_recipe(args.recipe, []).config, args.exp_dir))
    encoder, audio = front.encoder, split_utterances(front, args.split).audio
    batches = [[audio.load(i) for i in batch] for batch in audio.batches(BATCH_SIZE)[: args.batches]]
    outputs, seconds = {}, {}
    with torch.no_grad():
        for attention in ("eager", "sdpa"):
            encoder.whisper.set_attn_implementation(attention)
            encoder(batches[0])
            started = time.perf_counter()
            outputs[attention] = [encoder(batch) for batch in batches]
            seconds[attention] = time.perf_counter() - started
    same = all(torch.equal(a.lengths, b.lengths) and torch.equal(a.log_probs.argmax(-1), b.log_probs.argmax(-1))
               for a, b in zip(outputs["eager"], outputs["sdpa"], strict=True))
    gap = max((a.log_probs.exp() - b.log_probs.exp()).abs().max().item()
              for a, b in zip(outputs["eager"], outputs["sdpa"], strict=True) if a.lengths.equal(b.lengths))
    clips = sum(len(batch) for batch in batches)
    print(f"{clips} clips of {args.split}: eager {seconds['eager']:.1f} s, sdpa {seconds['sdpa']:.1f} s "
          f"({seconds['eager'] / seconds['sdpa']:.2f}x); same pieces: {same}; largest posterior difference {gap:.1e}")


if __name__ == "__main__":
    main()
