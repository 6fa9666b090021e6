"""Where an ``align`` step's time goes, and what bf16 autocast buys, on an experiment that has run ``calibrate``.

Prints, for the recipe's align settings and one system's training examples:

1. LLM positions per training batch by kind: prompt (prefix + suffix around the speech), simulated
   speech positions, target tokens, and right padding; and speech positions per target token;
2. seconds per training step (forward + backward + optimizer step, through the project's own
   ``feeds.collate_fn`` and ``feeds.loss``) in fp32 and under bf16 autocast, timed alternately on the same
   batches in this process, and their ratio; the loss difference of the two on the same batches.

Nothing is written into the experiment. See bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from speechllm_cli.core import feeds
from speechllm_cli.core.training import epoch_batches, step_generator
from speechllm_cli.stages.align import AlignConfig, simulation, text_items
from speechllm_cli.stages.inputs import load_trained_encoder
from speechllm_cli.stages.recipe import load_recipe
from speechllm_cli.stages.runner import Context
from speechllm_cli.stages.speech_llm_io import build_speech_llm


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="recipe name or folder, as for speechllm")
    parser.add_argument("--exp-dir", type=Path, required=True, help="experiment that has run stages 1-4")
    parser.add_argument("--system", default="tasu", help="align system (cps or calibrated mode) whose examples to use")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per precision per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the fastest of each counts")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--precision", dest="precisions", action="append", choices=["fp32", "bf16"],
                        help="time only this precision (repeatable; default both): bf16 autocast without the CPU's "
                             "bf16 instructions is very slow")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="recipe override, as for speechllm")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    context = Context(load_recipe(args.recipe, args.sets).config, args.exp_dir)
    config: AlignConfig = context.section("align")
    system = config.systems[args.system]
    encoder = load_trained_encoder(context)
    torch.manual_seed(0)
    model, tokenizer = build_speech_llm(context.config.model, config.instruction, encoder)
    items, _ = text_items(context, system.text_sets, encoder, tokenizer, config.max_target_tokens)
    collate = feeds.collate_fn(simulation(context, config, system, encoder.vocab_size))
    plan = epoch_batches([len(e) for e in items], config.train, 0)[: args.steps]
    batches = [collate([items[i] for i in batch], step_generator(0, n), 0.5) for n, batch in enumerate(plan)]
    prompt = len(model.prompt.prefix) + len(model.prompt.suffix)
    speech = sum(sum(len(p) for p in b.posteriors.values()) for b in batches)
    targets = sum(sum(len(e.target) for e in b.examples) for b in batches)
    widths = [max(prompt + len(b.posteriors[i]) + len(e.target) for i, e in enumerate(b.examples)) for b in batches]
    total = sum(w * len(b.examples) for w, b in zip(widths, batches, strict=True))
    padding = total - sum(len(b.examples) for b in batches) * prompt - speech - targets
    examples = sum(len(b.examples) for b in batches)
    print(f"# {args.system} on {args.exp_dir}: {args.steps} batches of {config.train.batch_size}, "
          f"{args.threads} thread(s)")
    print("| LLM positions | per batch | share |\n| --- | ---: | ---: |")
    for name, count in (("prompt", examples * prompt), ("speech", speech), ("target", targets), ("padding", padding)):
        print(f"| {name} | {count / len(batches):.0f} | {100 * count / total:.1f} % |")
    print(f"\nspeech positions per target token: {speech / targets:.2f}\n")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.0)
    model.train()
    precisions = args.precisions or ["fp32", "bf16"]
    best = dict.fromkeys(precisions, float("inf"))
    losses: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(args.rounds):
        for precision in precisions:
            started = time.perf_counter()
            losses[precision] = []
            for batch in batches:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = feeds.loss(model, batch)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses[precision].append(float(loss.detach()))
            best[precision] = min(best[precision], (time.perf_counter() - started) / len(batches))
    print("| precision | seconds per step |\n| --- | ---: |")
    for precision, seconds in best.items():
        print(f"| {precision} | {seconds:.2f} |")
    if len(best) < 2:
        return 0
    difference = max(abs(a - b) for a, b in zip(losses["fp32"], losses["bf16"], strict=True))
    print(f"\nbf16 speed-up over fp32: {best['fp32'] / best['bf16']:.2f}x; largest loss difference on the same "
          f"batch: {difference:.4f} nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
