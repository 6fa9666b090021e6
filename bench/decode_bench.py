"""Decode benchmark of an align system on test splits of an experiment that has run ``align``.

One run prints three things the decode stage does not:

1. the real-time factor of decoding: encoder + LSD + LLM generation over audio seconds, with the
   recipe's own decode settings;
2. how much faster greedy LLM decoding is with batches of 16 than one utterance at a time, timed side by
   side in this process (a ratio, since absolute times on a shared CPU mean little), and whether the two
   give the very same tokens: left padding must not change what an utterance decodes to;
3. how many LLM input positions each output token costs with LSD against feeding the LLM every encoder
   frame, from the split's real posteriors: the sequence-length side of TASU's interface.

Everything runs through the project's own decoding path (``split_posteriors``, ``load_trained``,
``SpeechLLMSystem``), so the numbers describe what ``speechllm decode`` does. See bench/README.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.configs import LSDConfig
from speechllm_cli.core.encoders import CTCEncoder
from speechllm_cli.core.feeds import Example
from speechllm_cli.core.llm import target_ids
from speechllm_cli.core.speech_llm import SpeechLLM
from speechllm_cli.data.normalize import NormalizerConfig, normalize
from speechllm_cli.metrics.asr import score_asr
from speechllm_cli.stages.decode import DecodeConfig
from speechllm_cli.stages.front_end import split_posteriors
from speechllm_cli.stages.inputs import encoder_dir, load_cuts, load_trained_encoder
from speechllm_cli.stages.recipe import load_recipe
from speechllm_cli.stages.runner import Context
from speechllm_cli.stages.speech_llm_io import load_trained, prompt_for
from speechllm_cli.stages.systems import SpeechLLMSystem


@dataclass
class Split:
    """What the benchmark needs of a split's speech, with the time the encoder and LSD took for it."""

    lsd: list[torch.Tensor]
    frames: list[int]
    """Encoder frames per utterance: the LLM input length if every posterior frame were fed to it."""
    references: list[str]
    audio_seconds: list[float]
    encode_seconds: list[float]
    """Per utterance: its audio length, and its share of the batched encoder + LSD time."""


class TokensAsText:
    """A stand-in tokenizer for ``SpeechLLMSystem``: each hypothesis comes back as its token ids.

    Comparing decoded text could hide two token sequences that detokenize alike (and special tokens are
    skipped); comparing ids cannot.
    """

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return " ".join(map(str, ids))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="recipe name or folder, as for speechllm")
    parser.add_argument("--exp-dir", type=Path, required=True, help="experiment that has run stages 1-4")
    parser.add_argument("--system", default="tasu", help="align system to decode with")
    parser.add_argument("--split", nargs="+", default=["test_indomain"],
                        help="split(s) to decode; several are pooled, which fills larger batches")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N utterances of the pooled splits (batch 1 is slow on big splits)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size compared with batch size 1")
    parser.add_argument("--beam", type=int, default=4, help="beam width compared with greedy for WER and time")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed repetitions of each batch size, alternating; the fastest of each counts")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: see bench/README.md on oversubscribed cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="recipe override, as for speechllm (repeatable)")
    args = parser.parse_args(argv)
    if args.batch_size < 2 or args.rounds < 1 or args.threads < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--batch-size must be at least 2, --rounds, --threads and --limit at least 1")
    return args


def scratch_context(context: Context, scratch: Path) -> Context:
    """The experiment's splits and encoder seen from ``scratch``, where no posterior cache exists yet.

    ``split_posteriors`` returns a cached file when it finds one; from an empty cache the encoder and LSD
    really run, and are timed, in this process, and the experiment's own cache is neither read nor written.
    """
    (scratch / "encoder").mkdir(parents=True)
    (scratch / "data").symlink_to((context.exp_dir / "data").resolve(), target_is_directory=True)
    (scratch / "encoder" / "model").symlink_to(encoder_dir(context).resolve(), target_is_directory=True)
    return replace(context, exp_dir=scratch)


def encode_split(context: Context, encoder: CTCEncoder, split: str, lsd: LSDConfig) -> Split:
    """LSD posteriors through ``split_posteriors``, and the frame counts of the encoder output behind them.

    A forward hook reads the frame counts as the encoder produces them. It sees waveforms, not utterance
    ids, but an encoder's frame count depends on nothing but the number of samples, so counts are kept
    per sample count and looked up by each utterance's length in samples.
    """
    frames_of: dict[int, int] = {}

    def record(_module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        for wave, frames in zip(args[0], output.lengths.tolist(), strict=True):
            frames_of[len(wave)] = frames

    cuts = load_cuts(context, split)
    hook = encoder.register_forward_hook(record)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            posteriors = split_posteriors(scratch_context(context, Path(tmp)), encoder, split, lsd)
    finally:
        hook.remove()
    entries = [posteriors[cut.id] for cut in cuts]
    return Split(lsd=[e.lsd for e in entries],
                 frames=[frames_of[round(e.seconds * encoder.sample_rate)] for e in entries],
                 references=[cut.supervisions[0].text or "" for cut in cuts],
                 audio_seconds=[e.seconds for e in entries],
                 encode_seconds=[e.encode_s for e in entries])


def timed_texts(model: SpeechLLM, tokenizer: Any, lsd: list[torch.Tensor], config: DecodeConfig,
                context: Context) -> tuple[list[str], float]:
    started = time.perf_counter()
    with torch.no_grad():
        system = SpeechLLMSystem(model, tokenizer, lsd[0].shape[1], config.generation, config.batching,
                                 context.track, lambda text: prompt_for(tokenizer, text, context.config.model))
        texts = system.answer([Example("speech", x, []) for x in lsd], "decoding")
    return texts, time.perf_counter() - started


def compare_batching(model: SpeechLLM, lsd: list[torch.Tensor], decode: DecodeConfig, batch_size: int,
                     rounds: int, context: Context) -> tuple[dict[int, list[float]], int]:
    """Greedy decoding at batch 1 and ``batch_size``, alternating which goes first to cancel drift.

    Returns the times per batch size and the number of utterances whose tokens were not the same in
    every run (batch 1 and batched, all rounds).
    """
    greedy = decode.generation.model_copy(update={"beam": 1})
    configs = {size: decode.model_copy(update={"batch_size": size, "generation": greedy}) for size in (1, batch_size)}
    times: dict[int, list[float]] = {1: [], batch_size: []}
    runs: list[list[str]] = []
    for round_index in range(rounds):
        sizes = (1, batch_size) if round_index % 2 == 0 else (batch_size, 1)
        for size in sizes:
            hypotheses, seconds = timed_texts(model, TokensAsText(), lsd, configs[size], context)
            times[size].append(seconds)
            runs.append(hypotheses)
    differing = sum(len(set(per_run)) > 1 for per_run in zip(*runs, strict=True))
    return times, differing


def compare_beam(model: SpeechLLM, tokenizer: Any, lsd: list[torch.Tensor], references: list[str],
                 decode: DecodeConfig, beam: int, normalizer: NormalizerConfig,
                 context: Context) -> dict[int, tuple[float, float]]:
    """WER and decoding seconds of greedy search and of beam search, batched as the recipe decodes."""
    results = {}
    for width in (1, beam):
        config = decode.model_copy(update={"generation": decode.generation.model_copy(update={"beam": width})})
        texts, seconds = timed_texts(model, tokenizer, lsd, config, context)
        triples = [(str(i), normalize(r, normalizer), normalize(h, normalizer))
                   for i, (r, h) in enumerate(zip(references, texts, strict=True))]
        results[width] = (score_asr(triples)[0].wer, seconds)
    return results


def target_token_count(tokenizer: Any, references: list[str], normalizer: NormalizerConfig) -> int:
    """Tokens the LLM should emit: the normalised references as training targets, end-of-turn included."""
    return sum(len(target_ids(tokenizer, normalize(text, normalizer))) for text in references)


def render(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f" {a:<{widths[0]}}  {b:>{widths[1]}}  {c}".rstrip() for a, b, c in rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, args.overrides)
    context = Context(recipe.config, args.exp_dir)
    decode = recipe.config.decode or DecodeConfig(splits=args.split)
    normalizer = recipe.config.prepare_text.normalize if recipe.config.prepare_text else NormalizerConfig()

    encoder = load_trained_encoder(context)
    model, tokenizer = load_trained(context, encoder, args.system)
    splits = [encode_split(context, encoder, split, recipe.config.model.lsd) for split in args.split]
    keep = slice(0, args.limit)
    lsd = [x for s in splits for x in s.lsd][keep]
    frames = [n for s in splits for n in s.frames][keep]
    references = [r for s in splits for r in s.references][keep]
    audio = sum([x for s in splits for x in s.audio_seconds][keep])
    encode_seconds = sum([x for s in splits for x in s.encode_seconds][keep])

    _, llm_seconds = timed_texts(model, tokenizer, lsd, decode, context)
    times, differing = compare_batching(model, lsd, decode, args.batch_size, args.rounds, context)
    single, batched = min(times[1]), min(times[args.batch_size])
    ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(times[1], times[args.batch_size], strict=True))
    batches = math.ceil(len(lsd) / args.batch_size)

    beams = compare_beam(model, tokenizer, lsd, references, decode, args.beam, normalizer, context)
    prompt = len(model.prompt.prefix) + len(model.prompt.suffix)
    targets = target_token_count(tokenizer, references, normalizer)
    lsd_frames = sum(x.shape[0] for x in lsd)
    lsd_positions = lsd_frames + prompt * len(lsd)
    frame_positions = sum(frames) + prompt * len(lsd)
    generation = decode.generation

    print(f"decode benchmark: recipe {recipe.config.name}, system {args.system}, split {' + '.join(args.split)}: "
          f"{len(lsd)} utterances, {audio:.1f} s of audio")
    print(f"LLM {recipe.config.model.llm.model} ({model.llm.config._attn_implementation} attention, "
          f"torch threads {torch.get_num_threads()}); decode settings: beam {generation.beam}, "
          f"batch {decode.batch_size}, max {generation.max_new_tokens} new tokens")
    rows = [
        ("measure", "value", "detail"),
        ("RTF (encoder + LSD + LLM) / audio", f"{(encode_seconds + llm_seconds) / audio:.3f}",
         f"encoder + LSD {encode_seconds:.2f} s, LLM {llm_seconds:.2f} s, recipe decode settings"),
        (f"greedy speed-up, batch {args.batch_size} over batch 1", f"{single / batched:.2f}x",
         f"fastest of {args.rounds} rounds each; per round {ratios}; "
         f"{len(lsd)} utterances = {batches} batch(es) of <= {args.batch_size}"),
        (f"utterances whose tokens differ, batch 1 vs {args.batch_size}", f"{differing}",
         f"agreement {1 - differing / len(lsd):.1%} over {2 * args.rounds} greedy runs"),
        ("LLM input positions per output token, LSD", f"{lsd_positions / targets:.2f}",
         f"{lsd_positions / len(lsd):.1f} positions per utterance (prompt {prompt} included)"),
        ("LLM input positions per output token, all frames", f"{frame_positions / targets:.2f}",
         f"{frame_positions / len(lsd):.1f} positions per utterance; encoder frames per LSD position "
         f"{sum(frames) / max(1, lsd_frames):.2f}"),
        *((f"{'greedy' if width == 1 else f'beam {width}'}: WER %, LLM seconds", f"{100 * wer:.2f}",
           f"{seconds:.2f} s ({seconds / beams[1][1]:.2f}x greedy), batch {decode.batch_size}")
          for width, (wer, seconds) in beams.items()),
    ]
    print(render(rows))
    print(f"output tokens = LLM tokens of the normalised references with end-of-turn: {targets} "
          f"({targets / len(lsd):.1f} per utterance)")
    if differing:
        print(f"FAIL: {differing} utterance(s) decode differently at batch {args.batch_size} than alone",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SpeechLLMError as exc:
        print(f"decode_bench: {exc}", file=sys.stderr)
        sys.exit(2)
