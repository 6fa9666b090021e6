"""Seconds per speech-LLM training step with the loss taken on every position (``labels=``) against the loss on
the target positions only (``SpeechLLM.loss``), side by side, and their ratio.

Most of a training sequence is prompt and inserted speech positions; the target is the rest. transformers'
``labels=`` path projects every position onto the 49 k-word vocabulary (and upcasts those logits to fp32)
before ignoring most of them; ``SpeechLLM.loss`` keeps the target positions only (``logits_to_keep``). The batch
has the mini recipe's shape by default: 8 sequences of a ``--prefix``-position prompt and inserted input,
then ``--target`` target tokens. Both losses are checked equal first. The two take turns step by step
(forward, backward), so that load from other jobs on a shared CPU falls on both alike; the median and the
fastest step are shown, and their ratios are what to plan with, not the absolute times. Writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from speechllm_cli.core.configs import LLMConfig, LoraSettings
from speechllm_cli.core.llm import build_prompt, end_of_turn_id, load_llm
from speechllm_cli.core.speech_llm import Prompt, SpeechLLM
from speechllm_cli.stages.speech_llm_io import llm_cache_dir


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="built-in alias, folder or .gguf file")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--prefix", type=int, default=40, help="inserted positions per sequence (plus the prompt's)")
    parser.add_argument("--target", type=int, default=30, help="target tokens per sequence")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per loss")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return parser.parse_args(argv)


def timed(step: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    step().backward()
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    lora = LoraSettings(rank=8, alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    llm, tokenizer = load_llm(LLMConfig(model=args.model, lora=lora), llm_cache_dir())
    template = build_prompt(tokenizer, "Transcribe the speech.", None)
    prompt = Prompt(template.prefix_ids, template.suffix_ids, end_of_turn_id(tokenizer))
    model = SpeechLLM(llm, torch.nn.Identity(), prompt, pad_id=end_of_turn_id(tokenizer))
    model.train()
    generator = torch.Generator().manual_seed(0)
    width = llm.get_input_embeddings().weight.shape[1]
    inserted = [torch.randn(args.prefix, width, generator=generator) * 0.02 for _ in range(args.batch)]
    targets = torch.randint(0, len(tokenizer), (args.batch, args.target), generator=generator).tolist()

    def labelled() -> torch.Tensor:
        return llm(**model.batch_inputs(inserted, targets)).loss

    def kept() -> torch.Tensor:
        return model.loss(inserted, targets)

    with torch.no_grad():
        difference = abs(float(labelled()) - float(kept()))
    seconds: dict[str, list[float]] = {"labels= (every position)": [], "SpeechLLM.loss (targets only)": []}
    for _ in range(args.steps + 1):
        for name, step in zip(seconds, (labelled, kept), strict=True):
            seconds[name].append(timed(step))
            llm.zero_grad(set_to_none=True)
    prompted = len(prompt.prefix) + len(prompt.suffix)
    print(f"{args.model}, LoRA rank 8 on q/k/v/o, fp32, batch {args.batch} x ({prompted} prompt + "
          f"{args.prefix} inserted + {args.target} target positions), forward + backward, {args.threads} threads, "
          f"1 warm-up + {args.steps} timed steps each, taking turns; |loss difference| {difference:.1e}\n")
    print("| loss | s/step (median) | s/step (min) |")
    print("|---|---:|---:|")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values[1:]):.2f} | {min(values[1:]):.2f} |")
    full, only = (seconds[name][1:] for name in seconds)
    print(f"| ratio | {statistics.median(full) / statistics.median(only):.2f}x | {min(full) / min(only):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
