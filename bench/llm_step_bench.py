"""Seconds per LoRA training step of two built-in LLMs on this machine's CPU, side by side, and their ratio.

What moving the frozen LLM from SmolLM2-135M to a larger packaged model (Qwen2.5-Coder-0.5B) costs an
``align`` run on a CPU: each model is loaded through the project's own ``load_llm`` (fp32 on a CPU, LoRA
adapters on the attention projections), then trained on the same shape of batch (``--batch`` sequences of
``--tokens`` random token ids, labels = inputs): forward, backward and an AdamW step on the LoRA weights.
After ``--warmup`` untimed steps each, the models take turns step by step, so that load from other jobs on
a shared CPU falls on both alike. Other jobs only ever add time, so the median and the fastest step are
shown, and their ratios are what to plan with, not the absolute times.

Loading joins a packaged GGUF and converts it into the machine's cache on first use (``$SPEECHLLM_CACHE``), which
takes a minute for the 0.5B model once. Writes nothing else.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import torch
from peft import PeftModel

from speechllm_cli.core.configs import LLMConfig, LoraSettings
from speechllm_cli.core.llm import load_llm
from speechllm_cli.stages.speech_llm_io import llm_cache_dir


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs=2, default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"],
                        help="built-in aliases (or folders, .gguf files); the ratio is second over first")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per sequence")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = 2 rank)")
    parser.add_argument("--targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"],
                        help="LoRA target modules")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return parser.parse_args(argv)


class Trainee:
    """One LoRA-wrapped model with its optimizer and a fixed batch: a step does exactly the same work each time."""

    def __init__(self, alias: str, args: argparse.Namespace) -> None:
        lora = LoraSettings(rank=args.rank, alpha=2 * args.rank, target_modules=args.targets)
        model, tokenizer = load_llm(LLMConfig(model=alias, lora=lora), llm_cache_dir())
        assert isinstance(model, PeftModel)
        model.train()
        self.alias, self.model = alias, model
        self.parameters = sum(p.numel() for p in model.parameters())
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in trainable)
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, len(tokenizer), (args.batch, args.tokens), generator=generator)
        self.seconds: list[float] = []

    def step(self) -> float:
        start = time.perf_counter()
        loss = self.model(input_ids=self.ids, labels=self.ids).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    trainees = [Trainee(alias, args) for alias in args.models]
    for trainee in trainees:
        for _ in range(args.warmup):
            trainee.step()
    for _ in range(args.steps):
        for trainee in trainees:
            trainee.seconds.append(trainee.step())

    print(f"LoRA step (forward + backward + AdamW), fp32, batch {args.batch} x {args.tokens} tokens, rank "
          f"{args.rank} on {', '.join(args.targets)}, {args.threads} torch threads, {args.warmup} warm-up + "
          f"{args.steps} timed steps each, taking turns\n")
    print("| model | parameters | LoRA parameters | s/step (median) | s/step (min) | each step (s) |")
    print("|---|---:|---:|---:|---:|---|")
    for trainee in trainees:
        steps = ", ".join(f"{s:.2f}" for s in trainee.seconds)
        print(f"| {trainee.alias} | {trainee.parameters / 1e6:.0f} M | {trainee.trainable / 1e6:.2f} M | "
              f"{statistics.median(trainee.seconds):.2f} | {min(trainee.seconds):.2f} | {steps} |")
    first, second = trainees
    print(f"| ratio {second.alias} / {first.alias} | | | "
          f"{statistics.median(second.seconds) / statistics.median(first.seconds):.2f}x | "
          f"{min(second.seconds) / min(first.seconds):.2f}x | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
