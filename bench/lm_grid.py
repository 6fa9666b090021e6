"""WER of the LM-fused CTC search over a grid of LM weights and word bonuses, on cached posteriors.

How `decode.searches`' defaults were chosen: on the dev split only (test splits may be printed alongside,
never chosen on). Reads the recipe's finished encoder and the cached LSD posteriors of each split (computing
them if missing), estimates the LM once, and prints a markdown table: greedy CTC first, then every grid
point.

    .venv/bin/python bench/lm_grid.py --recipe mini --exp-dir exp/mini-base \
        --set train_encoder.model.whisper=whisper-base --grid 0.5,2 0.7,3 1.0,5 --splits dev
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jiwer

from speechllm_cli.core.configs import LMSearchConfig
from speechllm_cli.core.encoders import BLANK_ID
from speechllm_cli.core.lm_search import LMSearch, SearchSettings
from speechllm_cli.core.ngram import NgramLM
from speechllm_cli.data.normalize import normalize
from speechllm_cli.stages.front_end import SpeechFrontEnd
from speechllm_cli.stages.inputs import load_cuts, load_text_set, text_normalizer
from speechllm_cli.stages.recipe import load_recipe
from speechllm_cli.stages.runner import Context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="mini")
    parser.add_argument("--exp-dir", type=Path, required=True)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="as speechllm's --set")
    parser.add_argument("--text-sets", nargs="+", default=["scripture_text", "commands_text"])
    parser.add_argument("--grid", nargs="+", default=["0.3,1", "0.5,2", "0.7,3", "1.0,5"],
                        help="lm_weight,word_bonus points")
    parser.add_argument("--splits", nargs="+", default=["dev"])
    args = parser.parse_args()

    context = Context(load_recipe(args.recipe, args.sets).config, args.exp_dir)
    front = SpeechFrontEnd(context)
    encoder, norm = front.encoder, text_normalizer(context)
    defaults = LMSearchConfig(text_sets=args.text_sets)
    lm = NgramLM.estimate([row["text"].split() for name in args.text_sets for row in load_text_set(context, name)],
                          defaults.order, defaults.discount)
    data = {}
    for split in args.splits:
        cuts, cached = load_cuts(context, split), front.split(split)
        data[split] = ([normalize(c.supervisions[0].text or "", norm) for c in cuts], [cached[c.id] for c in cuts])

    def wer(refs: list[str], hyps: list[str]) -> str:
        return f"{100 * jiwer.wer(refs, [normalize(h, norm) for h in hyps]):.2f}"

    print(f"| lm_weight | word_bonus | {' | '.join(args.splits)} | seconds |")
    print(f"| ---: | ---: | {' | '.join('---:' for _ in args.splits)} | ---: |")
    greedy = [wer(refs, [encoder.ids_to_text(e.greedy) for e in encoded]) for refs, encoded in data.values()]
    print(f"| greedy | - | {' | '.join(greedy)} | - |")
    for point in args.grid:
        weight, bonus = (float(x) for x in point.split(","))
        settings = SearchSettings(weight, bonus, defaults.beam, defaults.unit_beam, defaults.min_prob)
        search = LMSearch(lm, encoder.units(), BLANK_ID, settings)
        started = time.time()
        wers = [wer(refs, [encoder.ids_to_text(search.decode(e.lsd)) for e in encoded])
                for refs, encoded in data.values()]
        print(f"| {weight:g} | {bonus:g} | {' | '.join(wers)} | {time.time() - started:.1f} |", flush=True)


if __name__ == "__main__":
    main()
